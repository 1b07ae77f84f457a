"""A capture's report computed now, with any mix of elephant and heavy-hitter rules (burst rules
read the windows): what ``reporter summary --rule`` and the web view show."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from flowherd.models.capture import CaptureStatus
from flowherd.models.errors import CaptureStateError
from flowherd.models.keys import RunKeys
from flowherd.models.report import ElephantRule, HeavyRule, Report
from flowherd.reporter.analysis.report import stream_report
from flowherd.reporter.query import windows
from flowherd.reporter.table.packed import Pair
from flowherd.reporter.where.apply import Where, filtered, matched_status
from flowherd.store.backend import Store
from flowherd.store.tables import iter_raw, table


def report_with(
    store: Store,
    keys: RunKeys,
    st: CaptureStatus,
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
