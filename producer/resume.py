"""Resuming a capture: find the batches Redis lacks, rebuild them from the files, send them.

A run's batches are a deterministic function of its files and of two limits recorded when it
was registered (records per batch in ``CaptureInfo.batch_packets``, bytes per batch in the meta
field ``batch_bytes``): reading the same files again cuts the same batches. Below the run's
``enqueued`` mark (its ``total_batches`` once closed) each batch is in one of four states
(:func:`scan`)::

    merged  its seq is in the done set (the merge deleted its payload in the same script)
    queued  its payload and its RQ job exist (queued, running, waiting to retry, or failed)
    orphan  its payload exists, its job does not: the producer died between the two writes,
            or a Redis restart lost the enqueue (``appendfsync everysec`` after a host crash)
    lost    neither a payload nor a done marker: a Redis restart lost the payload

:func:`resume` (``producer submit --resume``) re-reads the files, re-sends the lost batches,
enqueues the orphans' jobs, carries on from the mark to the end and closes the run.
:func:`submit <producer.submit.submit>` calls :func:`resend` before it closes a run, so batches
that Redis lost while the producer was still running are re-sent at once. :func:`retry`
(``producer retry``) re-queues failed jobs and gives orphans their job, without the files.

None of this may run while another producer still writes the same run: an orphan is then
indistinguishable from a batch whose job is being enqueued.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry

from deploy.queueing import FlowherdJob, enqueue_batch, enqueue_report, make_queue
from models.batch import BatchBuilder, decode_batch
from models.capture import BatchRef, CaptureInfo, CaptureState, CaptureStatus
from models.errors import CaptureError, CaptureStateError, TruncatedCaptureError
from models.keys import RunKeys, batch_job_id, report_job_id
from models.settings import Settings
from producer.capture import open_capture
from producer.run import Progress, ProgressFn, RunWriter, close_run
from reporter.store import run_of

log = logging.getLogger(__name__)

_FP_HEAD = 1 << 20  # bytes hashed per file for its fingerprint
_CHUNK = 512  # batches checked per MULTI by scan


def fingerprint(path: str) -> str:
    """``size:hash`` of the file on disk (SHA-256 of its first MiB): tells another file apart
    without reading it all. Raises :class:`CaptureError` when the file cannot be read."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_FP_HEAD)
    except OSError as exc:
        raise CaptureError(path, f"cannot read the file: {exc.strerror or exc}") from None
    return f"{size}:{hashlib.sha256(head).hexdigest()[:32]}"


def record_batching(conn: Redis, keys: RunKeys, sources: Sequence[str], settings: Settings) -> None:
    """Store in the run's meta what a resume needs beyond :class:`CaptureInfo`: the byte limit
    of a batch and the fingerprints of the files. Must happen before the first batch."""
    fps = json.dumps([fingerprint(str(s)) for s in sources])
    conn.hset(keys.meta, mapping={"batch_bytes": settings.batch_bytes, "fingerprints": fps})


def ranges(seqs: Iterable[int]) -> str:
    """``"3, 7-9"`` for ``[3, 7, 8, 9]``."""
    out: list[str] = []
    run: list[int] = []
    for s in sorted(seqs):
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [s]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(out)


def batches(seqs: Sequence[int]) -> str:
    """``"batch 3"`` or ``"batches 3, 7-9"``."""
    return f"batch {seqs[0]}" if len(seqs) == 1 else f"batches {ranges(seqs)}"


@dataclass(frozen=True)
class Gaps:
    """The batches below ``upto`` that are neither merged nor queued."""

    upto: int
    orphans: tuple[int, ...] = ()
    lost: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.orphans or self.lost)

    def describe(self, name: str) -> str:
        parts = []
        if self.lost:
            verb = "was" if len(self.lost) == 1 else "were"
            parts.append(f"{batches(self.lost)} {verb} lost by Redis")
        if self.orphans:
            verb = "has" if len(self.orphans) == 1 else "have"
            parts.append(f"{batches(self.orphans)} {verb} no job")
        files = "" if not self.lost else " FILES..."
        how = f"`producer submit --resume {name}{files}`"
        if not self.lost:
            how += f" or `producer retry {name}`"
        return "; ".join(parts) + f"; send again with {how}"


