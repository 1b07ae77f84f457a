"""A producer killed mid-submit and resumed; failed and lost batches retried; a capture never
complete while a batch is missing or failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from flowherd.deploy.queueing import FlowherdJob, make_queue
from flowherd.models.capture import CaptureState
from flowherd.models.keys import PayloadKeys, batch_job_id
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from flowherd.store.captures import run_of, status
from tests.support.helpers import (
    invoke,
    let_lease_run_out,
    wait_for_queue_drained,
    wait_until,
)
from tests.support.pipeline import assert_exact, follow_for, settings_for, submit_with

# a hang guard above the tests' own deadlines, so those fail first
pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


def test_producer_killed_mid_submit_resumes_exactly(
    conn: Redis, store: Store, redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL `producer submit` while it waits for workers, and make its last batch look as
    if it died between storing the payload and enqueuing the job; `--resume` enqueues that
    job, sends the rest, and the totals are exact: no batch twice, none missing."""
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=150, seed=31)
    queue = f"kill{os.getpid()}"
    cmd = [sys.executable, "-m", "flowherd.producer", "submit", str(path), "--name", "k"]
    cmd += ["--redis-url", redis_url, "--queue", queue, "--batch-packets", "200"]
    cmd += ["--max-in-flight", "3", "--no-wait"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: conn.hexists("fh:captures", "k"), 60, "the capture to be registered")
        keys = run_of(store, "k")
        wait_until(lambda: conn.hget(keys.meta, "enqueued") == b"3", 60, "three batches queued")
        jid = batch_job_id(keys.run, 2)
        q = make_queue(conn, queue)
        # batch 2's job queued: the producer is now blocked in backpressure (3 in flight, no
        # workers), before anything of batch 3
        wait_until(lambda: jid in q.job_ids, 60, "batch 2's job queued")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert status(store, "k").state is CaptureState.SUBMITTING
    # the kill came between SET batch:2 and its enqueue
    conn.delete(FlowherdJob.key_for(jid))
    conn.lrem(q.key, 0, jid)
    # the dead producer's run lock holds off a resume until its lease runs out
    res = invoke(["submit", "--resume", "k", str(path), "--redis-url", redis_url])
    assert res.exit_code == 1 and "being written by another producer" in res.output, res.output
    let_lease_run_out(conn, keys)

    with LocalWorkers(redis_url, queue, 2) as w:
        res = invoke(["submit", "--resume", "k", str(path), "--redis-url", redis_url])
        assert res.exit_code == 0, res.output
        st = follow_for(store, "k", 60, w)
    total = st.total_batches
    assert total == -(-st.packets // 200)
    assert f"resumed 'k': re-sent batch 2, sent {total - 3} more; {total} batches" in res.output
    assert_exact(store, "k", st, truth)


def test_resume_refused_for_complete_capture_and_other_files(
    conn: Redis, store: Store, redis_url: str, tmp_path: Path
) -> None:
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    write_sample(a, flows=20, seed=1)
    write_sample(b, flows=20, seed=2)
    settings = settings_for(redis_url, batch_packets=100)
    submit_with(store, settings, a, "done")
    with LocalWorkers(redis_url, settings.queue, 1) as w:
        assert follow_for(store, "done", 60, w).state is CaptureState.COMPLETE
    url = ["--redis-url", redis_url]

    res = invoke(["submit", "--resume", "done", str(a), *url])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "error: capture 'done' is complete: nothing to resume (use --replace to submit it again)"
    )
    conn.hset(run_of(store, "done").meta, "state", "aborted")  # as if interrupted
    for files, expect in (
        ([b], f"--resume done: {b} is not the file the capture was submitted from ({a})"),
        ([a, b], "the capture was submitted from 1 file(s)"),
    ):
        res = invoke(["submit", "--resume", "done", *map(str, files), *url])
        assert res.exit_code == 1 and expect in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    res = invoke(["submit", "--resume", "nope", str(a), *url])
    assert res.exit_code == 1 and "no capture named 'nope'" in res.output
    res = invoke(["submit", "--resume", "done", "--name", "x", str(a), *url])
    assert res.exit_code == 2 and "--resume NAME names the capture" in res.output


