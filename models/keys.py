"""Every Redis key flowherd uses, named in this one module.

A capture *name* (what users type) maps to a *run id* (a fresh hex token per submission) in the
hash :data:`CAPTURES`. Everything a run owns lives under ``fh:{<run>}:...``; the braces are a
Redis Cluster hash tag, so one run's keys share a slot and its merge script may touch them all.
Replacing a capture deletes the old run's keys; a late job of the old run finds no ``meta`` and
changes nothing.
"""

from __future__ import annotations

import re

#: hash: capture name -> current run id
CAPTURES = "fh:captures"
#: default RQ queue name for batch and report jobs
DEFAULT_QUEUE = "flowherd"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunKeys:
    """Key names of one capture run."""

    __slots__ = ("prefix", "run")

    def __init__(self, run: str) -> None:
        self.run = run
        self.prefix = f"fh:{{{run}}}:"

    @property
    def info(self) -> str:
        """string: CaptureInfo JSON (static facts of the run)"""
        return self.prefix + "info"

    @property
    def meta(self) -> str:
        """hash: state, total_batches, enqueued, failed, warnings; its existence = run is live"""
        return self.prefix + "meta"

    @property
    def flows(self) -> str:
        """hash: packed FlowKey -> packed FlowStats"""
        return self.prefix + "flows"

    @property
    def rank_bi(self) -> str:
        """zset: packed FlowKey scored by the conversation's bytes"""
        return self.prefix + "rank:bi"

    @property
    def totals(self) -> str:
        """hash: packet/byte totals, not-counted buckets, first/last timestamps"""
        return self.prefix + "totals"

    @property
    def done(self) -> str:
        """set: sequence numbers of merged batches (the exactly-once marker)"""
        return self.prefix + "done"

    @property
    def finalized(self) -> str:
        """string: set once, by whoever sees the last batch merged; guards the report job"""
        return self.prefix + "finalized"

    @property
    def report(self) -> str:
        """string: Report JSON, written by the report job"""
        return self.prefix + "report"

    @property
    def warnings(self) -> str:
        """list: input warnings (e.g. a truncated file), shown with every status and report"""
        return self.prefix + "warnings"

    @property
    def windows(self) -> str:
        """zset: window start (ns, as text) scored by start seconds; one per window kept"""
        return self.prefix + "windows"

    def window_prefix(self, start_ns: int) -> str:
        """prefix of one window's ``flows`` / ``rank:bi`` / ``totals`` (same layouts as the
        run's own); built here and, identically, in ``workers/merge.lua``"""
        return f"{self.prefix}w:{start_ns}:"

    def window(self, start_ns: int) -> RunKeys:
        """Keys of one window, usable wherever a run's flows/rank_bi/totals are read."""
        wk = RunKeys(self.run)
        wk.prefix = self.window_prefix(start_ns)
        return wk

    def batch(self, seq: int) -> str:
        """string: the raw batch payload, deleted by the merge that consumes it"""
        return f"{self.prefix}batch:{seq}"

    def batch_pattern(self) -> str:
        return f"{self.prefix}batch:*"

    def patterns(self) -> list[str]:
        """SCAN patterns of the run's variable keys (batch payloads, window tables)."""
        return [self.batch_pattern(), f"{self.prefix}w:*"]

    def all_fixed(self) -> list[str]:
        return [
            self.info,
            self.meta,
            self.flows,
            self.rank_bi,
            self.totals,
            self.done,
            self.finalized,
            self.report,
            self.warnings,
            self.windows,
        ]


def batch_job_id(run: str, seq: int) -> str:
    return f"fh-{run}-{seq}"


def report_job_id(run: str) -> str:
    return f"fh-{run}-report"


#: The only job functions a flowherd worker runs (enqueued by dotted path, never pickled).
BATCH_JOB = "workers.jobs.process_batch"
REPORT_JOB = "reporter.job.build_report"
ALLOWED_JOBS = frozenset({BATCH_JOB, REPORT_JOB})
