"""Prometheus metrics of ``workers run --metrics-port`` (workers/metrics.py): a real pool of two
worker processes on a real Redis, scraped over HTTP while and after it merges a capture."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Worker
from rq.job import Job

from flowherd.deploy.queueing import enqueue_batch, make_queue
from flowherd.models.capture import BatchRef, CaptureState
from flowherd.models.keys import BATCH_JOB
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from flowherd.workers import metrics
from tests.support.helpers import free_port, wait_until
from tests.support.pipeline import follow_for, settings_for, submit_with

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.timeout(180)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as res:
        text = res.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (over every worker)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


class Pool:
    """``workers run -n NUM --metrics-port PORT`` in a session of its own."""

    def __init__(self, redis_url: str, queue: str, num: int, tmp: Path, **env: str) -> None:
        self.port, self.queue = free_port(), queue
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.tmp = tmp  # TMPDIR of the pool: where its private metrics directory is made
        tmp.mkdir()
        self.log = tmp.parent / f"pool-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "flowherd.workers", "run", "-n", str(num)),
                    *("--metrics-port", str(self.port), "--metrics-host", "127.0.0.1"),
                ],
                env={
                    **os.environ,
                    "FLOWHERD_REDIS_URL": redis_url,
                    "FLOWHERD_QUEUE": queue,
                    "TMPDIR": str(tmp),
                    **env,
                },
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def scrape(self) -> Samples:
        assert self.proc.poll() is None, self.log.read_text()
        return scrape(self.url)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def pool(redis_url: str, tmp_path: Path) -> Iterator[Pool]:
    p = Pool(redis_url, f"m{os.getpid()}{free_port()}", 2, tmp_path / "tmp")
    yield p
    p.stop()


@pytest.fixture
def fast_pool(redis_url: str, tmp_path: Path) -> Iterator[Pool]:
    """One worker, whose batch is back on the queue within about 3 s when it is killed."""
    p = Pool(
        redis_url,
        f"k{os.getpid()}{free_port()}",
        1,
        tmp_path / "tmp",
        FLOWHERD_HEARTBEAT="2",
        FLOWHERD_MAINTENANCE_INTERVAL="1",
    )
    yield p
    p.stop()


def _ready(pool: Pool, workers: int = 2) -> Samples | None:
    """The scrape once the pool's workers are up and have created their metrics."""
    try:
        s = pool.scrape()
    except OSError:
        return None
    merged = ("flowherd_batches_total", (("outcome", "merged"),))
    ok = total(s, "flowherd_worker_processes") == workers and merged in s
    return s if ok else None


def _ended(job: Job) -> Callable[[], bool]:
    return lambda: job.get_status(refresh=True) in ("finished", "failed")


def _idle(conn: Redis, queue: str) -> bool:
    workers = Worker.all(queue=make_queue(conn, queue))
    return len(workers) == 2 and all(w.get_state() == "idle" for w in workers)


def test_scrape_counts_a_capture_and_every_outcome(
    conn: Redis, store: Store, redis_url: str, tmp_path: Path, pool: Pool
) -> None:
    q_name = pool.queue
    start = wait_until(lambda: _ready(pool), 60, "the pool's metrics endpoint")
    for outcome in metrics.OUTCOMES:  # exported at 0 before any batch
        assert total(start, "flowherd_batches_total", outcome=outcome) == 0
    assert total(start, "flowherd_batches_in_flight") == 0
    dirs = list(pool.tmp.glob("flowherd-metrics-*"))
    assert len(dirs) == 1 and any(dirs[0].iterdir())  # the workers' files, in a private dir

    path = tmp_path / "s.pcap"
    write_sample(path, flows=80, seed=11)
    settings = settings_for(redis_url, q_name, batch_packets=150)
    submit_with(store, settings, path, "m")
    st = follow_for(store, "m", 120)
    assert st.state is CaptureState.COMPLETE
    assert st.total_batches is not None and st.total_batches >= 4  # several batches
    wait_until(lambda: _idle(conn, q_name), 30, "both workers idle")

    s = pool.scrape()
    assert total(s, "flowherd_packets_total") == st.packets
    assert total(s, "flowherd_bytes_total") == st.bytes
    assert total(s, "flowherd_batches_total", outcome="merged") == st.total_batches
    for outcome in ("duplicate", "stale", "refused", "failed"):
        assert total(s, "flowherd_batches_total", outcome=outcome) == 0, outcome
    assert total(s, "flowherd_dissect_seconds_count") == st.total_batches
    assert total(s, "flowherd_merge_seconds_count") == st.total_batches
    assert total(s, "flowherd_dissect_seconds_bucket", le="+Inf") == st.total_batches
    assert total(s, "flowherd_merge_seconds_sum") > 0
    assert total(s, "flowherd_batches_in_flight") == 0
    assert total(s, "flowherd_queue_depth", queue=q_name) == 0

    # a merged batch delivered again, a refused one (no payload, never merged), a broken one
    keys = run_of(store, "m")
    q = make_queue(conn, q_name)
    dup = enqueue_batch(q, BatchRef(run=keys.run, seq=0, packets=150, shards=keys.shards), 60, 0)
    refused = enqueue_batch(
        q, BatchRef(run=keys.run, seq=10_000, packets=1, shards=keys.shards), 60, 0
    )
    broken = q.enqueue_call(BATCH_JOB, args=("not json",), result_ttl=60)
    for job in (dup, refused, broken):
        wait_until(_ended(job), 60, f"job {job.id} to end")
    assert dup.get_status() == "finished" and refused.get_status() == "failed"
    s = pool.scrape()
    assert total(s, "flowherd_batches_total", outcome="duplicate") == 1
    assert total(s, "flowherd_batches_total", outcome="refused") == 1
    assert total(s, "flowherd_batches_total", outcome="failed") == 1
    assert total(s, "flowherd_batches_total", outcome="merged") == st.total_batches
    assert total(s, "flowherd_packets_total") == st.packets  # a duplicate adds nothing

    assert pool.stop() == 0
    assert not list(pool.tmp.glob("flowherd-metrics-*"))  # removed when the pool stops


