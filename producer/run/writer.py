"""A capture run being written: registration, batching, backpressure, closing.

:class:`RunWriter` is what every record source (files, live capture) feeds: it packs records
into batches, stores each payload and enqueues its job, keeping at most ``max_in_flight``
batches enqueued but not merged, and on :meth:`RunWriter.close` records the total so the last
merge (or this close) triggers the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from redis import Redis
from redis.exceptions import OutOfMemoryError, ResponseError
from rq import Queue

from flowherd.deploy.queueing import enqueue_batch, enqueue_report
from flowherd.models.batch import RECORD_OVERHEAD, BatchBuilder, Columns, RawRecord
from flowherd.models.capture import BatchRef
from flowherd.models.errors import BackendError
from flowherd.models.expiry import RecordsOut
from flowherd.models.keys import PayloadKeys, RunKeys
from flowherd.models.records import Timeouts
from flowherd.models.settings import Settings
from flowherd.models.state import MetaField, StoredState
from flowherd.store.backend import Store
from flowherd.store.captures import (
    add_warning,
    batches_done,
    close_run,
    failed_job_ids,
    set_meta,
    store_id,
)
from flowherd.store.expiry import add_late, declare, note_batch, publish_frontier
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

#: Fraction of Redis ``maxmemory`` the producer fills at most, and the batches' worth of memory
#: it leaves free at least: room for the merges (which add flows before they delete their
#: payload), RQ's bookkeeping, and the buffers that carry payloads in and out (the producer's
#: SET, the workers' GETs), which Redis counts as used memory too.
MEMORY_FILL = 0.9
MEMORY_RESERVE_BATCHES = 4
#: Seconds the producer waits for Redis memory while none of its batches is in flight and used
#: memory does not go down, before it gives up: then nothing it waits for can free memory.
MEMORY_STALL_S = 30.0
#: Seconds between two publications of the frontier (records that leave as they expire).
_PUBLISH_S = 0.2


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


class _Backpressure:
    """Blocks until fewer than ``limit`` batches of the run are enqueued but not merged."""

    def __init__(self, store: Store, keys: RunKeys, queue: str, limit: int) -> None:
        self.store, self.keys, self.queue, self.limit = store, keys, queue, limit
        self.failed = 0
        self._failed_checked = 0.0

    def in_flight(self, enqueued: int) -> int:
        done = batches_done(self.store, self.keys)
        now = time.monotonic()
        # failures are looked up only while the window looks full, and at most every 2 s
        if enqueued - done - self.failed >= self.limit and now - self._failed_checked > 2.0:
            ids = failed_job_ids(self.store.queue, self.queue, self.keys.run, limit=self.limit)
            self.failed = len(ids)
            self._failed_checked = now
        return enqueued - done - self.failed

    def wait(self, enqueued: int, prog: Progress, on_progress: ProgressFn | None) -> None:
        delay = 0.005
        prog.in_flight = self.in_flight(enqueued)
        while prog.in_flight >= self.limit:
            prog.waiting, prog.waiting_for = True, "workers"
            if on_progress:
                on_progress(prog)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
            prog.in_flight = self.in_flight(enqueued)
        prog.waiting, prog.waiting_for = False, ""


class _Memory:
    """Keeps the producer from overfilling a Redis that has a ``maxmemory`` limit.

    With ``maxmemory-policy noeviction`` Redis refuses writes (OOM) once it is full, and a full
    Redis also refuses the workers' merges. So :meth:`room` waits, before a payload is stored,
    while ``used_memory`` plus the payload would leave less than a reserve free (the larger of
    ``1 - MEMORY_FILL`` of ``maxmemory`` and :data:`MEMORY_RESERVE_BATCHES` payloads; both
    read with ``INFO memory``; a user without the INFO permission skips this check), and
    :meth:`call` runs a write and, when Redis answers OOM anyway (another client filled it),
    backs off and runs it again. Repeating is safe: a command refused inside a MULTI discards
    the whole transaction, and a job enqueued again under its fixed id is the same job.

    Both wait as long as it takes while this run has batches in flight, since their merges free
    memory; they raise :class:`BackendError` when used memory has not gone down for
    :data:`MEMORY_STALL_S` seconds while none is in flight, and at once for a payload that
    cannot fit at all.
    """

    def __init__(self, conn: Redis, in_flight: Callable[[], int]) -> None:
        self.conn, self.in_flight = conn, in_flight
        self.info_ok = True

    def usage(self) -> tuple[int, int] | None:
        """(used_memory, maxmemory) in bytes, or None when INFO is not permitted."""
        if not self.info_ok:
            return None
        try:
            info = self.conn.info("memory")
        except ResponseError:  # NoPermissionError: an ACL user without @dangerous
            self.info_ok = False
            log.info("event=memory_check_disabled reason=info_not_permitted")
            return None
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    def room(self, need: int, prog: Progress, on_progress: ProgressFn | None) -> None:
        """Wait until a payload of ``need`` bytes fits below the fill limit."""
        usage = self.usage()
        if usage is None or not usage[1]:
            return
        used, limit = usage

        def short() -> bool:
            reserve = max(limit * (1 - MEMORY_FILL), MEMORY_RESERVE_BATCHES * need)
            if need + reserve > limit:
                raise BackendError(
                    f"a batch of {need} bytes cannot fit in Redis maxmemory ({limit} bytes) "
                    "with room to merge it: raise maxmemory or lower FLOWHERD_BATCH_BYTES"
                )
            return used + need + reserve > limit

        if not short():
            return
        stall = _Stall()
        while short():
            self._pause(stall, used, limit, prog, on_progress)
            usage = self.usage()
            if usage is None or not usage[1]:
                break
            used, limit = usage
        prog.waiting, prog.waiting_for = False, ""

    def call(self, fn: Callable[[], T], prog: Progress, on_progress: ProgressFn | None) -> T:
        """``fn()``, repeated after a pause for as long as Redis refuses it with OOM."""
        stall: _Stall | None = None
        while True:
            try:
                result = fn()
            except OutOfMemoryError:
                stall = stall or _Stall()
                usage = self.usage()
                used, limit = usage if usage is not None else (-1, 0)
                log.info("event=redis_oom used=%d maxmemory=%d", used, limit)
                self._pause(stall, used, limit, prog, on_progress)
                continue
            if stall is not None:
                prog.waiting, prog.waiting_for = False, ""
            return result

    def _pause(
        self, stall: _Stall, used: int, limit: int, prog: Progress, on_progress: ProgressFn | None
    ) -> None:
        prog.waiting, prog.waiting_for = True, "Redis memory"
        if on_progress:
            on_progress(prog)
        if stall.stuck(used, self.in_flight()):
            shown = f"{used} of maxmemory {limit} bytes" if used >= 0 else "maxmemory reached"
            raise BackendError(
                f"Redis is out of memory ({shown}) and none of this capture's batches is left "
                f"to merge after {MEMORY_STALL_S:.0f}s: raise maxmemory or free memory "
                "(see docs/operations.md)"
            )
        stall.sleep()


class _Stall:
    """Backoff and progress tracking of one wait for memory."""

    def __init__(self) -> None:
        self.delay = 0.05
        self.low: int | None = None
        self.since = time.monotonic()

    def stuck(self, used: int, in_flight: int) -> bool:
        now = time.monotonic()
        if in_flight > 0 or (used >= 0 and (self.low is None or used < self.low)):
            self.since = now
            if used >= 0:
                self.low = used if self.low is None else min(self.low, used)
        return now - self.since > MEMORY_STALL_S

    def sleep(self) -> None:
        time.sleep(self.delay)
        self.delay = min(self.delay * 1.5, 1.0)


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
        self._bp = _Backpressure(store, keys, settings.queue, settings.max_in_flight)
        # payloads fill the queue Redis: that is the memory to watch
        self._mem = _Memory(store.queue, lambda: self._bp.in_flight(self.seq))
        if timeouts:
            set_timeouts(store, keys, timeouts)
        self._records = records
        #: the frontier published, and the one the source vouches for (see :meth:`advance`)
        self._published = 0
        self._source = 0
        self._published_at = 0.0
        self._late = 0
        #: packets older than the frontier already published (their records may be split)
        self.late = 0
        if records is not None:
            declare(store, keys, records)

    def advance(self, ns: int) -> None:
        """With records that leave as they expire: the source will hand over no packet older
        than ``ns`` from now on (a live capture: its latest timestamp, less some lateness).
        The writer publishes the smaller of this and its oldest packet not yet sent."""
        if ns > self._source:
            self._source = ns

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._published_at < _PUBLISH_S:
            return
        self._published_at = now
        if self._late:
            add_late(self.store, self.keys, self._late)
            self.late += self._late
            self._late = 0
        mark = min(self._source, self._builder.ts_min)
        if mark > self._published:
            self._published = mark
            publish_frontier(self.store, self.keys, mark)

    def add(self, rec: RawRecord) -> None:
        b = self._builder
        if rec[0] < self._published:
            self._late += 1
        b.add(rec)
        if b.count >= self._per_batch or b.size >= self.settings.batch_bytes:
            self.flush()

    def add_columns(self, cols: Columns) -> None:
        """:meth:`add` of every frame of ``cols``, in order: the batches are cut after the
        same frames as one :meth:`add` per frame would cut them."""
        b = self._builder
        if self._published and len(cols):
            self._late += int(np.count_nonzero(cols.ts < self._published))
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
            if self._records is not None:
                self._publish()
            return
        prog = self.progress
        prog.packets += b.count
        prog.bytes += b.wire_bytes
        self._send(self.seq, b)
        self.seq += 1
        prog.batches = self.seq
        self._builder = BatchBuilder()
        if self._records is not None:
            self._publish()

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
        if self._records is not None:  # before the payload: the watermark waits for it
            self._mem.call(lambda: note_batch(self.store, self.keys, seq, b.ts_min), prog, cb)
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
        if self._records is not None:
            self._publish(force=True)
            if self.late:
                self.warn(
                    f"{self.late:,} packets arrived later than newer ones by more than the "
                    "frontier allowed; each is in one record, which may be split"
                )
        if close_run(self.store, self.keys, self.seq) == 1:
            enqueue_report(self.queue, self.keys.run)
        if self.on_progress:
            self.on_progress(self.progress)

    def abort(self, message: str) -> None:
        """Mark the run aborted: it will never report itself complete."""
        set_meta(self.store, self.keys, state=StoredState.ABORTED, error=message)
