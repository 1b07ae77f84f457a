"""Flow records that leave while a capture runs: the rule of :mod:`flowherd.models.records`
applied incrementally, behind a *watermark*. Pure; the I/O is :mod:`flowherd.store.expiry`.

A live capture's batches are merged in any order, so a record can only be declared over once no
packet that could still join it may arrive. The producer publishes a *frontier* (no batch it
sends later holds a packet older than it) and every batch not yet absorbed names its oldest
packet; the *watermark* ``W`` is the smallest of these. Every packet older than ``W`` is then in
a batch already absorbed, so, per conversation:

* the items (runs, or packets with an active timeout) that start before ``W`` are folded into
  the conversation's open record in time order, exactly as the sorted pass would (a later item
  starts at ``W`` or after);
* the open record is over once ``W - last >= idle`` or ``W - first >= active``: every packet
  still to come opens a new record by the rule.

So the records that leave equal :func:`flowherd.models.records.reference_records`, whatever the
order of the batches and of the steps. A packet older than a watermark already used (a *late*
packet, counted by the producer) still lands in exactly one record: the open one, or a new one.

:class:`Open` is one conversation's state between steps: the open record, if any, and the items
absorbed but not yet folded. Its bytes (:meth:`Open.pack`)::

    u8 has_record | [RUN item: the open record] | u8 kind | u32 n | n x item

Records leave through a *journal*: a file of ``u8 keylen | packed FlowKey | u8 valuelen |
packed FlowStats`` entries (:func:`journal_entry`, :func:`journal_entries`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flowherd.models.flows import NS, FlowStats
from flowherd.models.records import (
    KIND_PACKETS,
    KIND_RUNS,
    PACKET,
    RUN,
    Entry,
    Pkt,
    Timeouts,
)

_HEAD = struct.Struct("<BI")  # kind, item count
#: no watermark yet: nothing is older than it
NO_WATERMARK = 0
#: the watermark of a capture that has ended: every record is over
END = (1 << 63) - 1


def _run(st: FlowStats) -> bytes:
    return RUN.pack(
        st.pkts_ab,
        st.bytes_ab,
        st.pkts_ba,
        st.bytes_ba,
        st.first_ab,
        st.last_ab,
        st.first_ba,
        st.last_ba,
        st.flags_ab,
        st.flags_ba,
    )


def over(t: Timeouts, rec: FlowStats, watermark: int) -> bool:
    """Whether ``rec`` is over at ``watermark``: a packet at the watermark or later opens a new
    record."""
    return bool(
        (t.idle_ns and watermark - rec.last >= t.idle_ns)
        or (t.active_ns and watermark - rec.first >= t.active_ns)
    )


@dataclass(slots=True)
class Open:
    """One conversation between steps: its open record and the items not folded yet."""

    rec: FlowStats | None = None
    runs: list[FlowStats] = field(default_factory=list)
    pkts: list[Pkt] = field(default_factory=list)

    def absorb(self, e: Entry) -> None:
        """Take one batch's segments of this conversation."""
        if e.kind == KIND_PACKETS:
            self.pkts.extend(e.packets())
        else:
            self.runs.extend(e.runs())

    @property
    def empty(self) -> bool:
        return self.rec is None and not self.runs and not self.pkts

    def due(self, t: Timeouts) -> int:
        """The smallest watermark at which :func:`advance` has something to do (:data:`END`
        when nothing)."""
        d = END
        if self.runs:
            d = min(r.first for r in self.runs) + 1
        if self.pkts:
            d = min(d, min(p.ts for p in self.pkts) + 1)
        rec = self.rec
        if rec is not None:
            if t.idle_ns:
                d = min(d, rec.last + t.idle_ns)
            if t.active_ns:
                d = min(d, rec.first + t.active_ns)
        return d

    def pack(self) -> bytes:
        head = b"\x01" + _run(self.rec) if self.rec is not None else b"\x00"
        if self.pkts:
            body = b"".join(PACKET.pack(p.ts, p.wire, p.direction, p.flags) for p in self.pkts)
            return head + _HEAD.pack(KIND_PACKETS, len(self.pkts)) + body
        return head + _HEAD.pack(KIND_RUNS, len(self.runs)) + b"".join(map(_run, self.runs))

    @classmethod
    def unpack(cls, raw: bytes) -> Open:
        """The state :meth:`pack` wrote; ValueError for other bytes."""
        mv = memoryview(raw)
        if not raw or raw[0] > 1:
            raise ValueError("open flow state: bad header")
        pos = 1
        rec = None
        if raw[0]:
            rec = FlowStats(*RUN.unpack_from(mv, pos))
            pos += RUN.size
        kind, n = _HEAD.unpack_from(mv, pos)
        pos += _HEAD.size
        size = PACKET.size if kind == KIND_PACKETS else RUN.size
        if kind not in (KIND_RUNS, KIND_PACKETS) or pos + n * size != len(raw):
            raise ValueError("open flow state: bad items")
        items = mv[pos:]
        if kind == KIND_PACKETS:
            pkts = [Pkt(ts, d, w, f) for ts, w, d, f in PACKET.iter_unpack(items)]
            return cls(rec, [], pkts)
        return cls(rec, [FlowStats(*v) for v in RUN.iter_unpack(items)], [])


