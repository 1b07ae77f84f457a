"""What ``reporter summary`` and ``reporter hist`` need for the heavy hitters beyond size and
the tail fit: a report computed with any mix of rules (burst rules read the windows), and the
largest sizes kept while a plot's sizes are read."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from flowherd.models.errors import CaptureStateError
from flowherd.models.report import ElephantRule, HeavyRule, Report
from flowherd.reporter.analysis.report import stream_report
from flowherd.reporter.analysis.tail import TopSizes
from flowherd.reporter.query import windows
from flowherd.reporter.table.packed import Pair
from flowherd.reporter.where.apply import Where, filtered, matched_status
from flowherd.store.tables import iter_raw, table


def report_with(
    store: Any,
    keys: Any,
    st: Any,
    rules: list[ElephantRule],
    heavy: list[HeavyRule],
    where: Where | None = None,
) -> Report:
    """The report of the (matching) unidirectional flows computed now, in streaming passes,
    with the elephant ``rules`` and ``heavy`` rules given. Burst rules read every window kept
    (a :class:`CaptureStateError` when the capture has none); a capture still being merged can
    change between two passes: then say so."""

    def rescan() -> Iterable[Pair]:
        return filtered(iter_raw(store, table(keys)), where, "uni")

    bursts = None
    width = 0
    if any(r.metric == "burst" for r in heavy):
        starts = windows.select(store, keys, st.name, "all")
        width = windows.width_ns(store, keys)

        def bursts() -> Iterator[Iterable[Pair]]:
            return (filtered(iter_raw(store, table(keys, s)), where, "uni") for s in starts)

    try:
        if where is not None:
            st = matched_status(st, rescan())
        return stream_report(
            st, rescan, time.time_ns(), rules=rules, heavy=heavy, bursts=bursts, window_ns=width
        )
    except ValueError as exc:
        raise CaptureStateError(
            f"capture {st.name!r} changed while it was read ({exc}): it is still being merged; "
            "try again, or when it is complete"
        ) from None


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
