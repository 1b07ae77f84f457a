"""A capture run being written: registration, batching, backpressure, closing.

:class:`RunWriter` is what every record source (files, live capture) feeds: it packs records
into batches, stores each payload and enqueues its job, keeping at most ``max_in_flight``
batches enqueued but not merged and Redis memory below its fill limit
(:mod:`flowherd.producer.run.pressure`), and on :meth:`RunWriter.close` records the total so
the last merge (or this close) triggers the report. For records that leave as they expire it
also keeps its promises to their exporter (:mod:`flowherd.producer.run.frontier`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from rq import Queue

from flowherd.deploy.queueing import enqueue_batch, enqueue_report
from flowherd.models.batch import RECORD_OVERHEAD, BatchBuilder, Columns, RawRecord
from flowherd.models.capture import BatchRef
from flowherd.models.expiry import RecordsOut
from flowherd.models.keys import PayloadKeys, RunKeys
from flowherd.models.records import Timeouts
from flowherd.models.settings import Settings
from flowherd.models.state import MetaField, StoredState
from flowherd.producer.run.frontier import Frontier
from flowherd.producer.run.pressure import Backpressure, Memory
from flowherd.store.backend import Store
from flowherd.store.captures import (
    add_warning,
    close_run,
    set_meta,
    store_id,
)
from flowherd.store.lock import RunLock
from flowherd.store.records import set_timeouts

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What a progress display needs; updated in place and passed to the callback."""

    source: str = ""
    position: int = 0
    size: int = 0
    packets: int = 0
    bytes: int = 0
    batches: int = 0
    in_flight: int = 0
    waiting: bool = False
    #: what the writer waits for while ``waiting``: "workers" or "Redis memory"
    waiting_for: str = ""
    warnings: list[str] = field(default_factory=list)


ProgressFn = Callable[[Progress], None]
T = TypeVar("T")


def batch_ref(keys: RunKeys, seq: int, packets: int, s: Settings, store: str) -> BatchRef:
    """The job argument of batch ``seq`` of a run written with settings ``s``."""
    return BatchRef(
        run=keys.run,
        seq=seq,
        packets=packets,
        engine=s.engine,
        window_ns=s.window_ns,
        keep_windows=s.keep_windows or 0,
        shards=keys.shards,
        store=store,
        wait_replicas=s.wait_replicas,
    )


def pieces(
    cols: Columns, count: int, size: int, per_batch: int, limit: int
) -> Iterator[tuple[Columns, bool]]:
    """Cut ``cols`` where batches fill up: ``(part, full)`` pairs, ``full`` when the part
    completes a batch (``per_batch`` frames, or ``limit`` body bytes or more: one record at a
    time would cut at the same frames). The first part joins a batch that holds ``count``
    frames and ``size`` body bytes already; every later one starts a batch."""
    while len(cols):
        by_count = per_batch - count - 1
        sizes = np.cumsum(cols.cap, dtype=np.int64)
        sizes += np.arange(1, len(cols) + 1, dtype=np.int64) * RECORD_OVERHEAD + size
        last = max(0, min(by_count, int(np.searchsorted(sizes, limit, "left"))))
        if last >= len(cols):
            yield cols, False
            return
        yield cols.slice(0, last + 1), True
        cols, count, size = cols.slice(last + 1, len(cols)), 0, 0


