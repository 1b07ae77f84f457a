"""Flow records split by idle and active timeouts: the rule, per-batch segments, and their merge.

The rule (NFStream's, in nanoseconds): take one conversation's packets (both directions share
its canonical key) in timestamp order. The first packet opens a record; a packet at time ``t``
opens a new record when ``t - last >= idle`` (``last``: the latest packet of the open record)
or ``t - first >= active`` (``first``: the record's first packet), for each timeout that is
set (0: off). Otherwise it joins the open record. Packets with equal timestamps always land in
the same record, so the records do not depend on the order of ties. :func:`reference_records`
is this rule applied to a list of packets, the definition the distributed path must equal.

Batches arrive in any order and hold packets from anywhere in the capture, so a batch cannot
cut records alone. It reduces its packets to *segments* per conversation instead:

* idle timeout only: the maximal runs of the batch's packets whose consecutive gaps are below
  ``idle``, each an interval with counters per direction (:data:`KIND_RUNS`). Over the whole
  capture, two consecutive packets are ``>= idle`` apart exactly where no run of any batch
  spans the gap, so the records are the clusters of runs whose gaps (``next.first - last``)
  are below ``idle`` (:func:`merge_runs`);
* an active timeout: where a record starts depends on every packet's time, so the segment keeps
  each packet as ``(ts, direction, wire length, TCP flags)`` (:data:`KIND_PACKETS`, 14 bytes a
  packet); the merge interleaves the batches' packets by time and applies the rule.

A batch's segments are one *blob* per shard: entries sorted by packed key, cut into chunks of
about :data:`CHUNK_BYTES` at entry boundaries. The blob is a pure function of the batch, so a
retried batch writes identical bytes. Nothing here does I/O.

Blob entry layout (little endian)::

    u8 keylen | packed FlowKey | u8 kind | u32 n | n x item
    KIND_RUNS item:    u64 pkts_ab, bytes_ab, pkts_ba, bytes_ba, first_ab, last_ab, first_ba,
                       last_ba | u8 flags_ab | u8 flags_ba                          (66 bytes)
    KIND_PACKETS item: u64 ts_ns | u32 wire_len | u8 direction | u8 tcp_flags        (14 bytes)
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from flowherd.models.flows import FlowKey, FlowStats

KIND_RUNS = 0
KIND_PACKETS = 1
RUN = struct.Struct("<QQQQQQQQBB")
PACKET = struct.Struct("<QIBB")
_HEAD = struct.Struct("<BI")  # kind, item count
#: Target size of one stored chunk of a blob (an entry larger than this is a chunk of its own).
CHUNK_BYTES = 64 * 1024


class Timeouts(NamedTuple):
    """Idle and active timeouts in nanoseconds; 0 switches one off."""

    idle_ns: int = 0
    active_ns: int = 0

    def __bool__(self) -> bool:
        return bool(self.idle_ns or self.active_ns)

    @property
    def kind(self) -> int:
        """How a batch keeps its segments under these timeouts."""
        return KIND_PACKETS if self.active_ns else KIND_RUNS


class Pkt(NamedTuple):
    """One counted packet of a conversation: time, direction (0: A to B), wire length, flags."""

    ts: int
    direction: int
    wire: int
    flags: int


def splits(t: Timeouts, first: int, last: int, ts: int) -> bool:
    """Whether a packet at ``ts`` opens a new record after one spanning ``first``..``last``."""
    return bool(
        (t.idle_ns and ts - last >= t.idle_ns) or (t.active_ns and ts - first >= t.active_ns)
    )


def _stats(pkts: Iterable[Pkt]) -> FlowStats:
    st = FlowStats()
    for p in pkts:
        st.add(p.direction, p.ts, p.wire, p.flags)
    return st


def sorted_pass(t: Timeouts, pkts: Iterable[Pkt]) -> Iterator[FlowStats]:
    """The records of one conversation whose packets ``pkts`` come in timestamp order."""
    st: FlowStats | None = None
    first = last = 0
    for p in pkts:
        if st is None or splits(t, first, last, p.ts):
            if st is not None:
                yield st
            st = FlowStats()
            first = p.ts
        st.add(p.direction, p.ts, p.wire, p.flags)
        last = p.ts
    if st is not None:
        yield st


def reference_records(
    t: Timeouts, packets: Iterable[tuple[FlowKey, Pkt]]
) -> dict[FlowKey, list[FlowStats]]:
    """The rule applied to a whole capture at once: each conversation's records, oldest first."""
    per: dict[FlowKey, list[Pkt]] = {}
    for k, p in packets:
        per.setdefault(k, []).append(p)
    return {k: list(sorted_pass(t, sorted(ps, key=lambda p: p.ts))) for k, ps in per.items()}


# -- segments of one batch -------------------------------------------------------------------


def runs(idle_ns: int, pkts: list[Pkt]) -> list[FlowStats]:
    """Maximal runs of ``pkts`` (sorted by time) whose consecutive gaps are below ``idle_ns``."""
    out: list[FlowStats] = []
    start = 0
    for i in range(1, len(pkts) + 1):
        if i == len(pkts) or pkts[i].ts - pkts[i - 1].ts >= idle_ns:
            out.append(_stats(pkts[start:i]))
            start = i
    return out


