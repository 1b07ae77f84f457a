"""Output of flow rows and reports: CSV and JSON for machines, rich tables for people.

* :func:`rows_csv` writes exactly the oracle's columns and number formats (``.uni.csv`` for
  :class:`~models.report.FlowRow`, ``.bi.csv`` for :class:`~models.report.ConvRow`), so a
  table in the oracle's order (:func:`reporter.rank.top` by bytes) is byte-identical to it
  (:mod:`reporter.export` writes the same lines from stored records, streaming);
* :func:`rows_json` is a JSON array of the rows' pydantic dumps plus ``first_ts``/``last_ts``
  as exact epoch-seconds text;
* :func:`rows_table`, :func:`summary_table` and :func:`elephants_table` build
  :class:`rich.table.Table` objects in human units; printing them is the caller's business.

Nothing here reads Redis or decides what to show; it only formats what it is given.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain
from typing import Literal, TextIO

from rich.table import Table

from models.flows import NS, ts_text
from models.report import ConvRow, ElephantResult, FlowRow, Summary
from reporter.distribution import human_bytes, human_rate
from reporter.elephants import rule_text
from reporter.export import BI_COLUMNS, UNI_COLUMNS
from reporter.rank import PROTOCOL_NAMES, rate

__all__ = [
    "BI_COLUMNS",
    "UNI_COLUMNS",
    "elephants_table",
    "human_bytes",
    "human_duration",
    "human_rate",
    "human_ts",
    "proto_name",
    "rows_csv",
    "rows_json",
    "rows_table",
    "summary_table",
]

Rows = Iterable[FlowRow] | Iterable[ConvRow]


def proto_name(p: int) -> str:
    """``TCP``, ``UDP``, ``ICMP``, ``ICMPv6``, ``GRE``, ``ESP``, ``SCTP``, else the number."""
    return PROTOCOL_NAMES.get(p, str(p))


def human_duration(ns: int) -> str:
    """A duration in seconds with millisecond precision, e.g. ``12.345 s``."""
    return f"{Decimal(ns) / NS:.3f} s"


def human_ts(ns: int) -> str:
    """A timestamp as UTC date and time with nanoseconds, e.g. ``1999-03-11 13:45:18.266121000
    UTC`` (timezone-aware; never local time)."""
    t = datetime.fromtimestamp(ns // NS, tz=UTC)
    return f"{t:%Y-%m-%d %H:%M:%S}.{ns % NS:09d} UTC"


def _csv_record(r: FlowRow | ConvRow) -> list[str | int]:
    if isinstance(r, FlowRow):
        return [
            r.src,
            r.dst,
            r.proto,
            r.sport,
            r.dport,
            r.packets,
            r.bytes,
            ts_text(r.first_ns),
            ts_text(r.last_ns),
        ]
    return [
        r.proto,
        r.a_addr,
        r.a_port,
        r.b_addr,
        r.b_port,
        r.packets_a_to_b,
        r.bytes_a_to_b,
        r.packets_b_to_a,
        r.bytes_b_to_a,
        r.packets,
        r.bytes,
        ts_text(r.first_ns),
        ts_text(r.last_ns),
    ]


def rows_csv(rows: Rows, out: TextIO, view: Literal["uni", "bi"] | None = None) -> None:
    """Write ``rows`` to ``out`` as CSV with the oracle's header and formats, in the given order.

    The header follows the rows' type; ``view`` names it for an empty table (an empty table
    without ``view`` raises :class:`ValueError`, since its header is unknown). Rows of both
    types in one table raise :class:`TypeError`. ``out`` should be opened with
    ``newline=""``; lines end in ``"\\n"``.
    """
    items: Iterable[FlowRow | ConvRow] = rows
    it = iter(items)
    head = next(it, None)
    if head is None:
        if view is None:
            raise ValueError("cannot tell the columns of an empty table: pass view='uni' or 'bi'")
        cls: type = FlowRow if view == "uni" else ConvRow
    else:
        cls = type(head)
        if view is not None and cls is not (FlowRow if view == "uni" else ConvRow):
            raise TypeError(f"view={view!r} does not match rows of type {cls.__name__}")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(UNI_COLUMNS if cls is FlowRow else BI_COLUMNS)
    for r in chain([head] if head is not None else [], it):
        if type(r) is not cls:
            raise TypeError(f"a table mixes {cls.__name__} and {type(r).__name__} rows")
        w.writerow(_csv_record(r))


def rows_json(rows: Rows) -> str:
    """A JSON array of the rows' pydantic dumps, each with ``first_ts`` and ``last_ts`` added
    as exact epoch-seconds text (nanosecond integers lose precision in JavaScript)."""
    items: list[dict[str, object]] = []
    for r in rows:
        d: dict[str, object] = r.model_dump(mode="json")
        d["first_ts"] = ts_text(r.first_ns)
        d["last_ts"] = ts_text(r.last_ns)
        items.append(d)
    return json.dumps(items)


def _rate_text(r: FlowRow | ConvRow) -> str:
    v = rate(r)
    return human_rate(v) if v else "-"


def rows_table(rows: Sequence[FlowRow] | Sequence[ConvRow], title: str) -> Table:
    """A rich table of ``rows`` in the given order: addresses whole (IPv6 included: on one line
    when the console is wide enough, else folded over lines, never cut short), protocol names,
    bytes in SI units with 3 significant digits, duration in seconds and rate in bit/s (``-``
    for a one-packet or zero-duration row). An empty sequence gives a flow table with no rows.
    """
    conv = bool(rows) and isinstance(rows[0], ConvRow)
    # Addresses fold (every character shown, never "...") and absorb the squeeze on a narrow
    # console; an IPv4 address always fits one line. Short columns never wrap.
    addr_width = min(15, max((len(a) for r in rows for a in _addrs(r)), default=0))
    t = Table(title=title)
    t.add_column("#", justify="right", no_wrap=True)
    a, b = ("A", "B") if conv else ("source", "destination")
    for h, port in ((a, "port A" if conv else "sport"), (b, "port B" if conv else "dport")):
        t.add_column(h, overflow="fold", min_width=addr_width)
        t.add_column(port, justify="right", no_wrap=True)
    t.add_column("proto", no_wrap=True)
    if conv:
        for h in ("pkts A→B", "bytes A→B", "pkts B→A", "bytes B→A"):
            t.add_column(h, justify="right", no_wrap=True)
    for h in ("packets", "bytes", "duration", "rate"):
        t.add_column(h, justify="right", no_wrap=True)
    items: Sequence[FlowRow | ConvRow] = rows
    for i, r in enumerate(items, 1):
        if isinstance(r, ConvRow):
            cells = [
                r.a_addr,
                str(r.a_port),
                r.b_addr,
                str(r.b_port),
                proto_name(r.proto),
                f"{r.packets_a_to_b:,}",
                human_bytes(r.bytes_a_to_b),
                f"{r.packets_b_to_a:,}",
                human_bytes(r.bytes_b_to_a),
            ]
        else:
            cells = [r.src, str(r.sport), r.dst, str(r.dport), proto_name(r.proto)]
        cells += [
            f"{r.packets:,}",
            human_bytes(r.bytes),
            human_duration(r.last_ns - r.first_ns),
            _rate_text(r),
        ]
        t.add_row(str(i), *cells)
    return t


def _addrs(r: FlowRow | ConvRow) -> tuple[str, str]:
    return (r.src, r.dst) if isinstance(r, FlowRow) else (r.a_addr, r.b_addr)


def _count_bytes(packets: int, n_bytes: int) -> str:
    exact = f" ({n_bytes:,} B)" if n_bytes >= 1000 else ""
    return f"{packets:,} packets, {human_bytes(n_bytes)}{exact}"


def summary_table(summary: Summary) -> Table:
    """A two-column rich table of a capture's totals: packets and bytes (counted and not, per
    reason), flows in both views, first and last packet in UTC, and the byte shares of the top
    1% and top 10 unidirectional flows."""
    t = Table(title="Capture summary", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("all frames", _count_bytes(summary.packets, summary.bytes))
    t.add_row("counted in flows", _count_bytes(summary.counted_packets, summary.counted_bytes))
    for reason, bucket in sorted(summary.not_counted.items()):
        t.add_row(f"not counted: {reason}", _count_bytes(bucket.packets, bucket.bytes))
    t.add_row("flows (unidirectional)", f"{summary.flows_uni:,}")
    t.add_row("conversations (bidirectional)", f"{summary.flows_bi:,}")
    if summary.first_ns is not None and summary.last_ns is not None:
        t.add_row("first packet", human_ts(summary.first_ns))
        t.add_row("last packet", human_ts(summary.last_ns))
        t.add_row("duration", human_duration(summary.last_ns - summary.first_ns))
    t.add_row("bytes in top 1% of flows", f"{summary.share_top1pct_uni * 100:.1f}%")
    t.add_row("bytes in top 10 flows", f"{summary.share_top10_uni * 100:.1f}%")
    return t


def elephants_table(results: Sequence[ElephantResult]) -> Table:
    """A rich table with one row per elephant rule: its definition, how many flows it selects,
    their bytes and share of all bytes, and the size of the smallest one."""
    t = Table(title="Elephant flows")
    t.add_column("rule")
    t.add_column("definition")
    for h in ("flows", "bytes", "share of bytes", "smallest"):
        t.add_column(h, justify="right")
    for res in results:
        t.add_row(
            res.rule.name,
            rule_text(res.rule),
            f"{res.flows:,}",
            human_bytes(res.bytes),
            f"{res.share_of_bytes * 100:.1f}%",
            human_bytes(res.threshold_bytes) if res.flows else "-",
        )
    return t
