"""The report job: runs on a worker once the last batch of a capture is merged."""

from __future__ import annotations

import logging
import os
import time

from redis import Redis
from rq import get_current_job

from flowherd.models.keys import RunKeys
from flowherd.reporter.analysis.report import stream_report
from flowherd.store.backend import Store, store_for_job
from flowherd.store.captures import exists as run_exists
from flowherd.store.captures import load_info, name_of_run, status, store_report
from flowherd.store.records import build_records
from flowherd.store.tables import iter_raw, table

log = logging.getLogger(__name__)


def build_report_for(store: Store, run: str) -> str:
    """Compute and store the report of ``run``; mark the capture complete. Returns the state.

    The report is built in streaming passes over the shards (memory does not grow with the
    table, see :func:`flowherd.reporter.analysis.report.stream_report`)."""
    name = name_of_run(store, run)
    if name is None or not run_exists(store, RunKeys(run)):
        return "stale"
    keys = RunKeys(run, load_info(store, RunKeys(run), name).shards)
    build_records(store, keys)  # with flow timeouts: the report then ranks the records
    st = status(store, name)
    report = stream_report(st, lambda: iter_raw(store, table(keys)), time.time_ns())
    store_report(store, keys, report)
    log.info("event=report_stored run=%s name=%s flows=%d", run, name, report.summary.flows_uni)
    return "complete" if report.complete else "partial"


def build_report(run: str) -> str:
    """RQ entry point (``flowherd.models.keys.REPORT_JOB``)."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("build_report must run inside an RQ job")
    conn: Redis = job.connection
    store = store_for_job(conn, os.environ.get("FLOWHERD_STORE_URL") or None)
    return build_report_for(store, run)