def encode_entry(key: FlowKey, t: Timeouts, pkts: list[Pkt]) -> bytes:
    """One blob entry: ``pkts`` (sorted by time) as runs or as packets, per ``t.kind``."""
    kb = key.pack()
    head = bytes((len(kb),)) + kb
    if t.kind == KIND_PACKETS:
        body = b"".join(PACKET.pack(p.ts, p.wire, p.direction, p.flags) for p in pkts)
        return head + _HEAD.pack(KIND_PACKETS, len(pkts)) + body
    rs = runs(t.idle_ns, pkts)
    body = b"".join(
        RUN.pack(
            s.pkts_ab,
            s.bytes_ab,
            s.pkts_ba,
            s.bytes_ba,
            s.first_ab,
            s.last_ab,
            s.first_ba,
            s.last_ba,
            s.flags_ab,
            s.flags_ba,
        )
        for s in rs
    )
    return head + _HEAD.pack(KIND_RUNS, len(rs)) + body


def encode_chunks(entries: Iterable[tuple[bytes, bytes]], limit: int = CHUNK_BYTES) -> list[bytes]:
    """``(packed key, entry)`` pairs sorted by key, cut into chunks at entry boundaries."""
    chunks: list[bytes] = []
    cur: list[bytes] = []
    size = 0
    for _, e in sorted(entries):
        if cur and size + len(e) > limit:
            chunks.append(b"".join(cur))
            cur, size = [], 0
        cur.append(e)
        size += len(e)
    if cur:
        chunks.append(b"".join(cur))
    return chunks


@dataclass(slots=True)
class Entry:
    """One conversation's segments in one blob."""

    key: bytes  # packed FlowKey
    kind: int
    items: memoryview

    @property
    def count(self) -> int:
        return len(self.items) // (PACKET.size if self.kind == KIND_PACKETS else RUN.size)

    def packets(self) -> Iterator[Pkt]:
        for ts, wire, d, f in PACKET.iter_unpack(self.items):
            yield Pkt(ts, d, wire, f)

    def runs(self) -> Iterator[FlowStats]:
        for v in RUN.iter_unpack(self.items):
            yield FlowStats(*v)


def decode_chunk(chunk: bytes) -> Iterator[Entry]:
    """The entries of one chunk; ValueError for bytes that are not whole entries."""
    mv = memoryview(chunk)
    pos, end = 0, len(chunk)
    while pos < end:
        n = mv[pos]
        key = bytes(mv[pos + 1 : pos + 1 + n])
        pos += 1 + n
        if pos + _HEAD.size > end:
            raise ValueError("segment chunk ends inside an entry header")
        kind, count = _HEAD.unpack_from(mv, pos)
        pos += _HEAD.size
        size = count * (PACKET.size if kind == KIND_PACKETS else RUN.size)
        if kind not in (KIND_RUNS, KIND_PACKETS) or pos + size > end:
            raise ValueError("segment chunk holds a malformed entry")
        yield Entry(key, kind, mv[pos : pos + size])
        pos += size


# -- merging the segments of every batch -------------------------------------------------------


def merge_runs(idle_ns: int, rs: Iterable[FlowStats]) -> Iterator[FlowStats]:
    """Records from runs of any batches: clusters of runs (by first packet) whose gaps are below
    ``idle_ns`` (see the module docstring)."""
    cur: FlowStats | None = None
    for r in sorted(rs, key=lambda s: (s.first, s.last)):
        if cur is not None and r.first - cur.last < idle_ns:
            cur.merge(r)
            continue
        if cur is not None:
            yield cur
        cur = r
    if cur is not None:
        yield cur


def records_of(t: Timeouts, entries: list[Entry]) -> Iterator[FlowStats]:
    """One conversation's records from its entries in every batch (any order)."""
    if t.kind == KIND_PACKETS:
        streams = [e.packets() for e in entries if e.kind == KIND_PACKETS]
        if len(streams) != len(entries):
            raise ValueError("segments of one capture mix packet and run entries")
        yield from sorted_pass(t, heapq.merge(*streams, key=lambda p: p.ts))
        return
    if any(e.kind != KIND_RUNS for e in entries):
        raise ValueError("segments of one capture mix packet and run entries")
    yield from merge_runs(t.idle_ns, (r for e in entries for r in e.runs()))


def merge_blobs(
    t: Timeouts, blobs: Iterable[Iterable[Entry]]
) -> Iterator[tuple[bytes, list[FlowStats]]]:
    """K-way merge of blobs (each sorted by key) into ``(packed key, records)`` in key order."""
    merged = heapq.merge(*blobs, key=lambda e: e.key)
    group: list[Entry] = []
    for e in merged:
        if group and e.key != group[0].key:
            yield group[0].key, list(records_of(t, group))
            group = []
        group.append(e)
    if group:
        yield group[0].key, list(records_of(t, group))
