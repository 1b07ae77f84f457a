"""Retention with ``--keep N``: nothing per flow outlives the kept windows. The whole-capture
table holds the flows of the kept windows only, while the capture's packet and byte totals keep
counting, so its size depends on the traffic of the kept windows, not on how long it ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowherd.models.capture import CaptureState
from flowherd.producer.run.follow import LocalWorkers
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_flows, table
from tests.support.helpers import pcap_bytes
from tests.support.pipeline import run_capture, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

S = 1_000_000_000
T0 = 1_700_000_000


def _trace(path: Path, seconds: int, new_per_second: int = 30) -> dict[str, int]:
    """Each second, ``new_per_second`` new UDP flows of 3 packets, and one long flow with a
    packet every second. Returns what was written: packets, and the flows per second."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    recs = []
    for sec in range(seconds):
        long = bytes(eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2))
        recs.append((T0 + sec, 1000, len(long), long))
        for i in range(new_per_second):
            n = sec * new_per_second + i
            f = bytes(eth / IP(src=f"10.{1 + n // 60000}.{n // 250 % 240}.{n % 250}", dst="10.9.9.9")
                      / UDP(sport=1000 + i, dport=53))  # fmt: skip
            for k in range(3):
                recs.append((T0 + sec, 100_000 + 1000 * (i * 3 + k), len(f), f))
    recs.sort(key=lambda r: (r[0], r[1]))
    path.write_bytes(pcap_bytes(recs))
    return {"packets": len(recs), "per_second": new_per_second}


def _capture(store: Store, redis_url: str, trace: Path, name: str, keep: int | None) -> int:
    settings = settings_for(redis_url, batch_packets=200, engine="fast", window=1.0,
                            keep_windows=keep)  # fmt: skip
    with LocalWorkers(redis_url, settings.queue, 1) as w:  # one worker: batches in order
        st = run_capture(store, settings, [str(trace)], name, w)
    assert st.state is CaptureState.COMPLETE
    return st.packets


def test_the_capture_table_keeps_only_the_flows_of_the_kept_windows(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    trace = tmp_path / "t.pcap"
    wrote = _trace(trace, seconds=12)
    packets = _capture(store, redis_url, trace, "kept", keep=2)
    assert packets == wrote["packets"]  # the totals count everything
    flows = dict(iter_flows(store, table(run_of(store, "kept"))))
    # the last two windows' new flows and the long flow; every older flow has left
    assert len(flows) == 2 * wrote["per_second"] + 1
    oldest_kept = (T0 + 10) * S
    assert all(max(st.last_ab, st.last_ba) >= oldest_kept for st in flows.values())
    long = [st for st in flows.values() if st.pkts_ab + st.pkts_ba > 3]
    assert len(long) == 1 and long[0].pkts_ab + long[0].pkts_ba == 12  # it kept counting


def test_the_table_does_not_grow_with_how_long_the_capture_ran(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    short, long = tmp_path / "short.pcap", tmp_path / "long.pcap"
    _trace(short, seconds=6)
    _trace(long, seconds=18)
    _capture(store, redis_url, short, "short", keep=2)
    _capture(store, redis_url, long, "long", keep=2)
    _capture(store, redis_url, long, "all", keep=None)
    size = {n: sum(1 for _ in iter_flows(store, table(run_of(store, n)))) for n in
            ("short", "long", "all")}  # fmt: skip
    assert size["short"] == size["long"] == 2 * 30 + 1
    assert size["all"] == 18 * 30 + 1  # without retention every flow stays
