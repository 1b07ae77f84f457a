"""A capture run being written: registration, batching, backpressure, closing.

:class:`RunWriter` is what every record source (files, live capture) feeds: it packs records
into batches, stores each payload and enqueues its job, keeping at most ``max_in_flight``
batches enqueued but not merged, and on :meth:`RunWriter.close` records the total so the last
merge (or this close) triggers the report.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

from redis import Redis
from rq import Queue

from deploy.queueing import enqueue_batch, enqueue_report
from models.batch import BatchBuilder, RawRecord
from models.capture import BatchRef, CaptureInfo
from models.errors import CaptureStateError
from models.keys import CAPTURES, NAME_RE, RunKeys
from models.settings import Settings
from reporter.store import failed_batches

log = logging.getLogger(__name__)
_CLOSE = resources.files(__package__).joinpath("close.lua").read_text()


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
    warnings: list[str] = field(default_factory=list)


ProgressFn = Callable[[Progress], None]


def delete_run(conn: Redis, keys: RunKeys) -> None:
    """Remove every key of a run. Queued jobs of the run then find it gone and do nothing."""
    conn.delete(*keys.all_fixed())
    for pattern in keys.patterns():
        found = list(conn.scan_iter(pattern, count=1000))
        for i in range(0, len(found), 1000):
            conn.delete(*found[i : i + 1000])


def register(
    conn: Redis, name: str, sources: Sequence[str], settings: Settings, replace: bool
) -> RunKeys:
    """Create a new run for ``name``; refuse an existing name unless ``replace``."""
    if not NAME_RE.match(name):
        raise CaptureStateError(
            f"invalid capture name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)"
        )
    keys = RunKeys(secrets.token_hex(8))
    info = CaptureInfo(
        name=name,
        run=keys.run,
        sources=[str(s) for s in sources],
        created_ns=time.time_ns(),
        batch_packets=settings.packets_per_batch,
        queue=settings.queue,
        engine=settings.engine,
        window_ns=settings.window_ns,
        keep_windows=settings.keep_windows or 0,
    )
    with conn.pipeline() as p:
        p.set(keys.info, info.model_dump_json())
        p.hset(keys.meta, mapping={"state": "submitting", "enqueued": 0})
        p.execute()
    if conn.hsetnx(CAPTURES, name, keys.run):
        return keys
    if not replace:
        conn.delete(keys.info, keys.meta)
        raise CaptureStateError(
            f"a capture named {name!r} already exists: pass --replace to overwrite it, "
            "or --name to choose another name"
        )
    old = conn.hget(CAPTURES, name)
    conn.hset(CAPTURES, name, keys.run)
    if old is not None:
        delete_run(conn, RunKeys(old.decode() if isinstance(old, bytes) else old))
    return keys


def close_run(conn: Redis, keys: RunKeys, total_batches: int) -> int:
    """Record that all ``total_batches`` are enqueued. Returns 1 when the caller must enqueue the
    report (every batch was already merged), 0 otherwise, -1 if the run no longer exists."""
    script = conn.register_script(_CLOSE)
    return int(script(keys=[keys.done, keys.meta, keys.finalized], args=[total_batches]))


class _Backpressure:
    """Blocks until fewer than ``limit`` batches of the run are enqueued but not merged."""

    def __init__(self, conn: Redis, keys: RunKeys, queue: str, limit: int) -> None:
        self.conn, self.keys, self.queue, self.limit = conn, keys, queue, limit
        self.failed = 0
        self._failed_checked = 0.0

    def in_flight(self, enqueued: int) -> int:
        now = time.monotonic()
        if now - self._failed_checked > 2.0:
            self.failed = len(failed_batches(self.conn, self.queue, self.keys.run, limit=10**6))
            self._failed_checked = now
        return enqueued - int(self.conn.scard(self.keys.done)) - self.failed

    def wait(self, enqueued: int, prog: Progress, on_progress: ProgressFn | None) -> None:
        delay = 0.005
        prog.in_flight = self.in_flight(enqueued)
        while prog.in_flight >= self.limit:
            prog.waiting = True
            if on_progress:
                on_progress(prog)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
            prog.in_flight = self.in_flight(enqueued)
        prog.waiting = False


class RunWriter:
    """Feeds records into a registered run. Not thread-safe: one writer per run."""

    def __init__(
        self,
        conn: Redis,
        queue: Queue,
        keys: RunKeys,
        settings: Settings,
        on_progress: ProgressFn | None = None,
    ) -> None:
        self.conn, self.queue, self.keys, self.settings = conn, queue, keys, settings
        self.on_progress = on_progress
        self.progress = Progress()
        self.seq = 0
        self._builder = BatchBuilder()
        self._per_batch = settings.packets_per_batch
        self._bp = _Backpressure(conn, keys, settings.queue, settings.max_in_flight)

    def add(self, rec: RawRecord) -> None:
        b = self._builder
        b.add(rec)
        if b.count >= self._per_batch or b.size >= self.settings.batch_bytes:
            self.flush()

    @property
    def pending(self) -> int:
        """Records added but not yet flushed into a batch."""
        return self._builder.count

    def flush(self) -> None:
        """Enqueue the records added so far as one batch (waits while too many are in flight)."""
        b = self._builder
        if b.count == 0:
            return
        prog = self.progress
        prog.packets += b.count
        prog.bytes += b.wire_bytes
        self._bp.wait(self.seq, prog, self.on_progress)
        s = self.settings
        ref = BatchRef(
            run=self.keys.run,
            seq=self.seq,
            packets=b.count,
            engine=s.engine,
            window_ns=s.window_ns,
            keep_windows=s.keep_windows or 0,
        )
        with self.conn.pipeline() as p:
            p.set(self.keys.batch(self.seq), b.payload(s.compress))
            p.hincrby(self.keys.meta, "enqueued", 1)
            p.execute()
        enqueue_batch(self.queue, ref, s.job_timeout, s.retries)
        self.seq += 1
        prog.batches = self.seq
        self._builder = BatchBuilder()

    def warn(self, message: str) -> None:
        """Attach a warning to the run (shown by status and every report)."""
        self.progress.warnings.append(message)
        self.conn.rpush(self.keys.warnings, message)

    def close(self) -> None:
        """Flush, record the total number of batches, and trigger the report if all are merged."""
        self.flush()
        if close_run(self.conn, self.keys, self.seq) == 1:
            enqueue_report(self.queue, self.keys.run)
        if self.on_progress:
            self.on_progress(self.progress)

    def abort(self, message: str) -> None:
        """Mark the run aborted: it will never report itself complete."""
        self.conn.hset(self.keys.meta, mapping={"state": "aborted", "error": message})
