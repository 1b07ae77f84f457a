"""A capture in flowherd's store, read from Python: :class:`Capture`.

Every table is a pandas DataFrame with the CLI's CSV columns (:mod:`flowherd.frames`), every
figure a matplotlib ``Figure`` (shown inline in Jupyter), and every number the one the
``reporter`` commands print for the same capture: both read through the same layers
(``reporter/query``, ``reporter/table``, ``reporter/analysis``, ``reporter/output``).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from flowherd import frames
from flowherd.console.extras import require
from flowherd.models.capture import CaptureState, CaptureStatus
from flowherd.models.errors import CaptureStateError
from flowherd.models.report import RANK_BY, Report, View, one_of, parse_view
from flowherd.reporter.analysis.elephants import DEFAULT_RULES, classify_dist
from flowherd.reporter.analysis.heavy import parse_rules
from flowherd.reporter.analysis.scan import bi_sizes, uni_sizes
from flowherd.reporter.analysis.sizes import SizeDist
from flowherd.reporter.analysis.stats import BY, key_stats, parse_key
from flowherd.reporter.analysis.tail import TopSizes, keeping, tail_fit
from flowherd.reporter.query import windows as query_windows
from flowherd.reporter.query.report import report_with
from flowherd.reporter.query.rows import top_rows
from flowherd.reporter.table.packed import Pair
from flowherd.reporter.where.apply import Where, compile_where, filtered
from flowherd.store.backend import Store
from flowherd.store.captures import load_report, run_of, status
from flowherd.store.tables import Table, iter_raw, table


class Capture:
    """One capture of a flowherd store (made by :func:`flowherd.analyse` or
    :func:`flowherd.open`).

    Arguments shared by the table methods, as the CLI takes them: ``direction`` ``"uni"``
    (5-tuple flows) or ``"bi"`` (conversations); ``where`` a filter (``"proto tcp and dport
    443"``, ``docs/filters.md``); ``window`` ``None`` (the whole capture), ``"latest"``, an
    epoch time in seconds (the window holding it) or ``"all"`` (every window, one
    ``window_start`` column first). Errors are flowherd's (:class:`CaptureStateError` for an
    unknown capture or one without windows, ...), with the CLI's messages; a bad argument is a
    :class:`ValueError`.
    """

    def __init__(self, name: str, store: Store) -> None:
        self.name = name
        self._store = store
        run_of(store, name)  # an unknown name fails here, as in the CLI

    # --- state --------------------------------------------------------------------------

    def status(self) -> CaptureStatus:
        """The capture's status: state, batches, packets, bytes, warnings (``producer
        status --json``)."""
        return status(self._store, self.name)

    @property
    def state(self) -> str:
        """``submitting``, ``processing``, ``complete``, ``failed`` or ``aborted``."""
        return self.status().state.value

    def _report(self, rules: Iterable[str] = (), where: Where | None = None) -> Report:
        """The stored report, or one computed now (as ``reporter summary`` decides)."""
        texts = tuple(rules)
        chosen, heavy = parse_rules(texts)
        keys = run_of(self._store, self.name)
        report = load_report(self._store, keys)
        st = status(self._store, self.name)
        if (
            report is None
            or report.tail is None
            or texts
            or where is not None
            or report.summary.packets != st.packets
        ):
            report = report_with(self._store, keys, st, chosen, heavy, where)
        return report

    def summary(self, where: str | None = None) -> dict[str, Any]:
        """Totals of the capture: the ``summary`` of ``reporter summary --json`` (packets,
        bytes, counted packets and bytes, flows both ways, not-counted buckets, first and last
        packet in ns, byte shares of the largest flows)."""
        w = compile_where(where) if where else None
        return self._report((), w).summary.model_dump(mode="json")

    # --- tables -------------------------------------------------------------------------

    def _tables(self, window: str | float | None) -> list[tuple[int | None, Table]]:
        keys = run_of(self._store, self.name)
        if window is None:
            return [(None, table(keys))]
        starts = query_windows.select(self._store, keys, self.name, str(window))
        return [(s, table(keys, s)) for s in starts]

    def _per_window(self, window: str | float | None, parts: list[tuple[int | None, Any]]) -> Any:
        pd = frames.pandas()
        if window is None or str(window) != "all":
            return parts[0][1]
        out = []
        for start, frame in parts:
            frame.insert(0, "window_start", pd.to_datetime([start] * len(frame), utc=True))
            out.append(frame)
        return pd.concat(out, ignore_index=True)

    def top(
        self,
        n: int = 10,
        by: str = "bytes",
        direction: str = "uni",
        where: str | None = None,
        window: str | float | None = None,
    ) -> Any:
        """The ``n`` largest flows by ``bytes``, ``packets``, ``duration`` or ``rate``
        (``reporter top --format csv``)."""
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n}")
        rank = one_of(by, RANK_BY)
        view = parse_view(direction)
        w = compile_where(where) if where else None
        parts = [
            (s, frames.rows_frame(top_rows(self._store, t, n, rank, view, None, w), view))
            for s, t in self._tables(window)
        ]
        return self._per_window(window, parts)

    def _pairs(self, t: Table, view: View, where: str | None) -> Iterable[Pair]:
        w = compile_where(where) if where else None
        return filtered(iter_raw(self._store, t), w, view)

    def flows_arrow(
        self, direction: str = "uni", where: str | None = None, window: str | float | None = None
    ) -> Any:
        """Every flow as a ``pyarrow.RecordBatchReader``, streamed from the store in batches
        (memory holds one batch, whatever the capture's size): read it with
        ``duckdb.sql("select ... from reader")``, ``pyarrow.dataset`` or ``read_all()``.
        The columns are the export schema (``docs/exports.md``) and ``community_id``;
        ``window`` is one window (``latest`` or a time), not ``all``."""
        view = parse_view(direction)
        ts = self._tables(window)
        if len(ts) != 1:
            raise ValueError("flows_arrow reads one window: give latest or a time, not all")
        return frames.flow_reader(self._pairs(ts[0][1], view, where), view)

    def flows(
        self, direction: str = "uni", where: str | None = None, window: str | float | None = None
    ) -> Any:
        """Every flow (``reporter flows --format csv``) as a DataFrame, in table order."""
        view = parse_view(direction)
        parts = [
            (s, frames.flows_frame(frames.flow_reader(self._pairs(t, view, where), view), view))
            for s, t in self._tables(window)
        ]
        return self._per_window(window, parts)

    def stats(
        self,
        key: str = "ip",
        by: str = "bytes",
        n: int = 10,
        direction: str = "uni",
        where: str | None = None,
        window: str | float | None = None,
    ) -> Any:
        """Packets, bytes, flows, shares and rates per ``key`` (``srcip``, ``dstip``, ``ip``,
        ``sport``, ``dport``, ``port``, ``proto``, ``pair``, ``net/N``), the ``n`` best by
        ``by`` (``n=0``: all): ``reporter stats --format csv``."""
        spec = parse_key(key)
        measure = one_of(by, BY)
        view = parse_view(direction)
        parts = []
        for s, t in self._tables(window):
            with key_stats(self._pairs(t, view, where), spec, view, measure, n) as (_, rows):
                parts.append((s, frames.stats_frame(rows)))
        return self._per_window(window, parts)

    def elephants(self, rule: str = "top:10") -> Any:
        """The flows one rule selects, largest first, as :meth:`top` gives them: a size rule
        (``top:N``, ``bytes:10MB``, ``share:0.01``, ``load:0.9``, ``3sigma``) or a heavy-hitter
        rule by ``duration`` or ``rate`` (``duration:3sd``, ``rate:10Mbit/s``);
        ``reporter summary --rule RULE`` counts the same flows."""
        size, heavy = parse_rules([rule])
        report = self._report([rule])
        if size:
            k, by = report.elephants[0].flows, "bytes"
        elif heavy[0].metric == "burst":
            raise ValueError("burst rules rank windows, not flows: use reporter summary")
        else:
            k, by = report.heavy[0].flows, heavy[0].metric
        if k == 0:
            return self.top(1, by).iloc[0:0]
        return self.top(k, by)

    def windows(self) -> Any:
        """The tumbling windows with their totals (``reporter windows --json``): ``start``
        (a timestamp), ``start_ns``, ``width_ns``, ``packets``, ``bytes``, ``flows``."""
        pd = frames.pandas()
        rows = query_windows.summaries(self._store, run_of(self._store, self.name))
        return pd.DataFrame(
            {
                "start": pd.to_datetime([r.start_ns for r in rows], utc=True),
                "start_ns": pd.array([r.start_ns for r in rows], dtype="int64"),
                "width_ns": pd.array([r.width_ns for r in rows], dtype="int64"),
                "packets": pd.array([r.packets for r in rows], dtype="int64"),
                "bytes": pd.array([r.bytes for r in rows], dtype="int64"),
                "flows": pd.array([r.flows for r in rows], dtype="int64"),
            }
        )

    # --- figures ------------------------------------------------------------------------

    def _dist(self, direction: str, where: str | None) -> tuple[SizeDist, TopSizes, Any]:
        view = parse_view(direction)
        t = table(run_of(self._store, self.name))
        sizes_of = bi_sizes if view == "bi" else uni_sizes

        def sizes() -> Any:
            return sizes_of(self._pairs(t, view, where))

        kept = TopSizes()
        dist = SizeDist.of(keeping(sizes(), kept))
        if not dist.n:
            matching = f" matching {where!r}" if where else ""
            raise CaptureStateError(f"capture {self.name!r} has no flows{matching} to plot")
        return dist, kept, sizes

    def hist(self, top: int | None = 100, direction: str = "uni", where: str | None = None) -> Any:
        """``reporter hist``'s figure: a histogram of the ``top`` largest flows' sizes (all
        flows with None) beside the CCDF, the share of bytes and the tail fits."""
        require("matplotlib", "plot", "flowherd's figures")
        from flowherd.reporter.output.plots import size_histogram_figure

        dist, kept, sizes = self._dist(direction, where)
        rules, _ = classify_dist(dist, DEFAULT_RULES, sizes)
        return size_histogram_figure(dist, top, self.name, rules, fit=tail_fit(kept))

    def ccdf(self, direction: str = "uni", where: str | None = None) -> Any:
        """The CCDF of flow sizes (log-log) with the share of bytes and the tail fits."""
        require("matplotlib", "plot", "flowherd's figures")
        from flowherd.reporter.output.plots import ccdf_figure

        dist, kept, _ = self._dist(direction, where)
        return ccdf_figure(dist, self.name, fit=tail_fit(kept))

    # --- display ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<flowherd.Capture {self.name!r}>"

    def _repr_html_(self) -> str:
        """The capture's state and summary as a small HTML table (Jupyter)."""
        st = self.status()
        cells = [
            ("state", st.state.value),
            ("batches", f"{st.batches_done:,}/{st.total_batches or '?'}"),
            ("packets", f"{st.packets:,}"),
            ("bytes", f"{st.bytes:,}"),
            ("conversations", f"{st.flows:,}"),
        ]
        if st.state is CaptureState.COMPLETE:
            s = self._report().summary
            cells += [
                ("flows (uni)", f"{s.flows_uni:,}"),
                ("top 1% of flows carry", f"{s.share_top1pct_uni:.1%} of bytes"),
                ("top 10 flows carry", f"{s.share_top10_uni:.1%} of bytes"),
            ]
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in cells
        )
        return f"<table><caption>capture {html.escape(self.name)}</caption>{rows}</table>"
