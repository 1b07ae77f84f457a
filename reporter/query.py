"""Row queries over a run's table, or over one of its windows (same key layout)."""

from __future__ import annotations

from collections.abc import Iterator

from redis import Redis

from models.keys import RunKeys
from models.report import ConvRow, FlowRow
from reporter.rank import RankBy, top
from reporter.store import iter_flows, top_conversations, top_directions
from reporter.views import conv_row, uni_row, uni_rows

Row = FlowRow | ConvRow


def all_rows(conn: Redis, keys: RunKeys, direction: str) -> Iterator[Row]:
    for key, st in iter_flows(conn, keys):
        if direction == "bi":
            yield conv_row(key, st)
        else:
            yield from uni_rows(key, st)


def top_rows(
    conn: Redis, keys: RunKeys, n: int, by: RankBy, direction: str, proto: int | None = None
) -> list[Row]:
    """The ``n`` largest rows. By bytes without a protocol filter this reads the ranking sorted
    set (no scan); any other order scans the table."""
    if by == "bytes" and proto is None:
        if direction == "bi":
            return list(
                top([conv_row(k, s) for k, s in top_conversations(conn, keys, n)], "bytes", n)
            )
        return list(
            top([uni_row(k, s, d) for k, s, d in top_directions(conn, keys, n)], "bytes", n)
        )
    return list(top(all_rows(conn, keys, direction), by, n, proto))  # type: ignore[type-var]
