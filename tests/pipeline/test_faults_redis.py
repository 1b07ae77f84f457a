"""Redis faults: restarts with append-only persistence (and with a lost tail of it), an
unreachable server, workers that reconnect by themselves, and ``maxmemory`` with noeviction.

Each test runs its own redis-server (:class:`tests.support.helpers.RedisServer`, persistence as
``deploy/redis.conf``), so it can kill, truncate and restart it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from flowherd.deploy.connect import connect
from flowherd.models.keys import CAPTURES, PayloadKeys, RunKeys
from flowherd.models.state import MetaField
from flowherd.producer.run import pressure
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.run.writer import Progress
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from tests.support.helpers import (
    RedisServer,
    free_port,
    invoke,
    let_lease_run_out,
    wait_for_idle_workers,
    wait_until,
)
from tests.support.pipeline import assert_exact, follow_for, settings_for, submit_with

# a hang guard above the tests' own deadlines (follow_for 120 s), so those fail first
pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(240)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path / "redis")
    s.start()
    yield s
    s.kill()


# --- the append-only file, read and cut like a power loss would --------------------------


def aof_commands(data: bytes) -> list[tuple[int, int, list[bytes]]]:
    """(start, end, args) of each command (RESP array) in an AOF."""
    out = []
    pos = 0
    while pos < len(data):
        assert data[pos : pos + 1] == b"*", f"unexpected AOF byte at {pos}"
        start = pos
        eol = data.index(b"\r\n", pos)
        n = int(data[pos + 1 : eol])
        pos = eol + 2
        args = []
        for _ in range(n):
            eol = data.index(b"\r\n", pos)
            size = int(data[pos + 1 : eol])
            args.append(data[eol + 2 : eol + 2 + size])
            pos = eol + 2 + size + 2
        out.append((start, pos, args))
    return out


def cut_aof_after_batch(server: RedisServer, run: str, seq: int) -> None:
    """Truncate the (stopped) server's AOF right after the writes that stored batch ``seq``
    (its payload, then the run's ``enqueued`` mark, alone or in a transaction): later writes
    are lost, as when the host crashes before the next fsync."""
    path = server.incr_aof()
    data = path.read_bytes()
    key = PayloadKeys(run).batch(seq).encode()
    meta = RunKeys(run).meta.encode()
    cmds = aof_commands(data)
    at = next(i for i, (_, _, a) in enumerate(cmds) if a[0].upper() == b"SET" and a[1] == key)
    mark = next(
        i
        for i, (_, _, a) in enumerate(cmds[at:], at)
        if a[0].upper() == b"HSET" and a[1] == meta and MetaField.ENQUEUED.encode() in a[2::2]
    )
    verbs = [a[0].upper() for _, _, a in cmds[:mark]]
    opened = verbs.count(b"MULTI") > verbs.count(b"EXEC")  # the mark is inside a transaction
    end = next(e for _, e, a in cmds[mark:] if a[0].upper() == b"EXEC") if opened else cmds[mark][1]
    with path.open("r+b") as f:
        f.truncate(end)


@pytest.fixture
def fast_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers that notice a lost batch within seconds (see workers/worker.py)."""
    monkeypatch.setenv("FLOWHERD_HEARTBEAT", "2")
    monkeypatch.setenv("FLOWHERD_MAINTENANCE_INTERVAL", "1")


# --- restarts -----------------------------------------------------------------------------


def test_redis_killed_mid_capture_completes_exactly(
    server: RedisServer, tmp_path: Path, fast_recovery: None
) -> None:
    """SIGKILL redis-server while batches are being merged and queued, start it again from its
    AOF: producer and workers reconnect, and the totals are exact."""
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=200, seed=21)
    settings = settings_for(server.url, batch_packets=150, max_in_flight=6)
    conn = connect(server.url)
    store = Store.single(conn)
    restarted: list[float] = []

    def crash(p: Progress) -> None:
        if not restarted and p.batches >= 8:
            server.kill()
            server.start()
            restarted.append(time.monotonic())

    with LocalWorkers(server.url, settings.queue, 2) as w:
        submit_with(store, settings, path, "crash", crash)
        st = follow_for(store, "crash", 120, w)
    assert restarted, "the restart did not happen"
    assert_exact(store, "crash", st, truth)
    print(
        f"redis SIGKILL mid-capture: complete and exact {time.monotonic() - restarted[0]:.1f}s after the restart"
    )


