"""Fixtures of a real Redis Cluster (``redis-server --cluster-enabled yes`` nodes joined with
``redis-cli --cluster create``), for the cluster store's tests. Loaded by conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from redis import Redis
from redis.cluster import RedisCluster

from flowherd.deploy.cluster import LocalCluster, start_cluster
from flowherd.store.backend import Store, open_store


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters, no replicas, for the whole session."""
    cl = start_cluster(tmp_path_factory.mktemp("cluster"), masters=3, replicas=0)
    yield cl
    cl.stop()


def flush_cluster(kv: RedisCluster) -> None:
    kv.flushall(target_nodes=RedisCluster.PRIMARIES)


@pytest.fixture
def cluster_store(redis_url: str, cluster: LocalCluster) -> Iterator[Store]:
    """A store on the cluster beside the session's queue Redis, both flushed around the test."""
    queue = Redis.from_url(redis_url)
    queue.flushall()
    store = open_store(queue, cluster.url)
    flush_cluster(store.kv)
    yield store
    flush_cluster(store.kv)
    queue.flushall()
    store.kv.close()
    queue.close()


@contextmanager
def store_env(url: str) -> Iterator[None]:
    """FLOWHERD_STORE_URL set for the worker processes started inside the block."""
    old = os.environ.get("FLOWHERD_STORE_URL")
    os.environ["FLOWHERD_STORE_URL"] = url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FLOWHERD_STORE_URL", None)
        else:
            os.environ["FLOWHERD_STORE_URL"] = old


def uni_truth(store: Store, name: str) -> dict[tuple[bytes, bytes, int, int, int], list[int]]:
    """The capture's unidirectional table in ``flowherd.producer.traces.sample.Truth``'s form."""
    from flowherd.store.captures import run_of
    from flowherd.store.tables import iter_flows, table

    out: dict[tuple[bytes, bytes, int, int, int], list[int]] = {}
    for k, st in iter_flows(store, table(run_of(store, name))):
        if st.pkts_ab:
            out[k.a_addr, k.b_addr, k.proto, k.a_port, k.b_port] = [st.pkts_ab, st.bytes_ab]
        if st.pkts_ba:
            out[k.b_addr, k.a_addr, k.proto, k.b_port, k.a_port] = [st.pkts_ba, st.bytes_ba]
    return out
