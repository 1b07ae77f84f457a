"""Flow timeouts on the shared corpus: the pipeline against the sorted pass, and the sorted pass
against NFStream's flow counts (docs/timeouts.md states the rules and the differences)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flowherd.models.capture import CaptureState
from flowherd.models.errors import TruncatedCaptureError
from flowherd.models.flows import FlowKey, FlowStats, canonical
from flowherd.models.records import Pkt, Timeouts, reference_records
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.follow import LocalWorkers
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from flowherd.store.tables import iter_flows, table
from flowherd.workers.decode.fastpath import dissect_fast
from tests.support.pipeline import CORPUS, SHARED_PCAPS, run_capture, settings_for

pytestmark = [pytest.mark.corpus]

S = 1_000_000_000
MS = 1_000_000
#: Captures whose conversations NFStream keys differently, even without timeouts: it reassembles
#: IPv4 fragments (we key non-first fragments with ports 0, as tshark does), reads no Linux
#: cooked v2 (LINKTYPE 276) and finds no IP under MPLS with an unknown payload type.
NFSTREAM_KEYS_DIFFER = {"ppp_ip4_fragments.pcap", "ppp_sll2.pcap", "tcpdump_mpls-traceroute.pcap"}


def packets(path: Path, ms: bool = False) -> Iterator[tuple[FlowKey, Pkt]]:
    """The counted packets of a capture file (its complete records), with timestamps cut to
    whole milliseconds when ``ms`` (NFStream's clock)."""
    with open_capture(path) as cap:
        try:
            for rec in cap:
                info = dissect_fast(rec.linktype, rec.data)
                if isinstance(info, str):
                    continue
                key, d = canonical(info.src, info.dst, info.proto, info.sport, info.dport)
                ts = rec.ts_ns // MS * MS if ms else rec.ts_ns
                yield key, Pkt(ts, d, rec.wire_len, info.tcp_flags)
        except TruncatedCaptureError:
            return


def _stored(store: Store, name: str) -> dict[FlowKey, list[FlowStats]]:
    out: dict[FlowKey, list[FlowStats]] = {}
    for k, st in iter_flows(store, table(run_of(store, name))):
        out.setdefault(k, []).append(st)
    return {k: sorted(v, key=lambda s: s.first) for k, v in out.items()}


@pytest.mark.redis
@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize(
    "t", [Timeouts(2 * S, 0), Timeouts(S, 5 * S)], ids=["idle2s", "idle1s-active5s"]
)
def test_corpus_records_equal_sorted_pass(
    store: Store, redis_url: str, shared: Path, t: Timeouts
) -> None:
    settings = settings_for(redis_url, batch_packets=500, engine="fast", shards=2)
    cut = 0
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        for i, file in enumerate(CORPUS):
            st = run_capture(store, settings, [str(SHARED_PCAPS / file)], f"c{i}", w, t)
            assert st.state is CaptureState.COMPLETE, file
            want = reference_records(t, packets(SHARED_PCAPS / file))
            assert _stored(store, f"c{i}") == want, file
            cut += sum(len(v) > 1 for v in want.values())
    assert cut > 100  # many conversations were cut into several records


def _nfstream_count(path: Path, idle_s: int, active_s: int) -> int:
    nfstream = pytest.importorskip("nfstream")
    streamer = nfstream.NFStreamer(
        source=str(path),
        idle_timeout=idle_s,
        active_timeout=active_s,
        decode_tunnels=False,  # flowherd keys tunnels by their outer header
        n_dissections=0,
        statistical_analysis=False,
        n_meters=1,
    )
    return sum(1 for _ in streamer)


NEVER = 10**7  # seconds: no timeout within any capture


@pytest.mark.slow
@pytest.mark.parametrize("file", CORPUS)
def test_flow_counts_equal_nfstream(shared: Path, file: str) -> None:
    """NFStream (idle ``t - last >= idle``, active ``t - first >= active``, millisecond clock,
    no tunnel decoding) counts as many flows as the rule on millisecond timestamps."""
    path = SHARED_PCAPS / file
    whole = _nfstream_count(path, NEVER, NEVER)
    ours_whole = len(reference_records(Timeouts(NEVER * S, 0), packets(path, ms=True)))
    if file in NFSTREAM_KEYS_DIFFER:
        assert whole != ours_whole  # the keys differ already: nothing to compare
        return
    assert whole == ours_whole
    for idle, active in ((1, 5), (2, NEVER), (NEVER, 3)):
        t = Timeouts(idle * S, active * S)
        ours = sum(map(len, reference_records(t, packets(path, ms=True)).values()))
        assert _nfstream_count(path, idle, active) == ours, (idle, active)
