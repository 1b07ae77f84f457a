"""``producer retry``: re-queue a capture's failed jobs and give orphan payloads their job,
without the files (lost batches need ``producer submit --resume``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from flowherd.deploy.queueing import enqueue_batch, make_queue
from flowherd.models.batch import decode_columns
from flowherd.models.errors import CaptureStateError
from flowherd.models.keys import PayloadKeys, batch_job_id, report_job_id, seq_of_job
from flowherd.models.settings import Settings
from flowherd.models.state import StoredState
from flowherd.producer.run.gaps import failed_registry, finish, load_run, ranges, run_settings, scan
from flowherd.producer.run.writer import batch_ref
from flowherd.store.backend import Store
from flowherd.store.captures import failed_job_ids, is_done, store_id
from flowherd.store.lock import RunLock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retried:
    """What :func:`retry` did, and the batches it could not send (they need the files)."""

    requeued: tuple[int, ...]
    orphans: tuple[int, ...]
    lost: tuple[int, ...]
    report: bool


def retry(store: Store, name: str, settings: Settings) -> Retried:
    """Put the failed jobs of capture ``name`` back on its queue (their payloads are still in
    Redis, since only a merge deletes one), give orphan payloads a job, and queue the report
    if every batch is merged but no report is coming. Lost batches are only reported: they
    need ``producer submit --resume`` with the files. Raises :class:`CaptureStateError` for an
    unknown or complete capture.
    """
    keys, info, meta = load_run(store, name)
    if meta.state is StoredState.COMPLETE:
        raise CaptureStateError(f"capture {name!r} is complete: nothing to retry")
    with RunLock(store, keys, name):
        conn = store.queue
        pk = PayloadKeys(keys.run)
        queue = make_queue(conn, info.queue)
        reg = failed_registry(conn, info.queue)
        requeued: list[int] = []
        report = False
        for jid in failed_job_ids(conn, info.queue, keys.run, limit=10**9):
            if jid == report_job_id(keys.run):
                reg.requeue(jid)
                report = True
                continue
            seq = seq_of_job(keys.run, jid)
            if seq is None:
                continue
            if conn.exists(pk.batch(seq)):
                reg.requeue(jid)
                requeued.append(seq)
            elif is_done(store, keys, seq):
                reg.remove(jid)  # merged after all: the failure is stale
        total = meta.total_batches
        gaps = scan(store, keys, meta.upto)
        rs = run_settings(settings, info, meta)
        sid = store_id(store)
        for seq in gaps.orphans:
            payload = conn.get(pk.batch(seq))
            if payload is None:
                continue
            packets = len(decode_columns(cast(bytes, payload)))
            reg.remove(batch_job_id(keys.run, seq))
            enqueue_batch(queue, batch_ref(keys, seq, packets, rs, sid), rs.job_timeout, rs.retries)
        if total is not None and not report and not gaps.resend:
            report = finish(store, queue, keys, total)
    log.info(
        "event=retried run=%s requeued=%s orphans=%s lost=%s report=%s",
        keys.run,
        ranges(requeued) or "-",
        ranges(gaps.orphans) or "-",
        ranges(gaps.resend) or "-",
        report,
    )
    return Retried(tuple(sorted(requeued)), gaps.orphans, gaps.resend, report)
