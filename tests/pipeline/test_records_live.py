"""Records that leave as they expire, end to end: a live source (a RunWriter fed in time
order, publishing its frontier), real RQ workers, and `reporter records` as a process.

The files written hold each record exactly once and equal the sorted pass over what was
captured, also when the exporter and the workers are SIGKILLed mid-capture, when a step was
torn, and when the producer stops without closing the capture."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis import Redis

from flowherd.deploy.queueing import make_queue
from flowherd.models.batch import RawRecord
from flowherd.models.expiry import RecordsOut
from flowherd.models.flows import FlowKey, FlowStats, canonical
from flowherd.models.keys import RunKeys
from flowherd.models.records import Pkt, Timeouts, reference_records
from flowherd.models.settings import Settings
from flowherd.producer.cli.main import main as producer_main
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.run.writer import RunWriter
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.reporter.output.files import records as rows_of
from flowherd.reporter.web.metrics import exposition, registry_for
from flowherd.store.backend import Store
from flowherd.store.captures import register, status
from flowherd.store.lock import RunLock
from flowherd.workers.decode.dissect import dissect
from tests.pipeline.test_timeouts_pipeline import S, write_trace
from tests.reporter.test_ipfix_nfdump import Collector
from tests.support.helpers import wait_until
from tests.support.pipeline import settings_for

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.timeout(300)]

T = Timeouts(2 * S, 10 * S)
Row = tuple[str, str, int, int, int, int, int, int, int]


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> list[RawRecord]:
    """A bursty ~90 s capture in time order, as a live link hands it over."""
    path = tmp_path_factory.mktemp("live") / "bursty.pcap"
    write_trace(path, seed=11)
    with open_capture(path) as cap:
        return sorted(cap, key=lambda r: r.ts_ns)


def reference_rows(recs: list[RawRecord], t: Timeouts) -> list[Row]:
    pairs = [(k.pack(), st.pack()) for k, sts in reference(recs, t).items() for st in sts]
    return sorted(_row(r) for r in rows_of(pairs, "uni"))


def reference(recs: list[RawRecord], t: Timeouts) -> dict[FlowKey, list[FlowStats]]:
    def packets() -> Iterator[tuple[FlowKey, Pkt]]:
        for r in recs:
            info = dissect(r.linktype, r.data)
            if not isinstance(info, str):
                key, d = canonical(info.src, info.dst, info.proto, info.sport, info.dport)
                yield key, Pkt(r.ts_ns, d, r.wire_len, info.tcp_flags)

    return reference_records(t, packets())


def _row(r: tuple[object, ...]) -> Row:
    return (str(r[0]), str(r[1]), *(int(x) for x in r[2:9]))  # type: ignore[call-overload, return-value]


def written_rows(d: Path) -> list[Row]:
    rows: list[Row] = []
    for f in sorted(d.glob("*.ndjson")):
        for line in f.read_text().splitlines():
            o = json.loads(line)
            rows.append(
                (
                    o["src"],
                    o["dst"],
                    o["proto"],
                    o["sport"],
                    o["dport"],
                    o["packets"],
                    o["bytes"],
                    o["first_ns"],
                    o["last_ns"],
                )
            )
    return sorted(rows)


class Live:
    """A live capture run fed by the test: chunks in time order, each flushed as a batch and
    followed by the frontier, as `producer sniff` does."""

    def __init__(self, store: Store, settings: Settings, name: str, out: RecordsOut) -> None:
        self.store, self.name = store, name
        self.keys: RunKeys = register(store, name, ["live:test"], settings, False)
        self.lock = RunLock(store, self.keys, name).acquire()
        q = make_queue(store.queue, settings.queue)
        self.w = RunWriter(store, q, self.keys, settings, lock=self.lock, timeouts=T, records=out)
        self.fed: list[RawRecord] = []

    def feed(self, chunk: list[RawRecord], pause: float = 0.05) -> None:
        for r in chunk:
            self.w.add(r)
        self.w.flush()
        self.w.advance(chunk[-1].ts_ns)
        self.w.flush()  # publishes the frontier
        self.fed += chunk
        time.sleep(pause)

    def close(self) -> None:
        self.w.close()
        self.lock.release()


def exporter(redis_url: str, settings: Settings, name: str, home: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "flowherd.reporter", "records", name, "--interval", "100ms"]
    cmd += ["--redis-url", redis_url, "--queue", settings.queue]
    env = {**os.environ, "FLOWHERD_HOME": str(home)}
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)


def chunks(frames: list[RawRecord], n: int) -> list[list[RawRecord]]:
    size = -(-len(frames) // n)
    return [frames[i : i + size] for i in range(0, len(frames), size)]


def leftovers(conn: Redis, keys: RunKeys) -> dict[str, int]:
    """What the exporter keeps in Redis: nothing once every record has left."""
    out = {"pending": int(conn.zcard(keys.pending))}
    for sk in keys.all_shards():
        out[f"open{sk.shard}"] = int(conn.hlen(sk.open))
        out[f"seg{sk.shard}"] = int(conn.hlen(sk.segments))
    return out


def test_records_leave_while_the_capture_runs_and_equal_the_sorted_pass(
    conn: Redis, store: Store, redis_url: str, frames: list[RawRecord], tmp_path: Path
) -> None:
    settings = settings_for(redis_url, batch_packets=16, shards=2, engine="fast")
    out = RecordsOut(dir=str(tmp_path / "rec"), rotate_ns=S)
    live = Live(store, settings, "rl", out)
    ex = exporter(redis_url, settings, "rl", tmp_path)
    left_mid = 0
    with LocalWorkers(redis_url, settings.queue, 2):
        parts = chunks(frames, 30)
        for i, c in enumerate(parts):
            live.feed(c, pause=0.1)
            if i == 2 * len(parts) // 3:
                wait_until(
                    lambda: written_rows(tmp_path / "rec"), 30, "records written mid-capture"
                )
                left_mid = len(written_rows(tmp_path / "rec"))
        live.close()
        _, err = ex.communicate(timeout=120)
    assert ex.returncode == 0, err
    want = reference_rows(frames, T)
    assert 0 < left_mid < len(want)  # records left while the capture ran
    assert written_rows(tmp_path / "rec") == want
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert len(files) > 2 and all(f.startswith("rl.") and f.endswith(".ndjson") for f in files)
    assert leftovers(conn, live.keys) == dict.fromkeys(leftovers(conn, live.keys), 0)
    assert f"records ({sum(r[5] for r in want)} packets" in err.replace(",", "")
    # status, `producer status` and the metrics say what has left and that nothing is open
    left = status(store, "rl").records_left
    assert left is not None and left.to == f"{tmp_path / 'rec'} (ndjson)"
    assert (left.packets, left.files, left.open) == (sum(r[5] for r in want), len(files), 0)
    assert left.records == sum(len(v) for v in reference(frames, T).values())
    shown = CliRunner().invoke(producer_main, ["status", "rl", "--redis-url", redis_url])
    assert f"{left.records:,} records" in shown.output and "0 conversations open" in shown.output
    metrics = exposition(registry_for(store)).decode()
    assert f'flowherd_capture_records_left{{capture="rl"}} {float(left.records)}' in metrics
    assert 'flowherd_capture_records_open{capture="rl"} 0.0' in metrics


def test_killed_exporter_and_workers_and_a_torn_step_write_each_record_once(
    conn: Redis,
    store: Store,
    redis_url: str,
    frames: list[RawRecord],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLOWHERD_HEARTBEAT", "2")
    monkeypatch.setenv("FLOWHERD_MAINTENANCE_INTERVAL", "1")
    settings = settings_for(redis_url, batch_packets=10, shards=2, engine="fast", max_in_flight=6)
    rec = tmp_path / "rec"
    live = Live(store, settings, "rk", RecordsOut(dir=str(rec), rotate_ns=2 * S))
    parts = chunks(frames, 24)
    first = exporter(redis_url, settings, "rk", tmp_path)
    workers = LocalWorkers(redis_url, settings.queue, 2)
    try:
        for c in parts[:12]:
            live.feed(c)
        wait_until(lambda: written_rows(rec), 30, "records written before the kill")
    finally:
        first.send_signal(signal.SIGKILL)
        os.killpg(workers.proc.pid, signal.SIGKILL)
        first.wait(10)
        workers.proc.wait(10)
    keys = live.keys
    # a step killed after its journal write and before its commit: bytes past the committed
    # length, which the next step must drop
    part = int(conn.hget(keys.shard(0).expiry, "part") or 0)
    with open(rec / f".{keys.run}.s0.{part:06d}.journal", "ab") as f:
        f.write(b"\x05torn")
    conn.pexpire(keys.export_lock, 1)  # a killed exporter's lease lapses: now, not in 15 s
    wait_until(lambda: not conn.exists(keys.export_lock), 10, "the exporter lock to lapse")
    second = exporter(redis_url, settings, "rk", tmp_path)
    with LocalWorkers(redis_url, settings.queue, 2):
        for c in parts[12:]:
            live.feed(c)
        live.close()
        _, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    assert written_rows(rec) == reference_rows(frames, T)
    assert not list(rec.glob(".*"))  # no journal, no temporary file left
    assert leftovers(conn, keys) == dict.fromkeys(leftovers(conn, keys), 0)


def test_a_producer_that_stops_without_closing_leaves_every_queued_record(
    conn: Redis, store: Store, redis_url: str, frames: list[RawRecord], tmp_path: Path
) -> None:
    """The exporter waits while the producer's lock is held, then writes the records of every
    batch queued, open ones included, and says the capture stayed incomplete (exit 1)."""
    settings = settings_for(redis_url, batch_packets=16, engine="fast")
    rec = tmp_path / "rec"
    live = Live(store, settings, "rg", RecordsOut(dir=str(rec), format="ndjson"))
    ex = exporter(redis_url, settings, "rg", tmp_path)
    with LocalWorkers(redis_url, settings.queue, 2):
        for c in chunks(frames, 20)[:8]:
            live.feed(c)
        time.sleep(1)
        assert ex.poll() is None  # the producer still holds its lock: the exporter waits
        conn.pexpire(live.keys.lock, 1)  # the producer is gone; its lease lapses
        _, err = ex.communicate(timeout=120)
    assert ex.returncode == 1, err
    assert "stopped without closing it" in err
    assert written_rows(rec) == reference_rows(live.fed, T)


def test_a_capture_without_records_out_is_refused(store: Store, redis_url: str) -> None:
    register(store, "plain", ["live:test"], settings_for(redis_url), False)
    res = CliRunner().invoke(reporter_main, ["records", "plain", "--redis-url", redis_url])
    assert res.exit_code == 1
    assert "keeps its records in Redis" in res.output


@pytest.mark.skipif(shutil.which("nfcapd") is None, reason="nfdump is not installed")
def test_records_reach_an_ipfix_collector_as_they_expire(
    store: Store, redis_url: str, frames: list[RawRecord], tmp_path: Path
) -> None:
    """nfcapd receives every record once, with no sequence gap in either shard's domain, and
    holds what the files hold."""
    coll = Collector(tmp_path)
    try:
        settings = settings_for(redis_url, batch_packets=16, shards=2, engine="fast")
        rec = tmp_path / "rec"
        out = RecordsOut(dir=str(rec), ipfix=f"127.0.0.1:{coll.port}", rotate_ns=S)
        live = Live(store, settings, "ri", out)
        ex = exporter(redis_url, settings, "ri", tmp_path)
        with LocalWorkers(redis_url, settings.queue, 2):
            for c in chunks(frames, 20):
                live.feed(c)
            live.close()
            _, err = ex.communicate(timeout=120)
        assert ex.returncode == 0, err
        coll.stop()
    finally:
        if coll.proc.poll() is None:
            coll.proc.kill()
    theirs = sorted(
        (_nf_key(r), r["in_packets"], r["in_bytes"]) for r in json.loads(coll.nfdump("-o", "json"))
    )
    mine = sorted(((r[0], r[1], r[2], r[3], r[4]), r[5], r[6]) for r in written_rows(rec))
    assert theirs == mine and len(mine) == len(reference_rows(frames, T))
    stat = dict(line.split(": ", 1) for line in coll.nfdump("-I").splitlines() if ": " in line)
    assert int(stat["Sequence failures"]) == 0


def _nf_key(r: dict[str, object]) -> tuple[object, ...]:
    """An nfdump JSON record's 5-tuple (no ports for ICMP)."""
    src = r.get("src4_addr") or r["src6_addr"]
    dst = r.get("dst4_addr") or r["dst6_addr"]
    return (src, dst, r["proto"], r.get("src_port", 0), r.get("dst_port", 0))
