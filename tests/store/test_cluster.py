"""The flow store on a real Redis Cluster (3 masters): same tables as one Redis, flows spread
over every master, exactly once per (batch, shard), lost parts found and sent again."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
from click.testing import CliRunner
from redis import Redis
from redis.cluster import RedisCluster
from rq import Worker
from rq.serializers import JSONSerializer

from flowherd.deploy.cluster import LocalCluster
from flowherd.deploy.queueing import FlowherdJob, make_queue
from flowherd.models.batch import decode_batch
from flowherd.models.capture import BatchRef, CaptureState, CaptureStatus
from flowherd.models.keys import PayloadKeys, RunKeys
from flowherd.models.settings import Settings
from flowherd.producer.cli.main import main as producer_main
from flowherd.producer.run.follow import LocalWorkers, follow
from flowherd.producer.run.gaps import scan
from flowherd.producer.run.resume import resume
from flowherd.producer.run.submit import submit
from flowherd.producer.traces.sample import write_sample
from flowherd.reporter.cli.main import main as reporter_main
from flowherd.store.backend import Store
from flowherd.store.captures import finish_batch, run_of, status
from flowherd.store.tables import table, window_starts
from flowherd.workers.decode.dissect import dissect
from flowherd.workers.fold.aggregate import fold
from flowherd.workers.merge import merge_part, merge_partial, split
from flowherd.workers.worker import FlowherdWorker
from tests.support.cluster import store_env, uni_truth
from tests.support.pipeline import settings_for

pytestmark = [pytest.mark.redis, pytest.mark.cluster]


def _run(store: Store, url: str, settings: Settings, path: Path, name: str) -> CaptureStatus:
    """``path`` through 2 worker processes writing to the store at ``url`` ("": the queue's)."""
    assert settings.redis_url is not None
    with store_env(url), LocalWorkers(settings.redis_url, settings.queue, 2) as w:
        submit(store, make_queue(store.queue, settings.queue), [str(path)], name, settings, True)
        return follow(store, name, poll=0.05, check=w.check)


@pytest.mark.e2e
def test_tables_equal_truth_and_spread_over_every_master(
    cluster_store: Store, cluster: LocalCluster, redis_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=600, seed=3)
    settings = settings_for(redis_url, batch_packets=700, engine="fast")
    st = _run(cluster_store, cluster.url, settings, path, "c")
    assert st.state is CaptureState.COMPLETE, st
    assert uni_truth(cluster_store, "c") == truth
    assert st.packets == sum(v[0] for v in truth.values())
    keys = run_of(cluster_store, "c")
    assert keys.shards == 16  # the cluster default
    assert st.parts_done == [st.total_batches] * 16
    # every master holds flow hashes of this run
    owners: Counter[str] = Counter()
    kv = cast(RedisCluster, cluster_store.kv)
    for sk in keys.all_shards():
        if kv.exists(sk.flows):
            owners[kv.get_node_from_key(sk.flows).name] += 1
    assert len(owners) == 3, owners


def test_parts_merged_once_when_a_worker_dies_between_two(
    cluster_store: Store, tmp_path: Path
) -> None:
    """A batch whose first shard parts were merged before its worker died: the next run of
    the batch merges only the other parts, and counts the batch once."""
    from flowherd.store.captures import register

    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=200, seed=4)
    from flowherd.producer.readers.capture import open_capture

    with open_capture(str(path)) as cap:
        records = list(cap)
    settings = settings_for("redis://unused", shards=8)
    keys = register(cluster_store, "k", [str(path)], settings, False)
    t = fold(records, dissect)
    wholes = split(t, keys.shards, 0)
    for s in range(3):  # the worker merged three parts, then was killed
        assert merge_part(cluster_store, keys.shard(s), 0, wholes[s], {}, 0)[0] == 1
    cluster_store.kv.hset(keys.meta, "total_batches", 1)
    res = merge_partial(cluster_store, keys, 0, t)  # the job's second run
    assert res.status.name == "LAST"
    again = merge_partial(cluster_store, keys, 0, t)  # a third run changes nothing
    assert again.status.name == "DUPLICATE" and again.new_flows == 0
    st = status(cluster_store, "k")
    assert st.packets == len(records) and st.parts_done == [1] * 8
    assert uni_truth(cluster_store, "k") == truth


