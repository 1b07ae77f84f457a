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
from collections.abc import Iterable
from itertools import chain
from typing import Literal, TextIO

from console.tables import elephants_table, rows_table, summary_table
from console.units import human_bytes, human_duration, human_rate, human_ts, proto_name
from models.flows import ts_text
from models.report import ConvRow, FlowRow
from reporter.export import BI_COLUMNS, UNI_COLUMNS

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
