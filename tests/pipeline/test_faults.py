"""Faults survived with exact results: a worker killed mid-batch, a foreign job refused."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Worker

from flowherd.deploy.queueing import make_queue
from flowherd.models.capture import CaptureState
from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.producer.run.submit import submit
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from tests.support.helpers import wait_for_idle_workers, wait_until
from tests.support.pipeline import assert_exact, follow_for, settings_for, table

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.faults]


def _busy_worker(conn: Redis, queue: str, run: str) -> tuple[int, str]:
    """A worker in the middle of a batch of ``run`` (its job marked started), and the job id."""
    q = make_queue(conn, queue)

    def busy() -> tuple[int, str] | None:
        for w in Worker.all(connection=conn):
            jid = w.get_current_job_id()
            if jid and jid.startswith(f"fh-{run}-") and w.queue_names() == [queue]:
                job = q.fetch_job(jid)
                if job is not None and job.get_status() == "started":
                    return int(w.pid), jid
        return None

    return wait_until(busy, 60, "a worker to pick up a batch", poll=0.005, max_poll=0.005)


def _wait_done(job, seconds: float = 60) -> str:  # type: ignore[no-untyped-def]
    """The job's status once a worker has finished or failed it."""

    def done() -> str | None:
        status = job.get_status(refresh=True)
        return status if status in ("finished", "failed") else None

    return wait_until(done, seconds, f"job {job.id} to finish or fail")


