"""Prometheus metrics of a worker host: what ``workers run --metrics-port PORT`` serves.

One endpoint per ``workers run`` pool, whatever its number of worker processes, through
prometheus_client's multiprocess mode:

* the pool's parent process creates a private, empty directory and names it in
  ``PROMETHEUS_MULTIPROC_DIR`` before its workers start (they inherit it), then serves
  ``/metrics`` from a thread: the sum of every worker's files, and gauges it samples itself at
  scrape time (the queue's depth, its live worker processes) -- :func:`endpoint`;
* each worker process records what its batches did in its own files, through
  :func:`instrumented`, the wrapper of the batch job. Without ``PROMETHEUS_MULTIPROC_DIR`` (no
  ``--metrics-port``; plain ``rq worker``) the wrapper only calls the job;
* when a worker process dies, the pool drops its in-flight gauge (:func:`process_dead`); its
  counters stay in the sums, so they never go down while the pool runs.

Metric names, types and labels are in docs/metrics.md. prometheus_client is imported only where
metrics are on, and multiprocess mode is chosen when a worker's metrics are created, not when the
library is first imported.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec

from redis.exceptions import RedisError

from flowherd.models.errors import BatchError, FlowherdError

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric
    from rq.queue import Queue

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: values of ``flowherd_batches_total``'s ``outcome`` label: merged (the last batch of a capture
#: too), duplicate (merged before: nothing written), stale (its capture was deleted or
#: replaced), refused (BatchError: a payload no retry will accept), failed (any other error)
OUTCOMES = ("merged", "duplicate", "stale", "refused", "failed")
_OUTCOME_OF_STATUS = {
    "merged": "merged",
    "last": "merged",
    "duplicate": "duplicate",
    "stale": "stale",
}
#: seconds: a fast-engine batch takes milliseconds, a large scapy batch seconds
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

P = ParamSpec("P")
Result = dict[str, int | str]


@dataclass(frozen=True, slots=True)
class _Metrics:
    """One worker process's metrics, written to its files in the multiprocess directory."""

    packets: Counter
    bytes: Counter
    batches: Counter
    dissect: Histogram
    merge: Histogram
    in_flight: Gauge

    @classmethod
    def create(cls) -> _Metrics:
        from prometheus_client import Counter, Gauge, Histogram, values

        # chosen from PROMETHEUS_MULTIPROC_DIR now, whenever the library was first imported
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        batches = Counter(
            "flowherd_batches",
            "Batch jobs this host's workers ended, by outcome.",
            ["outcome"],
            registry=None,
        )
        for outcome in OUTCOMES:  # every outcome exported from the start, at 0
            batches.labels(outcome=outcome)
        return cls(
            packets=Counter(
                "flowherd_packets", "Frames of the batches this host merged.", registry=None
            ),
            bytes=Counter(
                "flowherd_bytes",
                "Wire bytes of the frames of the batches this host merged.",
                registry=None,
            ),
            batches=batches,
            dissect=Histogram(
                "flowherd_dissect_seconds",
                "Seconds a batch took to dissect and fold into a partial flow table.",
                buckets=DURATION_BUCKETS,
                registry=None,
            ),
            merge=Histogram(
                "flowherd_merge_seconds",
                "Seconds a batch took to merge into the store (and delete its payload).",
                buckets=DURATION_BUCKETS,
                registry=None,
            ),
            in_flight=Gauge(
                "flowherd_batches_in_flight",
                "Batches this host's workers are processing now.",
                multiprocess_mode="livesum",
                registry=None,
            ),
        )

    def record(self, result: Result) -> None:
        """Count a batch job's result (:func:`flowherd.workers.jobs.process_batch`'s dict)."""
        status = str(result.get("status", ""))
        outcome = _OUTCOME_OF_STATUS.get(status, "failed")
        self.batches.labels(outcome=outcome).inc()
        if outcome == "merged":
            self.packets.inc(int(result.get("packets", 0)))
            self.bytes.inc(int(result.get("bytes", 0)))
        if "dissect_us" in result:
            self.dissect.observe(int(result["dissect_us"]) / 1e6)
        if "merge_us" in result:
            self.merge.observe(int(result["merge_us"]) / 1e6)


class _PerProcess:
    """The metrics of this process, created on first use (``None`` when metrics are off); a
    forked child creates its own."""

    pid: int | None = None
    metrics: _Metrics | None = None

    @classmethod
    def get(cls) -> _Metrics | None:
        if cls.pid != os.getpid():
            cls.pid = os.getpid()
            cls.metrics = _Metrics.create() if os.environ.get(MULTIPROC_ENV) else None
        return cls.metrics


def start_worker() -> None:
    """Create this worker process's metrics now, so that a scrape shows them at 0 before its
    first batch (nothing when metrics are off)."""
    _PerProcess.get()


def instrumented(job: Callable[P, Result]) -> Callable[P, Result]:
    """``job``, counting each call's outcome, frames, bytes and timings when metrics are on.

    Exceptions propagate unchanged: :class:`~flowherd.models.errors.BatchError` counts as
    ``refused``, any other as ``failed``.
    """

    @functools.wraps(job)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Result:
        m = _PerProcess.get()
        if m is None:
            return job(*args, **kwargs)
        m.in_flight.inc()
        try:
            result = job(*args, **kwargs)
        except BatchError:
            m.batches.labels(outcome="refused").inc()
            raise
        except Exception:
            m.batches.labels(outcome="failed").inc()
            raise
        finally:
            m.in_flight.dec()
        m.record(result)
        return result

    return wrapper


def process_dead(pid: int) -> None:
    """Forget the in-flight batches of worker process ``pid``, which has exited (its counters
    stay in the sums). Nothing when metrics are off."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


class _PoolCollector:
    """Gauges the pool's parent samples at scrape time: the queue's depth, its live workers."""

    def __init__(self, queue: Queue, workers: Callable[[], int]) -> None:
        self.queue, self.workers = queue, workers

    def describe(self) -> Iterable[Metric]:
        return self._families(sample=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(sample=True)

    def _families(self, sample: bool) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        processes = GaugeMetricFamily(
            "flowherd_worker_processes", "Live worker processes of this pool."
        )
        depth = GaugeMetricFamily(
            "flowherd_queue_depth",
            "Batch jobs waiting in the RQ queue, sampled at scrape time.",
            labels=["queue"],
        )
        if sample:
            processes.add_metric([], self.workers())
            try:
                depth.add_metric([self.queue.name], self.queue.count)
            except RedisError as exc:  # the scrape still answers, without this sample
                log.warning("event=queue_depth_failed queue=%s error=%s", self.queue.name, exc)
        yield processes
        yield depth


@contextmanager
def endpoint(host: str, port: int, queue: Queue, workers: Callable[[], int]) -> Iterator[str]:
    """Serve the metrics of the worker processes started inside the block on
    ``http://host:port/metrics``; yields that URL.

    Creates a fresh private directory (mode 0700) and names it in ``PROMETHEUS_MULTIPROC_DIR``
    for the block; removes it afterwards. A port that cannot be bound is a
    :class:`~flowherd.models.errors.FlowherdError`.
    """
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    path = tempfile.mkdtemp(prefix="flowherd-metrics-")
    before = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = path
    try:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
        registry.register(_PoolCollector(queue, workers))
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise FlowherdError(
                f"--metrics-port {port}: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        try:
            yield f"http://{host}:{port}/metrics"
        finally:
            server.shutdown()
            thread.join(5)
    finally:
        if before is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = before
        shutil.rmtree(path, ignore_errors=True)
