"""Resuming a capture: rebuild the batches Redis lacks from the files and send them.

:func:`resume` (``producer submit --resume``) re-reads the files, re-sends the lost batches,
enqueues the orphans' jobs (see :mod:`flowherd.producer.run.gaps`), carries on from the mark to the
end and closes the run. :func:`submit <flowherd.producer.run.submit.submit>` calls :func:`resend`
before it closes a run, so batches that Redis lost while the producer was still running are re-sent
at once.

None of this may run while another producer still writes the same run: an orphan is then
indistinguishable from a batch whose job is being enqueued.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from rq import Queue

from flowherd.deploy.queueing import make_queue
from flowherd.models.batch import BatchBuilder
from flowherd.models.errors import CaptureError, CaptureStateError
from flowherd.models.keys import RunKeys, batch_job_id
from flowherd.models.settings import Settings
from flowherd.models.state import CaptureMeta, MetaField, StoredState
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.run.feed import feed
from flowherd.producer.run.gaps import (
    Gaps,
    check_sources,
    failed_registry,
    finish,
    load_run,
    ranges,
    run_settings,
    scan,
)
from flowherd.producer.run.writer import Progress, ProgressFn, RunWriter
from flowherd.store.backend import Store
from flowherd.store.captures import reopen, set_meta, warnings
from flowherd.store.lock import RunLock

log = logging.getLogger(__name__)


class _ResumeWriter(RunWriter):
    """A writer that, below ``start``, sends only the batches :class:`Gaps` names (a lost batch
    whole, an orphan's job only) and, from ``start`` on, everything."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        keys: RunKeys,
        settings: Settings,
        on_progress: ProgressFn | None,
        gaps: Gaps,
        start: int,
        lock: RunLock | None = None,
    ) -> None:
        super().__init__(store, queue, keys, settings, on_progress, lock)
        self.start = start
        self.lost, self.orphans = set(gaps.resend), set(gaps.orphans)
        self.resent: list[int] = []
        self._failed = failed_registry(store.queue, queue.name)

    def _send(self, seq: int, b: BatchBuilder) -> None:
        if seq >= self.start:
            super()._send(seq, b)
            return
        if seq not in self.lost and seq not in self.orphans:
            return
        # a job that failed for want of its payload must leave the failed registry, or the
        # capture would report itself failed after the batch is merged
        self._failed.remove(batch_job_id(self.keys.run, seq))
        self._put(seq, b, enqueued=self.start, store=seq in self.lost)
        self.resent.append(seq)


def resend(
    store: Store,
    queue: Queue,
    keys: RunKeys,
    sources: Sequence[str],
    settings: Settings,
    upto: int,
    on_progress: ProgressFn | None = None,
    warned: Collection[str] = (),
) -> list[int]:
    """Send again what Redis lacks of batches ``0 .. upto-1``; return their seqs.

    Reads the files again only when something is missing. Raises :class:`CaptureStateError`
    when the files no longer cut into ``upto`` batches (they changed while being read).
    """
    gaps = scan(store, keys, upto)
    if not gaps:
        return []
    reopen(store, keys, gaps.parts)
    log.warning(
        "event=batches_missing run=%s lost=%s orphans=%s action=resend",
        keys.run,
        ranges(gaps.lost) or "-",
        ranges(gaps.orphans) or "-",
    )
    w = _ResumeWriter(store, queue, keys, settings, on_progress, gaps, upto)
    feed(w, sources, on_progress, warned)
    if w.seq != upto:
        raise CaptureStateError(
            f"the files now make {w.seq} batches, not {upto}: they changed while being read"
        )
    return w.resent


@dataclass(frozen=True)
class Resumed:
    """What :func:`resume` did: batches re-sent below the mark, and batches sent after it."""

    keys: RunKeys
    progress: Progress
    resent: tuple[int, ...]
    new: int
    total: int


def resume(
    store: Store,
    sources: Sequence[str],
    name: str,
    settings: Settings,
    on_progress: ProgressFn | None = None,
) -> Resumed:
    """Continue capture ``name`` from ``sources`` after its producer stopped (killed,
    interrupted, or Redis lost batches), without duplicates or gaps, and close it.

    The run's own batching, engine, windows and queue are used, whatever ``settings`` says.
    Raises :class:`CaptureStateError` for an unknown or complete capture and for files other
    than the capture's; :class:`CaptureError` for unreadable files (the run is then marked
    aborted, as by ``submit``).
    """
    keys, info, meta = load_run(store, name)
    for src in sources:
        with open_capture(src):
            pass
    check_sources(name, info, meta, sources)
    with RunLock(store, keys, name) as lock:
        return _resume(store, keys, info.queue, meta, sources, name, settings, on_progress, lock)


def _resume(
    store: Store,
    keys: RunKeys,
    queue_name: str,
    meta: CaptureMeta,
    sources: Sequence[str],
    name: str,
    settings: Settings,
    on_progress: ProgressFn | None,
    lock: RunLock,
) -> Resumed:
    rs = run_settings(settings, load_run(store, name)[1], meta)
    total = meta.total_batches
    start = meta.upto
    gaps = scan(store, keys, start)
    if meta.state is StoredState.COMPLETE and not gaps:
        raise CaptureStateError(
            f"capture {name!r} is complete: nothing to resume (use --replace to submit it again)"
        )
    queue = make_queue(store.queue, queue_name)
    if total is not None and not gaps:
        finish(store, queue, keys, total)
        return Resumed(keys, Progress(), (), 0, total)
    reopen(store, keys, gaps.parts)
    state = StoredState.PROCESSING if total is not None else StoredState.SUBMITTING
    set_meta(store, keys, **{MetaField.STATE: state, MetaField.ERROR: None})
    warned = set(warnings(store, keys))
    w = _ResumeWriter(store, queue, keys, rs, on_progress, gaps, start, lock)
    try:
        feed(w, sources, on_progress, warned)
        if w.seq < start or (total is not None and w.seq != total):
            raise CaptureStateError(
                f"--resume {name}: the files make {w.seq} batches but the capture had "
                f"{start} queued: they are not the files it was submitted from"
            )
        w.close()
    except (CaptureError, KeyboardInterrupt) as exc:
        msg = str(exc) if isinstance(exc, CaptureError) else "interrupted"
        w.abort(f"resume aborted: {msg}")
        raise
    log.info(
        "event=resumed run=%s resent=%s new=%d total=%d",
        keys.run,
        ranges(w.resent) or "-",
        w.seq - start,
        w.seq,
    )
    return Resumed(keys, w.progress, tuple(w.resent), w.seq - start, w.seq)
