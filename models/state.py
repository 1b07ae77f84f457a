"""The mutable state of a capture run, as its ``meta`` hash holds it (``RunKeys.meta``).

Field names live here and in the two Lua scripts of ``store/`` that write them atomically
(``close.lua`` and ``finish.lua`` name ``total_batches`` and ``state``). Everything else reads
and writes the hash through ``flowherd.store.captures`` with these models.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, Json


class StoredState(StrEnum):
    """What the ``state`` field holds. ``failed`` is never stored: a run is failed while one of
    its batch jobs sits in RQ's failed registry (``flowherd.store.captures.status`` derives it)."""

    SUBMITTING = "submitting"
    PROCESSING = "processing"
    COMPLETE = "complete"
    ABORTED = "aborted"


class SnifferMember(BaseModel):
    """One sniffer process of a live capture (``producer sniff``), as the meta hash's
    ``members`` field lists them: its kernel counters (``packets`` includes ``drops``) and
    whether it ran to the end (``ok``) or died (``died``, with the ``signal`` that killed it
    when one did). A capture read by one process (a ring or ``recvmsg``) lists one member, the
    producer's own process."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    member: int = Field(ge=1)  # 1-based, in the order the processes were started
    pid: int = Field(ge=0)
    packets: int = Field(ge=0)
    drops: int = Field(ge=0)
    state: Literal["ok", "died"] = "ok"
    signal: str | None = None  # e.g. "SIGKILL"; None when it exited or stopped answering

    @property
    def label(self) -> str:
        return f"process {self.member} (pid {self.pid})"

    def describe(self) -> str:
        """``1,234,567 frames, 12 dropped by the kernel`` (and ``; died of SIGKILL``)."""
        text = f"{self.packets:,} frames, {self.drops:,} dropped by the kernel"
        if self.state == "died":
            text += f"; died of {self.signal}" if self.signal else "; died"
        return text


class MetaField:
    """Names of the ``meta`` hash's fields."""

    STATE = "state"
    ENQUEUED = "enqueued"  # batches whose payload is stored (an absolute mark)
    TOTAL = "total_batches"  # set when the producer closed the run
    BATCH_BYTES = "batch_bytes"  # the byte limit of a batch (resume recuts the same batches)
    FINGERPRINTS = "fingerprints"  # JSON list of the source files' fingerprints
    ERROR = "error"  # why the run was aborted
    COMPLETED_NS = "completed_ns"  # when the report was stored
    IDLE_NS = "idle_ns"  # flow idle timeout (ns; absent or 0: off), set before any batch
    ACTIVE_NS = "active_ns"  # flow active timeout (ns; absent or 0: off), set before any batch
    #: where the records go as they expire (``reporter records``), set before any batch; the
    #: report job then leaves the records to the exporter
    RECORDS_OUT = "records_out"
    #: the producer's promise: no batch it sends later holds a packet older than this (ns)
    FRONTIER_NS = "frontier_ns"
    LATE = "late_packets"  # packets older than the frontier already published
    #: every batch below it is merged and no longer listed in ``done`` (a long live capture)
    DONE_BELOW = "done_below"
    KERNEL_PACKETS = "kernel_packets"  # live: frames the kernel counted (drops included)
    KERNEL_DROPS = "kernel_drops"  # live: frames the kernel dropped (its ring or buffer full)
    PRODUCER_DROPS = "producer_drops"  # live: frames read but dropped (the writer's queue full)
    MEMBERS = "members"  # live: JSON list of SnifferMember, one per sniffer process


class CaptureMeta(BaseModel):
    """The ``meta`` hash, parsed. Unknown fields are ignored (an older or newer writer)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: StoredState = StoredState.SUBMITTING
    enqueued: int = Field(0, ge=0)
    total_batches: int | None = Field(None, ge=0)
    batch_bytes: int | None = None
    fingerprints: str | None = None
    error: str | None = None
    completed_ns: int | None = None
    idle_ns: int = Field(0, ge=0)
    active_ns: int = Field(0, ge=0)
    records_out: str | None = None
    frontier_ns: int | None = None
    late_packets: int = Field(0, ge=0)
    done_below: int = Field(0, ge=0)
    kernel_packets: int | None = Field(None, ge=0)
    kernel_drops: int | None = Field(None, ge=0)
    producer_drops: int | None = Field(None, ge=0)
    members: Json[list[SnifferMember]] = []

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes] | dict[str, str]) -> CaptureMeta:
        def s(v: bytes | str) -> str:
            return v.decode() if isinstance(v, bytes) else v

        return cls.model_validate({s(k): s(v) for k, v in raw.items()})

    @property
    def closed(self) -> bool:
        """Every batch is enqueued (the producer closed the run)."""
        return self.total_batches is not None

    @property
    def upto(self) -> int:
        """Batches below this mark exist (``total_batches`` once closed, else ``enqueued``)."""
        return self.total_batches if self.total_batches is not None else self.enqueued
