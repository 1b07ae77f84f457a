"""Which batches of a run Redis has: merged, queued, orphaned or lost, and the run's batching.

A run's batches are a deterministic function of its files and of two limits recorded when it
was registered (records per batch in ``CaptureInfo.batch_packets``, bytes per batch in the meta
field ``batch_bytes``): reading the same files again cuts the same batches. Below the run's
``enqueued`` mark (its ``total_batches`` once closed) each batch is in one of four states
(:func:`scan`)::

    merged  its seq is in the run's done set (every shard part merged; the payload is deleted
            after that)
    queued  its payload and its RQ job exist (queued, running, waiting to retry, or failed)
    orphan  its payload exists, its job does not: the producer died between the two writes,
            or a Redis restart lost the enqueue (``appendfsync everysec`` after a host crash)
    lost    neither a payload nor a done marker: a Redis restart lost the payload
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry

from flowherd.deploy.queueing import FlowherdJob, enqueue_report, make_queue
from flowherd.models.capture import CaptureInfo, CaptureState, CaptureStatus
from flowherd.models.errors import CaptureError, CaptureStateError
from flowherd.models.keys import PayloadKeys, RunKeys, batch_job_id, report_job_id
from flowherd.models.settings import Settings
from flowherd.models.state import CaptureMeta, MetaField
from flowherd.producer.readers.http import fingerprint as url_fingerprint
from flowherd.producer.readers.http import is_url
from flowherd.store.backend import Store
from flowherd.store.captures import batches_done, close_run, done_seqs, load, lost_parts, set_meta

log = logging.getLogger(__name__)

_FP_HEAD = 1 << 20  # bytes hashed per file for its fingerprint
_CHUNK = 512  # batches checked per MULTI by scan


def fingerprint(path: str) -> str:
    """``size:hash`` of the file on disk (SHA-256 of its first MiB): tells another file apart
    without reading it all (a URL's: its ``Content-Length`` and first MiB). Raises
    :class:`CaptureError` when the file cannot be read."""
    if is_url(path):
        return url_fingerprint(path)
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            # no more than the file holds: a small file's read allocates no MiB for nothing
            head = f.read(max(1, min(size, _FP_HEAD)))
    except OSError as exc:
        raise CaptureError(path, f"cannot read the file: {exc.strerror or exc}") from None
    return f"{size}:{hashlib.sha256(head).hexdigest()[:32]}"


def record_batching(
    store: Store, keys: RunKeys, sources: Sequence[str], settings: Settings
) -> None:
    """Store in the run's meta what a resume needs beyond :class:`CaptureInfo`: the byte limit
    of a batch and the fingerprints of the files. Must happen before the first batch."""
    fps = json.dumps([fingerprint(str(s)) for s in sources])
    set_meta(
        store,
        keys,
        **{MetaField.BATCH_BYTES: settings.batch_bytes, MetaField.FINGERPRINTS: fps},
    )


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
    #: batches counted as merged whose part in some shard was lost (a failover): sent again
    #: whole, their other parts are recognised as merged
    parts: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.orphans or self.lost or self.parts)

    @property
    def resend(self) -> tuple[int, ...]:
        """Batches whose payload must be rebuilt from the files."""
        return tuple(sorted(set(self.lost) | set(self.parts)))

    def describe(self, name: str) -> str:
        parts = []
        if self.lost:
            verb = "was" if len(self.lost) == 1 else "were"
            parts.append(f"{batches(self.lost)} {verb} lost by Redis")
        if self.parts:
            parts.append(f"{batches(self.parts)} lost shard parts in a failover")
        if self.orphans:
            verb = "has" if len(self.orphans) == 1 else "have"
            parts.append(f"{batches(self.orphans)} {verb} no job")
        files = "" if not self.resend else " FILES..."
        how = f"`producer submit --resume {name}{files}`"
        if not self.resend:
            how += f" or `producer retry {name}`"
        return "; ".join(parts) + f"; send again with {how}"


def scan(store: Store, keys: RunKeys, upto: int) -> Gaps:
    """Classify the batches ``0 .. upto-1`` of a run (see the module docstring).

    A worker counts a batch as merged before it deletes the payload, so the payloads and jobs
    are read (on the queue Redis) before the done set (on the store): a merge running meanwhile
    cannot make a batch look lost.
    """
    pk = PayloadKeys(keys.run)
    todo = [s for s in range(upto) if s not in done_seqs(store, keys)]
    have: dict[int, tuple[bool, bool]] = {}
    for i in range(0, len(todo), _CHUNK):
        part = todo[i : i + _CHUNK]
        with store.queue.pipeline(transaction=False) as p:
            for s in part:
                p.exists(pk.batch(s))
                p.exists(FlowherdJob.key_for(batch_job_id(keys.run, s)))
            res = p.execute()
        for j, s in enumerate(part):
            have[s] = (bool(res[2 * j]), bool(res[2 * j + 1]))
    done = done_seqs(store, keys) if todo else set()
    orphans: list[int] = []
    lost: list[int] = []
    for s in todo:
        if s in done:
            continue
        payload, job = have[s]
        if not payload:
            lost.append(s)
        elif not job:
            orphans.append(s)
    parts = tuple(sorted(q for q in lost_parts(store, keys) if q < upto))
    return Gaps(upto, tuple(orphans), tuple(lost), parts)


def failed_registry(conn: Redis, queue: str) -> FailedJobRegistry:
    return FailedJobRegistry(queue=make_queue(conn, queue), job_class=FlowherdJob)


def text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def load_run(store: Store, name: str) -> tuple[RunKeys, CaptureInfo, CaptureMeta]:
    return load(store, name)


def check_sources(name: str, info: CaptureInfo, meta: CaptureMeta, sources: Sequence[str]) -> None:
    """Refuse files other than the run's (by fingerprint; by file name for older runs)."""
    given = [str(s) for s in sources]
    expect = ", ".join(info.sources)
    if len(given) != len(info.sources):
        raise CaptureStateError(
            f"--resume {name}: the capture was submitted from {len(info.sources)} file(s) "
            f"({expect}), not {len(given)}: give the same files in the same order"
        )
    fps = json.loads(meta.fingerprints) if meta.fingerprints else None
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


def run_settings(settings: Settings, info: CaptureInfo, meta: CaptureMeta) -> Settings:
    """``settings`` with the batching, engine, windows and queue the run was submitted with."""
    return settings.model_copy(
        update={
            "batch_packets": info.batch_packets,
            "batch_bytes": meta.batch_bytes or settings.batch_bytes,
            "engine": info.engine,
            "window": info.window_ns / 1e9 if info.window_ns else None,
            "keep_windows": info.keep_windows or None,
            "queue": info.queue,
            "shards": info.shards,
        }
    )


def settings_of(store: Store, name: str, settings: Settings) -> Settings:
    """``settings`` with capture ``name``'s own batching, engine, windows and queue."""
    _, info, meta = load_run(store, name)
    return run_settings(settings, info, meta)


def missing(store: Store, keys: RunKeys, st: CaptureStatus) -> Gaps:
    """The batches of a capture that are neither merged nor queued (for ``producer status``).

    While the capture is being submitted, its newest batch may have a payload and no job yet
    (the producer writes them one after the other): that one is not counted as an orphan.
    """
    if st.state is CaptureState.COMPLETE and not st.lost_parts:
        return Gaps(st.batches_done)
    upto = st.total_batches if st.total_batches is not None else st.batches_enqueued
    gaps = scan(store, keys, upto)
    if st.total_batches is None and gaps.orphans and gaps.orphans[-1] == upto - 1:
        return Gaps(upto, gaps.orphans[:-1], gaps.lost, gaps.parts)
    return gaps


def finish(store: Store, queue: Queue, keys: RunKeys, total: int) -> bool:
    """Close the run again; enqueue its report when every batch is merged and no report job
    is pending (it failed, or a Redis restart lost it). True when a report job was queued."""
    if close_run(store, keys, total) == 1:
        enqueue_report(queue, keys.run)
        return True
    if batches_done(store, keys) != total or store.kv.exists(keys.report):
        return False
    job = queue.fetch_job(report_job_id(keys.run))
    if job is not None and job.get_status() in ("queued", "started", "scheduled", "deferred"):
        return False
    failed_registry(store.queue, queue.name).remove(report_job_id(keys.run))
    enqueue_report(queue, keys.run)
    return True
