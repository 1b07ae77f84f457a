"""Flow-size plots with matplotlib's object API (``Figure``, never pyplot), rendered by Agg.

Figures are drawn from a :class:`~flowherd.reporter.analysis.sizes.SizeDist` (sizes given as a list
are summarised first), so memory does not grow with the number of flows; the one approximation
(sizes in buckets of at most 0.4% of their size above 512 bytes) is written on the figure whenever a
bucket holds different sizes.

No global pyplot state is touched, so figures can be built from a long-running process or from
threads. :func:`save_figure` picks the file format from the extension (``.pdf``, ``.png``,
``.svg``) and refuses any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flowherd.models.report import ElephantResult, TailFit
from flowherd.reporter.analysis.distribution import (
    BUCKETED,
    ccdf_points,
    histogram,
    human_bytes,
    log_bins,
    share_points,
    top_blocks,
)
from flowherd.reporter.analysis.elephants import DEFAULT_RULES, classify_all
from flowherd.reporter.analysis.sizes import SizeDist

FORMATS = (".pdf", ".png", ".svg")
KB = 1000
_MAX_POINTS = 2000
_RULE_COLOURS = ("tab:red", "tab:purple", "tab:green", "tab:brown")


def _thin(n: int, max_points: int = _MAX_POINTS) -> list[int]:
    """At most about ``max_points`` indices of ``range(n)``, log-spaced, keeping both ends
    (a log x axis needs detail at the start, little at the end)."""
    if n <= max_points:
        return list(range(n))
    keep = {0, n - 1}
    step = (n - 1) ** (1 / max_points)
    x = 1.0
    while x < n:
        keep.add(int(x) - 1)
        x *= step
    return sorted(keep)


def _histogram(
    ax: Axes, dist: SizeDist, top: int | None, elephants: Sequence[ElephantResult]
) -> None:
    blocks = [(c, lo / KB, hi / KB) for c, lo, hi in top_blocks(dist, top)]
    shown = sum(c for c, _, _ in blocks)
    label = f"top {shown} flows" if top is not None else f"all {shown} flows"
    ax.set_title(f"Flow size distribution ({label})")
    ax.set_xlabel("flow size (KB, 1 KB = 1000 bytes)")
    ax.set_ylabel("number of flows (log)")
    if not blocks:
        ax.text(0.5, 0.5, "no flows", ha="center", va="center", transform=ax.transAxes)
        return
    lo, hi = blocks[-1][1], blocks[0][2]
    if lo > 0 and hi >= lo * 10:
        edges = log_bins([lo, hi], 40)
        ax.set_xscale("log")
    else:
        # as numpy's histogram with a bin count: the data's range, widened when it is a point
        a, b = (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)
        nb = min(40, len(blocks))
        edges = [a + (b - a) * i / nb for i in range(nb + 1)]
    counts = histogram(blocks, edges)
    ax.hist(edges[:-1], bins=edges, weights=counts, color="tab:blue", edgecolor="white")
    ax.set_yscale("log")
    # The rules' size thresholds, where they select something: a cheap guide to where
    # "elephant" starts under each definition.
    for res, colour in zip(elephants, _RULE_COLOURS, strict=False):
        if res.flows:
            ax.axvline(
                res.threshold_bytes / KB,
                color=colour,
                linestyle="--",
                linewidth=1,
                label=f"{res.rule.name}: >= {human_bytes(res.threshold_bytes)} ({res.flows})",
            )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", title="elephant thresholds", title_fontsize="small")


def _tail_lines(ax: Axes, fit: TailFit, x_max: float) -> None:
    """The fitted tails over the CCDF: the power law from xmin and Hill's from x_(k+1), each
    scaled to the share of flows it covers, so that it overlays P(size >= x)."""
    n = fit.flows
    p = fit.power_law
    if p is not None and x_max > p.xmin:
        xs = np.geomspace(p.xmin, x_max, 50)
        ax.plot(
            xs,
            p.n_tail / n * (xs / p.xmin) ** (1 - p.alpha),
            color="tab:red",
            linestyle="--",
            label=f"power law: alpha={p.alpha:.2f}, xmin={human_bytes(round(p.xmin))}, "
            f"KS={p.ks:.3f}\nvs lognormal: R={p.llr:.2f}, p={p.p:.2g} ({p.preferred})",
        )
    h = fit.hill
    if h is not None and x_max > h.threshold:
        xs = np.geomspace(h.threshold, x_max, 50)
        ax.plot(
            xs,
            h.k / n * (xs / h.threshold) ** (-h.tail_index),
            color="tab:green",
            linestyle=":",
            label=f"Hill: alpha={h.alpha:.2f}, k={h.k:,}",
        )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="x-small", loc="lower left", title="tail fits", title_fontsize="small")


def _ccdf_and_share(ax: Axes, dist: SizeDist, fit: TailFit | None = None) -> None:
    ax.set_title("CCDF of flow sizes and share of bytes")
    ax.set_xlabel("flow size x (bytes, log)")
    ax.set_ylabel("P(size >= x) (log)", color="tab:blue")
    xs, ys = ccdf_points(dist)
    if not xs:
        ax.text(0.5, 0.5, "no flows", ha="center", va="center", transform=ax.transAxes)
        return
    idx = [len(xs) - 1 - i for i in reversed(_thin(len(xs)))]  # keep the tail's detail
    ax.step([xs[i] for i in idx], [ys[i] for i in idx], where="post", color="tab:blue")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.tick_params(axis="y", colors="tab:blue")
    if fit is not None:
        _tail_lines(ax, fit, float(max(b[3] for b in dist.buckets.values())))
    # The share curve has its own x (fraction of flows, top axis) and y (share, right axis).
    right = ax.twinx()
    share_ax = right.twiny()
    ks, shares = share_points(dist)
    n = dist.n
    idx = _thin(len(ks))
    share_ax.plot([ks[i] / n for i in idx], [shares[i] for i in idx], color="tab:orange")
    share_ax.set_xscale("log")
    share_ax.set_xlim(1 / n, 1)
    share_ax.set_xlabel("fraction of flows, largest first (log)", color="tab:orange")
    share_ax.tick_params(axis="x", colors="tab:orange")
    right.set_ylim(0, 1.02)
    right.set_ylabel("share of bytes in the largest flows", color="tab:orange")
    right.tick_params(axis="y", colors="tab:orange")


def _dist_and_rules(
    sizes: Sequence[int] | SizeDist, elephants: Sequence[ElephantResult] | None
) -> tuple[SizeDist, Sequence[ElephantResult]]:
    if isinstance(sizes, SizeDist):
        return sizes, elephants or ()
    if elephants is None:
        elephants = classify_all(sizes, DEFAULT_RULES)
    return SizeDist.of(sizes), elephants


def _note(fig: Figure, dist: SizeDist) -> None:
    """Name the approximation on the figure, when there is one."""
    if not dist.exact:
        fig.supxlabel(BUCKETED, fontsize="x-small", color="grey")  # constrained layout makes room


def size_histogram_figure(
    sizes_bytes: Sequence[int] | SizeDist,
    top: int | None = None,
    title: str = "Flow sizes",
    elephants: Sequence[ElephantResult] | None = None,
    fit: TailFit | None = None,
) -> Figure:
    """A two-panel figure of flow sizes in bytes, given as the sizes or as their
    :class:`~flowherd.reporter.analysis.sizes.SizeDist` (bounded memory; see :data:`BUCKETED`).

    Left: histogram of the ``top`` largest flows (all flows when ``None``) in KB, count axis
    log-scaled, log-spaced bins when the sizes span a decade or more, with the thresholds of
    ``elephants`` marked (for sizes given as a list, the default rules' by default; for a
    dist, pass :func:`flowherd.reporter.analysis.elephants.classify_dist`'s). Right: the CCDF
    ``P(size >= x)`` of all flows (log-log) and, on twin axes (top and right), the share of bytes
    carried by the largest fraction of flows, with the tail ``fit``
    (:func:`flowherd.reporter.analysis.tail.tail_fit`) drawn over the CCDF when given. An empty
    input gives the panels with a "no flows" note. Raises :class:`ValueError` for a negative
    ``top``.
    """
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0, not {top}")
    dist, rules = _dist_and_rules(sizes_bytes, elephants)
    fig = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    _histogram(left, dist, top, rules)
    _ccdf_and_share(right, dist, fit)
    fig.suptitle(f"{title}: {dist.n} flows, {human_bytes(dist.total)}")
    _note(fig, dist)
    return fig


def ccdf_figure(dist: SizeDist, title: str = "Flow sizes", fit: TailFit | None = None) -> Figure:
    """The right panel of :func:`size_histogram_figure` alone: the CCDF of ``dist``'s sizes
    (log-log) with the share of bytes of the largest flows, and the tail ``fit`` when given."""
    fig = Figure(figsize=(7, 5), layout="constrained")
    FigureCanvasAgg(fig)
    _ccdf_and_share(fig.subplots(), dist, fit)
    fig.suptitle(f"{title}: {dist.n} flows, {human_bytes(dist.total)}")
    _note(fig, dist)
    return fig


def timeline_figure(
    starts_ns: Sequence[int],
    series: Sequence[tuple[str, Sequence[int]]],
    sizes_bytes: Sequence[int] | SizeDist,
    top: int | None = None,
    title: str = "Flows over time",
    elephants: Sequence[ElephantResult] | None = None,
) -> Figure:
    """Left: bytes per window of each flow in ``series`` (label, one value per window start),
    stacked; right: the whole-capture size histogram, as in :func:`size_histogram_figure`.
    Raises :class:`ValueError` when a series does not have one value per window."""
    for label, values in series:
        if len(values) != len(starts_ns):
            raise ValueError(
                f"series {label!r} has {len(values)} values for {len(starts_ns)} windows"
            )
    dist, rules = _dist_and_rules(sizes_bytes, elephants)
    fig = Figure(figsize=(14, 5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    t0 = starts_ns[0] if starts_ns else 0
    xs = [(s - t0) / 1e9 for s in starts_ns]
    if series and xs:
        left.stackplot(
            xs,
            *[[v / 1e6 for v in vals] for _, vals in series],
            labels=[lb for lb, _ in series],
            step="post",
        )
        left.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0), title="flow")
    else:
        left.text(0.5, 0.5, "no windows", ha="center", va="center", transform=left.transAxes)
    left.set_xlabel("window start, seconds from the first window")
    left.set_ylabel("MB in the window")
    left.set_title("Bytes per window of the largest flows")
    _histogram(right, dist, top, rules)
    fig.suptitle(f"{title}: {len(starts_ns)} windows, {dist.n} flows, {human_bytes(dist.total)}")
    _note(fig, dist)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` in the format its extension names (``.pdf``, ``.png`` or
    ``.svg``, any case) and return the path. Raises :class:`ValueError` for any other
    extension, before anything is written."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"cannot save a figure as {p.name!r}: use a {', '.join(FORMATS)} file")
    fig.savefig(p, format=ext[1:])
    return p
