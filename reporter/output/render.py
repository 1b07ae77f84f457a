"""Output of flow rows and reports: CSV and JSON for machines, rich tables for people.

* :func:`rows_csv` writes exactly the oracle's columns and number formats (``.uni.csv`` for
  :class:`~flowherd.models.report.FlowRow`, ``.bi.csv`` for
  :class:`~flowherd.models.report.ConvRow`), so a table in the oracle's order
  (:func:`flowherd.reporter.table.order.top` by bytes) is byte-identical to it
  (:mod:`flowherd.reporter.output.lines` writes the same lines from stored records, streaming);
  given a Community ID seed it adds a last column, ``community_id`` (empty where there is none);
* :func:`rows_json` is a JSON array of the rows' pydantic dumps plus ``first_ts``/``last_ts``
  as exact epoch-seconds text;
* :func:`rows_table`, :func:`summary_table` and :func:`elephants_table` build
  :class:`rich.table.Table` objects in human units; printing them is the caller's business
  (:func:`rows_table` here can add a ``community id`` column to the console's flow table);
* :func:`with_community` gives rows the Community ID of another seed.

Nothing here reads Redis or decides what to show; it only formats what it is given.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from ipaddress import ip_address
from itertools import chain
from typing import TextIO

from rich.table import Table

from flowherd.console.tables import elephants_table, summary_table
from flowherd.console.tables import rows_table as _plain_rows_table
from flowherd.console.units import human_bytes, human_duration, human_rate, human_ts, proto_name
from flowherd.models.community import flow_community_id
from flowherd.models.flows import ts_text
from flowherd.models.report import ConvRow, FlowRow, Row, View
from flowherd.reporter.output.lines import BI_COLUMNS, CID_COLUMN, UNI_COLUMNS

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
    "with_community",
]

Rows = Iterable[Row]


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


def row_community_id(r: FlowRow | ConvRow, seed: int) -> str | None:
    """The Community ID of a row's flow with ``seed`` (from its text addresses and ports)."""
    if isinstance(r, FlowRow):
        a, b, ap, bp = r.src, r.dst, r.sport, r.dport
    else:
        a, b, ap, bp = r.a_addr, r.b_addr, r.a_port, r.b_port
    return flow_community_id(ip_address(a).packed, ip_address(b).packed, r.proto, ap, bp, seed)


def with_community(rows: Sequence[Row], seed: int) -> list[Row]:
    """``rows`` with their ``community_id`` computed with ``seed`` (0-65535)."""
    return [r.model_copy(update={"community_id": row_community_id(r, seed)}) for r in rows]


def rows_table(rows: Sequence[Row], title: str, community: bool = False) -> Table:
    """:func:`flowherd.console.tables.rows_table`; with ``community``, a last column
    ``community id`` (the rows' own ``community_id``; ``-`` where there is none)."""
    t = _plain_rows_table(rows, title)
    if not community:
        return t
    t.add_column("community id", overflow="fold", no_wrap=False)
    # rich adds cells row by row; the rows exist already, so fill the new column's cells
    t.columns[-1]._cells.extend(r.community_id or "-" for r in rows)
    return t


def rows_csv(
    rows: Rows,
    out: TextIO,
    view: View | None = None,
    community_seed: int | None = None,
) -> None:
    """Write ``rows`` to ``out`` as CSV with the oracle's header and formats, in the given order.

    With ``community_seed`` a last column, ``community_id``, holds each row's Community ID
    with that seed (empty for ICMP, ICMPv6 and SCTP: see :mod:`flowherd.models.community`).

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
    cid = community_seed is not None
    w.writerow((*(UNI_COLUMNS if cls is FlowRow else BI_COLUMNS), *((CID_COLUMN,) if cid else ())))
    for r in chain([head] if head is not None else [], it):
        if type(r) is not cls:
            raise TypeError(f"a table mixes {cls.__name__} and {type(r).__name__} rows")
        rec = _csv_record(r)
        if community_seed is not None:
            rec.append(row_community_id(r, community_seed) or "")
        w.writerow(rec)


def rows_json(rows: Rows, community_seed: int | None = None) -> str:
    """A JSON array of the rows' pydantic dumps, each with ``first_ts`` and ``last_ts`` added
    as exact epoch-seconds text (nanosecond integers lose precision in JavaScript).
    ``community_id`` is the row's own, or computed with ``community_seed`` when given."""
    items: list[dict[str, object]] = []
    for r in rows:
        d: dict[str, object] = r.model_dump(mode="json")
        if community_seed is not None:
            d["community_id"] = row_community_id(r, community_seed)
        d["first_ts"] = ts_text(r.first_ns)
        d["last_ts"] = ts_text(r.last_ns)
        items.append(d)
    return json.dumps(items)
