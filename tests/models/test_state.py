"""The one home of a capture's state (flowherd.store.captures): typed meta, the writer's lock, and
status polls whose cost does not grow with other captures' failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis import Redis

from flowherd.deploy.queueing import make_queue
from flowherd.models.capture import CaptureStatus
from flowherd.models.errors import CaptureStateError
from flowherd.models.keys import batch_job_id, job_prefix, seq_of_job
from flowherd.models.state import CaptureMeta, MetaField, SnifferMember, StoredState
from flowherd.producer.live.packet_socket import Counters
from flowherd.producer.live.sniff import drop_fields
from flowherd.producer.run.resume import resume
from flowherd.producer.run.retry import retry
from flowherd.producer.run.submit import submit
from flowherd.producer.traces.sample import write_sample
from flowherd.store.backend import Store
from flowherd.store.captures import failed_job_ids, run_of, set_meta, status
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


FAN = [
    SnifferMember(member=1, pid=4241, packets=1_234_567, drops=12),
    SnifferMember(member=2, pid=4242, packets=5, drops=0, state="died", signal="SIGKILL"),
]


def test_meta_parses_the_sniffer_members() -> None:
    """``members`` is a JSON list in the hash: parsed into one model per sniffer process; the
    optional ``signal`` is left out when it is None; absent, the list is empty."""
    raw = json.dumps([m.model_dump(exclude_none=True) for m in FAN])
    assert json.loads(raw)[0] == {
        "member": 1,
        "pid": 4241,
        "packets": 1_234_567,
        "drops": 12,
        "state": "ok",
    }
    m = CaptureMeta.from_hash(
        {b"kernel_packets": b"1234572", b"kernel_drops": b"12", b"producer_drops": b"3",
         MetaField.MEMBERS.encode(): raw.encode()}
    )  # fmt: skip
    assert m.members == FAN
    assert (m.kernel_packets, m.kernel_drops, m.producer_drops) == (1_234_572, 12, 3)
    assert [x.describe() for x in m.members] == [
        "1,234,567 frames, 12 dropped by the kernel",
        "5 frames, 0 dropped by the kernel; died of SIGKILL",
    ]
    assert FAN[1].label == "process 2 (pid 4242)"
    empty = CaptureMeta.from_hash({})
    assert empty.members == [] and empty.kernel_packets is None and empty.producer_drops is None
    one = {"member": 1, "pid": 1, "packets": 1, "drops": 0}
    for bad in (
        "not json",
        json.dumps([one | {"member": 0}]),  # 1-based
        json.dumps([one | {"drops": -1}]),
        json.dumps([one | {"state": "gone"}]),
        json.dumps([{"member": 1, "pid": 1}]),  # no counters
    ):
        with pytest.raises(ValueError):
            CaptureMeta.from_hash({"members": bad})


def test_status_carries_the_sniff_counters(conn: Redis, redis_url: str, tmp_path: Path) -> None:
    """What the sniff records in the meta hash reaches the status (``producer status --json``,
    the web view, the metrics); a file capture has none of it."""
    store = Store.single(conn)
    path = tmp_path / "t.pcap"
    write_sample(path, flows=30, seed=1)
    settings = settings_for(redis_url)
    submit(store, make_queue(conn, settings.queue), [str(path)], "c", settings)
    st = status(store, "c")
    assert (st.kernel_packets, st.kernel_drops, st.producer_drops, st.members) == (
        None,
        None,
        None,
        [],
    )
    c = Counters(kernel_packets=1_234_572, kernel_drops=12, producer_drops=3)
    set_meta(store, run_of(store, "c"), **drop_fields(c, FAN))
    st = status(store, "c", detail=False)
    assert (st.kernel_packets, st.kernel_drops, st.producer_drops) == (1_234_572, 12, 3)
    assert st.members == FAN
    doc = json.loads(st.model_dump_json())
    assert doc["members"][1] == {"member": 2, "pid": 4242, "packets": 5, "drops": 0,
                                 "state": "died", "signal": "SIGKILL"}  # fmt: skip
    assert CaptureStatus.model_validate_json(st.model_dump_json()) == st
    # a sniff without kernel counters (recvmsg where PACKET_STATISTICS fails) lists no members
    assert drop_fields(Counters(producer_drops=0), []) == {MetaField.PRODUCER_DROPS: 0}


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