@pytest.mark.slow
def test_worker_killed_mid_batch_recounted_once(
    store: Store, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWHERD_HEARTBEAT", "2")
    monkeypatch.setenv("FLOWHERD_MAINTENANCE_INTERVAL", "1")
    path = tmp_path / "t.pcap"
    write_sample(path, flows=300, seed=5)
    settings = settings_for(redis_url, batch_packets=3000)
    expected_settings = settings_for(redis_url, batch_packets=3000)
    with LocalWorkers(redis_url, expected_settings.queue, 2) as w:
        queue = make_queue(store.queue, expected_settings.queue)
        submit(store, queue, [str(path)], "ref", expected_settings)
        assert follow(store, "ref", poll=0.05, check=w.check).state is CaptureState.COMPLETE
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        wait_for_idle_workers(store.queue, settings.queue, 2, w)
        queue = make_queue(store.queue, settings.queue)
        keys, _ = submit(store, queue, [str(path)], "killed", settings)
        pid, jid = _busy_worker(store.queue, settings.queue, keys.run)
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        # a deadline for a stuck recovery only: RQ re-queues the batch within heartbeat +
        # maintenance interval (3 s here), the rest is the load of the machine
        st = follow_for(store, "killed", 120, w)
        recovered_in = time.monotonic() - t0
    with pytest.raises(ProcessLookupError):  # nothing of the pool is left running
        os.killpg(w.proc.pid, 0)
    assert st.state is CaptureState.COMPLETE, st
    assert table(store, "killed") == table(store, "ref")
    assert st.packets == follow(store, "ref").packets
    print(f"worker killed mid-batch: complete and exact {recovered_in:.1f}s after the kill")
    killed_job = make_queue(store.queue, settings.queue).fetch_job(jid)
    assert (
        killed_job is not None and killed_job.retries_left == settings.retries - 1
    )  # it did run twice


def test_foreign_job_function_refused(conn: Redis, redis_url: str, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    settings = settings_for(redis_url)
    q = make_queue(conn, settings.queue)
    job = q.enqueue_call("os.system", args=(f"touch {pwned}",))
    with LocalWorkers(redis_url, settings.queue, 1):
        assert _wait_done(job) == "failed"
    assert "not a flowherd job" in (job.latest_result().exc_string or "")
    assert not pwned.exists()


def test_unknown_schema_and_bad_payload_refused(conn: Redis, redis_url: str) -> None:
    from flowherd.models.keys import BATCH_JOB, PayloadKeys, RunKeys

    settings = settings_for(redis_url)
    q = make_queue(conn, settings.queue)
    keys = RunKeys("abcdef12")
    conn.hset(keys.meta, "state", "submitting")
    conn.set(keys.shard(0).live, "1")  # the run exists: a merge would write
    conn.set(PayloadKeys(keys.run).batch(0), b"GARBAGE" * 10)
    future = q.enqueue_call(
        BATCH_JOB, args=('{"v": 2, "run": "abcdef12", "seq": 0, "packets": 1}',)
    )
    bad = q.enqueue_call(BATCH_JOB, args=('{"v": 1, "run": "abcdef12", "seq": 0, "packets": 1}',))
    with LocalWorkers(redis_url, settings.queue, 1):
        assert _wait_done(future) == "failed"
        assert _wait_done(bad) == "failed"
    assert "validation error" in (future.latest_result().exc_string or "")
    assert "not a flowherd batch" in (bad.latest_result().exc_string or "")
    assert not conn.exists(keys.done)
    assert not any(conn.exists(sk.flows, sk.done) for sk in keys.all_shards())


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_all_workers_killed_and_restarted_mid_capture(
    store: Store, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the whole worker pool while batches are queued and running, start a new one:
    the batches the dead workers held are re-queued, and the totals are exact."""
    monkeypatch.setenv("FLOWHERD_HEARTBEAT", "2")
    monkeypatch.setenv("FLOWHERD_MAINTENANCE_INTERVAL", "1")
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=300, seed=9)
    settings = settings_for(redis_url, batch_packets=100, max_in_flight=8)
    first = LocalWorkers(redis_url, settings.queue, 2)
    try:
        keys, _ = submit(
            store, make_queue(store.queue, settings.queue), [str(path)], "all", settings
        )
    finally:
        os.killpg(first.proc.pid, signal.SIGKILL)  # the pool and its workers: one session
        first.proc.wait(10)
    total = int(store.kv.hget(keys.meta, "total_batches"))  # type: ignore[arg-type]
    assert int(store.kv.scard(keys.done)) < total  # killed mid-capture
    t0 = time.monotonic()
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        st = follow_for(store, "all", 120, w)
    assert_exact(store, "all", st, truth)
    print(f"all workers killed: complete {time.monotonic() - t0:.1f}s after new workers started")


def test_oversized_payload_refused_before_reading(
    conn: Redis,
    store: Store,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rq.serializers import JSONSerializer

    from flowherd.deploy.queueing import FlowherdJob
    from flowherd.store.captures import status
    from flowherd.workers.worker import FlowherdWorker

    monkeypatch.setenv("FLOWHERD_MAX_PAYLOAD", "4096")
    path = tmp_path / "big.pcap"
    write_sample(path, flows=20, seed=2)
    settings = settings_for(redis_url, batch_packets=200, max_in_flight=1000)
    q = make_queue(conn, settings.queue)
    keys, _ = submit(store, q, [str(path)], "big", settings)
    worker = FlowherdWorker([q], connection=conn, serializer=JSONSerializer, job_class=FlowherdJob)
    with caplog.at_level("INFO", logger="rq"):
        worker.work(burst=True)  # a real RQ worker, in this process, until the queue is empty
    failures = status(store, "big").failures
    assert failures and all("over the limit of 4096" in f for f in failures)
    assert len(failures) == int(conn.hget(keys.meta, "enqueued") or 0)
    assert not [r for r in caplog.records if "retry" in r.getMessage()]  # refused for good
    assert not any(conn.exists(sk.flows) for sk in keys.all_shards())


PWNED_ENV = "FLOWHERD_TEST_PWNED"  # where mark_pwned writes (set for the worker processes)


def mark_pwned(*args: object) -> None:
    """A callback a hostile client would name: it must never run in a flowherd worker."""
    Path(os.environ[PWNED_ENV]).write_text("ran")


def test_foreign_callbacks_never_run(
    conn: Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rq import Callback

    from flowherd.models.keys import BATCH_JOB

    pwned = tmp_path / "callback-ran"
    monkeypatch.setenv(PWNED_ENV, str(pwned))
    settings = settings_for(redis_url)
    q = make_queue(conn, settings.queue)
    name = f"{__name__}.mark_pwned"
    bad = q.enqueue_call(
        BATCH_JOB, args=("not json",), on_failure=Callback(name), on_success=Callback(name)
    )
    with LocalWorkers(redis_url, settings.queue, 1):
        assert _wait_done(bad) == "failed"
    assert not pwned.exists()


@pytest.mark.slow
def test_batch_merged_but_not_marked_finished_counts_once(
    conn: Redis, store: Store, redis_url: str, tmp_path: Path
) -> None:
    """The state a worker killed between its merge and RQ's bookkeeping leaves: the batch is
    merged (payload deleted, done-marker set) but its job is still queued. Running the job again
    changes nothing, and the capture completes with exact totals."""
    from flowherd.models.capture import BatchRef
    from flowherd.models.keys import PayloadKeys, batch_job_id
    from flowherd.workers.jobs import _process

    path = tmp_path / "t.pcap"
    write_sample(path, flows=40, seed=8)
    ref_settings = settings_for(redis_url, batch_packets=300)
    with LocalWorkers(redis_url, ref_settings.queue, 1) as w:
        submit(store, make_queue(conn, ref_settings.queue), [str(path)], "ref", ref_settings)
        expected = follow(store, "ref", poll=0.05, check=w.check)
    settings = settings_for(redis_url, batch_packets=300)
    q = make_queue(conn, settings.queue)
    keys, _ = submit(store, q, [str(path)], "half", settings)  # no workers yet: all queued
    job = q.fetch_job(batch_job_id(keys.run, 0))
    assert job is not None
    ref = BatchRef.model_validate_json(job.args[0])
    assert (
        _process(store, job.args[0], settings.queue)["status"] == "merged"
    )  # the dying worker's merge
    assert conn.get(PayloadKeys(keys.run).batch(ref.seq)) is None
    assert conn.sismember(keys.done, "0")  # counted for the run, and merged in every shard
    assert all(conn.sismember(sk.done, "0") for sk in keys.all_shards())
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        st = follow(store, "half", poll=0.05, check=w.check)
    assert job.get_status(refresh=True) == "finished"
    assert job.return_value() == {"status": "duplicate"}
    assert st.state is CaptureState.COMPLETE
    assert (st.packets, st.bytes, st.flows) == (expected.packets, expected.bytes, expected.flows)
    assert table(store, "half") == table(store, "ref")
