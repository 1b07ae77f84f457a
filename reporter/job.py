"""The report job: runs on a worker once the last batch of a capture is merged."""

from __future__ import annotations

import logging
import time

from rq import get_current_job

from models.keys import CAPTURES, RunKeys
from reporter.build import make_report
from reporter.store import iter_flows, status

log = logging.getLogger(__name__)


def build_report_for(conn, run: str) -> str:  # type: ignore[no-untyped-def]
    """Compute and store the report of ``run``; mark the capture complete. Returns the state."""
    keys = RunKeys(run)
    name = next((k.decode() for k, v in conn.hgetall(CAPTURES).items() if v.decode() == run), None)
    if name is None or not conn.exists(keys.meta):
        return "stale"
    st = status(conn, name)
    report = make_report(st, iter_flows(conn, keys), time.time_ns())
    with conn.pipeline() as p:
        p.set(keys.report, report.model_dump_json())
        if report.complete:
            p.hset(keys.meta, mapping={"state": "complete", "completed_ns": time.time_ns()})
        p.execute()
    log.info("event=report_stored run=%s name=%s flows=%d", run, name, report.summary.flows_uni)
    return "complete" if report.complete else "partial"


def build_report(run: str) -> str:
    """RQ entry point (``models.keys.REPORT_JOB``)."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("build_report must run inside an RQ job")
    return build_report_for(job.connection, run)
