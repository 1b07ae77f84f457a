"""One streaming pass over a flow table: sizes, counts and the top rows, in bounded memory.

Every function here takes an iterable of stored ``(packed key, packed value)`` pairs (as HSCAN
returns them, from one shard or all) and holds only what it keeps: the rows of a top N and a
:class:`~flowherd.reporter.analysis.sizes.SizeDist`. Results of shards combine exactly with the
``merge`` methods. Pure: no I/O.

Row order is :func:`flowherd.reporter.table.order.sort_key`'s; rows of equal rank (same key text)
keep the order in which they were offered, so :class:`TopRows` answers exactly what
:func:`flowherd.reporter.table.order.top` answers for the same rows in the same order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import count
from typing import Generic

from flowherd.models.flows import NS, FlowKey, FlowStats
from flowherd.models.report import ConvRow, FlowRow, RankBy, Row, RowT, View
from flowherd.reporter.analysis.sizes import SizeDist
from flowherd.reporter.table.order import sort_key
from flowherd.reporter.table.packed import COUNTS, VALUE, Pair
from flowherd.reporter.table.views import conv_row, uni_row

_CHUNK = 1 << 13  # sizes folded into the dist at once


#: a row's sort key (:func:`sort_key`) and the order it was offered in
_Key = tuple[int | Fraction, int, int, str, int]


class _Entry(Generic[RowT]):
    """A heap entry ordered worst first, so the heap's root is the row to drop."""

    __slots__ = ("key", "row")

    def __init__(self, key: _Key, row: RowT) -> None:
        self.key = key
        self.row = row

    def __lt__(self, other: _Entry[RowT]) -> bool:
        return self.key > other.key


class TopRows(Generic[RowT]):
    """The ``n`` best rows offered so far by ``by`` (ties: first offered first)."""

    def __init__(self, n: int, by: RankBy = "bytes") -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        self.n = n
        self.by = by
        self._key = sort_key(by)
        self._heap: list[_Entry[RowT]] = []
        self._seq = count()

    def offer(self, row: RowT) -> None:
        if self.n == 0:
            return
        e = _Entry((*self._key(row), next(self._seq)), row)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, e)
        elif e.key < self._heap[0].key:
            heapq.heapreplace(self._heap, e)

    def floor(self) -> float:
        """A lower bound on the measure a row needs to enter: the worst kept row's measure
        once ``n`` rows are kept (a row below it cannot enter), else ``-inf``."""
        if len(self._heap) < self.n or not self._heap:
            return float("-inf")
        return float(-self._heap[0].key[0])

    def rows(self) -> list[RowT]:
        """The kept rows, best first."""
        return [e.row for e in sorted(self._heap, key=lambda e: e.key)]

    def merge(self, other: TopRows[RowT]) -> TopRows[RowT]:
        """Offer ``other``'s rows (after this one's, for ties) and return ``self``."""
        for row in other.rows():
            self.offer(row)
        return self


@dataclass
class TableScan:
    """What one pass over a table keeps: conversation count, the unidirectional sizes, and
    the top ``n`` rows of both views by bytes. ``uni.n`` is the unidirectional flow count."""

    n: int = 20
    flows_bi: int = 0
    uni: SizeDist = field(default_factory=SizeDist)
    top_uni: TopRows[FlowRow] = field(init=False)
    top_bi: TopRows[ConvRow] = field(init=False)

    def __post_init__(self) -> None:
        self.top_uni = TopRows(self.n)
        self.top_bi = TopRows(self.n)

    def merge(self, other: TableScan) -> TableScan:
        """Fold the scan of another part of the table (another shard) into this one."""
        self.flows_bi += other.flows_bi
        self.uni.merge(other.uni)
        self.top_uni.merge(other.top_uni)
        self.top_bi.merge(other.top_bi)
        return self


