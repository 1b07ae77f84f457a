"""Flow timeouts end to end: real RQ workers and Redis, records equal to the sorted pass."""

from __future__ import annotations

import csv
import io
import json
import random
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import wrpcap

from flowherd.deploy.cluster import LocalCluster
from flowherd.models.capture import CaptureState
from flowherd.models.errors import BackendError
from flowherd.models.flows import FlowKey, FlowStats, canonical
from flowherd.models.records import Pkt, Timeouts, reference_records
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from flowherd.store.captures import delete_run, run_of
from flowherd.store.records import build_records, records_built, write_segments
from flowherd.store.tables import has_records, iter_flows, iter_raw, table, window_starts
from flowherd.workers.decode.dissect import dissect
from tests.producer.test_sniff import _frames, _raw_sender, _start, needs_root, veth  # noqa: F401
from tests.support.cluster import store_env
from tests.support.helpers import invoke
from tests.support.pipeline import run_capture, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

S = 1_000_000_000


def inet_pton(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def write_trace(path: Path, seed: int = 7) -> None:
    """Conversations with bursts and pauses over ~90 s, frames shuffled out of time order."""
    rnd = random.Random(seed)
    convs = [
        lambda d: IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80, flags="PA"),
        lambda d: IP(src="10.0.0.3", dst="10.0.0.2") / UDP(sport=5353, dport=53),
        lambda d: IP(src="10.0.0.4", dst="10.0.0.5") / ICMP(),
        lambda d: IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=443, dport=50000),
        lambda d: IP(src="10.0.0.9", dst="10.0.0.8") / TCP(sport=22, dport=60000, flags="A"),
    ]
    frames = []
    for make in convs:
        t = 1_700_000_000.0 + rnd.uniform(0, 5)
        for _ in range(rnd.randint(20, 60)):
            t += rnd.choice([0.01, 0.2, 0.5, 1.5, 3.0, 7.0])
            fwd = rnd.random() < 0.6
            p = Ether() / make(0)
            if not fwd:  # the reply direction
                ip = p.payload
                if isinstance(ip, IP | IPv6):
                    ip.src, ip.dst = ip.dst, ip.src
                    l4 = ip.payload
                    if hasattr(l4, "sport"):
                        l4.sport, l4.dport = l4.dport, l4.sport
            p = p / (b"x" * rnd.randint(0, 400))
            p.time = t
            frames.append(p)
    for i in range(10):
        a = Ether() / ARP()
        a.time = 1_700_000_000.0 + i
        frames.append(a)
    rnd.shuffle(frames)
    wrpcap(str(path), frames)


def reference(path: Path, t: Timeouts) -> dict[FlowKey, list[FlowStats]]:
    """The sorted pass over the capture file, dissected frame by frame."""

    def packets() -> Iterator[tuple[FlowKey, Pkt]]:
        with open_capture(path) as cap:
            for rec in cap:
                info = dissect(rec.linktype, rec.data)
                if isinstance(info, str):
                    continue
                key, d = canonical(info.src, info.dst, info.proto, info.sport, info.dport)
                yield key, Pkt(rec.ts_ns, d, rec.wire_len, info.tcp_flags)

    return reference_records(t, packets())


def stored(store: Store, name: str) -> dict[FlowKey, list[FlowStats]]:
    out: dict[FlowKey, list[FlowStats]] = {}
    for k, st in iter_flows(store, table(run_of(store, name))):
        out.setdefault(k, []).append(st)
    return {k: sorted(v, key=lambda s: s.first) for k, v in out.items()}


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("timeouts") / "bursty.pcap"
    write_trace(path)
    return path


CASES = [  # workers, shards, engine, idle s, active s
    (1, 1, "scapy", 2.0, 0.0),
    (2, 3, "fast", 2.0, 10.0),
    (2, 2, "fast", 0.0, 6.0),
]


@pytest.mark.parametrize(("nworkers", "shards", "engine", "idle", "active"), CASES)
def test_records_equal_sorted_pass(
    store: Store,
    redis_url: str,
    trace: Path,
    nworkers: int,
    shards: int,
    engine: str,
    idle: float,
    active: float,
) -> None:
    t = Timeouts(round(idle * S), round(active * S))
    settings = settings_for(redis_url, batch_packets=17, engine=engine, shards=shards)
    with LocalWorkers(redis_url, settings.queue, nworkers) as w:
        st = run_capture(store, settings, [str(trace)], "cut", w, t)
    assert st.state is CaptureState.COMPLETE and st.batches_done > 5
    want = reference(trace, t)
    got = stored(store, "cut")
    assert got == want
    assert sum(map(len, want.values())) > 2 * len(want)  # the timeouts did cut
    keys = run_of(store, "cut")
    # a second build (a repeated report job) changes nothing
    before = sorted(iter_raw(store, table(keys)))
    assert build_records(store, keys) == sum(map(len, want.values()))
    assert sorted(iter_raw(store, table(keys))) == before