def test_batches_lost_by_redis_while_submitting_are_resent(
    server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A host crash loses Redis's last writes (simulated: SIGKILL, then the AOF cut after
    batch k's payload, before its job) while the producer keeps going: before closing the run
    the producer finds batch k without a job and k+1, k+2 gone, and sends exactly those."""
    path = tmp_path / "t.pcap"
    # larger than one read-ahead chunk (1 MiB), so the producer still reads after the crash
    truth = write_sample(path, flows=800, seed=22)
    settings = settings_for(server.url, batch_packets=100, max_in_flight=1000)
    conn = connect(server.url)
    store = Store.single(conn)
    cut: list[int] = []

    def crash(p: Progress) -> None:
        if not cut and p.batches >= 8:
            run = conn.hget(CAPTURES, "lossy").decode()  # type: ignore[union-attr]
            k = p.batches - 3
            server.kill()
            cut_aof_after_batch(server, run, k)
            server.start()
            cut.append(k)

    with caplog.at_level(logging.WARNING, logger="flowherd.producer.run.resume"):
        submit_with(store, settings, path, "lossy", crash)
    assert cut
    k = cut[0]
    lines = [r.getMessage() for r in caplog.records if "batches_missing" in r.getMessage()]
    assert lines == [
        f"event=batches_missing run={run_of(store, 'lossy').run} lost={k + 1}-{k + 2} "
        f"orphans={k} action=resend"
    ]
    with LocalWorkers(server.url, settings.queue, 2) as w:
        st = follow_for(store, "lossy", 120, w)
    assert_exact(store, "lossy", st, truth)


def test_lost_tail_after_the_producer_exited_is_resumed(
    server: RedisServer, tmp_path: Path
) -> None:
    """The crash loses the end of a finished submission (its last batches and the close):
    the capture says it is still submitting, and ``submit --resume`` sends exactly the
    missing batches (the one whose job was lost, then the lost ones)."""
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=150, seed=23)
    settings = settings_for(server.url, batch_packets=100, max_in_flight=1000)
    store = Store.single(connect(server.url))
    submit_with(store, settings, path, "tail")
    keys = run_of(store, "tail")
    conn = store.kv
    total = int(conn.hget(keys.meta, "total_batches"))  # type: ignore[arg-type]
    k = total - 4
    server.kill()
    cut_aof_after_batch(server, keys.run, k)
    server.start()
    conn = connect(server.url)
    store = Store.single(conn)
    assert conn.hget(keys.meta, "total_batches") is None
    assert int(conn.hget(keys.meta, "enqueued")) == k + 1  # type: ignore[arg-type]
    res = invoke(["status", "tail", "--redis-url", server.url])
    assert res.exit_code == 0 and "submitting" in res.output.lower(), res.output
    res = invoke(["submit", "--resume", "tail", str(path), "--redis-url", server.url])
    assert res.exit_code == 1 and "being written by another producer" in res.output, res.output
    let_lease_run_out(conn, keys)  # the crash lost the producer's release of its run lock
    res = invoke(["submit", "--resume", "tail", str(path), "--redis-url", server.url])
    assert res.exit_code == 0, res.output
    assert f"re-sent batch {k}, sent 3 more; {total} batches" in res.output
    with LocalWorkers(server.url, settings.queue, 2) as w:
        st = follow_for(store, "tail", 120, w)
    assert_exact(store, "tail", st, truth)


def test_workers_reconnect_after_redis_restart(
    server: RedisServer, tmp_path: Path, fast_recovery: None
) -> None:
    """Restart redis-server while the workers idle on an empty queue; then submit: the same
    worker processes take the batches, without being restarted."""
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=100, seed=24)
    settings = settings_for(server.url, batch_packets=200)
    with LocalWorkers(server.url, settings.queue, 2) as w:
        wait_for_idle_workers(connect(server.url), settings.queue, 2, w)  # blocked in dequeue
        server.kill()
        # the fault itself: Redis stays down for a while, so the workers' blocked dequeue
        # fails and they back off (there is nothing of theirs to observe while it is down)
        time.sleep(1)
        server.start()
        t0 = time.monotonic()
        store = Store.single(connect(server.url))
        submit_with(store, settings, path, "again")
        st = follow_for(store, "again", 120, w)
        took = time.monotonic() - t0
        assert w.proc.poll() is None  # the same pool, never restarted
    assert_exact(store, "again", st, truth)
    print(f"workers reconnected: capture complete {took:.1f}s after the restart")


# --- unreachable ------------------------------------------------------------------------


def test_unreachable_redis_retried_for_connect_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Nothing listens: each command retries for FLOWHERD_CONNECT_TIMEOUT, then one line."""
    monkeypatch.setenv("FLOWHERD_CONNECT_TIMEOUT", "1.5")
    path = tmp_path / "t.pcap"
    write_sample(path, flows=5)
    url = f"redis://:pw0rd@127.0.0.1:{free_port()}/0"
    for args in (["submit", str(path)], ["status", "x"], ["retry", "x"]):
        t0 = time.monotonic()
        res = invoke([*args, "--redis-url", url])
        took = time.monotonic() - t0
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 1 and len(lines) == 1, res.output
        assert lines[0].startswith("error: cannot reach Redis at redis://***@127.0.0.1")
        assert "after 1.5s" in lines[0] and "pw0rd" not in res.output
        # the documented contract (docs/operations.md): it retries for the connect timeout,
        # then gives up; nothing else (no Redis, in-process CLI) takes time here
        assert 1.4 <= took < 4, took


def test_redis_coming_up_during_the_wait_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOWHERD_CONNECT_TIMEOUT", "15")
    late = RedisServer(tmp_path / "late")
    timer = threading.Timer(1.0, late.start)
    timer.start()
    try:
        t0 = time.monotonic()
        res = invoke(["status", "nope", "--redis-url", late.url])
        took = time.monotonic() - t0
    finally:
        timer.join()
        late.kill()
    # it reached the late server (the answer of a Redis, not "cannot reach"), after waiting
    # for it; how soon after it came up depends on the backoff and the load: printed only
    assert res.exit_code == 1 and "no capture named 'nope'" in res.output, res.output
    assert 0.9 <= took < 15, took  # 15: the connect timeout, which it never reached
    print(f"redis up 1 s into the wait: the command used it {took:.1f}s after it began")


# --- memory -------------------------------------------------------------------------------


@pytest.mark.slow
def test_maxmemory_noeviction_producer_waits_for_memory(tmp_path: Path) -> None:
    """A Redis with a small maxmemory and no workers yet: the producer fills it, leaving a
    reserve, says it waits for Redis memory and waits; once workers merge, it goes on; the
    result is exact, and Redis never refused a command for want of memory."""
    limit = 6 * 1024 * 1024
    srv = RedisServer(tmp_path / "r", "--maxmemory", str(limit))
    srv.start()
    try:
        path = tmp_path / "t.pcap"
        truth = write_sample(path, flows=1000, seed=25, snaplen=0)  # ~13 MB of frames
        assert path.stat().st_size > 2 * limit
        settings = settings_for(srv.url, batch_bytes=256 * 1024, max_in_flight=10_000)
        conn = connect(srv.url)
        store = Store.single(conn)
        seen: list[Progress] = []
        peak = [0]
        pauses = [0]  # the producer's pauses for memory so far

        def watch(p: Progress) -> None:
            peak[0] = max(peak[0], int(conn.info("memory")["used_memory"]))
            if p.waiting and p.waiting_for == "Redis memory":
                pauses[0] += 1
                if not seen:
                    seen.append(p)

        errors: list[BaseException] = []

        def produce() -> None:
            try:
                c = connect(srv.url)
                submit_with(Store.single(c), settings, path, "mem", watch)
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        t = threading.Thread(target=produce)
        t.start()
        wait_until(lambda: seen or not t.is_alive(), 60, "the producer to wait for memory")
        assert seen, f"the producer never waited for memory: {errors}"
        # it keeps waiting (five more pauses, backing off), and stays under the limit
        first = pauses[0]
        wait_until(lambda: pauses[0] >= first + 5 or not t.is_alive(), 60, "five more pauses")
        assert t.is_alive(), errors
        assert int(conn.info("memory")["used_memory"]) <= limit
        with LocalWorkers(srv.url, settings.queue, 2) as w:
            t.join(120)
            assert not t.is_alive() and not errors, errors
            st = follow_for(store, "mem", 120, w)
        assert_exact(store, "mem", st, truth)
        assert peak[0] <= limit, peak
        assert "errorstat_OOM" not in conn.info("errorstats")
        print(f"maxmemory {limit}: peak used {peak[0]} (sampled)")
    finally:
        srv.kill()


def test_oom_refusal_is_waited_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis runs out of memory while the producer writes (simulated: maxmemory lowered below
    what is used, then raised again 1.5 s later): its writes are refused with OOM, it backs
    off and retries, and every batch arrives once."""
    # as for a user without the INFO permission: no look before writing, only OOM refusals
    monkeypatch.setattr(pressure.Memory, "usage", lambda self: None)
    srv = RedisServer(tmp_path / "r", "--maxmemory", "64mb")
    srv.start()
    try:
        path = tmp_path / "t.pcap"
        write_sample(path, flows=200, seed=26)
        settings = settings_for(srv.url, batch_packets=100, max_in_flight=10_000)
        conn = connect(srv.url)
        store = Store.single(conn)
        admin = Redis.from_url(srv.url)
        waited: list[float] = []
        squeezed: list[float] = []

        def squeeze(p: Progress) -> None:
            if p.waiting and p.waiting_for == "Redis memory" and not waited:
                waited.append(time.monotonic())
            if p.batches >= 10 and not squeezed:
                used = int(admin.info("memory")["used_memory"])
                admin.config_set("maxmemory", used // 2)
                squeezed.append(time.monotonic())
                threading.Timer(1.5, lambda: admin.config_set("maxmemory", "64mb")).start()

        submit_with(store, settings, path, "oom", squeeze)
        assert squeezed and waited
        keys = run_of(store, "oom")
        total = int(conn.hget(keys.meta, "total_batches"))  # type: ignore[arg-type]
        assert int(conn.hget(keys.meta, "enqueued")) == total  # type: ignore[arg-type]
        payloads = PayloadKeys(keys.run)
        assert all(store.queue.exists(payloads.batch(s)) for s in range(total))
        assert conn.scard(keys.done) == 0
        assert all(conn.scard(sk.done) == 0 for sk in keys.all_shards())
        errs = conn.info("errorstats")
        assert int(errs.get("errorstat_OOM", {}).get("count", 0)) >= 1, errs
    finally:
        srv.kill()
