"""Pure numbers about a flow-size distribution: CCDF, byte shares, histogram bins, units.

Sizes are flow sizes in bytes (non-negative integers). Shares are exact integer sums divided
once, so they are correctly rounded floats in ``[0, 1]``; every function accepts an empty
input and answers with empty lists or ``0.0`` rather than raising. No I/O, no plotting.

The ``*_points`` and :func:`histogram` functions answer from a
:class:`~flowherd.reporter.analysis.sizes.SizeDist` (bounded memory, mergeable) instead of the
sizes: each point they return is exact, at the edges of the dist's buckets (one bucket per size
below 512 bytes; above, buckets of at most 1/256 of their size). :data:`BUCKETED` says so in words.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

from flowherd.console.units import human_bytes as human_bytes  # re-exported
from flowherd.console.units import human_rate as human_rate  # re-exported

if TYPE_CHECKING:
    from flowherd.reporter.analysis.sizes import SizeDist

_SI = ("k", "M", "G", "T", "P", "E")


def ccdf(sizes: Sequence[int]) -> tuple[list[int], list[float]]:
    """The complementary CDF ``P(X >= x)`` at each distinct size ``x``, ascending.

    ``>=`` rather than ``>`` so the largest flow keeps a positive value on a log axis: ``ys[0]``
    is ``1.0``, ``ys`` never increases, and ``ys[-1]`` is the share of flows of maximal size.
    """
    return _at_least(sorted(Counter(sizes).items()))


def _at_least(counts: Sequence[tuple[int, int]]) -> tuple[list[int], list[float]]:
    """``P(X >= x)`` at each ``x`` of ``counts`` (``(x, how many)``, ``x`` ascending)."""
    n = sum(c for _, c in counts)
    xs: list[int] = []
    ys: list[float] = []
    at_least = n
    for x, c in counts:
        xs.append(x)
        ys.append(at_least / n)
        at_least -= c
    return xs, ys


def cumulative_share(sizes: Sequence[int]) -> tuple[list[int], list[float]]:
    """The share of all bytes carried by the ``k`` largest flows, for ``k = 1 .. len(sizes)``.

    ``shares`` never decreases and ends at ``1.0``; when every size is 0 all shares are
    ``0.0``.
    """
    desc = sorted(sizes, reverse=True)
    total = sum(desc)
    ks = list(range(1, len(desc) + 1))
    if total == 0:
        return ks, [0.0] * len(desc)
    shares: list[float] = []
    cum = 0
    for s in desc:
        cum += s
        shares.append(cum / total)
    return ks, shares


def share_of_top(sizes: Sequence[int], k: int) -> float:
    """The share of all bytes carried by the ``k`` largest flows (all of them if ``k`` exceeds
    the count); ``0.0`` when there are no bytes. Raises :class:`ValueError` for ``k < 0``."""
    if k < 0:
        raise ValueError(f"k must be >= 0, not {k}")
    total = sum(sizes)
    if total == 0:
        return 0.0
    return sum(heapq.nlargest(k, sizes)) / total


def top_fraction_count(n: int, fraction: float) -> int:
    """How many flows "the top ``fraction``" of ``n`` flows is: ``max(1, floor(n * fraction))``
    with the fraction taken as the decimal it prints as, so 1% of ``n`` is ``max(1, n // 100)``
    exactly as the oracle counts it. 0 for ``n == 0``. Raises :class:`ValueError` unless
    ``0 < fraction <= 1``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    if n == 0:
        return 0
    f = Fraction(repr(fraction))
    return max(1, n * f.numerator // f.denominator)


def share_top_fraction(sizes: Sequence[int], fraction: float) -> float:
    """The share of all bytes carried by the top ``fraction`` of flows (see
    :func:`top_fraction_count`); the oracle's ``share_of_bytes_top1pct_flows`` is
    ``round(share_top_fraction(sizes, 0.01), 4)``."""
    return share_of_top(sizes, top_fraction_count(len(sizes), fraction))


def spans_decades(sizes: Sequence[int], decades: float = 1.0) -> bool:
    """Whether the positive sizes span at least ``decades`` powers of ten (max/min)."""
    pos = [s for s in sizes if s > 0]
    return bool(pos) and max(pos) >= min(pos) * 10**decades


def log_bins(sizes: Sequence[float], n: int) -> list[float]:
    """``n + 1`` log-spaced, strictly increasing bin edges from the smallest to the largest
    positive size (both exactly edges, so every positive size falls in a bin).

    When all positive sizes are equal the edges run from half to twice that size. Zero and
    negative sizes are ignored (they have no place on a log axis). Raises :class:`ValueError`
    for ``n < 1`` or when there is no positive size.
    """
    if n < 1:
        raise ValueError(f"need at least one bin, not {n}")
    pos = [s for s in sizes if s > 0]
    if not pos:
        raise ValueError("log bins need at least one positive size")
    lo, hi = float(min(pos)), float(max(pos))
    if lo == hi:
        lo, hi = lo / 2, hi * 2
    ratio = math.log(hi / lo)
    edges = [lo * math.exp(ratio * i / n) for i in range(n + 1)]
    edges[0], edges[-1] = lo, hi
    return edges


#: How the ``*_points`` functions and :func:`histogram` approximate, for figures and output.
BUCKETED = (
    "sizes in buckets of 1 byte below 512 B and of at most 1/256 (0.4%) of their size above; "
    "counts, CCDF and byte-share points exact at bucket edges"
)


def ccdf_points(dist: SizeDist, positive: bool = True) -> tuple[list[int], list[float]]:
    """``P(X >= x)`` at the smallest size ``x`` of each non-empty bucket, ascending: the
    exact CCDF at those sizes (at every size when :attr:`SizeDist.exact`, as :func:`ccdf`).
    ``positive`` leaves out sizes of 0 (they have no place on a log axis)."""
    return _at_least(
        sorted((lo, c) for c, _, lo, _ in dist.buckets.values() if lo > 0 or not positive)
    )


def share_points(dist: SizeDist) -> tuple[list[int], list[float]]:
    """The share of all bytes in the ``k`` largest flows, exact at ``k = 1`` and at the end of
    each bucket (largest first); a bucket of equal sizes lies on the straight line between its
    two points. ``(ks, shares)`` as :func:`cumulative_share` gives them for every ``k``."""
    blocks = dist.desc()
    if not blocks:
        return [], []
    total = dist.total
    ks, cums = [1], [blocks[0][3]]
    k = cum = 0
    for c, s, _, _ in blocks:
        k, cum = k + c, cum + s
        if k > 1:
            ks.append(k)
            cums.append(cum)
    return ks, [c / total if total else 0.0 for c in cums]


def top_blocks(dist: SizeDist, top: int | None) -> list[tuple[int, int, int]]:
    """``(count, smallest, largest)`` per bucket of the ``top`` largest sizes (all when
    ``None``), largest first; the last bucket counts only its sizes among the ``top``."""
    out = []
    left = dist.n if top is None else top
    for c, _, lo, hi in dist.desc():
        if left <= 0:
            break
        out.append((min(c, left), lo, hi))
        left -= c
    return out


def histogram(blocks: Sequence[tuple[int, float, float]], edges: Sequence[float]) -> list[int]:
    """Counts per bin ``[edges[i], edges[i+1])`` (the last bin closed) of buckets given as
    ``(count, smallest, largest)``: each bucket counts in the bin of its smallest size, so a
    bucket that crosses an edge moves it by at most the bucket's width. Sizes outside the
    edges count in the nearest end bin."""
    counts = [0] * (len(edges) - 1)
    for c, lo, _ in blocks:
        i = min(max(bisect.bisect_right(edges, lo) - 1, 0), len(counts) - 1)
        counts[i] += c
    return counts
