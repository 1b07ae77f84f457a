"""`producer sniff --records-dir` on a real veth pair with tcpreplay (root): records leave while
the sniff runs, and the records written hold, conversation by conversation, exactly the packets
captured, also when the sniffer is SIGKILLed mid-capture (its exporter then writes the records
of every batch it queued)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

from redis import Redis

from flowherd.producer.run.follow import LocalWorkers
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from tests.producer.test_live import _replay, _sniff, _stop, _table, pytestmark, veth
from tests.support.helpers import pcap_bytes, wait_until

__all__ = ["pytestmark", "veth"]

T0 = 1_700_000_000


def _trace(path: Path, flows: int, per_flow: int, salt: int) -> int:
    """``flows`` UDP flows of ``per_flow`` packets each, interleaved; returns the frames."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    recs = []
    for k in range(per_flow):
        for i in range(flows):
            f = bytes(eth / IP(src=f"10.{salt}.{i // 250}.{i % 250}", dst="10.9.9.9")
                      / UDP(sport=1000 + i, dport=53) / (b"x" * (i % 300)))  # fmt: skip
            recs.append((T0 + k, i, len(f), f))
    path.write_bytes(pcap_bytes(recs))
    return len(recs)


def _records(d: Path) -> Counter[tuple[str, ...]]:
    """Packets and bytes of the records written, summed per unidirectional 5-tuple."""
    sums: Counter[tuple[str, ...]] = Counter()
    for f in d.glob("*.ndjson"):
        for line in f.read_text().splitlines():
            o = json.loads(line)
            k = (o["src"], o["dst"], str(o["proto"]), str(o["sport"]), str(o["dport"]))
            sums[(*k, "packets")] += o["packets"]
            sums[(*k, "bytes")] += o["bytes"]
    return sums


def _as_sums(table: dict[tuple[str, ...], tuple[int, int]]) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for k, (p, b) in table.items():
        out[(*k, "packets")] = p
        out[(*k, "bytes")] = b
    return out


def test_records_leave_during_the_sniff_and_hold_every_packet(
    veth: tuple[str, str], conn: Redis, store: Store, redis_url: str, tmp_path: Path
) -> None:
    a, b = veth
    first, second = tmp_path / "a.pcap", tmp_path / "b.pcap"
    n = _trace(first, 200, 3, 1) + _trace(second, 200, 3, 2)
    rec = tmp_path / "rec"
    queue = f"lr{os.getpid()}"
    with LocalWorkers(redis_url, queue, 2):
        proc = _sniff(b, "lr", redis_url, queue, "--idle-timeout", "1s", "--records-dir",
                      str(rec), "--records-rotate", "1s", "--engine", "fast")  # fmt: skip
        assert _replay(a, [first], 4000) == 600
        # the first flows end before the second trace starts: their records leave meanwhile
        wait_until(lambda: sum(1 for _ in rec.glob("*.ndjson")) > 0, 30, "a record file")
        early = _records(rec)
        # the drop counters are in the capture's state while the sniff runs
        keys = run_of(store, "lr")
        wait_until(
            lambda: int(conn.hget(keys.meta, "kernel_packets") or 0) >= 600,
            10,
            "the kernel counters while the sniff runs",
        )
        assert conn.hget(keys.meta, "kernel_drops") == b"0"
        assert _replay(a, [second], 4000) == 600
        time.sleep(0.5)
        code, err = _stop(proc)
    assert code == 0, err
    assert "records (1,200 packets" in err, err
    assert {k[0] for k in early} == {f"10.1.0.{i}" for i in range(200)}  # the first trace only
    got = _records(rec)
    assert sum(v for k, v in got.items() if k[-1] == "packets") == n
    assert got == _as_sums(_table(redis_url, "lr"))
    assert not list(rec.glob(".*"))


def test_a_sniffer_killed_mid_capture_leaves_the_records_of_what_it_queued(
    veth: tuple[str, str], conn: Redis, store: Store, redis_url: str, tmp_path: Path
) -> None:
    a, b = veth
    first = tmp_path / "a.pcap"
    _trace(first, 300, 4, 3)
    rec = tmp_path / "rec"
    queue = f"lk{os.getpid()}"
    with LocalWorkers(redis_url, queue, 2):
        proc = _sniff(b, "lk", redis_url, queue, "--idle-timeout", "30s", "--records-dir",
                      str(rec), "--flush-interval", "0.2", "--engine", "fast")  # fmt: skip
        _replay(a, [first], 4000)
        keys = run_of(store, "lk")
        wait_until(lambda: int(conn.hget(keys.meta, "enqueued") or 0) > 0, 30, "a batch queued")
        time.sleep(1)
        os.kill(proc.pid, signal.SIGKILL)  # the sniffer alone: its exporter runs on
        proc.wait(10)
        assert conn.exists(keys.export_lock)
        conn.pexpire(keys.lock, 1)  # the killed sniffer's lease lapses now, not in 15 s
        wait_until(lambda: not conn.exists(keys.export_lock), 120, "the exporter to finish")
    got = _records(rec)
    want = _as_sums(_table(redis_url, "lk"))
    assert want and got == want
    assert not list(rec.glob(".*"))
