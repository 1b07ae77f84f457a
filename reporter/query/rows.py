"""Row queries over a run's table, or over one of its windows (same layout, see
flowherd.store.tables)."""

from __future__ import annotations

from collections.abc import Iterator

from flowherd.models.report import RankBy, Row, View
from flowherd.reporter.analysis.scan import top_from_pairs
from flowherd.reporter.table.order import top
from flowherd.reporter.table.views import conv_row, uni_row, uni_rows
from flowherd.reporter.where.apply import Where
from flowherd.store.backend import Store
from flowherd.store.tables import Table, iter_flows, iter_raw, top_conversations, top_directions


def all_rows(store: Store, t: Table, view: View, where: Where | None = None) -> Iterator[Row]:
    flows = iter_flows(store, t)
    if where is not None:
        flows = where.flows(flows, view)
    for key, st in flows:
        if view == "bi":
            yield conv_row(key, st)
        else:
            yield from uni_rows(key, st)


def top_rows(
    store: Store,
    t: Table,
    n: int,
    by: RankBy,
    view: View,
    proto: int | None = None,
    where: Where | None = None,
) -> list[Row]:
    """The ``n`` largest rows. By bytes without a protocol filter or ``where`` this reads the
    shards' ranking sorted sets (no scan); anything else scans the table (through ``where``),
    holding ``n`` rows."""
    if where is not None:
        pairs = where.pairs(iter_raw(store, t), view)
        return list(top_from_pairs(pairs, view, n, by, proto))
    if by == "bytes" and proto is None:
        if view == "bi":
            return list(
                top([conv_row(k, s) for k, s in top_conversations(store, t, n)], "bytes", n)
            )
        return list(top([uni_row(k, s, d) for k, s, d in top_directions(store, t, n)], "bytes", n))
    return list(top_from_pairs(iter_raw(store, t), view, n, by, proto))
