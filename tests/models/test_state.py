"""The one home of a capture's state (flowherd.store.captures): typed meta, the writer's lock, and
status polls whose cost does not grow with other captures' failures."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from flowherd.deploy.queueing import make_queue
from flowherd.models.errors import CaptureStateError
from flowherd.models.keys import batch_job_id, job_prefix, seq_of_job
from flowherd.models.state import CaptureMeta, StoredState
from flowherd.producer.run.resume import resume
from flowherd.producer.run.retry import retry
from flowherd.producer.run.submit import submit
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from flowherd.store.captures import failed_job_ids, run_of, status
from flowherd.store.lock import RunLock
from tests.support.helpers import wait_until
from tests.support.pipeline import settings_for

pytestmark = [pytest.mark.redis]


def test_meta_parses_the_stored_hash() -> None:
    m = CaptureMeta.from_hash({b"state": b"processing", b"enqueued": b"7", b"total_batches": b"9"})
    assert (m.state, m.enqueued, m.total_batches, m.closed, m.upto) == (
        StoredState.PROCESSING,
        7,
        9,
        True,
        9,
    )
    assert CaptureMeta.from_hash({}).upto == 0 and not CaptureMeta.from_hash({}).closed
    with pytest.raises(ValueError):
        CaptureMeta.from_hash({"state": "nonsense"})


def test_job_ids_round_trip() -> None:
    assert seq_of_job("ab12", batch_job_id("ab12", 41)) == 41
    assert seq_of_job("ab12", f"{job_prefix('ab12')}report") is None
    assert seq_of_job("ab12", batch_job_id("ffff", 3)) is None


def test_resume_and_retry_refused_while_another_producer_writes(
    conn: Redis, redis_url: str, tmp_path: Path
) -> None:
    store = Store.single(conn)
    path = tmp_path / "t.pcap"
    write_sample(path, flows=30, seed=1)
    settings = settings_for(redis_url)
    submit(store, make_queue(conn, settings.queue), [str(path)], "c", settings)
    keys = run_of(store, "c")
    with RunLock(store, keys, "c"):  # a producer still writing the capture
        with pytest.raises(CaptureStateError, match="being written by another producer"):
            resume(store, [str(path)], "c", settings)
        with pytest.raises(CaptureStateError, match="being written by another producer"):
            retry(store, "c", settings)
    assert retry(store, "c", settings).requeued == ()  # free again once it is released


def test_lock_expires_when_its_holder_died(conn: Redis) -> None:
    store = Store.single(conn)
    from flowherd.models.keys import RunKeys

    keys = RunKeys("00112233")
    RunLock(store, keys, "x", ttl=0.2).acquire()  # never released: the holder was killed
    with pytest.raises(CaptureStateError):
        RunLock(store, keys, "x").acquire()
    conn.pexpire(keys.lock, 1)  # what the lease's expiry does after ttl
    wait_until(lambda: not conn.exists(keys.lock), 10, "the lock to expire")
    RunLock(store, keys, "x").acquire().release()
    assert not conn.exists(keys.lock)


def test_status_polls_do_not_read_other_captures_failures(
    conn: Redis, redis_url: str, tmp_path: Path
) -> None:
    """20,000 failed jobs of other captures in the queue's failed registry: a status poll and a
    backpressure check read only this capture's (filtered on the server)."""
    store = Store.single(conn)
    path = tmp_path / "t.pcap"
    write_sample(path, flows=30, seed=1)
    settings = settings_for(redis_url)
    submit(store, make_queue(conn, settings.queue), [str(path)], "c", settings)
    reg = f"rq:failed:{settings.queue}"
    for i in range(0, 20_000, 5000):
        conn.zadd(reg, {f"fh-{'e' * 16}-{j}": 1e10 for j in range(i, i + 5000)})
    conn.zadd(reg, {batch_job_id(run_of(store, "c").run, 0): 1e10})
    before = int(conn.info("stats")["total_net_output_bytes"])
    st = status(store, "c", detail=False)
    ids = failed_job_ids(conn, settings.queue, st.run)
    sent = int(conn.info("stats")["total_net_output_bytes"]) - before
    assert st.batches_failed == 1 and ids == [batch_job_id(st.run, 0)]
    assert sent < 30_000, sent  # listing the registry would send about 600 kB
