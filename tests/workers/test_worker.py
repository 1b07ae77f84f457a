"""flowherd's RQ worker (``workers/worker.py``): its settings, its heartbeat during a long batch,
and a stop on SIGTERM that a hanging Redis cannot delay (issue 12, defects 6, 9 and 11).

Redis "hangs" here as when its network vanishes: the redis-server process is stopped (SIGSTOP),
so the kernel still accepts connections and data but no command is ever answered.
``tests/deploy/test_hosts.py`` checks the same stop with a real link pulled (needs root).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from redis import Redis
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from flowherd.deploy.connect import connect
from flowherd.deploy.queueing import FlowherdJob, make_queue
from flowherd.lab.fleet import wait_for
from flowherd.models.keys import BATCH_JOB
from flowherd.producer.traces.sample import write_sample
from flowherd.workers.cli import main as workers_main
from flowherd.workers.worker import MAINTENANCE_LOCK_TTL, STOP_GRACE, FlowherdWorker
from tests.support.helpers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(120)]

FAST = {"FLOWHERD_HEARTBEAT": "2", "FLOWHERD_MAINTENANCE_INTERVAL": "1"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path / "redis")
    s.start()
    yield s
    if s.proc is not None:
        s.proc.send_signal(signal.SIGCONT)
    s.kill()


def start_pool(url: str, queue: str, num: int, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``workers run -n NUM -v`` in a session of its own (so its process group is its own)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flowherd.workers", "run", "-n", str(num), "-v"],
            env={**os.environ, "FLOWHERD_REDIS_URL": url, "FLOWHERD_QUEUE": queue, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def gone(pool: subprocess.Popen[bytes]) -> bool:
    """The pool has exited (reaped) and no process of its group is left."""
    if pool.poll() is None:
        return False
    try:
        os.killpg(pool.pid, 0)
    except ProcessLookupError:
        return True
    return False


def submit(url: str, pcap: Path, name: str, queue: str, batch: int, **env: str) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowherd.producer",
            "submit",
            str(pcap),
            "--name",
            name,
            "--no-wait",
            *("--batch-packets", str(batch)),
        ],
        env={**os.environ, "FLOWHERD_REDIS_URL": url, "FLOWHERD_QUEUE": queue, **env},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr


def idle_workers(conn: Redis, queue: str) -> int:
    return sum(w.get_state() == "idle" for w in Worker.all(queue=make_queue(conn, queue)))


def busy_worker(conn: Redis, queue: str) -> tuple[str, int] | None:
    """(job id, pid) of a worker of ``queue`` with a batch marked started."""
    q = make_queue(conn, queue)
    for w in Worker.all(queue=q):
        jid = w.get_current_job_id()
        if jid and w.pid:
            job = q.fetch_job(jid)
            if job is not None and job.get_status() == "started":
                return jid, w.pid
    return None


def freeze_busy(conn: Redis, queue: str) -> tuple[str, int]:
    """Stop (SIGSTOP) a worker of ``queue`` in the middle of a batch (a batch takes a fraction
    of a second: freezing it is how "mid-batch" is made certain); its job id and pid."""
    q = make_queue(conn, queue)
    while True:
        jid, pid = wait_for("a busy worker", lambda: busy_worker(conn, queue), 30, 0.005)
        os.kill(pid, signal.SIGSTOP)
        job = q.fetch_job(jid)
        if job is not None and job.get_status() == "started":
            return jid, pid
        os.kill(pid, signal.SIGCONT)


# --- settings (defect 6) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("FLOWHERD_HEARTBEAT", "1", "Input should be greater than or equal to 2"),
        ("FLOWHERD_MAINTENANCE_INTERVAL", "soon", "'soon' is not a whole number"),
        ("FLOWHERD_HEARTBEAT", "99999", "Input should be less than or equal to 3600"),
    ],
)
def test_bad_interval_is_one_line_usage_error(var: str, value: str, message: str) -> None:
    res = CliRunner().invoke(workers_main, ["run", "-n", "1"], env={var: value})
    assert res.exit_code == 2, res.output
    # the value as the setting holds it once read: text, or the number it was read as
    assert res.stderr.startswith(f"error: {var}="), res.stderr
    assert res.stderr.rstrip().endswith(message) and value in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.output


def test_worker_takes_its_intervals_from_settings(
    conn: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWHERD_HEARTBEAT", "7")
    monkeypatch.setenv("FLOWHERD_MAINTENANCE_INTERVAL", "4")
    w = FlowherdWorker(["q"], connection=conn, serializer=JSONSerializer, job_class=FlowherdJob)
    assert (w.beat, w.maintenance_interval, w.worker_ttl) == (7, 4, 19)
    assert w.dequeue_timeout == 4  # the idle dequeue wakes up for each maintenance
    # RQ derives the socket timeout from worker_ttl: a dead link is noticed in 14 s, not 7 min
    assert conn.connection_pool.connection_kwargs["socket_timeout"] == 14
    monkeypatch.setenv("FLOWHERD_HEARTBEAT", "-1")
    with pytest.raises(ValidationError, match="heartbeat"):  # `rq worker -w` refuses it too
        FlowherdWorker(["q"], connection=conn)


def test_stop_deadline_ends_with_the_work_loop(redis_url: str) -> None:
    """A worker that stopped in time (as in-process workers of tests and ``bench/`` do) leaves
    no deadline behind to end its process later. In a process of its own: that end is
    ``os._exit``."""
    code = f"""