def _worker(store: Store, queue: str) -> FlowherdWorker:
    return FlowherdWorker(
        [make_queue(store.queue, queue)],
        connection=store.queue,
        serializer=JSONSerializer,
        job_class=FlowherdJob,
    )


def _in_process_worker(store: Store, url: str, queue: str) -> None:
    """Run the queue's jobs to the end in this process (a real RQ worker, burst mode)."""
    with store_env(url):
        _worker(store, queue).work(burst=True, logging_level="WARNING")


def test_lost_part_detected_and_sent_again_by_resume(
    cluster_store: Store, cluster: LocalCluster, redis_url: str, tmp_path: Path
) -> None:
    """The state a failover leaves when a master acknowledged a part but died before its replica
    had it: the run counts the batch, the shard lacks it. Status names the part, the capture
    is not complete, and ``--resume`` sends the batch again: exact totals."""
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=300, seed=6)
    settings = settings_for(redis_url, batch_packets=800, shards=6)
    store = cluster_store
    keys, _ = submit(store, make_queue(store.queue, settings.queue), [str(path)], "l", settings)
    # batch 1 is merged by hand except its part in shard 2
    q = make_queue(store.queue, settings.queue)
    job = q.fetch_job(f"fh-{keys.run}-1")
    assert job is not None
    ref = BatchRef.model_validate_json(job.args[0])
    payload = store.queue.get(PayloadKeys(keys.run).batch(1))
    t = fold(list(decode_batch(cast(bytes, payload))), dissect)
    parts = split(t, keys.shards, ref.seq % keys.shards)
    for s in range(keys.shards):
        if s != 2:
            merge_part(store, keys.shard(s), 1, parts[s], {}, 0)
    assert finish_batch(store, keys, 1) == 1
    store.queue.delete(PayloadKeys(keys.run).batch(1))
    job.delete()
    _in_process_worker(store, cluster.url, settings.queue)
    st = status(store, "l")
    assert st.lost_parts == ["batch 1 shard 2"]
    assert st.state is not CaptureState.COMPLETE
    assert scan(store, keys, st.total_batches or 0).parts == (1,)
    res = CliRunner().invoke(
        producer_main, ["status", "l", "--redis-url", redis_url, "--store-url", cluster.url]
    )
    assert "batch 1 shard 2" in res.output and "--resume" in res.output, res.output
    done = resume(store, [str(path)], "l", settings)
    assert done.resent == (1,)
    _in_process_worker(store, cluster.url, settings.queue)
    st = status(store, "l")
    assert st.state is CaptureState.COMPLETE, st
    assert st.lost_parts == []
    assert uni_truth(store, "l") == truth
    assert st.packets == sum(v[0] for v in truth.values())