def scan_table(pairs: Iterable[Pair], n: int = 20) -> TableScan:
    """One pass: :class:`TableScan` of ``pairs``. Memory: ``2 n`` rows, one chunk of sizes
    and the size buckets. Raises :class:`ValueError` for a record that is not a flow record."""
    scan = TableScan(n)
    top_uni, top_bi = scan.top_uni, scan.top_bi
    sizes: list[int] = []
    put = sizes.append
    floor_uni = floor_bi = float("-inf")
    unpack = COUNTS.unpack_from
    convs = 0
    for k, v in pairs:
        pa, ba, pb, bb = unpack(v)
        convs += 1
        if pa:
            put(int(ba))
        if pb:
            put(int(bb))
        if ba + bb >= floor_bi:
            key, st = FlowKey.unpack(k), FlowStats.unpack(v)
            top_bi.offer(conv_row(key, st))
            floor_bi = top_bi.floor()
        if (pa and ba >= floor_uni) or (pb and bb >= floor_uni):
            key, st = FlowKey.unpack(k), FlowStats.unpack(v)
            for d, p, b in ((0, pa, ba), (1, pb, bb)):
                if p and b >= floor_uni:
                    top_uni.offer(uni_row(key, st, d))
                    floor_uni = top_uni.floor()
        if len(sizes) >= _CHUNK:
            scan.uni.add_many(sizes)
            sizes.clear()
    scan.uni.add_many(sizes)
    scan.flows_bi = convs
    return scan


def uni_sizes(pairs: Iterable[Pair]) -> Iterator[int]:
    """The bytes of every unidirectional flow (each direction that carried packets)."""
    unpack = COUNTS.unpack_from
    for _, v in pairs:
        pa, ba, pb, bb = unpack(v)
        if pa:
            yield int(ba)
        if pb:
            yield int(bb)


def bi_sizes(pairs: Iterable[Pair]) -> Iterator[int]:
    """The bytes of every conversation."""
    unpack = COUNTS.unpack_from
    for _, v in pairs:
        _, ba, _, bb = unpack(v)
        yield int(ba + bb)


def _measure(v: bytes, direction: int | None, by: RankBy) -> float:
    """The ranking measure of a record's direction (None: the conversation) as a float: exact
    for bytes and packets, the exact value rounded for duration and rate."""
    if by in ("bytes", "packets"):
        counts: tuple[int, int, int, int] = COUNTS.unpack_from(v)
        pa, ba, pb, bb = counts
        if direction == 0:
            return ba if by == "bytes" else pa
        if direction == 1:
            return bb if by == "bytes" else pb
        return ba + bb if by == "bytes" else pa + pb
    pa, ba, pb, bb, fa, la, fb, lb, _, _ = VALUE.unpack(v)
    if direction == 0:
        p, b, f, last = pa, ba, int(fa), int(la)
    elif direction == 1:
        p, b, f, last = pb, bb, int(fb), int(lb)
    else:
        p, b, f, last = pa + pb, ba + bb, min(int(fa), int(fb)), max(int(la), int(lb))
    d = last - f
    if by == "duration":
        return float(d)
    return b * NS / d if p >= 2 and d > 0 else 0.0


def top_from_pairs(
    pairs: Iterable[Pair],
    view: View,
    n: int,
    by: RankBy = "bytes",
    proto: int | None = None,
) -> list[Row]:
    """The ``n`` best rows of ``view`` (``uni`` or ``bi``) by ``by``, only of IP protocol
    ``proto`` if given: exactly :func:`flowherd.reporter.table.order.top` over every row in the
    order of ``pairs``, holding ``n`` rows. Rows (models) are built only for records that may enter:
    those whose float measure is not below the current floor by more than 1e-9 of it (so
    rounding never leaves out a row that belongs)."""
    top: TopRows[Row] = TopRows(n, by)
    floor = float("-inf")
    dirs: tuple[int | None, ...] = (None,) if view == "bi" else (0, 1)
    for k, v in pairs:
        if proto is not None and k[-5] != proto:
            continue
        key = st = None
        for d in dirs:
            m = _measure(v, d, by)
            if m < floor - abs(floor) * 1e-9:
                continue
            if st is None:
                key, st = FlowKey.unpack(k), FlowStats.unpack(v)
            assert key is not None
            if d is None:
                top.offer(conv_row(key, st))
            elif (st.pkts_ab if d == 0 else st.pkts_ba) > 0:
                top.offer(uni_row(key, st, d))
            floor = top.floor()
    return top.rows()
