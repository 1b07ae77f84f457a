"""flowherd's RQ worker and pool: no fork per batch, lost batches re-queued within seconds, and a
stop on SIGTERM that an unreachable Redis cannot delay.

RQ's SimpleWorker runs each job in the worker's own process (a fork per batch would cost more
than a fast-engine batch), but beats once per job, for the job timeout plus a minute: the batch of a
killed worker would wait that long to be re-queued. This worker's batches live
``FLOWHERD_HEARTBEAT`` seconds (H) unless beaten, from a side thread, every (H - 1) / 3 seconds
(RQ keeps expiry times in whole seconds, so a beat lives between H - 1 and H seconds), and it
runs RQ's registry maintenance every ``FLOWHERD_MAINTENANCE_INTERVAL`` seconds: a killed
worker's batch is back on the queue (it has retries left) within about heartbeat + maintenance
seconds, and the merge's done-marker makes the second run count it once. A worker killed between
taking a job and marking it started leaves it in RQ's intermediate queue, which RQ recovers
after one minute (plus maintenance).

Stopping (SIGTERM or SIGINT, as systemd, Kubernetes and Ctrl-C do): the worker finishes its
batch and deregisters, but exits after :data:`STOP_GRACE` seconds whatever Redis does (every
call may hang when the network is gone); a batch it abandons is re-queued like a killed
worker's. :class:`FlowherdPool` (``workers run``) kills any of its workers still alive two
seconds later.

What is overridden of RQ 3.0, and why (``rq`` is pinned below 4 for it):

* ``get_heartbeat_ttl``: RQ's hook for the TTL of a running job's heartbeat (SimpleWorker
  overrides it too); ours is the heartbeat setting.
* ``perform_job``: wrapped, RQ's own body unchanged (``super()``), to beat from a side thread
  with ``maintain_heartbeats``, the call RQ's forking Worker makes from its monitor loop.
  SimpleWorker has no hook for this (RQ's docs: it "does not provide periodic heartbeats during
  job execution").
* ``heartbeat``: the worker's own key keeps at least RQ's idle TTL while a batch's heartbeat
  is short, so that a worker cut off from Redis for longer than a heartbeat stays registered.
* ``handle_warm_shutdown_request`` (RQ's hook for a stop request; HerokuWorker's too): arms
  the :data:`STOP_GRACE` deadline.
* ``work``: never with RQ's scheduler process (flowherd schedules no job; retries are
  immediate): a scheduler would be one more process whose exit waits for Redis. A stop
  deadline ends with the work loop, for workers run inside another program (tests, bench).
* ``WorkerPool.request_stop``: also arms the pool's deadline.
* ``WorkerPool.handle_dead_worker``: also drops a dead worker's in-flight gauge when the pool
  serves metrics (:mod:`flowherd.workers.metrics`).
* ``Queue.acquire_maintenance_lock`` (a queue class is RQ's documented extension point, given
  to the pool): the lock lives 10 s, not 15 minutes, so that a worker killed while it cleans
  does not stop the re-queueing of killed workers' batches.

Intervals are constructor arguments (``maintenance_interval``, ``worker_ttl``), as RQ intends.
"""

from __future__ import annotations

import logging
import os
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker
from rq.worker_pool import WorkerData, WorkerPool

from flowherd.deploy.local import die_with_parent
from flowherd.models.settings import Settings
from flowherd.workers import metrics

if TYPE_CHECKING:
    from redis.client import Pipeline
    from rq.executions import Execution

log = logging.getLogger(__name__)

#: seconds a stopping worker has to finish its batch and deregister before it exits anyway
STOP_GRACE = 5.0
#: seconds a queue's registry-maintenance lock lives (RQ: 899); a cleaning pass takes milliseconds
MAINTENANCE_LOCK_TTL = 10


