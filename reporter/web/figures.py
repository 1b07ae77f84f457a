"""The capture page's figures: :mod:`flowherd.reporter.output.plots`' size histogram with the CCDF
and byte share, and the windows timeline, as SVG.

Figures are drawn from one streaming pass over the table (a
:class:`~flowherd.reporter.analysis.sizes.SizeDist`, memory bounded), as ``reporter hist`` draws
them. A small cache keyed by the run and its packet count serves a page's repeated refreshes of an
unchanged capture; one lock serialises drawing (matplotlib's object API is safe across threads, its
font and text caches are shared).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from flowherd.models.errors import FlowherdError
from flowherd.models.report import ElephantResult, View
from flowherd.reporter.analysis.elephants import DEFAULT_RULES, classify_dist
from flowherd.reporter.analysis.scan import bi_sizes, uni_sizes
from flowherd.reporter.analysis.sizes import SizeDist
from flowherd.reporter.query import windows
from flowherd.reporter.web.docs import keys_of, status_of, window_starts
from flowherd.store.backend import Store
from flowherd.store.tables import iter_raw, table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
_CACHE_SIZE = 32


class MissingExtra(FlowherdError):
    """The figures need matplotlib, which this install lacks (HTTP 501)."""


def _plots() -> ModuleType:
    try:
        from flowherd.reporter.output import plots
    except ImportError as exc:
        raise MissingExtra(
            f"figures need matplotlib ({exc.name} is not installed): pip install 'flowherd[plot]'"
        ) from None
    return plots


def _cached(key: tuple[object, ...], draw: Callable[[ModuleType], Figure]) -> bytes:
    """The SVG of ``key``, drawn by ``draw`` on a miss. Reading the table happens inside
    ``draw``, so two requests for the same figure read it once."""
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
        buf = io.BytesIO()
        draw(_plots()).savefig(buf, format="svg")
        _CACHE[key] = buf.getvalue()
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return _CACHE[key]


def _dist(store: Store, t: Any, sizes_of: Any) -> tuple[SizeDist, list[ElephantResult]]:
    """One pass for the sizes (bounded memory), and the default elephant rules' cuts."""
    dist = SizeDist.of(sizes_of(iter_raw(store, t)))
    if not dist.n:
        return dist, []
    rules, _ = classify_dist(dist, DEFAULT_RULES, lambda: sizes_of(iter_raw(store, t)))
    return dist, rules


def sizes_svg(store: Store, name: str, view: View, top: int | None) -> bytes:
    """``reporter hist NAME [--top N] --direction D`` as SVG (a capture with no flows yet gets
    the panels with a "no flows" note)."""
    keys = keys_of(store, name)
    st = status_of(store, name, detail=False)
    sizes_of = bi_sizes if view == "bi" else uni_sizes

    def draw(plots: ModuleType) -> Figure:
        dist, rules = _dist(store, table(keys), sizes_of)
        fig: Figure = plots.size_histogram_figure(dist, top, name, rules)
        return fig

    return _cached(("sizes", keys.run, st.packets, st.bytes, view, top), draw)


def timeline_svg(store: Store, name: str, nflows: int) -> bytes:
    """``reporter hist NAME --timeline --flows N`` as SVG; NotFound without windows."""
    keys = keys_of(store, name)
    window_starts(store, keys, name, "all")
    st = status_of(store, name, detail=False)

    def draw(plots: ModuleType) -> Figure:
        dist, rules = _dist(store, table(keys), uni_sizes)
        starts, series = windows.timeline(store, keys, nflows)
        fig: Figure = plots.timeline_figure(starts, series, dist, None, name, rules)
        return fig

    return _cached(("timeline", keys.run, st.packets, st.bytes, nflows), draw)