class RunWriter:
    """Feeds records into a registered run. Not thread-safe: one writer per run.

    With ``timeouts`` (``--idle-timeout``, ``--active-timeout``; see
    :mod:`flowherd.models.records`) the run's conversations are cut into flow records: they are
    stored in the run's meta before its first batch, where every worker reads them (so a
    resumed or retried batch uses the same)."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        keys: RunKeys,
        settings: Settings,
        on_progress: ProgressFn | None = None,
        lock: RunLock | None = None,
        timeouts: Timeouts | None = None,
        records: RecordsOut | None = None,
    ) -> None:
        self.store, self.queue, self.keys, self.settings = store, queue, keys, settings
        self.on_progress = on_progress
        self.progress = Progress()
        self.seq = 0
        self.lock = lock
        self._builder = BatchBuilder()
        self._per_batch = settings.packets_per_batch
        self._payloads = PayloadKeys(keys.run)
        self._store_id = store_id(store)
        self._bp = Backpressure(store, keys, settings.queue, settings.max_in_flight)
        # payloads fill the queue Redis: that is the memory to watch
        self._mem = Memory(store.queue, lambda: self._bp.in_flight(self.seq))
        if timeouts:
            set_timeouts(store, keys, timeouts)
        #: with records that leave as they expire: what the writer promises their exporter
        self.frontier = Frontier(store, keys, records) if records is not None else None

    def advance(self, ns: int) -> None:
        """With records that leave as they expire: the source will hand over no packet older
        than ``ns`` from now on (a live capture: its latest timestamp, less some lateness)."""
        if self.frontier is not None:
            self.frontier.advance(ns)

    def add(self, rec: RawRecord) -> None:
        b = self._builder
        if self.frontier is not None:
            self.frontier.late_one(rec[0])
        b.add(rec)
        if b.count >= self._per_batch or b.size >= self.settings.batch_bytes:
            self.flush()

    def add_columns(self, cols: Columns) -> None:
        """:meth:`add` of every frame of ``cols``, in order: the batches are cut after the
        same frames as one :meth:`add` per frame would cut them."""
        b = self._builder
        if self.frontier is not None:
            self.frontier.late_in(cols)
        for part, full in pieces(cols, b.count, b.size, self._per_batch, self.settings.batch_bytes):
            self._builder.add_columns(part)
            if full:
                self.flush()

    def flush(self) -> None:
        """Enqueue the records added so far as batch ``seq`` and start a new one.

        Waits while ``max_in_flight`` batches are enqueued but not merged, and while Redis is
        short of memory (see :class:`_Memory`); it never drops a batch.
        """
        self._tick()  # also when there is nothing to send: a sniff on a quiet link
        b = self._builder
        if b.count == 0:
            if self.frontier is not None:
                self.frontier.publish(b.ts_min)
            return
        prog = self.progress
        prog.packets += b.count
        prog.bytes += b.wire_bytes
        self._send(self.seq, b)
        self.seq += 1
        prog.batches = self.seq
        self._builder = BatchBuilder()
        if self.frontier is not None:
            self.frontier.publish(self._builder.ts_min)

    def _send(self, seq: int, b: BatchBuilder) -> None:
        """Send batch ``seq`` (a resuming writer overrides this to skip what Redis holds)."""
        self._put(seq, b, enqueued=seq + 1)

    def _put(self, seq: int, b: BatchBuilder, enqueued: int, store: bool = True) -> None:
        """Store the payload of batch ``seq`` (unless not ``store``) and enqueue its job.

        The payload is written before ``meta.enqueued = enqueued``, so the store never counts a
        batch whose payload was not stored; the mark is absolute, so a repeated write (retried
        after a lost connection) changes nothing.
        """
        prog, s, cb = self.progress, self.settings, self._waiting
        self._tick()
        self._bp.wait(seq, prog, cb)
        ref = batch_ref(self.keys, seq, b.count, s, self._store_id)
        f = self.frontier
        if f is not None:  # before the payload: the watermark waits for it
            self._mem.call(lambda: f.note_batch(seq, b.ts_min), prog, cb)
        if store:
            payload = b.payload(s.compress)
            self._mem.room(len(payload), prog, cb)

            def put() -> None:
                # payload first, then the mark: the store never counts a batch whose payload
                # was not stored (a crash between the two leaves a payload past the mark, which
                # the next writer overwrites)
                self.store.queue.set(self._payloads.batch(seq), payload)
                set_meta(self.store, self.keys, **{MetaField.ENQUEUED: enqueued})

            self._mem.call(put, prog, cb)
        self._mem.call(lambda: enqueue_batch(self.queue, ref, s.job_timeout, s.retries), prog, cb)

    def _tick(self) -> None:
        """Keep the run lock's lease: it lapses after its TTL unless renewed, so every wait
        (for workers, for Redis memory, for packets) renews it, not only each batch sent."""
        if self.lock is not None:
            self.lock.renew()

    def _waiting(self, prog: Progress) -> None:
        """The progress callback of the waits: renews the lock, then reports."""
        self._tick()
        if self.on_progress:
            self.on_progress(prog)

    def warn(self, message: str) -> None:
        """Attach a warning to the run (shown by status and every report)."""
        self.progress.warnings.append(message)
        add_warning(self.store, self.keys, message)

    def close(self) -> None:
        """Flush, record the total number of batches, and trigger the report if all are merged."""
        self.flush()
        if self.frontier is not None:
            self.frontier.publish(self._builder.ts_min, force=True)
            if late := self.frontier.late:
                self.warn(
                    f"{late:,} packets arrived later than newer ones by more than the frontier "
                    "allowed; each is in one record, which may be split"
                )
        if close_run(self.store, self.keys, self.seq) == 1:
            enqueue_report(self.queue, self.keys.run)
        if self.on_progress:
            self.on_progress(self.progress)

    def abort(self, message: str) -> None:
        """Mark the run aborted: it will never report itself complete."""
        set_meta(self.store, self.keys, state=StoredState.ABORTED, error=message)
