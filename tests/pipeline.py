"""Test helpers: run the real pipeline (producer -> RQ worker processes -> Redis) in-process."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from deploy.queueing import make_queue
from models.capture import CaptureStatus
from models.flows import FlowKey, FlowStats
from models.settings import Settings
from producer.follow import LocalWorkers, follow
from producer.submit import submit
from store.backend import Store
from store.captures import run_of
from store.tables import iter_flows
from store.tables import table as run_table


def settings_for(redis_url: str, queue: str | None = None, **kw: object) -> Settings:
    return Settings(redis_url=redis_url, queue=queue or f"t{uuid.uuid4().hex[:8]}", **kw)  # type: ignore[arg-type]


def run_capture(
    store: Store, settings: Settings, sources: Sequence[str], name: str, workers: LocalWorkers
) -> CaptureStatus:
    queue = make_queue(store.queue, settings.queue)
    submit(
        store,
        queue,
        list(sources),
        name,
        settings,
        replace=True,
        on_progress=lambda p: workers.check(),
    )
    return follow(store, name, poll=0.05, check=workers.check)


def table(store: Store, name: str) -> dict[FlowKey, FlowStats]:
    return dict(iter_flows(store, run_table(run_of(store, name))))