def scan(conn: Redis, keys: RunKeys, upto: int) -> Gaps:
    """Classify the batches ``0 .. upto-1`` of a run (see the module docstring).

    Each batch's done marker, payload and job are read in one MULTI, so a merge running
    meanwhile cannot make a batch look lost.
    """
    done = {int(m) for m in conn.smembers(keys.done)}
    todo = [s for s in range(upto) if s not in done]
    orphans: list[int] = []
    lost: list[int] = []
    for i in range(0, len(todo), _CHUNK):
        part = todo[i : i + _CHUNK]
        with conn.pipeline(transaction=True) as p:
            for s in part:
                p.sismember(keys.done, str(s))
                p.exists(keys.batch(s))
                p.exists(FlowherdJob.key_for(batch_job_id(keys.run, s)))
            res = p.execute()
        for j, s in enumerate(part):
            merged, payload, job = res[3 * j : 3 * j + 3]
            if merged:
                continue
            if not payload:
                lost.append(s)
            elif not job:
                orphans.append(s)
    return Gaps(upto, tuple(orphans), tuple(lost))


def _failed_registry(conn: Redis, queue: str) -> FailedJobRegistry:
    return FailedJobRegistry(queue=make_queue(conn, queue), job_class=FlowherdJob)


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
        self._failed = _failed_registry(conn, queue.name)

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


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _load(conn: Redis, name: str) -> tuple[RunKeys, CaptureInfo, dict[str, str]]:
    keys = run_of(conn, name)
    raw = conn.get(keys.info)
    if raw is None:
        raise CaptureStateError(f"capture {name!r} has no record: submit it again with --replace")
    info = CaptureInfo.model_validate_json(raw)
    meta = {_text(k): _text(v) for k, v in conn.hgetall(keys.meta).items()}
    return keys, info, meta


def _check_sources(
    name: str, info: CaptureInfo, meta: dict[str, str], sources: Sequence[str]
) -> None:
    """Refuse files other than the run's (by fingerprint; by file name for older runs)."""
    given = [str(s) for s in sources]
    expect = ", ".join(info.sources)
    if len(given) != len(info.sources):
        raise CaptureStateError(
            f"--resume {name}: the capture was submitted from {len(info.sources)} file(s) "
            f"({expect}), not {len(given)}: give the same files in the same order"
        )
    fps = json.loads(meta["fingerprints"]) if "fingerprints" in meta else None
    for i, (src, orig) in enumerate(zip(given, info.sources, strict=True)):
        same = (
            fingerprint(src) == fps[i]
            if fps is not None
            else os.path.basename(src) == os.path.basename(orig)
        )
        if not same:
            raise CaptureStateError(
                f"--resume {name}: {src} is not the file the capture was submitted from "
                f"({orig}): give the same files in the same order ({expect})"
            )


def run_settings(settings: Settings, info: CaptureInfo, meta: dict[str, str]) -> Settings:
    """``settings`` with the batching, engine, windows and queue the run was submitted with."""
    return settings.model_copy(
        update={
            "batch_packets": info.batch_packets,
            "batch_bytes": int(meta.get("batch_bytes", settings.batch_bytes)),
            "engine": info.engine,
            "window": info.window_ns / 1e9 if info.window_ns else None,
            "keep_windows": info.keep_windows or None,
            "queue": info.queue,
        }
    )


def settings_of(conn: Redis, name: str, settings: Settings) -> Settings:
    """``settings`` with capture ``name``'s own batching, engine, windows and queue."""
    _, info, meta = _load(conn, name)
    return run_settings(settings, info, meta)


