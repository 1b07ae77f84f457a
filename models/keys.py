"""Every Redis key flowherd uses, named in this one module.

Two Redis roles (see ``flowherd.store.backend``): the *queue* Redis carries RQ's jobs and the raw
batch payloads; the *store* (one Redis, or a Redis Cluster) carries the captures: their registry,
state, flow tables and reports. With one Redis both roles share it.

A capture *name* (what users type) maps to a *run id* (a fresh hex token per submission) in the
hash :data:`CAPTURES`. A run's own keys live under ``fh:{<run>}:...``: the braces are a Redis
Cluster hash tag, so they share one slot and a script may touch them together.

A run's flow table is split into ``shards`` partitions by a hash of the canonical flow key
(:func:`flowherd.models.flows.shard_of`). Shard ``s`` keeps its part of the table (flows, ranking,
totals, windows, its own done-marker set) under ``fh:{<tag>}:...`` with a tag of its own
(:func:`shard_tag`), chosen so that a run's shards fall into evenly spaced cluster slots: with
the usual contiguous slot ranges per master, every master holds ``shards / masters`` of them.
The run's table is the sum of its shards' tables.

Replacing a capture deletes the old run's keys; a late job of the old run finds no ``meta``
(and no shard ``live`` marker) and changes nothing.
"""

from __future__ import annotations

import functools
import re

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

#: hash: capture name -> current run id
CAPTURES = "fh:captures"
#: string: a random id of this store, stamped into every batch job so that a worker writing to
#: another store refuses it (instead of merging into the wrong Redis)
STORE_ID = "fh:store-id"
#: default RQ queue name for batch and report jobs
DEFAULT_QUEUE = "flowherd"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: the largest number of shards a run may have
MAX_SHARDS = 1024


@functools.lru_cache(maxsize=4096)
def shard_tag(run: str, shard: int, shards: int) -> str:
    """The hash tag of one shard: ``<run>.<shard>.<n>`` with the smallest ``n`` whose cluster
    slot lies in the ``shard``-th of ``shards`` equal slot ranges (deterministic, so every
    process computes the same keys)."""
    lo = shard * REDIS_CLUSTER_HASH_SLOTS // shards
    hi = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    n = 0
    while True:
        tag = f"{run}.{shard}.{n}"
        if lo <= key_slot(tag.encode()) < hi:
            return tag
        n += 1


class TableKeys:
    """The keys of one flow table: a shard's whole-run part, or its part of one window."""

    __slots__ = ("flows", "rank_bi", "totals")

    def __init__(self, prefix: str) -> None:
        #: hash: packed FlowKey -> packed FlowStats
        self.flows = prefix + "flows"
        #: zset: packed FlowKey scored by the conversation's bytes
        self.rank_bi = prefix + "rank:bi"
        #: hash: packet/byte totals, not-counted buckets, first/last timestamps, flows
        self.totals = prefix + "totals"

    def all(self) -> list[str]:
        return [self.flows, self.rank_bi, self.totals]


class ShardKeys(TableKeys):
    """Keys of one shard of a run (all in the shard's slot)."""

    __slots__ = ("done", "live", "prefix", "shard", "windows")

    def __init__(self, run: str, shard: int, shards: int) -> None:
        self.shard = shard
        self.prefix = f"fh:{{{shard_tag(run, shard, shards)}}}:"
        super().__init__(self.prefix)
        #: string: exists while the run exists; a merge into a shard without it does nothing
        self.live = self.prefix + "live"
        #: set: sequence numbers of the batches whose part of this shard is merged (from
        #: ``done_below`` on)
        self.done = self.prefix + "done"
        #: zset: window start (ns, as text) scored by start seconds; the windows kept
        self.windows = self.prefix + "windows"

    def window(self, start_ns: int | str) -> TableKeys:
        """This shard's part of the window starting at ``start_ns``."""
        return TableKeys(f"{self.prefix}w:{start_ns}:")

    @property
    def segments(self) -> str:
        """hash, with flow timeouts: ``<seq>`` -> chunk count and ``<seq>:<i>`` -> chunk ``i``
        of batch ``seq``'s segments in this shard (``flowherd.models.records``)"""
        return self.prefix + "seg"

    @property
    def records(self) -> TableKeys:
        """This shard's part of the flow records cut by the run's timeouts: ``flows`` maps a
        packed FlowKey followed by the record's start (u64 big-endian ns) to packed FlowStats"""
        return TableKeys(self.prefix + "rec:")

    @property
    def done_below(self) -> str:
        """string: every batch below it has its part of this shard merged, and is no longer
        listed in ``done`` (``flowherd.store.captures.compact_done``)"""
        return self.prefix + "done_below"

    @property
    def expiry(self) -> str:
        """hash, with records that leave as they expire: the exporter's checkpoint in this shard
        (``flowherd.store.expiry``)"""
        return self.prefix + "exp"

    @property
    def open(self) -> str:
        """hash, with records that leave as they expire: packed FlowKey -> the conversation's
        open record and segments not folded yet (``flowherd.models.expiry.Open``)"""
        return self.prefix + "open"

    def fixed(self) -> list[str]:
        return [
            self.live,
            self.done,
            self.windows,
            *self.all(),
            self.segments,
            *self.records.all(),
            self.expiry,
            self.open,
            self.done_below,
        ]


