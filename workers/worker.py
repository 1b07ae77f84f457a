"""flowherd's RQ worker: no fork per job, and a heartbeat short enough to recover lost batches.

RQ's SimpleWorker sets a job's heartbeat once, for the whole job timeout, so a batch whose worker
was killed would wait that long (plus a minute) before RQ re-queues it. This worker beats every
``heartbeat / 3`` seconds from a side thread while a job runs, with a TTL of ``heartbeat``
seconds, and runs RQ's registry maintenance every ``maintenance`` seconds: a killed worker's
batch goes back on the queue (it has retries left) within about ``heartbeat + maintenance``
seconds, and the merge's done-marker makes the second run count it once. A worker killed in the
instant between taking a job off the queue and marking it started leaves it in RQ's
intermediate queue, which RQ recovers after one minute (plus ``maintenance``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus

from deploy.local import die_with_parent

log = logging.getLogger(__name__)

#: seconds; environment FLOWHERD_HEARTBEAT and FLOWHERD_MAINTENANCE_INTERVAL override them
DEFAULT_HEARTBEAT = 20
DEFAULT_MAINTENANCE = 15


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


class FlowherdWorker(SimpleWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.beat = _env_int("FLOWHERD_HEARTBEAT", DEFAULT_HEARTBEAT)
        kwargs.setdefault(
            "maintenance_interval", _env_int("FLOWHERD_MAINTENANCE_INTERVAL", DEFAULT_MAINTENANCE)
        )
        super().__init__(*args, **kwargs)
        if os.environ.get("FLOWHERD_DIE_WITH_PARENT") == "1":  # set by `workers run`
            die_with_parent()  # a worker of a pool ends with its pool
        # the idle dequeue wakes up every worker_ttl - 15 s: often enough to run maintenance
        self.worker_ttl = max(self.maintenance_interval + 15, 16)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.beat

    def execute_job(self, job: Job, queue: Queue) -> None:
        stop = threading.Event()
        execution = self.prepare_execution(job)

        def beat() -> None:
            while not stop.wait(self.beat / 3):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception:  # a missed beat is retried; never kill the job for it
                    log.warning("event=heartbeat_failed job=%s", job.id, exc_info=True)

        t = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        t.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            t.join()
        self.set_state(WorkerStatus.IDLE)
