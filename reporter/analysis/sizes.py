"""An exact, mergeable summary of a multiset of flow sizes, and exact cuts of its ranking.

:class:`SizeDist` keeps, in memory that does not grow with the number of flows, the count, sum
and sum of squares of the sizes and a log-bucketed histogram: sizes below ``2**(SUB_BITS + 1)``
(512) each have their own bucket; above, a bucket spans at most ``2**-SUB_BITS`` (1/256) of its
lower edge, so there are at most about 14,000 buckets for sizes below ``2**53``. Each bucket
keeps its count, sum, smallest and largest size, all exact. Two dists :meth:`merge` by adding,
so shards can be summarised apart.

Questions about the largest flows are *cuts* of the sizes sorted largest first:
:class:`Prefix` (the ``k`` largest), :class:`AtLeast` (every size ``>= limit``) and
:class:`Reach` (the fewest largest whose sum reaches ``target``). :func:`resolve` answers them
exactly. A cut that falls inside a bucket holding different sizes needs that bucket's sizes;
:func:`resolve` then reads the sizes again (``rescan``, a callable returning a fresh iterable of
the same sizes) and keeps only the few it needs: every size of a bucket of at most ``cap``
sizes, else a finer histogram of ``fan`` sub-buckets, and so on. All pending cuts share each
rescan. Sizes below 2**53 need at most 4 rescans (``fan=4096``); most tables need 0 or 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field

SUB_BITS = 8
_EXACT = 1 << (SUB_BITS + 1)  # sizes below this have a bucket each
CAP = 1 << 16  # a rescan keeps every size of a bucket holding at most this many
FAN = 4096  # else it splits the bucket into this many equal sub-buckets

#: A bucket: [count, sum, smallest, largest].
Bucket = list[int]


def bucket_of(v: int) -> int:
    """The bucket index of size ``v`` (>= 0); indices increase with size."""
    if v < _EXACT:
        return v
    e = v.bit_length() - SUB_BITS - 1
    return (e << SUB_BITS) + (v >> e)


def bucket_bounds(i: int) -> tuple[int, int]:
    """The smallest and largest size of bucket ``i`` (inclusive)."""
    if i < _EXACT:
        return i, i
    e = (i >> SUB_BITS) - 1
    m = i - (e << SUB_BITS)
    return m << e, ((m + 1) << e) - 1


@dataclass(slots=True)
class SizeDist:
    """Count, sum, sum of squares and bucketed histogram of sizes (see the module docstring)."""

    n: int = 0
    total: int = 0
    sumsq: int = 0
    buckets: dict[int, Bucket] = field(default_factory=dict)

    def add(self, v: int) -> None:
        """Add one size (``>= 0``; unchecked: :meth:`add_many` checks)."""
        self.n += 1
        self.total += v
        self.sumsq += v * v
        _add_to(self.buckets, bucket_of(v), v)

    def add_many(self, sizes: Iterable[int]) -> None:
        """Add every size (each ``>= 0``); equal sizes are folded first, at C speed."""
        for v, c in Counter(sizes).items():
            if v < 0:
                raise ValueError(f"flow sizes must be >= 0, not {v}")
            self.n += c
            self.total += v * c
            self.sumsq += v * v * c
            i = bucket_of(v)
            b = self.buckets.get(i)
            if b is None:
                self.buckets[i] = [c, v * c, v, v]
            else:
                b[0] += c
                b[1] += v * c
                b[2] = min(b[2], v)
                b[3] = max(b[3], v)

    def merge(self, other: SizeDist) -> SizeDist:
        """Fold ``other`` into this dist (commutative, associative) and return it."""
        self.n += other.n
        self.total += other.total
        self.sumsq += other.sumsq
        for i, (c, s, lo, hi) in other.buckets.items():
            b = self.buckets.get(i)
            if b is None:
                self.buckets[i] = [c, s, lo, hi]
            else:
                b[0] += c
                b[1] += s
                b[2] = min(b[2], lo)
                b[3] = max(b[3], hi)
        return self

    @classmethod
    def of(cls, sizes: Iterable[int], chunk: int = 1 << 13) -> SizeDist:
        """The dist of ``sizes``, read in chunks of ``chunk`` (memory: one chunk)."""
        d = cls()
        buf: list[int] = []
        for v in sizes:
            buf.append(v)
            if len(buf) >= chunk:
                d.add_many(buf)
                buf.clear()
        d.add_many(buf)
        return d

    def desc(self) -> list[Bucket]:
        """The non-empty buckets, largest sizes first."""
        return [self.buckets[i] for i in sorted(self.buckets, reverse=True)]

    @property
    def exact(self) -> bool:
        """Whether every bucket holds one distinct size (then the histogram is the sizes)."""
        return all(lo == hi for _, _, lo, hi in self.buckets.values())


@dataclass(frozen=True, slots=True)
class Prefix:
    """The ``k`` largest sizes (``0 <= k <= n``)."""

    k: int


@dataclass(frozen=True, slots=True)
class AtLeast:
    """Every size ``>= limit``."""

    limit: int


@dataclass(frozen=True, slots=True)
class Reach:
    """The fewest largest sizes whose sum is ``>= target`` (none when ``target <= 0``)."""

    target: int


Query = Prefix | AtLeast | Reach


@dataclass(frozen=True, slots=True)
class Cut:
    """A largest-first prefix of the sorted sizes: how many, their sum, the smallest (0 if
    none)."""

    k: int
    total: int
    last: int


_Need = tuple[int, int, int]  # (smallest, largest, count) of a bucket whose sizes are needed
_Walk = Generator[_Need, list[Bucket], Cut]


def _walk(q: Query, blocks: Sequence[Bucket], k: int, s: int, last: int) -> _Walk:
    """Walk buckets largest first from a prefix of ``k`` sizes summing to ``s``; yield a
    bucket whose sizes are needed, receive them as finer buckets, return the cut."""
    for c, t, lo, hi in blocks:
        if isinstance(q, Prefix):
            if k + c <= q.k:
                k, s, last = k + c, s + t, lo
                continue
            if k >= q.k:
                break
            j = q.k - k
            if lo == hi:
                return Cut(q.k, s + j * lo, lo)
        elif isinstance(q, AtLeast):
            if lo >= q.limit:
                k, s, last = k + c, s + t, lo
                continue
            if hi < q.limit:
                break
        else:
            if s >= q.target:
                break
            if s + t <= q.target:  # a bucket with sizes > 0 that is all needed, or not enough
                k, s, last = k + c, s + t, lo
                continue
            if lo == hi:
                j = -(-(q.target - s) // lo)
                return Cut(k + j, s + j * lo, lo)
        finer = yield (lo, hi, c)
        return (yield from _walk(q, finer, k, s, last))
    return Cut(k, s, last)


def _refine(
    sizes: Iterable[int], needs: Iterable[_Need], cap: int, fan: int
) -> dict[_Need, list[Bucket]]:
    """One read of ``sizes``: for each needed bucket, its sizes as finer buckets, largest
    first (one per distinct size when it holds at most ``cap``, else ``fan`` equal ranges)."""
    spans = sorted(set(needs))
    keep: dict[_Need, list[int]] = {nd: [] for nd in spans if nd[2] <= cap}
    split = {nd: SizeDist() for nd in spans if nd[2] > cap}
    width = {nd: -(-(nd[1] - nd[0] + 1) // fan) for nd in split}
    lo_all, hi_all = min(nd[0] for nd in spans), max(nd[1] for nd in spans)
    for v in sizes:
        if lo_all <= v <= hi_all:
            for nd in spans:
                if nd[0] <= v <= nd[1]:
                    if nd in keep:
                        keep[nd].append(v)
                    else:
                        _add_to(split[nd].buckets, (v - nd[0]) // width[nd], v)
    out: dict[_Need, list[Bucket]] = {}
    for nd, vals in keep.items():
        out[nd] = [[c, v * c, v, v] for v, c in sorted(Counter(vals).items(), reverse=True)]
    for nd, d in split.items():
        out[nd] = d.desc()
    for nd, blocks in out.items():
        if sum(b[0] for b in blocks) != nd[2]:
            raise ValueError(
                "the sizes changed between reads (the table is still being written?): "
                f"{sum(b[0] for b in blocks)} sizes in [{nd[0]}, {nd[1]}], expected {nd[2]}"
            )
    return out


def _add_to(buckets: dict[int, Bucket], i: int, v: int) -> None:
    b = buckets.get(i)
    if b is None:
        buckets[i] = [1, v, v, v]
    else:
        b[0] += 1
        b[1] += v
        if v < b[2]:
            b[2] = v
        if v > b[3]:
            b[3] = v


def resolve(
    dist: SizeDist,
    queries: Sequence[Query],
    rescan: Callable[[], Iterable[int]] | None,
    cap: int = CAP,
    fan: int = FAN,
) -> list[Cut]:
    """The exact cut of each query (see the module docstring), in order.

    ``rescan`` returns a fresh iterable of the sizes ``dist`` summarises; it is called once per
    round of refinement (not at all when the buckets answer every query). Raises
    :class:`ValueError` when a query needs a rescan and ``rescan`` is None, when a rescan's
    sizes disagree with ``dist``, or for ``cap < 1`` or ``fan < 2``.
    """
    if cap < 1 or fan < 2:
        raise ValueError(f"need cap >= 1 and fan >= 2, not {cap} and {fan}")
    blocks = dist.desc()
    out: list[Cut | None] = [None] * len(queries)
    pending: dict[int, tuple[_Walk, _Need]] = {}

    def step(i: int, walk: _Walk, sent: list[Bucket] | None) -> None:
        try:
            need = walk.send(sent) if sent is not None else next(walk)
        except StopIteration as done:
            out[i] = done.value
            pending.pop(i, None)
        else:
            pending[i] = (walk, need)

    for i, q in enumerate(queries):
        step(i, _walk(q, blocks, 0, 0, 0), None)
    while pending:
        if rescan is None:
            raise ValueError("an exact answer needs the sizes again: pass rescan")
        finer = _refine(rescan(), [nd for _, nd in pending.values()], cap, fan)
        for i, (walk, nd) in list(pending.items()):
            step(i, walk, finer[nd])
    return [c for c in out if c is not None]


def cut_sorted(desc: Sequence[int], q: Query) -> Cut:
    """The cut of ``q`` on sizes already sorted largest first (the reference for
    :func:`resolve`; memory: the list)."""
    k = s = 0
    if isinstance(q, Prefix):
        k = q.k
        s = sum(desc[:k])
    elif isinstance(q, AtLeast):
        while k < len(desc) and desc[k] >= q.limit:
            s += desc[k]
            k += 1
    else:
        while s < q.target:
            s += desc[k]
            k += 1
    return Cut(k, s, desc[k - 1] if k else 0)
