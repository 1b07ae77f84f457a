"""Per-flow measures beyond size (duration, rate, burst) and their exact, mergeable summaries.

An :data:`Item` is one unidirectional flow as the heavy-hitter rules see it: ``(bytes,
measure 0, measure 1, ...)``, ``-1`` where a flow has no such measure. :class:`MeasureDist`
keeps, in memory that does not grow with the flows, the count, sum and sum of squares of one
measure (exact Python integers, so the result does not depend on the order of reading or on
how shards combine) and, per bucket of :func:`flowherd.reporter.analysis.sizes.bucket_of`, ``[flows,
bytes, least, greatest]``. Items are folded in chunks with numpy. Pure: no I/O.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import numpy.typing as npt

from flowherd.models.flows import NO_FIRST, NS, VALUE
from flowherd.models.report import HeavyMetric
from flowherd.reporter.analysis.sizes import SUB_BITS, bucket_of
from flowherd.reporter.table.packed import Pair

#: Flows of at least two packets lasting at least this long have a rate (100 ms).
MIN_RATE_NS = NS // 10
#: One flow as the heavy rules see it: (bytes, measure 0, measure 1, ...), -1: no measure.
Item = tuple[int, ...]
#: Items as columns: the bytes, then each measure.
Columns = tuple[list[int], ...]
_CHUNK = 8192
_EXACT = 1 << (SUB_BITS + 1)
_FLOAT_EXACT = 1 << 53  # below this a float64 holds the integer, and frexp its bit length
Ints = npt.NDArray[np.int64]


def _buckets(v: Ints) -> Ints:
    """:func:`flowherd.reporter.analysis.sizes.bucket_of` of each value (all in ``[0, 2**53)``)."""
    e = np.frexp(v.astype(np.float64))[1].astype(np.int64) - SUB_BITS - 1  # bit_length - 9
    e = np.maximum(e, 0)
    return np.where(v < _EXACT, v, (e << SUB_BITS) + (v >> e))


@dataclass(slots=True)
class MeasureDist:
    """Count, sum and sum of squares of one measure, and per bucket of measures (the
    :func:`flowherd.reporter.analysis.sizes.bucket_of` buckets) ``[flows, bytes, least,
    greatest]``."""

    n: int = 0
    total: int = 0
    sumsq: int = 0
    buckets: dict[int, list[int]] = field(default_factory=dict)

    def add(self, v: int, b: int) -> None:
        """Add one flow of measure ``v`` (>= 0) and ``b`` bytes."""
        self.n += 1
        self.total += v
        self.sumsq += v * v
        self._put(bucket_of(v), 1, b, v, v)

    def _put(self, i: int, c: int, b: int, lo: int, hi: int) -> None:
        e = self.buckets.get(i)
        if e is None:
            self.buckets[i] = [c, b, lo, hi]
        else:
            e[0] += c
            e[1] += b
            if lo < e[2]:
                e[2] = lo
            if hi > e[3]:
                e[3] = hi

    def add_arrays(self, v: Ints, b: Ints) -> None:
        """Add flows of measures ``v`` (each in ``[0, 2**63)``) and bytes ``b`` (one each)."""
        if not len(v):
            return
        vl = v.tolist()
        self.n += len(vl)
        self.total += sum(vl)
        self.sumsq += sum(map(operator.mul, vl, vl))  # exact: Python integers
        if max(vl) >= _FLOAT_EXACT:
            for x, y in zip(vl, b.tolist(), strict=True):
                self._put(bucket_of(x), 1, y, x, x)
            return
        idx = _buckets(v)
        order = np.argsort(idx, kind="stable")
        idx, va, ba = idx[order], v[order], b[order]
        starts = np.flatnonzero(np.concatenate([[True], idx[1:] != idx[:-1]]))
        counts = np.diff(np.concatenate([starts, [len(idx)]]))
        rows = zip(
            idx[starts].tolist(),
            counts.tolist(),
            np.add.reduceat(ba, starts).tolist(),
            np.minimum.reduceat(va, starts).tolist(),
            np.maximum.reduceat(va, starts).tolist(),
            strict=True,
        )
        for i, c, s, lo, hi in rows:
            self._put(i, c, s, lo, hi)

    def merge(self, other: MeasureDist) -> MeasureDist:
        """Fold ``other`` into this dist (commutative, associative) and return it."""
        self.n += other.n
        self.total += other.total
        self.sumsq += other.sumsq
        for i, (c, b, lo, hi) in other.buckets.items():
            self._put(i, c, b, lo, hi)
        return self


@dataclass
class Measures:
    """The :class:`MeasureDist` of each of ``metrics`` (positions 1.. of an :data:`Item`)
    and the flows and bytes of every item."""

    metrics: tuple[HeavyMetric, ...]
    flows: int = 0
    bytes: int = 0
    dists: dict[str, MeasureDist] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dists = {m: MeasureDist() for m in self.metrics}

    def add_many(self, items: Iterable[Item]) -> Measures:
        """Fold every item, a chunk at a time (bytes and measures below ``2**63``)."""
        for cols in columns(items):
            self.add_columns(*cols)
        return self

    def add_columns(self, nbytes: list[int], *measures: list[int]) -> Measures:
        """Fold items given as columns: the bytes, then each metric's measures (-1: none). A
        measure of ``2**63`` or more (a duration between timestamps centuries apart) is folded
        exactly, one at a time."""
        self.flows += len(nbytes)
        self.bytes += sum(nbytes)
        b = np.asarray(nbytes, dtype=np.int64)
        for m, col in zip(self.metrics, measures, strict=True):
            if col and max(col) > _INT64_MAX:
                d = self.dists[m]
                for x, y in zip(col, nbytes, strict=True):
                    if x >= 0:
                        d.add(x, y)
                continue
            v = np.asarray(col, dtype=np.int64)
            has = v >= 0
            self.dists[m].add_arrays(v[has], b[has])
        return self

    def merge(self, other: Measures) -> Measures:
        self.flows += other.flows
        self.bytes += other.bytes
        for m, d in other.dists.items():
            self.dists[m].merge(d)
        return self


def columns(items: Iterable[Item]) -> Iterator[Columns]:
    """``items`` in chunks, each as columns."""
    it = iter(items)
    while chunk := list(islice(it, _CHUNK)):
        yield tuple(map(list, zip(*chunk, strict=True)))


def uni_chunks(pairs: Iterable[Pair]) -> Iterator[Columns]:
    """:func:`uni_columns` of ``pairs``, a chunk of records at a time."""
    it = iter(pairs)
    while chunk := list(islice(it, _CHUNK)):
        yield uni_columns(chunk)


#: :data:`flowherd.models.flows.VALUE` as a numpy record: the four counters, the four timestamps'
#: 19 ASCII digits, the flags.
_VALUE = np.dtype([("c", "<f8", (4,)), ("t", "u1", (4, 19)), ("f", "u1", (2,))])
_SEC = 10 ** np.arange(9, -1, -1, dtype=np.int64)  # the first 10 digits: seconds
_NSEC = 10 ** np.arange(8, -1, -1, dtype=np.int64)  # the last 9: nanoseconds
_INT64_MAX = 2**63 - 1
_BIG = _INT64_MAX // NS  # bytes above this overflow bytes * NS in int64
_DECODE = 2048  # records decoded at once


def uni_columns(pairs: Iterable[Pair]) -> tuple[list[int], list[int], list[int]]:
    """:func:`uni_items` of ``pairs`` as three columns (bytes, durations, rates), decoded with
    numpy; in an order of its own (the A-to-B directions first)."""
    vals = [v for _, v in pairs]
    if len(vals) > _DECODE:  # bounds the digit arrays (about 600 bytes a record)
        parts = [
            uni_columns((b"", v) for v in vals[i : i + _DECODE])
            for i in range(0, len(vals), _DECODE)
        ]
        b, d, r = ([x for part in parts for x in part[j]] for j in range(3))
        return b, d, r
    if not vals:
        return [], [], []
    a = np.frombuffer(b"".join(vals), dtype=_VALUE)
    digits = a["t"].astype(np.int64) - 48
    if digits.min() < 0 or digits.max() > 9:  # a negative timestamp: the exact slow path
        items = list(uni_items((b"", v) for v in vals))
        return [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]
    secs, nsecs = digits[:, :, :10] @ _SEC, digits[:, :, 10:] @ _NSEC
    sentinel = (secs == NO_FIRST // NS) & (nsecs == NO_FIRST % NS)
    if ((secs >= _INT64_MAX // NS) & ~sentinel).any():  # ns beyond int64 (2262): exact path
        items = list(uni_items((b"", v) for v in vals))
        return [i[0] for i in items], [i[1] for i in items], [i[2] for i in items]
    # ns since the epoch; an empty direction's sentinel (10**19 - 1) wraps, and is not used
    t = secs * NS + nsecs
    cols: tuple[list[int], list[int], list[int]] = ([], [], [])
    for p_i, b_i, f_i, l_i in ((0, 1, 0, 1), (2, 3, 2, 3)):
        has = a["c"][:, p_i] > 0
        pk = a["c"][has, p_i]
        nbytes = a["c"][has, b_i].astype(np.int64)
        dur = t[has, l_i] - t[has, f_i]
        ok = (pk >= 2) & (dur >= MIN_RATE_NS)
        rate = np.full(len(dur), -1, dtype=np.int64)
        if len(nbytes) and nbytes.max() > _BIG:
            rate[ok] = [
                b * NS // d for b, d in zip(nbytes[ok].tolist(), dur[ok].tolist(), strict=True)
            ]
        else:
            rate[ok] = nbytes[ok] * NS // dur[ok]
        cols[0].extend(nbytes.tolist())
        cols[1].extend(dur.tolist())
        cols[2].extend(rate.tolist())
    return cols


def uni_items(pairs: Iterable[Pair]) -> Iterator[Item]:
    """``(bytes, duration ns, rate bytes/s or -1)`` of every unidirectional flow: the rate
    (rounded down) for flows of at least two packets lasting at least :data:`MIN_RATE_NS`."""
    unpack = VALUE.unpack
    for _, v in pairs:
        pa, ba, pb, bb, fa, la, fb, lb, _, _ = unpack(v)
        if pa:
            d, b = int(la) - int(fa), int(ba)
            yield b, d, (b * NS // d if pa >= 2 and d >= MIN_RATE_NS else -1)
        if pb:
            d, b = int(lb) - int(fb), int(bb)
            yield b, d, (b * NS // d if pb >= 2 and d >= MIN_RATE_NS else -1)
