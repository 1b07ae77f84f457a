"""Contracts of a capture run: the job argument, the static facts, and the live status."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flowherd.models.keys import MAX_SHARDS, NAME_RE
from flowherd.models.state import SnifferMember

SCHEMA_VERSION = 1

#: How workers dissect: ``scapy`` for every frame, or ``fast`` (a header decoder for the common
#: stacks that hands every frame it does not fully understand to scapy; same results).
Engine = Literal["scapy", "fast"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BatchRef(_Frozen):
    """The only argument of a batch job (JSON): which run, which batch. The frames themselves
    are a binary payload under ``RunKeys.batch(seq)``."""

    v: int = Field(SCHEMA_VERSION, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)
    run: str = Field(pattern=r"^[0-9a-f]{8,32}$")
    seq: int = Field(ge=0)
    packets: int = Field(ge=0)
    engine: Engine = "scapy"
    window_ns: int = Field(0, ge=0)  # 0: no per-window tables
    keep_windows: int = Field(0, ge=0)  # 0: keep every window
    shards: int = Field(1, ge=1, le=MAX_SHARDS)  # partitions of the flow table
    store: str = Field("", max_length=64)  # the store's id ("": not checked)
    #: replicas that must acknowledge each merge before the batch counts as merged (WAIT)
    wait_replicas: int = Field(0, ge=0, le=16)


class CaptureState(StrEnum):
    SUBMITTING = "submitting"  # the producer is still reading and enqueuing
    PROCESSING = "processing"  # every batch is enqueued; some are not merged yet
    COMPLETE = "complete"  # every batch merged and the report stored
    FAILED = "failed"  # at least one batch failed for good: the tables are partial
    ABORTED = "aborted"  # the producer stopped before enqueuing everything


class CaptureInfo(_Frozen):
    """Static facts of one run, written once when the submission starts."""

    v: int = SCHEMA_VERSION
    name: str = Field(pattern=NAME_RE.pattern)
    run: str
    sources: list[str]
    created_ns: int
    batch_packets: int
    queue: str
    engine: Engine = "scapy"
    window_ns: int = 0
    keep_windows: int = 0
    shards: int = Field(1, ge=1, le=MAX_SHARDS)


class BucketCount(_Frozen):
    packets: int = 0
    bytes: int = 0


class RecordsLeft(BaseModel):
    """The flow records of a live capture that have left Redis as they expired (``producer
    sniff --records-dir``/``--ipfix``), and those still open."""

    model_config = ConfigDict(frozen=True)

    #: where they went, in words
    to: str
    records: int = Field(ge=0)
    packets: int = Field(ge=0)
    bytes: int = Field(ge=0)
    files: int = Field(ge=0)
    #: conversations with a record not over yet (or segments not folded yet)
    open: int = Field(ge=0)
    #: records starting before this are all over (ns; 0 before the first step)
    watermark_ns: int = Field(ge=0)
    #: packets that arrived later than the frontier allowed (each in one record, maybe split)
    late_packets: int = Field(0, ge=0)


class CaptureStatus(_Frozen):
    """What ``producer status`` and ``reporter captures`` show."""

    name: str
    run: str
    state: CaptureState
    created_ns: int
    sources: list[str]
    batches_enqueued: int
    batches_done: int
    batches_failed: int
    total_batches: int | None
    packets: int
    bytes: int
    counted_packets: int
    counted_bytes: int
    flows: int
    not_counted: dict[str, BucketCount]
    first_ns: int | None
    last_ns: int | None
    warnings: list[str] = []
    failures: list[str] = []
    #: batches whose part is merged, per shard (the capture is merged when each equals
    #: ``total_batches``)
    parts_done: list[int] = []
    #: "batch N shard S" for each part that the run counts as merged but its shard lacks (lost
    #: by a failover before it reached a replica); ``producer submit --resume`` sends them again
    lost_parts: list[str] = []
    #: seconds from submission to the report (complete) or to now
    elapsed_s: float = 0.0
    #: live captures (``producer sniff``), every 2 s while it runs and at its end: the frames
    #: the kernel counted (drops included), those it dropped, those the producer dropped; None
    #: for a file capture
    kernel_packets: int | None = None
    kernel_drops: int | None = None
    producer_drops: int | None = None
    #: each sniffer process of a live capture (one, or ``--fanout N``), with its own counters
    members: list[SnifferMember] = []
    #: a live capture whose records leave as they expire: what has left, what is open
    records_left: RecordsLeft | None = None

    @property
    def rate_pps(self) -> float:
        """Packets merged per second of wall-clock time since submission."""
        return self.packets / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.state is CaptureState.COMPLETE
