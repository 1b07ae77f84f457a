"""What ``reporter stats`` writes: statistics by key as CSV, JSON or a table (formats only)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any, Literal, TextIO

from rich.table import Table

from flowherd.console.show import out_console
from flowherd.models.flows import ts_text
from flowherd.models.report import View
from flowherd.reporter.analysis.stats import By, KeySpec, StatRow, Totals
from flowherd.reporter.output.render import human_bytes, human_ts

StatsFormat = Literal["table", "csv", "json"]
STATS_FORMATS: tuple[StatsFormat, ...] = ("table", "csv", "json")

COLUMNS = (
    "key", "packets", "bytes", "flows", "packets_pct", "bytes_pct", "flows_pct",
    "pps", "bps", "first_ts", "last_ts",
)  # fmt: skip


def _cells(r: StatRow) -> list[Any]:
    return [
        r.key, r.packets, r.bytes, r.flows,
        f"{r.packets_pct:.6f}", f"{r.bytes_pct:.6f}", f"{r.flows_pct:.6f}",
        f"{r.pps:.3f}", f"{r.bps:.3f}", ts_text(r.first_ns), ts_text(r.last_ns),
    ]  # fmt: skip


def _json_row(r: StatRow) -> str:
    c = _cells(r)
    d = dict(zip(COLUMNS, c, strict=True))
    for f in ("packets_pct", "bytes_pct", "flows_pct", "pps", "bps"):
        d[f] = float(d[f])
    return json.dumps(d)


def _head(name: str, spec: KeySpec, by: By, view: View, tot: Totals) -> dict[str, Any]:
    return {
        "name": name,
        "key": str(spec),
        "by": by,
        "direction": view,
        "totals": {"packets": tot.packets, "bytes": tot.bytes, "flows": tot.flows},
    }


def _write_json(out: TextIO, head: dict[str, Any], rows: Iterator[StatRow]) -> None:
    out.write(json.dumps(head)[:-1] + ', "rows": [')
    for i, r in enumerate(rows):
        out.write(("," if i else "") + _json_row(r))
    out.write("]}")


def _print_table(title: str, tot: Totals, rows: Iterator[StatRow], what: str) -> None:
    t = Table(title=title)
    for h in (what, "flows", "%", "packets", "%", "bytes", "%", "pps", "bit/s"):
        t.add_column(h, justify="left" if h == what else "right")
    for r in rows:
        t.add_row(
            r.key,
            f"{r.flows:,}",
            f"{r.flows_pct:.2f}",
            f"{r.packets:,}",
            f"{r.packets_pct:.2f}",
            human_bytes(r.bytes),
            f"{r.bytes_pct:.2f}",
            f"{r.pps:,.1f}",
            f"{r.bps:,.0f}",
        )
    t.caption = f"of {tot.flows:,} flows, {tot.packets:,} packets, {human_bytes(tot.bytes)}"
    out_console().print(t)


def write_stat_rows(
    out: TextIO,
    fmt: StatsFormat,
    i: int,
    start: int | None,
    name: str,
    spec: KeySpec,
    by: By,
    view: View,
    tot: Totals,
    rows: Iterator[StatRow],
) -> None:
    """Write one table of statistics (of the capture, or of the window starting at ``start``,
    the ``i``-th written) in ``fmt``: CSV (a ``# window`` line before each window's rows), JSON
    (one document; the caller writes the list around windows) or a table on the terminal."""
    if fmt == "csv":
        if start is not None:
            out.write(f"# window {ts_text(start)}\n")
        w = csv.writer(out, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(_cells(r) for r in rows)
    elif fmt == "json":
        head = _head(name, spec, by, view, tot)
        if start is not None:
            out.write("," if i else "")
            head["window_start"] = ts_text(start)
        _write_json(out, head, rows)
    else:
        when = "" if start is None else f", window {human_ts(start)}"
        _print_table(f"{name}: {spec} by {by} ({view}){when}", tot, rows, str(spec))
