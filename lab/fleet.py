"""flowherd's roles on a :class:`flowherd.lab.hosts.Lan`: a :class:`Fleet` of hosts (the
scenarios run on it: :mod:`flowherd.lab.scenarios`).

A Redis host (password, real TCP), a producer host and worker hosts, each running
``workers run -n 1``: the installed console scripts, run as an operator runs them, with the
URL in the environment (FLOWHERD_REDIS_URL), never on a command line. The controlling process
reads Redis only to follow progress and to find a busy worker; tables are compared as
``reporter flows --format csv --order rank`` prints them, byte for byte, against a run on one
host.
Heartbeat and maintenance are 2 s and 1 s, so a lost batch is re-queued within seconds.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from redis import Redis
from rq import Worker
from rq.worker import BaseWorker

from flowherd.deploy.connect import connect
from flowherd.deploy.queueing import make_queue
from flowherd.lab.hosts import Host, Lan, RedisNode, script
from flowherd.models.capture import CaptureState, CaptureStatus
from flowherd.store.backend import Store, open_store
from flowherd.store.captures import status

T = TypeVar("T")
FAST = {"FLOWHERD_HEARTBEAT": "2", "FLOWHERD_MAINTENANCE_INTERVAL": "1"}
FINAL = (CaptureState.COMPLETE, CaptureState.FAILED, CaptureState.ABORTED)
BATCH = 500  # frames per batch: ~20 jobs of a tenth of a second or more


def capture_status(conn: Redis | Store, name: str) -> CaptureStatus:
    store = conn if isinstance(conn, Store) else Store.single(conn)
    return status(store, name, detail=False)


def wait_for(what: str, check: Callable[[], T | None], timeout: float, poll: float = 0.05) -> T:
    """Poll ``check`` until it returns something true, and return it; AssertionError after
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:g}s")
        time.sleep(poll)


