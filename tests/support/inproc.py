"""A capture merged in this process: ``submit`` into the test Redis, then one RQ worker in
burst mode in this process (no worker processes, so the fast core can use real captures)."""

from __future__ import annotations

from collections.abc import Sequence

from rq.serializers import JSONSerializer

from flowherd.deploy.queueing import FlowherdJob, make_queue
from flowherd.models.capture import CaptureStatus
from flowherd.models.settings import Settings
from flowherd.producer.run.submit import submit
from flowherd.store.backend import Store
from flowherd.store.captures import status
from flowherd.workers.worker import FlowherdWorker


def merge_here(
    store: Store, settings: Settings, sources: Sequence[str], name: str
) -> CaptureStatus:
    """Submit ``sources`` as capture ``name`` and work its queue (batches, then the report)
    until it is empty; the capture's status."""
    queue = make_queue(store.queue, settings.queue)
    submit(store, queue, list(sources), name, settings, replace=True)
    worker = FlowherdWorker(
        [queue], connection=store.queue, serializer=JSONSerializer, job_class=FlowherdJob
    )
    worker.work(burst=True)
    return status(store, name)