class RunKeys:
    """Key names of one capture run with ``shards`` partitions (1 on a single Redis)."""

    __slots__ = ("prefix", "run", "shards")

    def __init__(self, run: str, shards: int = 1) -> None:
        self.run = run
        self.shards = shards
        self.prefix = f"fh:{{{run}}}:"

    @property
    def info(self) -> str:
        """string: CaptureInfo JSON (static facts of the run)"""
        return self.prefix + "info"

    @property
    def meta(self) -> str:
        """hash: the run's mutable state (``flowherd.models.state.CaptureMeta``); exists while it
        lives"""
        return self.prefix + "meta"

    @property
    def done(self) -> str:
        """set: sequence numbers of batches whose every shard part is merged, from the meta field
        ``done_below`` on (every batch below it is merged)"""
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
    def records(self) -> str:
        """string, with flow timeouts: the batches done when the flow records were built (then
        readers of the whole table read the records)"""
        return self.prefix + "records"

    @property
    def pending(self) -> str:
        """zset, with records that leave as they expire: the batches the exporter has not
        absorbed yet, scored by their oldest packet (ns)"""
        return self.prefix + "pending"

    @property
    def export_lock(self) -> str:
        """string: held by the one record exporter of the run (``reporter records``)"""
        return self.prefix + "exporter"

    @property
    def lock(self) -> str:
        """string: held by the one producer writing the run (submit, sniff, resume, retry)"""
        return self.prefix + "lock"

    def shard(self, s: int) -> ShardKeys:
        return ShardKeys(self.run, s, self.shards)

    def all_shards(self) -> list[ShardKeys]:
        return [self.shard(s) for s in range(self.shards)]

    def fixed(self) -> list[str]:
        """The run-level keys (one slot)."""
        return [
            self.info,
            self.meta,
            self.done,
            self.finalized,
            self.report,
            self.warnings,
            self.lock,
            self.records,
            self.pending,
            self.export_lock,
        ]

    def window_patterns(self) -> list[str]:
        """SCAN patterns of the shards' window tables."""
        return [f"{sk.prefix}w:*" for sk in self.all_shards()]


class PayloadKeys:
    """Keys of a run on the queue Redis: the raw batch payloads."""

    __slots__ = ("prefix",)

    def __init__(self, run: str) -> None:
        self.prefix = f"fh:{{{run}}}:"

    def batch(self, seq: int) -> str:
        """string: the raw batch payload, deleted once the batch is merged"""
        return f"{self.prefix}batch:{seq}"

    def pattern(self) -> str:
        return f"{self.prefix}batch:*"


def job_prefix(run: str) -> str:
    """The prefix of every RQ job id of a run."""
    return f"fh-{run}-"


def batch_job_id(run: str, seq: int) -> str:
    return f"{job_prefix(run)}{seq}"


def report_job_id(run: str) -> str:
    return f"{job_prefix(run)}report"


def seq_of_job(run: str, job_id: str) -> int | None:
    """The batch sequence number of one of the run's batch job ids (None for anything else)."""
    rest = job_id.removeprefix(job_prefix(run))
    return int(rest) if rest != job_id and rest.isdigit() else None


#: The only job functions a flowherd worker runs (enqueued by dotted path, never pickled).
BATCH_JOB = "flowherd.workers.jobs.process_batch"
REPORT_JOB = "flowherd.reporter.job.build_report"
ALLOWED_JOBS = frozenset({BATCH_JOB, REPORT_JOB})