class FlowherdWorker(SimpleWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        timing = Settings()  # FLOWHERD_HEARTBEAT, FLOWHERD_MAINTENANCE_INTERVAL, validated
        self.beat = timing.heartbeat
        kwargs.setdefault("maintenance_interval", timing.maintenance_interval)
        # the idle dequeue wakes up every worker_ttl - 15 s: often enough to run maintenance;
        # RQ also sets the socket timeout from it (10 s more), so a dead link is noticed
        if not kwargs.get("worker_ttl"):
            kwargs["worker_ttl"] = max(int(kwargs["maintenance_interval"]) + 15, 16)
        super().__init__(*args, **kwargs)
        self._stop_timer: threading.Timer | None = None
        if os.environ.get("FLOWHERD_DIE_WITH_PARENT") == "1":  # set by `workers run`
            die_with_parent()  # a worker of a pool ends with its pool
        metrics.start_worker()  # with --metrics-port: exported at 0 before the first batch
        # the batch job's modules (scapy, numpy: about a second) load now, before the first
        # batch is taken, so that a batch's time is its own work
        import flowherd.workers.jobs  # noqa: F401

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.beat

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait((self.beat - 1) / 3):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception:  # a missed beat is retried; never kill the job for it
                    log.warning("event=heartbeat_failed job=%s", job.id, exc_info=True)

        t = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        t.start()
        try:
            return bool(super().perform_job(job, queue, execution))
        finally:
            stop.set()
            t.join(self.beat)  # a beat hung on a lost connection ends on its own

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        super().heartbeat(max(timeout or 0, self.worker_ttl + 60), pipeline)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        if self._stop_timer is None:  # runs in the signal handler: no Redis call here
            self._stop_timer = threading.Timer(STOP_GRACE, self._stop_now)
            self._stop_timer.daemon = True
            self._stop_timer.start()

    def _stop_now(self) -> None:
        # logged from a thread of its own: the exit must not wait for a blocked stderr either
        say = threading.Thread(
            target=log.warning,
            args=(
                "event=stop_timeout worker=%s grace_s=%g action=exit "
                "(Redis did not answer; a batch in progress goes back on the queue)",
                self.name,
                STOP_GRACE,
            ),
            daemon=True,
        )
        say.start()
        say.join(0.5)
        os._exit(1)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        kwargs["with_scheduler"] = False
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            if self._stop_timer is not None:  # stopped in time: no deadline left behind
                self._stop_timer.cancel()
                self._stop_timer = None


class FlowherdQueue(Queue):
    """RQ's Queue, but a worker holds the queue's maintenance lock (one worker at a time re-queues
    abandoned batches) :data:`MAINTENANCE_LOCK_TTL` seconds, not RQ's 15 minutes: a worker killed
    while it cleans would otherwise stop every re-queue of the queue for that long."""

    def acquire_maintenance_lock(self) -> bool:
        key = self.registry_cleaning_key
        return bool(self.connection.set(key, 1, nx=True, ex=MAINTENANCE_LOCK_TTL))


class FlowherdPool(WorkerPool):
    """RQ's WorkerPool (SIGTERM or SIGINT: each worker is asked to stop after its batch) whose
    workers use :class:`FlowherdQueue`, and whose stop is bounded: workers still alive
    ``STOP_GRACE + 2`` seconds later are killed."""

    _killer: threading.Timer | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("queue_class", FlowherdQueue)
        super().__init__(*args, **kwargs)

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]
        if self._killer is None:
            self._killer = threading.Timer(STOP_GRACE + 2, self._kill_stragglers)
            self._killer.daemon = True
            self._killer.start()

    def handle_dead_worker(self, worker_data: WorkerData) -> None:
        super().handle_dead_worker(worker_data)
        metrics.process_dead(worker_data.pid)

    def _kill_stragglers(self) -> None:
        for data in list(self.worker_dict.values()):
            if data.process.exitcode is None:
                data.process.kill()
                log.warning("event=worker_killed pid=%s reason=stop_timeout", data.pid)
