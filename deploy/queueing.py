"""RQ queues and jobs as flowherd uses them: JSON serializer, jobs by dotted path, retries."""

from __future__ import annotations

from redis import Redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from flowherd.models.capture import BatchRef
from flowherd.models.errors import BatchError
from flowherd.models.keys import ALLOWED_JOBS, BATCH_JOB, REPORT_JOB, batch_job_id, report_job_id


class FlowherdJob(Job):
    """An RQ job that only ever calls flowherd's own job functions.

    Whoever can write to the queue cannot make a worker run anything else: the function name is
    checked against :data:`flowherd.models.keys.ALLOWED_JOBS` before it is imported, and success,
    failure and stop callbacks (which flowherd never sets, and which RQ would import and call
    by name) are ignored.
    """

    @property
    def func(self):  # type: ignore[no-untyped-def]
        if self.func_name not in ALLOWED_JOBS:
            raise BatchError(
                f"refusing job {self.id}: function {self.func_name!r} is not a flowherd job"
            )
        return super().func

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None


def make_queue(conn: Redis, name: str) -> Queue:
    return Queue(name, connection=conn, serializer=JSONSerializer, job_class=FlowherdJob)


def enqueue_batch(queue: Queue, ref: BatchRef, timeout: int, retries: int) -> Job:
    return queue.enqueue_call(
        BATCH_JOB,
        args=(ref.model_dump_json(),),
        job_id=batch_job_id(ref.run, ref.seq),
        timeout=timeout,
        result_ttl=60,
        failure_ttl=7 * 24 * 3600,
        retry=Retry(max=retries) if retries else None,
        description=f"flowherd batch {ref.seq} of run {ref.run}",
    )


def enqueue_report(queue: Queue, run: str, timeout: int = 3600) -> Job:
    return queue.enqueue_call(
        REPORT_JOB,
        args=(run,),
        job_id=report_job_id(run),
        timeout=timeout,
        result_ttl=60,
        failure_ttl=7 * 24 * 3600,
        retry=Retry(max=2),
        description=f"flowherd report of run {run}",
    )
