"""Flow timeouts under faults: killed producer and workers, a failed batch retried. The
records stay exactly the sorted pass (each batch's segments count once)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis

from flowherd.deploy.queueing import make_queue
from flowherd.models.capture import CaptureState
from flowherd.models.keys import PayloadKeys, batch_job_id
from flowherd.models.records import Timeouts
from flowherd.producer.run.follow import LocalWorkers
from flowherd.producer.run.submit import submit
from flowherd.store.backend import Store
from flowherd.store.captures import run_of
from tests.conftest import ROOT
from tests.pipeline.test_timeouts_pipeline import S, reference, stored, write_trace
from tests.support.helpers import invoke, let_lease_run_out, wait_until
from tests.support.pipeline import follow_for, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(240)]

T = Timeouts(2 * S, 10 * S)


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "bursty.pcap"
    write_trace(path, seed=5)
    return path


def test_producer_killed_then_resumed(
    conn: Redis, store: Store, redis_url: str, trace: Path
) -> None:
    """`producer submit --idle-timeout --active-timeout` killed while it waits for workers;
    `--resume` (which takes no timeouts: the capture keeps its own) completes it exactly."""
    queue = f"tk{os.getpid()}"
    cmd = [sys.executable, "-m", "flowherd.producer", "submit", str(trace), "--name", "k"]
    cmd += ["--redis-url", redis_url, "--queue", queue, "--batch-packets", "20"]
    cmd += ["--max-in-flight", "3", "--no-wait", "--idle-timeout", "2", "--active-timeout", "10s"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: conn.hexists("fh:captures", "k"), 60, "the capture to be registered")
        keys = run_of(store, "k")
        jid = batch_job_id(keys.run, 2)
        q = make_queue(conn, queue)
        wait_until(lambda: jid in q.job_ids, 60, "batch 2's job queued")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert conn.hget(keys.meta, "idle_ns") == str(T.idle_ns).encode()
    let_lease_run_out(conn, keys)
    with LocalWorkers(redis_url, queue, 2) as w:
        res = invoke(["submit", "--resume", "k", str(trace), "--redis-url", redis_url])
        assert res.exit_code == 0, res.output
        st = follow_for(store, "k", 120, w)
    assert st.state is CaptureState.COMPLETE and st.total_batches > 5
    assert stored(store, "k") == reference(trace, T)


def test_failed_batch_retried(conn: Redis, store: Store, redis_url: str, trace: Path) -> None:
    """A batch that fails for good leaves the capture without records (the readers show its
    conversations); once `producer retry` merged it, the records are exact."""
    settings = settings_for(redis_url, batch_packets=25, retries=0, engine="fast")
    q = make_queue(store.queue, settings.queue)
    keys, _ = submit(store, q, [str(trace)], "f", settings, timeouts=T)
    payload = PayloadKeys(keys.run).batch(1)
    good = store.queue.get(payload)
    store.queue.set(payload, b"BROKEN" * 8)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        assert follow_for(store, "f", 60, w).state is CaptureState.FAILED
        assert not conn.exists(keys.records)
        assert all(len(v) == 1 for v in stored(store, "f").values())  # conversations
        store.queue.set(payload, good)
        res = invoke(["retry", "f", "--redis-url", redis_url])
        assert res.exit_code == 0, res.output
        st = follow_for(store, "f", 60, w)
    assert st.state is CaptureState.COMPLETE
    assert stored(store, "f") == reference(trace, T)


@pytest.mark.slow
def test_all_workers_killed_mid_capture(
    store: Store, redis_url: str, trace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the worker pool mid-capture and start another: batches the dead workers held
    run again, write the same segments again, and every one counts once."""
    monkeypatch.setenv("FLOWHERD_HEARTBEAT", "2")
    monkeypatch.setenv("FLOWHERD_MAINTENANCE_INTERVAL", "1")
    settings = settings_for(redis_url, batch_packets=10, max_in_flight=8, shards=3)
    first = LocalWorkers(redis_url, settings.queue, 2)
    try:
        keys, _ = submit(
            store,
            make_queue(store.queue, settings.queue),
            [str(trace)],
            "all",
            settings,
            timeouts=T,
        )
    finally:
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
    total = int(store.kv.hget(keys.meta, "total_batches"))  # type: ignore[arg-type]
    assert int(store.kv.scard(keys.done)) < total  # killed mid-capture
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        st = follow_for(store, "all", 120, w)
    assert st.state is CaptureState.COMPLETE
    assert stored(store, "all") == reference(trace, T)