import time
from redis import Redis
from flowherd.workers import worker
worker.STOP_GRACE = 2.0
w = worker.FlowherdWorker(["q"], connection=Redis.from_url({redis_url!r}))
armed = time.monotonic()
w.handle_warm_shutdown_request()  # what SIGTERM does first: arms the deadline
w.work(burst=True)  # the queue is empty: it stops (deregisters) within a second
assert time.monotonic() - armed < 2.0
time.sleep(armed + 2.5 - time.monotonic())  # past the deadline
print("alive")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.endswith("\nalive\n"), res.stdout + res.stderr


# --- heartbeat during a batch (defect 11) --------------------------------------------------


def test_long_batch_keeps_its_heartbeat(server: RedisServer, tmp_path: Path) -> None:
    """One batch that takes longer than a heartbeat (2 s), a second worker running maintenance
    every second: the batch is never taken for abandoned (it runs once)."""
    pcap = tmp_path / "big.pcap"
    write_sample(pcap, flows=2500, seed=41)  # ~52,000 frames in one batch: seconds of scapy
    env = {"FLOWHERD_HEARTBEAT": "2", "FLOWHERD_MAINTENANCE_INTERVAL": "1"}
    conn = connect(server.url)
    pool = start_pool(server.url, "long", 2, tmp_path / "workers.log", **env)
    try:
        wait_for("2 workers idle", lambda: idle_workers(conn, "long") == 2, 30)
        submit(server.url, pcap, "long", "long", 60_000, FLOWHERD_BATCH_BYTES=str(2**24))
        q = make_queue(conn, "long")

        def batch_done() -> list[Job]:
            jobs = [q.fetch_job(j) for j in q.finished_job_registry.get_job_ids()]
            return [j for j in jobs if j is not None and j.func_name == BATCH_JOB]

        (job,) = wait_for("the batch finished", batch_done, 90, 0.1)
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(30)
    assert job is not None and job.started_at and job.ended_at
    took = (job.ended_at - job.started_at).total_seconds()
    assert took > 2, f"the batch took {took:.1f}s: too short to test the heartbeat (2 s)"
    runs = job.results()  # one per execution, even when a stale one rewrites the job's hash
    assert len(runs) == 1, f"re-queued while its worker was alive: ran {len(runs)} times"
    assert not q.failed_job_registry.get_job_ids()


def test_worker_paused_mid_batch_stays_registered(server: RedisServer, tmp_path: Path) -> None:
    """A worker frozen mid-batch (as a paused VM, or a host cut off from Redis) longer than a
    heartbeat: its batch is re-queued and run elsewhere, and once it runs again it is still a
    registered worker (RQ's own key TTL, not the batch's short heartbeat), idle."""
    conn = connect(server.url)
    pool = start_pool(server.url, "pause", 2, tmp_path / "workers.log", **FAST)
    q = make_queue(conn, "pause")
    try:
        wait_for("2 workers idle", lambda: idle_workers(conn, "pause") == 2, 30)
        pcap = tmp_path / "t.pcap"
        write_sample(pcap, flows=300, seed=43)
        submit(server.url, pcap, "pause", "pause", 2000)
        jid, pid = freeze_busy(conn, "pause")
        paused = time.monotonic()

        def rerun() -> bool:
            job = q.fetch_job(jid)
            return job is not None and job.get_status() == "finished"

        wait_for("the frozen batch run elsewhere", rerun, 30)
        time.sleep(max(0.0, paused + 4 - time.monotonic()))  # the pause: heartbeat + 2 rounds
        os.kill(pid, signal.SIGCONT)
        wait_for("both workers idle", lambda: idle_workers(conn, "pause") == 2, 30, 0.2)
        assert not q.count and not q.started_job_registry.get_job_ids()
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(30)