def missing(conn: Redis, st: CaptureStatus) -> Gaps:
    """The batches of a capture that are neither merged nor queued (for ``producer status``).

    While the capture is being submitted, its newest batch may have a payload and no job yet
    (the producer writes them one after the other): that one is not counted as an orphan.
    """
    if st.state is CaptureState.COMPLETE:
        return Gaps(st.batches_done)
    upto = st.total_batches if st.total_batches is not None else st.batches_enqueued
    gaps = scan(conn, RunKeys(st.run), upto)
    if st.total_batches is None and gaps.orphans and gaps.orphans[-1] == upto - 1:
        return Gaps(upto, gaps.orphans[:-1], gaps.lost)
    return gaps


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
    keys, info, meta = _load(conn, name)
    if meta.get("state") == "complete":
        raise CaptureStateError(
            f"capture {name!r} is complete: nothing to resume (use --replace to submit it again)"
        )
    for src in sources:
        with open_capture(src):
            pass
    _check_sources(name, info, meta, sources)
    rs = run_settings(settings, info, meta)
    total = int(meta["total_batches"]) if "total_batches" in meta else None
    start = total if total is not None else int(meta.get("enqueued", 0))
    gaps = scan(conn, keys, start)
    queue = make_queue(conn, info.queue)
    if total is not None and not gaps:
        _finish(conn, queue, keys, total)
        return Resumed(keys, Progress(), (), 0, total)
    with conn.pipeline() as p:
        p.hset(keys.meta, "state", "processing" if total is not None else "submitting")
        p.hdel(keys.meta, "error")
        p.execute()
    warned = {_text(w) for w in conn.lrange(keys.warnings, 0, -1)}
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


def _finish(conn: Redis, queue: Queue, keys: RunKeys, total: int) -> bool:
    """Close the run again; enqueue its report when every batch is merged and no report job
    is pending (it failed, or a Redis restart lost it). True when a report job was queued."""
    if close_run(conn, keys, total) == 1:
        enqueue_report(queue, keys.run)
        return True
    if int(conn.scard(keys.done)) != total or conn.exists(keys.report):
        return False
    job = queue.fetch_job(report_job_id(keys.run))
    if job is not None and job.get_status() in ("queued", "started", "scheduled", "deferred"):
        return False
    _failed_registry(conn, queue.name).remove(report_job_id(keys.run))
    enqueue_report(queue, keys.run)
    return True


@dataclass(frozen=True)
class Retried:
    """What :func:`retry` did, and the batches it could not send (they need the files)."""

    requeued: tuple[int, ...]
    orphans: tuple[int, ...]
    lost: tuple[int, ...]
    report: bool


def retry(conn: Redis, name: str, settings: Settings) -> Retried:
    """Put the failed jobs of capture ``name`` back on its queue (their payloads are still in
    Redis, since only a merge deletes one), give orphan payloads a job, and queue the report
    if every batch is merged but no report is coming. Lost batches are only reported: they
    need ``producer submit --resume`` with the files. Raises :class:`CaptureStateError` for an
    unknown or complete capture.
    """
    keys, info, meta = _load(conn, name)
    if meta.get("state") == "complete":
        raise CaptureStateError(f"capture {name!r} is complete: nothing to retry")
    queue = make_queue(conn, info.queue)
    reg = _failed_registry(conn, info.queue)
    prefix = f"fh-{keys.run}-"
    requeued: list[int] = []
    report = False
    for jid in reg.get_job_ids():
        if not jid.startswith(prefix):
            continue
        if jid == report_job_id(keys.run):
            reg.requeue(jid)
            report = True
            continue
        seq = int(jid[len(prefix) :])
        if conn.exists(keys.batch(seq)):
            reg.requeue(jid)
            requeued.append(seq)
        elif conn.sismember(keys.done, str(seq)):
            reg.remove(jid)  # merged after all: the failure is stale
    total = int(meta["total_batches"]) if "total_batches" in meta else None
    gaps = scan(conn, keys, total if total is not None else int(meta.get("enqueued", 0)))
    rs = run_settings(settings, info, meta)
    for seq in gaps.orphans:
        payload = conn.get(keys.batch(seq))
        if payload is None:
            continue
        packets = len(list(decode_batch(cast(bytes, payload))))
        ref = BatchRef(
            run=keys.run,
            seq=seq,
            packets=packets,
            engine=rs.engine,
            window_ns=rs.window_ns,
            keep_windows=rs.keep_windows or 0,
        )
        reg.remove(batch_job_id(keys.run, seq))
        enqueue_batch(queue, ref, rs.job_timeout, rs.retries)
    if total is not None and not report and not gaps.lost:
        report = _finish(conn, queue, keys, total)
    log.info(
        "event=retried run=%s requeued=%s orphans=%s lost=%s report=%s",
        keys.run,
        ranges(requeued) or "-",
        ranges(gaps.orphans) or "-",
        ranges(gaps.lost) or "-",
        report,
    )
    return Retried(tuple(sorted(requeued)), gaps.orphans, gaps.lost, report)
