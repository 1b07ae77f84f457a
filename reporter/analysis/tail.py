"""Tail estimation of flow sizes: the Hill estimator and a Clauset-Shalizi-Newman power-law fit.

* :func:`hill`: the Hill estimator on the ``k`` largest sizes, ``H = mean(ln x_(i) / x_(k+1))``
  over ``i <= k`` (sizes sorted largest first); the CCDF tail index is ``1 / H`` and the
  density exponent, comparable to the power-law fit's, ``1 + 1 / H``. ``k`` follows
  :func:`hill_k`: the top 10% of the flows (at least 1), capped by the sizes at hand.
* :func:`power_law_fit`: the method of Clauset, Shalizi and Newman ("Power-law distributions
  in empirical data", SIAM Review 2009) with the *continuous* approximation: for each
  candidate ``xmin`` the maximum-likelihood exponent ``alpha = 1 + n / sum(ln(x / xmin))``
  over the ``n`` sizes ``>= xmin``, and the Kolmogorov-Smirnov distance between their
  empirical CDF and the fitted one; ``xmin`` minimises the distance. The empirical CDF is
  taken just below each distinct size, as CSN's ``plfit`` and the ``powerlaw`` package do.
  Flow sizes are whole bytes, but the tails that matter start far above the ~6 bytes below
  which CSN find the continuous approximation poor.
* Vuong's test against a lognormal truncated at the same ``xmin``, fitted by maximum
  likelihood (Nelder-Mead from the moments of ``ln x``): ``R`` is the sum of the pointwise
  log-likelihood ratios (power law minus lognormal; positive favours the power law),
  ``p = erfc(|R| / sqrt(2 n var))`` the probability of a ``|R|`` that large by chance.

Memory: the fits take the sizes they are given (an array); :class:`TopSizes` keeps the
``m`` largest of a stream in about ``2 m`` integers, so a fit over millions of flows runs on
the top ``m`` with the total count known exactly. When the sizes are such a top (``complete``
false), the smallest kept size is not a candidate ``xmin``: flows of that size may have been
left out, whereas every flow above it was kept, so each candidate's tail is exact. Pure: numpy
and :mod:`math`, no I/O.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from flowherd.models.report import HillFit, PowerLawFit, TailFit

#: Sizes a fit keeps from a stream (the largest), and the most xmin candidates it tries.
TOP_M = 50_000
MAX_XMINS = 1_000
HILL_FRACTION = 0.1
Floats = npt.NDArray[np.float64]


class TopSizes:
    """The ``m`` largest of the values added (each in ``[0, 2**63)``), and how many were
    added: memory about ``m`` 8-byte integers (kept) plus a buffer of ``m / 4``."""

    def __init__(self, m: int = TOP_M) -> None:
        if m < 2:
            raise ValueError(f"m must be >= 2, not {m}")
        self.m = m
        self.n = 0
        self._buf = array("q")
        self._kept: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)

    def add(self, v: int) -> None:
        self.n += 1
        self._buf.append(v)
        if len(self._buf) >= max(1, self.m // 4):
            self._fold()

    def add_many(self, values: Iterable[int]) -> None:
        """Add every value (the buffer takes them all before it is folded)."""
        before = len(self._buf)
        self._buf.extend(values)
        self.n += len(self._buf) - before
        if len(self._buf) >= max(1, self.m // 4):
            self._fold()

    def _fold(self) -> None:
        if not self._buf:
            return
        a = np.concatenate([self._kept, np.frombuffer(self._buf, dtype=np.int64)])
        self._buf = array("q")
        if len(a) > self.m:
            a = np.partition(a, len(a) - self.m)[len(a) - self.m :].copy()
        self._kept = a

    def merge(self, other: TopSizes) -> TopSizes:
        self.n += other.n
        self._buf.extend(other.values().tolist())
        self._fold()
        return self

    def values(self) -> npt.NDArray[np.int64]:
        """The kept values, ascending."""
        self._fold()
        return np.sort(self._kept)

    @property
    def complete(self) -> bool:
        """Whether every value added is kept."""
        return self.n <= self.m


def hill_k(n: int, kept: int) -> int:
    """The ``k`` of :func:`hill` for ``n`` flows of which the ``kept`` largest are at hand:
    ``ceil(n / 10)``, at least 1, at most ``kept - 1`` (``x_(k+1)`` must be kept)."""
    return max(1, min(math.ceil(n * HILL_FRACTION), kept - 1))


def hill(asc: npt.ArrayLike, n: int | None = None, k: int | None = None) -> HillFit | None:
    """The Hill estimator on the ``k`` largest of the sizes ``asc`` (ascending; the largest of
    ``n`` flows, all of them by default). None with fewer than 2 sizes, a non-positive
    ``x_(k+1)``, or when the ``k`` largest all equal ``x_(k+1)``."""
    x = np.asarray(asc, dtype=np.float64)
    total = len(x) if n is None else n
    if len(x) < 2:
        return None
    k = hill_k(total, len(x)) if k is None else k
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}], not {k}")
    ref = x[-k - 1]
    if ref <= 0:
        return None
    h = float(np.mean(np.log(x[-k:] / ref)))
    if h <= 0:
        return None
    capped = k < math.ceil(total * HILL_FRACTION)
    rule = f"top {HILL_FRACTION:.0%} of flows" + (" (capped by the sizes kept)" if capped else "")
    return HillFit(k=k, threshold=int(ref), tail_index=1 / h, alpha=1 + 1 / h, rule=rule)


@dataclass(frozen=True, slots=True)
class _Tail:
    xmin: float
    alpha: float
    ks: float
    start: int  # index of the first size >= xmin in the ascending array


def _scan_xmins(x: Floats, complete: bool, max_xmins: int) -> _Tail | None:
    """The candidate xmin of least KS distance (ties: the smallest xmin). With more than
    ``max_xmins`` candidates, an evenly spaced ``max_xmins`` of them first, then every
    candidate between the neighbours of the best of those."""
    u, first = np.unique(x, return_index=True)
    cands = np.arange(0 if complete else 1, len(u) - 1)  # never the largest value
    if len(cands) == 0:
        return None
    logs = np.log(x)
    suffix = np.concatenate([np.cumsum(logs[::-1])[::-1], [0.0]])  # sum of logs from i on
    ln_u = np.log(u)

    def at(j: int) -> _Tail | None:
        i0 = int(first[j])
        n = len(x) - i0
        denom = suffix[i0] - n * ln_u[j]
        if n < 2 or denom <= 0:
            return None
        alpha = 1 + n / denom
        theo = 1 - np.exp((1 - alpha) * (ln_u[j:] - ln_u[j]))
        emp = (first[j:] - i0) / n
        return _Tail(float(u[j]), alpha, float(np.max(np.abs(theo - emp))), i0)

    def best_of(js: Iterable[int]) -> tuple[int, _Tail | None]:
        pick, best = -1, None
        for j in js:
            t = at(int(j))
            if t is not None and (best is None or t.ks < best.ks):
                pick, best = int(j), t
        return pick, best

    if len(cands) <= max_xmins:
        return best_of(cands)[1]
    coarse = np.unique(np.linspace(cands[0], cands[-1], max_xmins).round().astype(np.int64))
    j, _ = best_of(coarse)
    if j < 0:
        return None
    k = int(np.searchsorted(coarse, j))
    lo, hi = coarse[max(k - 1, 0)], coarse[min(k + 1, len(coarse) - 1)]
    return best_of(range(int(lo), int(hi) + 1))[1]


def _log_sf(z: float) -> float:
    """``ln P(Z > z)`` for a standard normal ``Z``, accurate far into the tail."""
    t = z / math.sqrt(2)
    if t < 25:
        return math.log(0.5 * math.erfc(t))
    # erfc(t) ~ exp(-t^2) / (t sqrt(pi)) (1 - 1/(2t^2) + 3/(4t^4)) for large t
    tail = -t * t - math.log(2 * t * math.sqrt(math.pi))
    return tail + math.log1p(-0.5 / t**2 + 0.75 / t**4)


def _lognormal_ll(lx: Floats, lxmin: float, mu: float, sigma: float) -> Floats:
    """Pointwise log-likelihoods of a lognormal truncated below at ``xmin``."""
    z = (lx - mu) / sigma
    return (
        -lx
        - math.log(sigma)
        - 0.5 * math.log(2 * math.pi)
        - 0.5 * z * z
        - _log_sf((lxmin - mu) / sigma)
    )


def _nelder_mead(
    f: Callable[[list[float]], float],
    x0: list[float],
    step: list[float],
    iters: int = 4000,
    tol: float = 1e-12,
) -> list[float]:
    """Minimise ``f`` from ``x0`` (the standard reflect/expand/contract/shrink simplex), in
    plain floats: the problems here have two parameters, where array calls would cost more
    than the arithmetic."""
    dim = len(x0)
    pts = [list(x0)] + [
        [x + (step[i] if j == i else 0.0) for j, x in enumerate(x0)] for i in range(dim)
    ]
    vals = [f(p) for p in pts]

    def along(a: list[float], b: list[float], t: float) -> list[float]:
        return [x + t * (y - x) for x, y in zip(a, b, strict=True)]

    for _ in range(iters):
        order = sorted(range(len(pts)), key=vals.__getitem__)
        pts = [pts[i] for i in order]
        vals = [vals[i] for i in order]
        spread = max(abs(x - y) for p in pts[1:] for x, y in zip(p, pts[0], strict=True))
        if abs(vals[-1] - vals[0]) <= tol * (abs(vals[0]) + tol) and spread <= 1e-10 * (
            1 + max(abs(x) for x in pts[0])
        ):
            break
        centre = [sum(c) / dim for c in zip(*pts[:-1], strict=True)]
        refl = along(centre, pts[-1], -1.0)
        fr = f(refl)
        if fr < vals[0]:
            exp = along(centre, pts[-1], -2.0)
            fe = f(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            con = along(centre, pts[-1], 0.5) if fr >= vals[-1] else along(centre, refl, 0.5)
            fc = f(con)
            if fc < min(fr, vals[-1]):
                pts[-1], vals[-1] = con, fc
            else:
                pts = [pts[0]] + [along(pts[0], p, 0.5) for p in pts[1:]]
                vals = [vals[0]] + [f(p) for p in pts[1:]]
    return pts[min(range(len(pts)), key=vals.__getitem__)]


def fit_lognormal(lx: Floats, lxmin: float) -> tuple[float, float]:
    """Maximum-likelihood ``(mu, sigma)`` of a lognormal truncated below at ``exp(lxmin)``,
    for the logs ``lx`` of sizes ``>= xmin``. The likelihood needs only the count, sum and
    sum of squares of ``lx``, so each step costs the same whatever the number of sizes."""
    n = len(lx)
    m, s = float(np.mean(lx)), float(np.std(lx)) or 1.0
    # in units of the data's spread, so that one simplex scale suits every capture
    z = (lx - m) / s
    s1, s2 = float(np.sum(z)), float(np.sum(z * z))
    zmin = (lxmin - m) / s

    def nll(p: list[float]) -> float:
        mu, ls = p
        sig = math.exp(ls)  # sigma / s
        quad = (s2 - 2 * mu * s1 + n * mu * mu) / (2 * sig * sig)
        v = n * ls + quad + n * _log_sf((zmin - mu) / sig)
        return v if math.isfinite(v) else math.inf

    best = _nelder_mead(nll, [0.0, 0.0], [0.5, 0.5])
    # a restart guards against a stall
    best = _nelder_mead(nll, best, [0.1, 0.1])
    return m + best[0] * s, s * math.exp(best[1])


def vuong(ll1: Floats, ll2: Floats) -> tuple[float, float, float]:
    """``(R, R normalised, p)`` of Vuong's non-nested likelihood-ratio test (``R > 0``
    favours the first model)."""
    d = ll1 - ll2
    n = len(d)
    r = float(np.sum(d))
    var = float(np.mean((d - np.mean(d)) ** 2))
    if n == 0 or var <= 0:
        return r, 0.0, 1.0
    return r, r / math.sqrt(n * var), math.erfc(abs(r) / math.sqrt(2 * n * var))


def power_law_fit(
    asc: npt.ArrayLike, *, complete: bool = True, max_xmins: int = MAX_XMINS
) -> PowerLawFit | None:
    """The CSN fit of the sizes ``asc`` (ascending, > 0; all of them when ``complete``, else
    the largest of a population: see the module docstring). None when fewer than two
    distinct sizes can start a tail."""
    x = np.asarray(asc, dtype=np.float64)
    if len(x) and x[0] <= 0:
        raise ValueError("sizes for a power-law fit must be > 0")
    best = _scan_xmins(x, complete, max_xmins)
    if best is None:
        return None
    tail = x[best.start :]
    n = len(tail)
    lx = np.log(tail)
    lxmin = math.log(best.xmin)
    ll_pl = math.log(best.alpha - 1) - lxmin - best.alpha * (lx - lxmin)
    mu, sigma = fit_lognormal(lx, lxmin)
    r, r_norm, p = vuong(ll_pl, _lognormal_ll(lx, lxmin, mu, sigma))
    prefer = "neither" if p >= 0.1 else ("power_law" if r > 0 else "lognormal")
    return PowerLawFit(
        xmin=best.xmin,
        alpha=best.alpha,
        alpha_se=(best.alpha - 1) / math.sqrt(n),
        n_tail=n,
        ks=best.ks,
        lognormal_mu=mu,
        lognormal_sigma=sigma,
        llr=r,
        llr_normalized=r_norm,
        p=p,
        preferred=prefer,
    )


def tail_fit(top: TopSizes, max_xmins: int = MAX_XMINS) -> TailFit:
    """Both estimates on the sizes ``top`` kept (zero sizes left out: a power law lives on
    ``x > 0``)."""
    asc = top.values()
    asc = asc[asc > 0]
    kept = len(asc)
    return TailFit(
        flows=top.n,
        sizes_fitted=kept,
        complete=top.complete,
        hill=hill(asc, top.n) if kept >= 2 else None,
        power_law=power_law_fit(asc, complete=top.complete, max_xmins=max_xmins),
    )


def keeping(sizes: Iterable[int], kept: TopSizes) -> Iterator[int]:
    """``sizes`` unchanged, each also added to ``kept`` (the sizes a tail fit needs, read in
    the pass that reads them anyway)."""
    chunk: list[int] = []
    for v in sizes:
        yield v
        chunk.append(v)
        if len(chunk) >= 8192:
            kept.add_many(chunk)
            chunk.clear()
    kept.add_many(chunk)
