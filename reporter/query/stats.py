"""Statistics by key of a capture or of its windows, read from the store and written in a
format (what ``reporter stats`` prints and the web view's stats API answers)."""

from __future__ import annotations

from typing import TextIO

from flowherd.models.errors import CaptureStateError
from flowherd.models.keys import RunKeys
from flowherd.models.report import View
from flowherd.reporter.analysis.stats import By, KeySpec, key_stats
from flowherd.reporter.output.stats import StatsFormat, write_stat_rows
from flowherd.reporter.where.apply import Where, filtered
from flowherd.store.backend import Store
from flowherd.store.tables import iter_raw, table


def write_stats(
    out: TextIO,
    conn: Store,
    keys: RunKeys,
    name: str,
    spec: KeySpec,
    by: By,
    n: int,
    view: View,
    fmt: StatsFormat = "json",
    starts: list[int] | None = None,
    floor: float | None = None,
    percentage: float | None = None,
    where: Where | None = None,
) -> None:
    """Write what ``reporter stats`` prints in ``fmt`` to ``out``: the statistics of capture
    ``name`` (run ``keys``) by ``spec``, of the whole capture (``starts`` None) or of each
    window starting at ``starts`` (JSON: a list of documents). The web view's stats API
    answers this JSON."""
    if fmt == "json" and starts is not None:
        out.write("[")
    wins: list[int | None] = [None] if starts is None else list(starts)
    for i, start in enumerate(wins):
        pairs = filtered(iter_raw(conn, table(keys, start)), where, view)
        try:
            with key_stats(pairs, spec, view, by, n, floor, percentage) as (tot, rows):
                write_stat_rows(out, fmt, i, start, name, spec, by, view, tot, rows)
        except OSError as exc:
            raise CaptureStateError(
                f"cannot write temporary files for the statistics: {exc}"
            ) from None
    if fmt == "json":
        out.write("]\n" if starts is not None else "\n")