def test_failed_batch_never_complete_until_retried(
    conn: Redis, store: Store, redis_url: str, tmp_path: Path
) -> None:
    """A batch that fails for good keeps the capture FAILED (not complete, not reported
    complete); `producer status` names it with its error; `producer retry` re-runs it."""
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=100, seed=32)
    settings = settings_for(redis_url, batch_packets=200, retries=0)
    submit_with(store, settings, path, "f")
    keys = run_of(store, "f")
    payload = PayloadKeys(keys.run).batch(1)
    good = store.queue.get(payload)
    store.queue.set(payload, b"BROKEN" * 8)  # a transient corruption, say
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        assert follow_for(store, "f", 60, w).state is CaptureState.FAILED
        total = int(conn.hget(keys.meta, "total_batches"))  # type: ignore[arg-type]
        wait_until(lambda: conn.scard(keys.done) == total - 1, 60, "the other batches merged")
        # all the workers would do is done: a report, if one were wrongly claimed, is written
        wait_for_queue_drained(conn, settings.queue, 2, w)
        st = status(store, "f")
        assert st.batches_failed == 1 and st.batches_done == total - 1
        assert st.state is CaptureState.FAILED and not conn.exists(keys.report)
        res = invoke(["status", "f", "--redis-url", redis_url])
        assert res.exit_code == 0
        assert f"fh-{keys.run}-1" in res.output and "not a flowherd batch" in res.output
        store.queue.set(payload, good)
        res = invoke(["retry", "f", "--redis-url", redis_url])
        assert res.exit_code == 0 and res.output.strip() == "f: requeued failed batch 1"
        st = follow_for(store, "f", 60, w)
    assert_exact(store, "f", st, truth)
    res = invoke(["retry", "f", "--redis-url", redis_url])
    assert res.exit_code == 1 and "is complete: nothing to retry" in res.output


def test_lost_payload_needs_resume_and_gets_exactly_it(
    conn: Redis, store: Store, redis_url: str, tmp_path: Path
) -> None:
    """A payload Redis no longer holds: its job fails, the capture is FAILED, `status` and
    `retry` say it is lost and that --resume sends it; --resume sends that batch only."""
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=100, seed=33)
    settings = settings_for(redis_url, batch_packets=200, retries=0)
    submit_with(store, settings, path, "lp")
    keys = run_of(store, "lp")
    store.queue.delete(PayloadKeys(keys.run).batch(2))
    url = ["--redis-url", redis_url]
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        assert follow_for(store, "lp", 60, w).state is CaptureState.FAILED
        total = int(conn.hget(keys.meta, "total_batches"))  # type: ignore[arg-type]
        wait_until(lambda: conn.scard(keys.done) == total - 1, 60, "the other batches merged")
        st = status(store, "lp")
        assert st.state is CaptureState.FAILED and st.batches_failed == 1
        res = invoke(["status", "lp", *url])
        assert "missing: batch 2 was lost by Redis" in res.output, res.output
        res = invoke(["status", "lp", "--json", *url])
        assert "missing: batch 2 was lost by Redis" in res.output
        res = invoke(["retry", "lp", *url])
        assert res.exit_code == 1
        assert (
            "error: batch 2 of 'lp' was lost by Redis; send again with `producer submit --resume lp"
            in (res.output)
        )
        res = invoke(["submit", "--resume", "lp", str(path), *url])
        assert res.exit_code == 0, res.output
        assert f"re-sent batch 2, sent 0 more; {total} batches" in res.output
        st = follow_for(store, "lp", 60, w)
    assert_exact(store, "lp", st, truth)