def test_without_timeouts_one_record_per_conversation(
    store: Store, redis_url: str, trace: Path
) -> None:
    settings = settings_for(redis_url, batch_packets=50, engine="fast")
    with LocalWorkers(redis_url, settings.queue, 1) as w:
        run_capture(store, settings, [str(trace)], "whole", w)
    keys = run_of(store, "whole")
    assert records_built(store, keys) is None and not has_records(store, table(keys))
    assert not any(store.kv.exists(sk.segments) for sk in keys.all_shards())
    got = stored(store, "whole")
    assert all(len(v) == 1 for v in got.values())
    big = Timeouts(idle_ns=10**6 * S)
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in reference(trace, big).items()}


def _windows(store: Store, name: str) -> dict[int, dict[FlowKey, FlowStats]]:
    keys = run_of(store, name)
    return {w: dict(iter_flows(store, table(keys, w))) for w in window_starts(store, keys)}


def test_windows_and_timeouts_together(store: Store, redis_url: str, trace: Path) -> None:
    """Windows keep their per-window conversation tables; the whole table is the records."""
    t = Timeouts(2 * S, 10 * S)
    settings = settings_for(redis_url, batch_packets=23, engine="fast", window=10.0)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        run_capture(store, settings, [str(trace)], "both", w, t)
        run_capture(store, settings, [str(trace)], "plain", w)
    assert stored(store, "both") == reference(trace, t)
    windows = _windows(store, "both")
    assert len(windows) > 5 and windows == _windows(store, "plain")