def advance(t: Timeouts, o: Open, watermark: int) -> list[FlowStats]:
    """Fold the items of ``o`` that start before ``watermark`` (all of them at :data:`END`)
    and return the records that are over, oldest first; ``o`` keeps the rest."""
    out: list[FlowStats] = []
    final = watermark >= END
    rec = o.rec
    if o.runs:
        ready = [r for r in o.runs if final or r.first < watermark]
        if ready:
            o.runs = [r for r in o.runs if not (final or r.first < watermark)]
            for r in sorted(ready, key=lambda s: (s.first, s.last)):
                if rec is not None and r.first - rec.last < t.idle_ns:
                    rec.merge(r)
                    continue
                if rec is not None:
                    out.append(rec)
                rec = r
    if o.pkts:
        ready_p = o.pkts if final else [p for p in o.pkts if p.ts < watermark]
        if ready_p:
            o.pkts = [] if final else [p for p in o.pkts if p.ts >= watermark]
            idle, active = t.idle_ns, t.active_ns
            first, last = (rec.first, rec.last) if rec is not None else (0, 0)
            for p in sorted(ready_p):  # by time (ties share a record, in any order)
                ts = p.ts
                if rec is None or (idle and ts - last >= idle) or (active and ts - first >= active):
                    if rec is not None:
                        out.append(rec)
                    rec = FlowStats()
                    first = last = ts
                rec.add(p.direction, ts, p.wire, p.flags)
                if ts > last:
                    last = ts
    if rec is not None and (final or over(t, rec, watermark)):
        out.append(rec)
        rec = None
    o.rec = rec
    return out


# -- the journal -------------------------------------------------------------------------------


def journal_entry(key: bytes, st: FlowStats) -> bytes:
    """One record as a journal entry: its packed key and packed counters."""
    v = st.pack()
    return bytes((len(key),)) + key + bytes((len(v),)) + v


def journal_entries(raw: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(packed key, packed FlowStats)`` pairs of a journal; ValueError for a torn entry."""
    mv = memoryview(raw)
    pos, end = 0, len(raw)
    while pos < end:
        n = raw[pos]
        kend = pos + 1 + n
        if kend >= end:
            raise ValueError("journal ends inside an entry")
        m = raw[kend]
        vend = kend + 1 + m
        if vend > end:
            raise ValueError("journal ends inside an entry")
        yield bytes(mv[pos + 1 : kend]), bytes(mv[kend + 1 : vend])
        pos = vend


# -- where the records go ----------------------------------------------------------------------

RecordsFormat = Literal["ndjson", "csv", "parquet"]


class RecordsOut(BaseModel):
    """Where a capture's records go as they expire: declared by the producer before its first
    batch (the run's ``records_out`` meta field, JSON) and read by ``reporter records``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the directory the record files appear in (absolute); None: IPFIX only
    dir: str | None = None
    format: RecordsFormat = "ndjson"
    #: a file is closed and a new one started at least this often (ns)
    rotate_ns: int = Field(60 * NS, ge=NS, le=86_400 * NS)
    #: ``HOST:PORT`` of an IPFIX collector, or None
    ipfix: str | None = None
    view: Literal["uni", "bi"] = "uni"

    @property
    def where(self) -> str:
        """The destination in words, e.g. ``/var/flows (ndjson) and IPFIX to 10.0.0.9:4739``."""
        parts = []
        if self.dir is not None:
            parts.append(f"{self.dir} ({self.format})")
        if self.ipfix is not None:
            parts.append(f"IPFIX to {self.ipfix}")
        return " and ".join(parts)
