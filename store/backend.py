"""The two Redis roles of flowherd, and the clients that reach them.

* the **queue** Redis (``--redis-url``): RQ's queues and registries, and the raw batch payloads.
  RQ needs one Redis (its job keys and queues are not cluster-aware), and a payload is written
  once and read once, next to the job that names it, so it travels with the queue;
* the **store** (``--store-url``, by default the queue's Redis): the captures, their state,
  flow tables and reports. It may be a Redis Cluster (``redis+cluster://host:port,...``), where
  a run's table is partitioned into shards spread over the masters.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.retry import Retry

from deploy.connect import command_retry, connect, redact
from models.errors import BackendError

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
#: shards of a new run on a Redis Cluster when none are asked for
CLUSTER_SHARDS = 16

KV = Redis | RedisCluster


@dataclass(frozen=True)
class Store:
    """The queue Redis and the store of one process (the same client on a single Redis)."""

    queue: Redis
    kv: Any  # Redis | RedisCluster (redis-py's stubs give both the same command methods)
    cluster: bool = False
    #: the store's URL with its password redacted, for messages
    where: str = ""

    def default_shards(self, asked: int | None) -> int:
        if asked is not None:
            return asked
        return CLUSTER_SHARDS if self.cluster else 1

    @classmethod
    def single(cls, conn: Redis, where: str = "") -> Store:
        """Queue and store on one Redis."""
        return cls(queue=conn, kv=conn, cluster=False, where=where)


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _cluster_nodes(url: str) -> tuple[list[ClusterNode], dict[str, Any]]:
    """Startup nodes and client options of ``redis+cluster://[user:pw@]h:p[,h:p...]``."""
    scheme, rest = url.split("://", 1)
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    opts: dict[str, Any] = {}
    if "@" in netloc:
        cred, netloc = netloc.rsplit("@", 1)
        user, sep, pw = cred.partition(":")
        if sep:
            opts["username"] = unquote(user) or None
            opts["password"] = unquote(pw)
        else:
            opts["password"] = unquote(user)
    for k, v in parse_qs(query).items():
        if k == "password":
            opts["password"] = v[-1]
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only")
    nodes = []
    for part in filter(None, netloc.split(",")):
        split = urlsplit(f"//{part}")
        if not split.hostname:
            raise ValueError(f"no host in {part!r}")
        nodes.append(ClusterNode(split.hostname, split.port or 6379))  # type: ignore[no-untyped-call]
    if not nodes:
        raise ValueError("no host:port given")
    if scheme.lower() == "rediss+cluster":
        opts["ssl"] = True
    return nodes, opts


def connect_cluster(url: str, wait: float = 10.0) -> RedisCluster:
    """A Redis Cluster client from ``redis+cluster://`` (or ``rediss+cluster://``), checked by
    reading the cluster's slot map. Retries reaching it for ``wait`` seconds, then raises
    :class:`BackendError` naming the nodes (password redacted)."""
    try:
        nodes, opts = _cluster_nodes(url)
    except ValueError as exc:
        raise BackendError(f"invalid Redis Cluster URL {redact(url)}: {exc}") from None
    deadline = time.monotonic() + wait
    delay = 0.1
    while True:
        try:
            client = RedisCluster(
                startup_nodes=nodes,
                socket_connect_timeout=max(1.0, min(wait, 5.0)),
                socket_timeout=15.0,  # longer than a WAIT (workers/store.py)
                socket_keepalive=True,
                # a failover takes the cluster's node timeout and an election: keep trying
                retry=Retry(
                    ExponentialBackoff(cap=1.0, base=0.05), command_retry(wait).get_retries()
                ),
                **opts,
            )
            client.ping(target_nodes=RedisCluster.PRIMARIES)
            return client
        except (AuthenticationError, ResponseError) as exc:
            raise BackendError(
                f"Redis Cluster at {redact(url)} refused the connection: {exc}"
            ) from None
        except RedisError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(
                    f"cannot reach the Redis Cluster at {redact(url)} after {wait:g}s: {exc}"
                ) from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


def open_store(queue: Redis, store_url: str | None, wait: float = 10.0) -> Store:
    """The store of ``store_url`` beside the ``queue`` client (the queue itself when None)."""
    if not store_url:
        return Store.single(queue)
    if is_cluster_url(store_url):
        return Store(queue, connect_cluster(store_url, wait), cluster=True, where=redact(store_url))
    return Store(queue, connect(store_url, wait), cluster=False, where=redact(store_url))


_WORKER_STORES: dict[tuple[int, str], Store] = {}
_WORKER_LOCK = threading.Lock()


def store_for_job(queue: Redis, store_url: str | None) -> Store:
    """The store a worker process writes to, built once per process and queue client (jobs run
    one after another in a worker, each with the worker's own queue connection)."""
    if not store_url:
        return Store.single(queue)
    key = (id(queue), store_url)
    with _WORKER_LOCK:
        st = _WORKER_STORES.get(key)
        if st is None:
            st = _WORKER_STORES[key] = open_store(queue, store_url)
        return st