@dataclass
class Fleet:
    """One Redis host, one producer host, worker hosts; one queue (one per scenario)."""

    lan: Lan
    redis: RedisNode
    producer: Host
    hosts: list[Host]
    queue: str = "flowherd"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: the flow store when it is not the queue's Redis (a Redis Cluster on its own host)
    store_url: str | None = None

    @classmethod
    def build(cls, lan: Lan, workers: int = 3) -> Fleet:
        redis = RedisNode(lan.add_host("redis"))
        redis.start()
        producer = lan.add_host("producer")
        return cls(lan, redis, producer, [lan.add_host(f"worker{i + 1}") for i in range(workers)])

    def on_queue(self, queue: str) -> Fleet:
        return dataclasses.replace(self, queue=queue, procs={})

    @classmethod
    def build_cluster(cls, lan: Lan, workers: int = 3, masters: int = 3) -> Fleet:
        """Like :meth:`build`, plus a ``store`` host running a Redis Cluster of ``masters``
        nodes (one password, real TCP) that holds the flow tables."""
        fleet = cls.build(lan, workers)
        host = lan.add_host("store")
        pw = fleet.redis.password
        nodes = [
            RedisNode(
                host,
                7000 + i,
                pw,
                [
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    "cluster-node-timeout 3000",
                    f"masterauth {pw}",
                ],
            )
            for i in range(masters)
        ]
        for n in nodes:
            n.start()
        res = host.run(
            ["redis-cli", "--cluster", "create", *[f"{host.addr}:{n.port}" for n in nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            env={"REDISCLI_AUTH": pw},
        )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create: {res.stdout!r} {res.stderr!r}")
        nodes_txt = ",".join(f"{host.addr}:{n.port}" for n in nodes)
        fleet.store_url = f"redis+cluster://:{pw}@{nodes_txt}"
        wait_for("cluster ok", lambda: fleet.store().kv.cluster_info()["cluster_state"] == "ok", 30)
        return fleet

    @property
    def env(self) -> dict[str, str]:
        env = {"FLOWHERD_REDIS_URL": self.redis.url, "FLOWHERD_QUEUE": self.queue, **FAST}
        if self.store_url:
            env["FLOWHERD_STORE_URL"] = self.store_url
        return env

    def store(self) -> Store:
        """The flow store as the producer sees it (the queue's Redis, or the cluster)."""
        return open_store(self.conn(), self.store_url)

    def conn(self) -> Redis:
        return connect(self.redis.url)

    # --- workers --------------------------------------------------------------------------

    def start_workers(self, hosts: Iterable[Host] | None = None) -> None:
        for h in self.hosts if hosts is None else hosts:
            self.procs[h.role] = h.popen([script("workers"), "run", "-n", "1", "-v"], env=self.env)

    def host_of(self, w: BaseWorker) -> Host | None:
        addr = (w.ip_address or "").rsplit(":", 1)[0]
        return next((h for h in self.hosts if h.addr == addr), None)

    def live_workers(self) -> dict[str, list[BaseWorker]]:
        """The queue's registered workers whose process is alive, by host role."""
        out: dict[str, list[BaseWorker]] = {h.role: [] for h in self.hosts}
        pids = {h.role: set(h.pids()) for h in self.hosts}
        for w in Worker.all(queue=make_queue(self.conn(), self.queue)):
            h = self.host_of(w)
            if h is not None and w.pid in pids[h.role]:
                out[h.role].append(w)
        return out

    def wait_workers(self, hosts: Iterable[Host] | None = None, timeout: float = 60) -> None:
        """Until each host has a live worker waiting for jobs."""
        roles = [h.role for h in (self.hosts if hosts is None else hosts)]

        def ready() -> bool:
            live = self.live_workers()
            return all(any(w.get_state() == "idle" for w in live[r]) for r in roles)

        wait_for("workers registered", ready, timeout, poll=0.2)

    def busy(self, host: Host, timeout: float = 30) -> tuple[str, int]:
        """(job id, worker pid) of a batch the worker on ``host`` is running (marked started)."""
        q = make_queue(self.conn(), self.queue)

        def started() -> tuple[str, int] | None:
            for w in Worker.all(queue=q):
                jid = w.get_current_job_id()
                if jid and w.pid and self.host_of(w) is host:
                    job = q.fetch_job(jid)
                    if job is not None and job.get_status() == "started":
                        return jid, w.pid
            return None

        return wait_for(f"a batch busy on {host.role}", started, timeout, poll=0.005)

    def freeze_busy(self, host: Host, timeout: float = 30) -> tuple[str, int]:
        """Stop (SIGSTOP) the worker of ``host`` in the middle of a batch; return the batch's
        job id and the worker's pid, for the caller to kill or continue (SIGCONT). A batch
        takes milliseconds, so freezing it is how "mid-batch" is made certain."""
        q = make_queue(self.conn(), self.queue)
        deadline = time.monotonic() + timeout
        while True:
            jid, pid = self.busy(host, max(0.0, deadline - time.monotonic()))
            os.kill(pid, signal.SIGSTOP)
            job = q.fetch_job(jid)
            if job is not None and job.get_status() == "started":
                return jid, pid
            os.kill(pid, signal.SIGCONT)  # it finished meanwhile: catch the next one

    def settled(self, hosts: Iterable[Host], timeout: float = 60) -> float:
        """Seconds until nothing is queued or running and each of ``hosts`` has a live worker,
        every one of them idle (none stuck in a batch or a reconnection)."""
        t0 = time.monotonic()
        roles = [h.role for h in hosts]
        q = make_queue(self.conn(), self.queue)
        seen: list[object] = []

        def calm() -> bool:
            live = {r: [w.get_state() for w in ws] for r, ws in self.live_workers().items()}
            seen[:] = [q.count, q.started_job_registry.get_job_ids(), live]
            return (
                not seen[0]
                and not seen[1]
                and all(live[r] and all(s == "idle" for s in live[r]) for r in roles)
            )

        try:
            wait_for("queue empty and every worker idle", calm, timeout, poll=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: queued, started, workers = {seen}") from None
        return time.monotonic() - t0

    def stop_all(self) -> None:
        """Every worker host: link up, every process killed."""
        for h in self.hosts:
            h.link(up=True)
            h.kill()

    # --- the producer and reporter hosts ----------------------------------------------------

    def submit(self, pcap: Path, name: str, host: Host | None = None) -> None:
        argv = [script("producer"), "submit", str(pcap), "--name", name, "--no-wait"]
        res = (host or self.producer).run([*argv, "--batch-packets", str(BATCH)], env=self.env)
        if res.returncode != 0:
            raise AssertionError(f"producer submit exited {res.returncode}: {res.stderr!r}")

    def follow(self, name: str, timeout: float = 90) -> CaptureStatus:
        conn = self.store()
        st = wait_for(
            f"capture {name!r} final",
            lambda: (s := capture_status(conn, name)).state in FINAL and s,
            timeout,
            poll=0.1,
        )
        assert isinstance(st, CaptureStatus)
        return st

    def tables(self, name: str, host: Host | None = None) -> tuple[bytes, bytes]:
        """``reporter flows NAME --format csv --order rank`` (largest first, ties by key: the
        same bytes whatever the hosts), unidirectional and bidirectional."""
        out = []
        for direction in ("uni", "bi"):
            argv = [script("reporter"), "flows", name, "--direction", direction]
            res = (host or self.producer).run(
                [*argv, "--format", "csv", "--order", "rank"], env=self.env
            )
            if res.returncode != 0:
                raise AssertionError(f"reporter flows exited {res.returncode}: {res.stderr!r}")
            out.append(res.stdout)
        return out[0], out[1]