@pytest.mark.slow
@pytest.mark.e2e
def test_windows_and_retention_on_the_cluster(
    cluster_store: Store, cluster: LocalCluster, redis_url: str, conn: Redis, tmp_path: Path
) -> None:
    """Per-window tables and --keep retention give the same windows and window tables on the
    cluster as on one Redis."""
    path = tmp_path / "t.pcap"
    write_sample(path, flows=300, seed=8, duration_s=60)
    kw = {"batch_packets": 500, "window": 10.0, "keep_windows": 3}
    one = Store.single(Redis.from_url(redis_url))
    s1 = settings_for(redis_url, **kw)
    s2 = settings_for(redis_url, shards=5, **kw)
    # names with a "-", which no Community ID (base64) in the output can contain
    assert _run(one, "", s1, path, "w-1").state is CaptureState.COMPLETE
    assert _run(cluster_store, cluster.url, s2, path, "w-2").state is CaptureState.COMPLETE
    k1, k2 = run_of(one, "w-1"), run_of(cluster_store, "w-2")
    starts = window_starts(one, k1)
    assert len(starts) == 3 and window_starts(cluster_store, k2) == starts
    for cmd in (["windows"], ["top", "--window", "all", "-n", "50", "--format", "csv"]):
        a = CliRunner().invoke(reporter_main, [*cmd, "w-1", "--redis-url", redis_url])
        b = CliRunner().invoke(
            reporter_main, [*cmd, "w-2", "--redis-url", redis_url, "--store-url", cluster.url]
        )
        assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
        assert a.output.replace("w-1", "w") == b.output.replace("w-2", "w")
    assert len(table(k2, starts[0]).parts) == 5


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.faults
def test_worker_killed_mid_capture_on_the_cluster_exact(
    cluster_store: Store,
    cluster: LocalCluster,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGKILL busy workers again and again while batches merge part by part into 16 shards:
    whatever part each kill interrupted, the totals are exact."""
    monkeypatch.setenv("FLOWHERD_HEARTBEAT", "2")
    monkeypatch.setenv("FLOWHERD_MAINTENANCE_INTERVAL", "1")
    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=400, seed=11)
    settings = settings_for(redis_url, batch_packets=400, max_in_flight=8, retries=10)
    store = cluster_store
    kills = 0
    with store_env(cluster.url), LocalWorkers(redis_url, settings.queue, 2) as w:
        keys, _ = submit(store, make_queue(store.queue, settings.queue), [str(path)], "x", settings)
        deadline = time.monotonic() + 20
        while kills < 3 and time.monotonic() < deadline:
            for wk in Worker.all(connection=store.queue):
                jid = wk.get_current_job_id()
                if jid and jid.startswith(f"fh-{keys.run}-"):
                    try:  # the registry may still list a worker killed a moment ago
                        os.kill(int(wk.pid), signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    kills += 1
                    break
            time.sleep(0.05)
        st = follow(store, "x", poll=0.1, check=w.check)
    assert kills >= 1
    assert st.state is CaptureState.COMPLETE, st
    assert uni_truth(store, "x") == truth
    assert st.packets == sum(v[0] for v in truth.values())


def test_worker_refuses_a_batch_of_another_store(
    cluster_store: Store, cluster: LocalCluster, redis_url: str, tmp_path: Path
) -> None:
    """A worker started without the producer's --store-url would merge into the wrong Redis:
    it refuses the batch instead, with a one-line reason, and nothing is merged."""
    path = tmp_path / "t.pcap"
    write_sample(path, flows=20, seed=2)
    settings = settings_for(redis_url, retries=0)
    store = cluster_store
    keys, _ = submit(store, make_queue(store.queue, settings.queue), [str(path)], "o", settings)
    _in_process_worker(store, "", settings.queue)  # its store: the queue Redis
    st = status(store, "o")
    assert st.state is CaptureState.FAILED and st.packets == 0
    assert "another store" in st.failures[0]
    assert isinstance(keys, RunKeys)


def test_retry_on_the_cluster_after_failed_batches(
    cluster_store: Store, cluster: LocalCluster, redis_url: str, tmp_path: Path
) -> None:
    """Batches that failed for good (their worker wrote to the wrong store) are merged by
    ``producer retry`` once the workers have the right store: complete and exact."""
    from flowherd.producer.run.retry import retry

    path = tmp_path / "t.pcap"
    truth = write_sample(path, flows=100, seed=15)
    settings = settings_for(redis_url, batch_packets=400, retries=0)
    store = cluster_store
    submit(store, make_queue(store.queue, settings.queue), [str(path)], "r", settings)
    _in_process_worker(store, "", settings.queue)  # wrong store: every batch fails
    st = status(store, "r")
    assert st.state is CaptureState.FAILED and st.batches_failed == st.total_batches
    r = retry(store, "r", settings)
    assert len(r.requeued) == st.total_batches and not r.lost
    _in_process_worker(store, cluster.url, settings.queue)
    st = status(store, "r")
    assert st.state is CaptureState.COMPLETE, st
    assert uni_truth(store, "r") == truth


def test_a_node_whose_port_was_taken_starts_on_another(tmp_path: Path) -> None:
    """A port chosen free but bound by someone else before the node starts: the node exits,
    and is started again on another free port that answers."""
    import socket

    from flowherd.deploy.cluster import _free_port, _start_answering

    taken = _free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", taken))
        held.listen()
        cl = LocalCluster(tmp_path, [taken])
        try:
            port = _start_answering(cl, taken, None, "127.0.0.1", 10)
            assert port != taken
            assert cl.ports == [taken]  # the caller records the port it got
            assert list(cl.procs) == [port]
            assert cl.client(port).ping()
        finally:
            cl.stop()