def test_queue_depth_is_sampled_at_scrape_time(conn: Redis) -> None:
    """The pool's own gauges, served in this process: the queue's length when scraped."""
    q = make_queue(conn, f"depth{free_port()}")
    port = free_port()
    with metrics.endpoint("127.0.0.1", port, q, lambda: 3) as url:
        assert os.path.isdir(os.environ[metrics.MULTIPROC_ENV])
        assert total(scrape(url), "flowherd_queue_depth", queue=q.name) == 0
        for i in range(4):
            q.enqueue_call(BATCH_JOB, args=(f"nothing {i}",))
        s = scrape(url)
        assert total(s, "flowherd_queue_depth", queue=q.name) == 4
        assert total(s, "flowherd_worker_processes") == 3
        path = os.environ[metrics.MULTIPROC_ENV]
    assert metrics.MULTIPROC_ENV not in os.environ
    assert not os.path.exists(path)


def test_a_port_in_use_is_one_line_and_exit_1(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run(
            [
                *(sys.executable, "-m", "flowherd.workers", "run", "-n", "1"),
                *("--metrics-port", str(port), "--metrics-host", "127.0.0.1"),
            ],
            env={**os.environ, "FLOWHERD_REDIS_URL": redis_url, "FLOWHERD_QUEUE": "unused"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --metrics-port {port}: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in res.stderr


def test_metrics_are_off_without_the_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PROMETHEUS_MULTIPROC_DIR (no --metrics-port, plain ``rq worker``): the job is called
    as it is, and nothing is recorded."""
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    monkeypatch.setattr(metrics._PerProcess, "pid", None)
    job = metrics.instrumented(lambda ref: {"status": "merged", "packets": len(ref)})
    assert job("abc") == {"status": "merged", "packets": 3}
    assert metrics._PerProcess.metrics is None


def _busy_worker(conn: Redis, queue: str) -> int | None:
    """The pid of a worker of ``queue`` with a batch marked started."""
    q = make_queue(conn, queue)
    for w in Worker.all(queue=q):
        jid = w.get_current_job_id()
        job = q.fetch_job(jid) if jid else None
        if job is not None and job.get_status() == "started" and w.pid:
            return int(w.pid)
    return None


@pytest.mark.slow
@pytest.mark.faults
def test_a_worker_killed_mid_batch_leaves_no_batch_in_flight(
    conn: Redis, store: Store, redis_url: str, tmp_path: Path, fast_pool: Pool
) -> None:
    """Frozen mid-batch, the worker's batch is in flight; killed, the pool replaces it and drops
    its gauge; the batch, re-queued, is merged once by the new worker and counted once."""
    pool = fast_pool
    wait_until(lambda: _ready(pool, 1), 60, "the pool's metrics endpoint")
    path = tmp_path / "s.pcap"
    write_sample(path, flows=300, seed=5)
    settings = settings_for(redis_url, pool.queue, batch_packets=3000)
    submit_with(store, settings, path, "k")
    for _ in range(200):  # a batch takes a fraction of a second: freeze one inside the job
        pid = wait_until(
            lambda: _busy_worker(conn, pool.queue), 60, "a busy worker", poll=0.005, max_poll=0.005
        )
        os.kill(pid, signal.SIGSTOP)
        if total(pool.scrape(), "flowherd_batches_in_flight") == 1:  # the pool's one worker
            break
        os.kill(pid, signal.SIGCONT)
    else:
        pytest.fail("no worker frozen inside a batch")
    os.kill(pid, signal.SIGKILL)
    st = follow_for(store, "k", 120)
    assert st.state is CaptureState.COMPLETE

    def settled() -> Samples | None:
        s = pool.scrape()
        done = total(s, "flowherd_worker_processes") == 1  # the killed one replaced
        return s if done and total(s, "flowherd_batches_in_flight") == 0 else None

    s = wait_until(settled, 60, "the killed worker replaced and its gauge dropped")
    assert total(s, "flowherd_packets_total") == st.packets
    assert total(s, "flowherd_batches_total", outcome="merged") == st.total_batches
