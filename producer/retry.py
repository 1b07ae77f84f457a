"""``producer retry``: re-queue a capture's failed jobs and give orphan payloads their job,
without the files (lost batches need ``producer submit --resume``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from redis import Redis

from deploy.queueing import enqueue_batch, make_queue
from models.batch import decode_batch
from models.capture import BatchRef
from models.errors import CaptureStateError
from models.keys import batch_job_id, report_job_id
from models.settings import Settings
from producer.gaps import failed_registry, finish, load_run, ranges, run_settings, scan

log = logging.getLogger(__name__)


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
    keys, info, meta = load_run(conn, name)
    if meta.get("state") == "complete":
        raise CaptureStateError(f"capture {name!r} is complete: nothing to retry")
    queue = make_queue(conn, info.queue)
    reg = failed_registry(conn, info.queue)
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
        report = finish(conn, queue, keys, total)
    log.info(
        "event=retried run=%s requeued=%s orphans=%s lost=%s report=%s",
        keys.run,
        ranges(requeued) or "-",
        ranges(gaps.orphans) or "-",
        ranges(gaps.lost) or "-",
        report,
    )
    return Retried(tuple(sorted(requeued)), gaps.orphans, gaps.lost, report)
