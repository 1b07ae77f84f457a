"""The batch job: fetch a payload, dissect, fold, merge once; enqueue the report after the last.

Jobs use the connection of the RQ job that runs them for the queue and the payload, and the
worker's store (``FLOWHERD_STORE_URL``, set by ``workers run --store-url``; by default the
queue's Redis) for the flow tables, built once per worker process.
"""

from __future__ import annotations

import logging
import os
import time
from typing import cast

from rq import get_current_job

from flowherd.deploy.queueing import enqueue_report, make_queue
from flowherd.models.batch import MAX_BODY_BYTES, decode_columns
from flowherd.models.capture import BatchRef
from flowherd.models.errors import BatchError
from flowherd.models.keys import PayloadKeys, RunKeys
from flowherd.store.backend import Store, store_for_job
from flowherd.store.captures import exists as run_exists
from flowherd.store.captures import is_done, store_id
from flowherd.store.records import timeouts_of, write_segments
from flowherd.workers.decode.dissect import dissect
from flowherd.workers.decode.fastpath import dissect_fast
from flowherd.workers.fold.aggregate import fold, fold_windows
from flowherd.workers.fold.segments import batch_segments
from flowherd.workers.fold.vector import fold_vector, fold_windows_vector
from flowherd.workers.merge import MergeStatus, merge_partial
from flowherd.workers.metrics import instrumented

log = logging.getLogger(__name__)


def max_payload_bytes() -> int:
    """The largest batch payload (and decompressed body) a worker accepts: the ``max_payload``
    setting (FLOWHERD_MAX_PAYLOAD), by default :data:`flowherd.models.batch.MAX_BODY_BYTES` (256
    MiB).

    A bad value raises pydantic's ValidationError (``workers run`` reports it in one line before
    starting); it is never replaced by the default. The value is read once per value of the
    variable, not once per batch (building the settings takes about a millisecond).
    """
    from flowherd.models.settings import Settings

    raw = os.environ.get("FLOWHERD_MAX_PAYLOAD")
    memo: dict[str | None, int] = max_payload_bytes.__dict__.setdefault("memo", {})
    if raw not in memo:
        memo[raw] = min(Settings().max_payload, MAX_BODY_BYTES)
    return memo[raw]


@instrumented  # counted in flowherd.workers.metrics when `workers run --metrics-port` is on
def process_batch(ref_json: str) -> dict[str, int | str]:
    """Process one batch exactly once. Raises :class:`BatchError` for a refused payload, and
    then without RQ retries: a payload that is refused once is refused every time."""
    job = get_current_job()
    if job is None:
        raise BatchError("process_batch must run inside an RQ job")
    try:
        store = store_for_job(job.connection, os.environ.get("FLOWHERD_STORE_URL") or None)
        return _process(store, ref_json, job.origin)
    except BatchError:
        job.retries_left = 0
        raise


def _process(store: Store, ref_json: str, origin: str) -> dict[str, int | str]:
    ref = BatchRef.model_validate_json(ref_json)
    conn = store.queue
    keys = RunKeys(ref.run, ref.shards)
    payload_key = PayloadKeys(ref.run).batch(ref.seq)
    if ref.store and ref.store != store_id(store):
        raise BatchError(
            f"batch {ref.seq} of run {ref.run} belongs to another store than this worker's "
            f"({store.where or 'the queue Redis'}): start the workers with the producer's "
            "--store-url"
        )
    t0 = time.perf_counter()
    limit = max_payload_bytes()
    size = int(conn.strlen(payload_key))
    if size > limit:  # refused before it is read into memory
        raise BatchError(
            f"payload of batch {ref.seq} of run {ref.run} is {size} bytes, over the limit of "
            f"{limit} (FLOWHERD_MAX_PAYLOAD)"
        )
    payload = conn.get(payload_key)
    if payload is None:
        if not run_exists(store, keys):
            return {"status": "stale"}
        if is_done(store, keys, ref.seq):
            return {"status": "duplicate"}
        raise BatchError(f"payload of batch {ref.seq} of run {ref.run} is missing")
    cols = decode_columns(cast(bytes, payload), max_body=limit)
    if len(cols) != ref.packets:
        raise BatchError(
            f"batch {ref.seq} of run {ref.run} holds {len(cols)} records, expected {ref.packets}"
        )
    t1 = time.perf_counter()
    fn = dissect_fast if ref.engine == "fast" else dissect
    fast = ref.engine == "fast"
    records = [] if fast else cols.records()  # the fast engine folds the columns themselves
    if fast:
        table = (
            fold_windows_vector(cols, fn, ref.window_ns) if ref.window_ns else fold_vector(cols, fn)
        )
    else:
        table = fold_windows(records, fn, ref.window_ns) if ref.window_ns else fold(records, fn)
    t2 = time.perf_counter()
    timeouts = timeouts_of(store, keys)
    if timeouts:  # segments first: a batch counted as merged has its segments stored
        segs = batch_segments(cols.records() if fast else records, fn, timeouts, ref.shards)
        write_segments(store, keys, ref.seq, segs)
    res = merge_partial(store, keys, ref.seq, table, ref.keep_windows, ref.wait_replicas)
    if res.status is not MergeStatus.STALE:
        conn.delete(payload_key)  # only once every part is merged and the batch counted
    t3 = time.perf_counter()
    if res.status is MergeStatus.LAST:
        enqueue_report(make_queue(conn, origin), ref.run)
    log.info(
        "event=batch_merged run=%s seq=%d packets=%d flows=%d status=%s "
        "fetch_ms=%.1f dissect_ms=%.1f merge_ms=%.1f",
        ref.run,
        ref.seq,
        table.packets,
        len(table.flows),
        res.status.name,
        (t1 - t0) * 1e3,
        (t2 - t1) * 1e3,
        (t3 - t2) * 1e3,
    )
    return {
        "status": res.status.name.lower(),
        "packets": table.packets,
        "bytes": table.bytes,
        "new_flows": res.new_flows,
        "dissect_us": int((t2 - t1) * 1e6),
        "merge_us": int((t3 - t2) * 1e6),
    }
