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
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    ConnectionError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

from flowherd.deploy.connect import command_retry, connect, redact, until_reached
from flowherd.models.errors import BackendError

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


#: seconds a cluster client keeps retrying a command through a failover (the cluster's node
#: timeout, an election and a new slot map; `cluster-node-timeout` is 15 s by default)
FAILOVER_WAIT_S = 30.0


def _transient(exc: BaseException) -> bool:
    """An error a failover causes and ends: a refused or lost connection, a slot without a
    master for now, a cluster that cannot be reached yet."""
    if isinstance(exc, ConnectionError | TimeoutError | ClusterDownError | TryAgainError):
        return not isinstance(exc, AuthenticationError)
    return type(exc) in (RedisClusterException, SlotNotCoveredError)


def _with_backoff(call: Any, wait: float) -> Any:
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        try:
            return call()
        except Exception as exc:
            if not _transient(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class _Pipeline:
    """A cluster pipeline that can be sent again: it records the commands and, when sending
    fails for a failover, builds a fresh pipeline of them after a pause (flowherd's pipelines
    are reads, or writes that are idempotent: absolute values, script calls guarded by
    done-markers)."""

    def __init__(self, client: FailoverCluster, transaction: bool | None) -> None:
        self._client, self._transaction = client, transaction
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> _Pipeline:
            self._calls.append((name, args, kwargs))
            return self

        return record

    def execute(self) -> list[Any]:
        def send() -> list[Any]:
            p = RedisCluster.pipeline(self._client, transaction=self._transaction)  # type: ignore[no-untyped-call]
            for name, args, kwargs in self._calls:
                getattr(p, name)(*args, **kwargs)
            try:
                return list(p.execute())
            finally:
                p.reset()

        try:
            return list(_with_backoff(send, self._client.failover_wait))
        finally:
            self._calls = []

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._calls = []


class FailoverCluster(RedisCluster):
    """A Redis Cluster client that waits out a failover: a command (script calls included) or a
    pipeline that fails for want of a master is sent again with exponential backoff (50 ms to
    1 s) for up to ``failover_wait`` seconds. redis-py alone retries at once, so its retries
    are spent before a replica has been promoted. Every command flowherd sends to the store is
    safe to repeat (see :class:`_Pipeline`)."""

    failover_wait: float = FAILOVER_WAIT_S

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        call = super().execute_command
        return _with_backoff(lambda: call(*args, **kwargs), self.failover_wait)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        return _Pipeline(self, transaction)


def connect_cluster(url: str, wait: float = 10.0) -> RedisCluster:
    """A Redis Cluster client from ``redis+cluster://`` (or ``rediss+cluster://``), checked by
    reading the cluster's slot map. Retries reaching it for ``wait`` seconds, then raises
    :class:`BackendError` naming the nodes (password redacted)."""
    try:
        nodes, opts = _cluster_nodes(url)
    except ValueError as exc:
        raise BackendError(f"invalid Redis Cluster URL {redact(url)}: {exc}") from None

    def reach() -> RedisCluster:
        client = FailoverCluster(
            startup_nodes=nodes,
            socket_connect_timeout=max(1.0, min(wait, 5.0)),
            socket_timeout=15.0,  # longer than a WAIT (workers/merge.py)
            socket_keepalive=True,
            # a failover takes the cluster's node timeout and an election: keep trying
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), command_retry(wait).get_retries()),
            **opts,
        )
        # the first contact has its own deadline (until_reached), not the failover wait
        RedisCluster.execute_command(client, "PING", target_nodes=RedisCluster.PRIMARIES)  # type: ignore[no-untyped-call]
        return client

    return until_reached(
        reach,
        wait,
        f"the Redis Cluster at {redact(url)}",
        (AuthenticationError, ResponseError),
        (RedisError, RedisClusterException),
    )


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
