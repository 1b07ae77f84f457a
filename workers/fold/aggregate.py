"""Fold dissected packets into a partial flow table: the pure core of a batch job.

:func:`fold` takes records and a dissect function (so it can be tested without scapy) and returns
a :class:`PartialTable`: conversations keyed canonically, plus the batch's totals and its
"not counted" buckets. Every record lands in exactly one of the two. The fast engine folds with
``flowherd.workers.fold.vector.fold_vector`` instead, whose tables equal :func:`fold`'s and also
carry their flows packed for the merge (:attr:`PartialTable.packed`).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from flowherd.models.batch import RawRecord
from flowherd.models.flows import NO_FIRST, NO_LAST, FlowKey, FlowStats


class PacketLike(Protocol):
    @property
    def src(self) -> bytes: ...
    @property
    def dst(self) -> bytes: ...
    @property
    def proto(self) -> int: ...
    @property
    def sport(self) -> int: ...
    @property
    def dport(self) -> int: ...
    @property
    def tcp_flags(self) -> int: ...


DissectFn = Callable[[int, bytes], "PacketLike | str"]


@dataclass(slots=True)
class PartialTable:
    """One batch's contribution: conversations, totals and not-counted buckets."""

    flows: dict[FlowKey, FlowStats] = field(default_factory=dict)
    packets: int = 0
    bytes: int = 0
    not_counted: dict[str, list[int]] = field(default_factory=dict)  # bucket -> [packets, bytes]
    first_ns: int = NO_FIRST
    last_ns: int = NO_LAST
    #: per tumbling window (start ns -> table), when the run keeps windows
    windows: dict[int, PartialTable] = field(default_factory=dict)
    #: ``flows`` already in the merge script's form (:func:`pack_flows`, any order), when the
    #: fold built it; ``None`` otherwise, and once the table changes
    packed: builtins.bytes | None = None

    @property
    def counted_packets(self) -> int:
        return self.packets - sum(v[0] for v in self.not_counted.values())

    @property
    def counted_bytes(self) -> int:
        return self.bytes - sum(v[1] for v in self.not_counted.values())

    def not_counted_add(self, bucket: str, wire: int) -> None:
        """Count one frame of ``wire`` bytes in the named "not counted" ``bucket``."""
        v = self.not_counted.get(bucket)
        if v is None:
            self.not_counted[bucket] = [1, wire]
        else:
            v[0] += 1
            v[1] += wire

    def merge(self, o: PartialTable) -> None:
        """Fold another partial table in (the same algebra as the Redis merge)."""
        self.packed = None
        for k, st in o.flows.items():
            mine = self.flows.get(k)
            if mine is None:
                self.flows[k] = FlowStats(*(getattr(st, f) for f in FlowStats.__slots__))
            else:
                mine.merge(st)
        self.packets += o.packets
        self.bytes += o.bytes
        for b, (p, n) in o.not_counted.items():
            v = self.not_counted.setdefault(b, [0, 0])
            v[0] += p
            v[1] += n
        self.first_ns = min(self.first_ns, o.first_ns)
        self.last_ns = max(self.last_ns, o.last_ns)


def fold_windows(records: Iterable[RawRecord], dissect: DissectFn, window_ns: int) -> PartialTable:
    """Like :func:`fold`, plus one table per tumbling window of ``window_ns`` aligned on packet
    timestamps (window start = ``ts - ts % window_ns``). The whole table is the merge of the
    windows, so the two always agree (the fast engine's is
    ``flowherd.workers.fold.vector.fold_windows_vector``)."""
    by_window: dict[int, list[RawRecord]] = {}
    for rec in records:
        w = rec[0] - rec[0] % window_ns
        lst = by_window.get(w)
        if lst is None:
            by_window[w] = [rec]
        else:
            lst.append(rec)
    whole = PartialTable()
    for w, recs in by_window.items():
        part = fold(recs, dissect)
        whole.windows[w] = part
        whole.merge(part)
    return whole


def fold(records: Iterable[RawRecord], dissect: DissectFn) -> PartialTable:
    """Dissect every record and aggregate it. Never raises for a bad packet: ``dissect`` files
    those in a bucket (see ``flowherd.workers.decode.dissect``)."""
    t = PartialTable()
    flows = t.flows
    packets = nbytes = 0
    first, last = NO_FIRST, NO_LAST
    for ts, wire, linktype, data in records:
        packets += 1
        nbytes += wire
        if ts < first:
            first = ts
        if ts > last:
            last = ts
        info = dissect(linktype, data)
        if isinstance(info, str):
            t.not_counted_add(info, wire)
            continue
        src, dst, sport, dport = info.src, info.dst, info.sport, info.dport
        if (src, sport) <= (dst, dport):
            key = FlowKey(src, dst, info.proto, sport, dport)
            direction = 0
        else:
            key = FlowKey(dst, src, info.proto, dport, sport)
            direction = 1
        st = flows.get(key)
        if st is None:
            st = flows[key] = FlowStats()
        st.add(direction, ts, wire, info.tcp_flags)
    t.packets, t.bytes, t.first_ns, t.last_ns = packets, nbytes, first, last
    return t


def pack_flows(flows: dict[FlowKey, FlowStats]) -> bytes:
    """Serialise conversations for the merge script: ``u8 keylen | key | packed stats`` each."""
    parts = []
    for k, st in flows.items():
        kb = k.pack()
        parts.append(bytes((len(kb),)) + kb + st.pack())
    return b"".join(parts)