def _reporter(*args: str) -> str:
    res = CliRunner().invoke(reporter_main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_cli_submit_and_reports(store: Store, redis_url: str, trace: Path) -> None:
    """``producer submit --idle-timeout --active-timeout``, then flows, top and summary show
    the records: several rows per conversation, each with its own start and end."""
    t = Timeouts(2 * S, 10 * S)
    settings = settings_for(redis_url)
    q = ["--redis-url", redis_url, "--queue", settings.queue]
    with LocalWorkers(redis_url, settings.queue, 2):
        res = invoke(
            ["submit", str(trace), "--name", "cli", "--engine", "fast", "--batch-packets", "19",
             "--idle-timeout", "2s", "--active-timeout", "10s", "--wait", *q]
        )  # fmt: skip
    assert res.exit_code == 0, res.output
    want = reference(trace, t)
    n_bi = sum(map(len, want.values()))
    uni = [
        (k, s, d) for k, v in want.items() for s in v for d in (0, 1) if (s.pkts_ab, s.pkts_ba)[d]
    ]
    bi_rows = list(csv.DictReader(io.StringIO(_reporter("flows", "cli", "--direction", "bi", *q))))
    assert len(bi_rows) == n_bi
    starts = {(r["a_addr"], r["b_addr"], r["first_ts"], r["last_ts"]) for r in bi_rows}
    assert len(starts) == n_bi  # every record its own start and end
    uni_rows = list(csv.DictReader(io.StringIO(_reporter("flows", "cli", *q))))
    assert len(uni_rows) == len(uni)
    assert sum(int(r["packets"]) for r in uni_rows) == sum(
        s.packets for v in want.values() for s in v
    )
    top = json.loads(
        _reporter("top", "cli", "-n", "3", "--direction", "bi", "--format", "json", *q)
    )
    biggest = sorted((s.bytes for v in want.values() for s in v), reverse=True)[:3]
    assert [r["bytes"] for r in top] == biggest
    top_uni_bytes = json.loads(_reporter("top", "cli", "-n", "4", "--format", "json", *q))
    largest = sorted(((s.bytes_ab, s.bytes_ba)[d] for _, s, d in uni), reverse=True)[:4]
    assert [r["bytes"] for r in top_uni_bytes] == largest
    top_uni = json.loads(
        _reporter("top", "cli", "-n", "2", "--by", "packets", "--format", "json", *q)
    )
    most = sorted(((s.pkts_ab, s.pkts_ba)[d] for _, s, d in uni), reverse=True)[:2]
    assert [r["packets"] for r in top_uni] == most
    summary = json.loads(_reporter("summary", "cli", "--json", *q))
    assert summary["summary"]["flows_bi"] == n_bi
    assert summary["summary"]["flows_uni"] == len(uni)


def test_cli_refuses_bad_timeouts(redis_url: str, trace: Path) -> None:
    res = invoke(["submit", str(trace), "--idle-timeout", "soon", "--redis-url", redis_url])
    assert res.exit_code == 2 and "--idle-timeout" in res.output
    res = invoke(
        ["submit", str(trace), "--resume", "x", "--idle-timeout", "5s", "--redis-url", redis_url]
    )
    assert res.exit_code == 2 and "timeouts" in res.output


@pytest.mark.root
@pytest.mark.timeout(120)
@needs_root
def test_sniff_with_idle_timeout(
    store: Store,
    redis_url: str,
    veth: tuple[str, str],  # noqa: F811 (a fixture)
) -> None:
    """``producer sniff --idle-timeout``: two bursts a pause apart are two records of each
    conversation, with the packets of each burst."""
    a, b = veth
    pairs = _frames()
    first, second = pairs[: len(pairs) // 2], pairs[len(pairs) // 2 :]
    q = f"t{uuid.uuid4().hex[:8]}"
    with LocalWorkers(redis_url, q, 2) as w:
        proc = _start(
            *f"-i {a} --redis-url {redis_url} --queue {q} --name live --count {len(pairs)} "
            "--duration 60s --batch-packets 40 --flush-interval 200ms --idle-timeout 500ms".split()
        )
        with _raw_sender(b) as s:
            for _, f in first:
                s.send(f)
            time.sleep(1.5)  # a pause three times the idle timeout between the bursts
            for _, f in second:
                s.send(f)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        st = follow(store, "live", poll=0.05, check=w.check)
    assert st.state is CaptureState.COMPLETE, st
    got = stored(store, "live")

    def conv(flow: tuple[str, str, int, int, int]) -> FlowKey:
        src, dst, proto, sport, dport = flow
        return canonical(inet_pton(src), inet_pton(dst), proto, sport, dport)[0]

    want: dict[FlowKey, list[int]] = {}
    for burst, frames in enumerate((first, second)):
        for flow, _ in frames:
            counts = want.setdefault(conv(flow), [0, 0])
            counts[burst] += 1
    assert {k: [s.packets for s in v] for k, v in got.items()} == {
        k: [n for n in v if n] for k, v in want.items()
    }


def test_segments_written_once_and_never_for_a_gone_run(
    store: Store, redis_url: str, trace: Path
) -> None:
    t = Timeouts(2 * S, 10 * S)
    settings = settings_for(redis_url, batch_packets=40, engine="fast", shards=2)
    with LocalWorkers(redis_url, settings.queue, 1) as w:
        run_capture(store, settings, [str(trace)], "once", w, t)
    keys = run_of(store, "once")
    records = sorted(iter_raw(store, table(keys)))
    seg = {s: store.kv.hgetall(sk.segments) for s, sk in enumerate(keys.all_shards())}
    # batch 0 stored again, as a retried job would: the same bytes, the same records
    again = [[seg[s][f"0:{i}".encode()] for i in range(int(seg[s][b"0"]))] for s in seg]
    assert write_segments(store, keys, 0, again)
    assert {s: store.kv.hgetall(sk.segments) for s, sk in enumerate(keys.all_shards())} == seg
    build_records(store, keys)
    assert sorted(iter_raw(store, table(keys))) == records
    # a merged batch whose segments are gone is an error, not a silent undercount
    store.kv.hdel(keys.shard(1).segments, "1")
    with pytest.raises(BackendError, match="batch 1"):
        build_records(store, keys)
    delete_run(store, keys)
    assert not write_segments(store, keys, 0, again)
    assert not any(store.kv.exists(sk.segments) for sk in keys.all_shards())


@pytest.mark.cluster
def test_records_on_a_redis_cluster(
    cluster_store: Store, cluster: LocalCluster, redis_url: str, trace: Path
) -> None:
    """16 shards over 3 masters: segments, records and the readers stay in their slots."""
    t = Timeouts(2 * S, 10 * S)
    settings = settings_for(redis_url, batch_packets=29, engine="fast")
    with store_env(cluster.url), LocalWorkers(redis_url, settings.queue, 2) as w:
        st = run_capture(cluster_store, settings, [str(trace)], "cl", w, t)
    assert st.state is CaptureState.COMPLETE, st
    assert run_of(cluster_store, "cl").shards == 16
    assert stored(cluster_store, "cl") == reference(trace, t)