def test_worker_killed_while_cleaning_leaves_a_short_lock(
    server: RedisServer, tmp_path: Path
) -> None:
    """One worker at a time cleans a queue's registries (re-queues abandoned batches), under a
    lock that RQ keeps 15 minutes: a worker killed while cleaning would stop every re-queue for
    that long. A pool worker's lock lives MAINTENANCE_LOCK_TTL seconds."""
    conn = connect(server.url)
    lock = make_queue(conn, "lock").registry_cleaning_key
    for _ in range(30):  # until the kill lands inside a cleaning pass (a few milliseconds)
        pool = start_pool(server.url, "lock", 2, tmp_path / "workers.log", **FAST)
        try:
            wait_for("2 workers idle", lambda: idle_workers(conn, "lock") == 2, 30)
            wait_for("a cleaning pass", lambda: conn.exists(lock), 10, 0.0002)
        finally:
            os.killpg(pool.pid, signal.SIGKILL)
            pool.wait(10)
        ttl = conn.ttl(lock)
        if ttl > 0:
            break
    else:
        pytest.skip("never killed a worker while it cleaned")
    assert ttl <= MAINTENANCE_LOCK_TTL, f"a killed worker's lock lives {ttl}s"


# --- stopping (defect 9) -------------------------------------------------------------------


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_sigterm_stops_workers_while_redis_hangs(
    server: RedisServer, tmp_path: Path, busy: bool
) -> None:
    """Every Redis call hangs: SIGTERM to ``workers run`` ends it and all its processes within
    STOP_GRACE + 2 s (before the fix: still there after 30 s)."""
    conn = connect(server.url)
    pool = start_pool(server.url, "stop", 2, tmp_path / "workers.log", **FAST)
    assert server.proc is not None
    try:
        wait_for("2 workers idle", lambda: idle_workers(conn, "stop") == 2, 30)
        if busy:
            pcap = tmp_path / "t.pcap"
            write_sample(pcap, flows=600, seed=42)
            submit(server.url, pcap, "stop", "stop", 2000)
            freeze_busy(conn, "stop")
        server.proc.send_signal(signal.SIGSTOP)
        if busy:
            os.killpg(pool.pid, signal.SIGCONT)
        t0 = time.monotonic()
        pool.send_signal(signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            wait_for("stopped", lambda: gone(pool), 30, 0.05)
        took = time.monotonic() - t0
        log = (tmp_path / "workers.log").read_text()
        assert gone(pool), f"still running {took:.0f}s after SIGTERM:\n{log}"
        assert took < STOP_GRACE + 3 < 10, took
        assert pool.returncode == 0
        assert "event=stop_timeout" in log  # Redis never answered: the deadline ended them
    finally:
        server.proc.send_signal(signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pool.pid, signal.SIGKILL)
        pool.wait(10)


def test_sigterm_is_a_warm_stop_when_redis_answers(server: RedisServer, tmp_path: Path) -> None:
    """Redis fine: the workers deregister and exit at once, without the deadline."""
    conn = connect(server.url)
    pool = start_pool(server.url, "warm", 2, tmp_path / "workers.log", **FAST)
    try:
        wait_for("2 workers idle", lambda: idle_workers(conn, "warm") == 2, 30)
        t0 = time.monotonic()
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(STOP_GRACE + 3) == 0
        took = time.monotonic() - t0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pool.pid, signal.SIGKILL)
    log = (tmp_path / "workers.log").read_text()
    assert took < STOP_GRACE, (took, log)
    assert "stop_timeout" not in log and "worker_killed" not in log
    assert Worker.all(queue=make_queue(conn, "warm")) == []  # both deregistered


def test_pool_kills_a_worker_that_cannot_stop(server: RedisServer, tmp_path: Path) -> None:
    """A worker frozen (SIGSTOP) cannot run its own deadline: the pool kills it and exits."""
    conn = connect(server.url)
    pool = start_pool(server.url, "frozen", 1, tmp_path / "workers.log", **FAST)
    try:
        wait_for("a worker idle", lambda: idle_workers(conn, "frozen") == 1, 30)
        (w,) = Worker.all(queue=make_queue(conn, "frozen"))
        assert w.pid
        os.kill(w.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        pool.send_signal(signal.SIGTERM)
        pool.wait(STOP_GRACE + 5)
        took = time.monotonic() - t0
        wait_for("the worker gone", lambda: gone(pool), 5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pool.pid, signal.SIGKILL)
        pool.wait(10)
    assert STOP_GRACE + 2 <= took < STOP_GRACE + 4, took
    assert f"event=worker_killed pid={w.pid}" in (tmp_path / "workers.log").read_text()
