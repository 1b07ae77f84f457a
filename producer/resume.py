"""Resuming a capture: rebuild the batches Redis lacks from the files and send them.

:func:`resume` (``producer submit --resume``) re-reads the files, re-sends the lost batches,
enqueues the orphans' jobs (see :mod:`producer.gaps`), carries on from the mark to the end and
closes the run. :func:`submit <producer.submit.submit>` calls :func:`resend` before it closes a
run, so batches that Redis lost while the producer was still running are re-sent at once.

None of this may run while another producer still writes the same run: an orphan is then
indistinguishable from a batch whose job is being enqueued.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from redis import Redis
from rq import Queue

from deploy.queueing import make_queue
from models.batch import BatchBuilder
from models.errors import CaptureError, CaptureStateError, TruncatedCaptureError
from models.keys import RunKeys, batch_job_id
from models.settings import Settings
from producer.capture import open_capture
from producer.gaps import (
    Gaps,
    check_sources,
    failed_registry,
    finish,
    load_run,
    ranges,
    run_settings,
    scan,
    text,
)
from producer.run import Progress, ProgressFn, RunWriter

log = logging.getLogger(__name__)


class _ResumeWriter(RunWriter):
    """A writer that, below ``start``, sends only the batches :class:`Gaps` names (a lost batch
    whole, an orphan's job only) and, from ``start`` on, everything."""

    def __init__(
        self,
        conn: Redis,
        queue: Queue,
        keys: RunKeys,
        settings: Settings,
        on_progress: ProgressFn | None,
        gaps: Gaps,
        start: int,
    ) -> None:
        super().__init__(conn, queue, keys, settings, on_progress)
        self.start = start
        self.lost, self.orphans = set(gaps.lost), set(gaps.orphans)
        self.resent: list[int] = []
        self._failed = failed_registry(conn, queue.name)

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


def feed(
    w: RunWriter, sources: Sequence[str], on_progress: ProgressFn | None, warned: Collection[str]
) -> None:
    """Read ``sources`` in order into ``w`` and flush its last batch (the run stays open).

    A truncated file contributes its complete records and a run warning (unless ``warned``
    holds that warning already: a second reading); other read errors propagate.
    """
    prog = w.progress
    add = w.add
    for src in sources:
        prog.source = str(src)
        try:
            with open_capture(src) as cap:
                prog.size = cap.size
                for n, rec in enumerate(cap, 1):
                    add(rec)
                    if not n & 0x3FF:
                        prog.position = cap.position
                        if on_progress:
                            on_progress(prog)
                prog.position = cap.position
        except TruncatedCaptureError as exc:
            if str(exc) in warned:
                prog.warnings.append(str(exc))
            else:
                w.warn(str(exc))
    w.flush()


def resend(
    conn: Redis,
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
    gaps = scan(conn, keys, upto)
    if not gaps:
        return []
    log.warning(
        "event=batches_missing run=%s lost=%s orphans=%s action=resend",
        keys.run,
        ranges(gaps.lost) or "-",
        ranges(gaps.orphans) or "-",
    )
    w = _ResumeWriter(conn, queue, keys, settings, on_progress, gaps, upto)
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
    conn: Redis,
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
    keys, info, meta = load_run(conn, name)
    if meta.get("state") == "complete":
        raise CaptureStateError(
            f"capture {name!r} is complete: nothing to resume (use --replace to submit it again)"
        )
    for src in sources:
        with open_capture(src):
            pass
    check_sources(name, info, meta, sources)
    rs = run_settings(settings, info, meta)
    total = int(meta["total_batches"]) if "total_batches" in meta else None
    start = total if total is not None else int(meta.get("enqueued", 0))
    gaps = scan(conn, keys, start)
    queue = make_queue(conn, info.queue)
    if total is not None and not gaps:
        finish(conn, queue, keys, total)
        return Resumed(keys, Progress(), (), 0, total)
    with conn.pipeline() as p:
        p.hset(keys.meta, "state", "processing" if total is not None else "submitting")
        p.hdel(keys.meta, "error")
        p.execute()
    warned = {text(w) for w in conn.lrange(keys.warnings, 0, -1)}
    w = _ResumeWriter(conn, queue, keys, rs, on_progress, gaps, start)
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
