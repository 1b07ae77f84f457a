"""Flow-size plots with matplotlib's object API (``Figure``, never pyplot), rendered by Agg.

No global pyplot state is touched, so figures can be built from a long-running process or from
threads. :func:`save_figure` picks the file format from the extension (``.pdf``, ``.png``,
``.svg``) and refuses any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reporter.distribution import (
    ccdf,
    cumulative_share,
    human_bytes,
    log_bins,
    spans_decades,
)
from reporter.elephants import DEFAULT_RULES, classify_all

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


def _histogram(ax: Axes, sizes: Sequence[int], top: int | None) -> None:
    shown = sorted(sizes, reverse=True)[:top] if top is not None else list(sizes)
    label = f"top {len(shown)} flows" if top is not None else f"all {len(shown)} flows"
    ax.set_title(f"Flow size distribution ({label})")
    ax.set_xlabel("flow size (KB, 1 KB = 1000 bytes)")
    ax.set_ylabel("number of flows (log)")
    if not shown:
        ax.text(0.5, 0.5, "no flows", ha="center", va="center", transform=ax.transAxes)
        return
    kb = [s / KB for s in shown]
    if spans_decades(shown) and min(shown) > 0:
        ax.hist(kb, bins=log_bins(kb, 40), color="tab:blue", edgecolor="white")
        ax.set_xscale("log")
    else:
        ax.hist(kb, bins=min(40, max(1, len(set(kb)))), color="tab:blue", edgecolor="white")
    ax.set_yscale("log")
    # The default rules' size thresholds, where they select something: a cheap guide to where
    # "elephant" starts under each definition.
    for res, colour in zip(classify_all(sizes, DEFAULT_RULES), _RULE_COLOURS, strict=True):
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


def _ccdf_and_share(ax: Axes, sizes: Sequence[int]) -> None:
    ax.set_title("CCDF of flow sizes and share of bytes")
    ax.set_xlabel("flow size x (bytes, log)")
    ax.set_ylabel("P(size >= x) (log)", color="tab:blue")
    pos = [s for s in sizes if s > 0]
    if not pos:
        ax.text(0.5, 0.5, "no flows", ha="center", va="center", transform=ax.transAxes)
        return
    xs, ys = ccdf(pos)
    idx = [len(xs) - 1 - i for i in reversed(_thin(len(xs)))]  # keep the tail's detail
    ax.step([xs[i] for i in idx], [ys[i] for i in idx], where="post", color="tab:blue")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.tick_params(axis="y", colors="tab:blue")
    # The share curve has its own x (fraction of flows, top axis) and y (share, right axis).
    right = ax.twinx()
    share_ax = right.twiny()
    ks, shares = cumulative_share(sizes)
    n = len(ks)
    idx = _thin(n)
    share_ax.plot([ks[i] / n for i in idx], [shares[i] for i in idx], color="tab:orange")
    share_ax.set_xscale("log")
    share_ax.set_xlim(1 / n, 1)
    share_ax.set_xlabel("fraction of flows, largest first (log)", color="tab:orange")
    share_ax.tick_params(axis="x", colors="tab:orange")
    right.set_ylim(0, 1.02)
    right.set_ylabel("share of bytes in the largest flows", color="tab:orange")
    right.tick_params(axis="y", colors="tab:orange")


def size_histogram_figure(
    sizes_bytes: Sequence[int], top: int | None = None, title: str = "Flow sizes"
) -> Figure:
    """A two-panel figure of flow sizes in bytes.

    Left: histogram of the ``top`` largest flows (all flows when ``None``) in KB, count axis
    log-scaled, log-spaced bins when the sizes span a decade or more, with the default elephant
    rules' thresholds marked. Right: the CCDF ``P(size >= x)`` of all flows (log-log) and, on
    twin axes (top and right), the share of bytes carried by the largest fraction of flows.
    An empty input gives the panels with a "no flows" note. Raises :class:`ValueError` for a
    negative ``top``.
    """
    if top is not None and top < 0:
        raise ValueError(f"top must be >= 0, not {top}")
    fig = Figure(figsize=(13, 5), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    _histogram(left, sizes_bytes, top)
    _ccdf_and_share(right, sizes_bytes)
    total = sum(sizes_bytes)
    fig.suptitle(f"{title}: {len(sizes_bytes)} flows, {human_bytes(total)}")
    return fig


def timeline_figure(
    starts_ns: Sequence[int],
    series: Sequence[tuple[str, Sequence[int]]],
    sizes_bytes: Sequence[int],
    top: int | None = None,
    title: str = "Flows over time",
) -> Figure:
    """Left: bytes per window of each flow in ``series`` (label, one value per window start),
    stacked; right: the whole-capture size histogram, as in :func:`size_histogram_figure`.
    Raises :class:`ValueError` when a series does not have one value per window."""
    for label, values in series:
        if len(values) != len(starts_ns):
            raise ValueError(
                f"series {label!r} has {len(values)} values for {len(starts_ns)} windows"
            )
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
    _histogram(right, sizes_bytes, top)
    fig.suptitle(
        f"{title}: {len(starts_ns)} windows, {len(sizes_bytes)} flows, "
        f"{human_bytes(sum(sizes_bytes))}"
    )
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
