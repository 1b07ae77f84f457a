"""Flow tables as files that other tools read: CSV, NDJSON and Parquet, streamed.

:func:`records` turns stored ``(packed key, packed value)`` pairs into rows of a
:class:`Schema` (:data:`UNI` or :data:`BI`, documented in ``docs/exports.md``); the writers
consume those rows in chunks (CSV, NDJSON) or row groups (Parquet), so memory holds one chunk
whatever the table size. Rows come in the order of the pairs (table order).

Two hooks for callers: ``keep(key, stats) -> bool`` drops conversations before any row is
built (a filter), and ``extras`` appends derived columns (:class:`Extra`, e.g. a flow hash)
to every row, in every format.

Parquet needs ``pyarrow`` (the ``export`` extra); without it :func:`write_parquet` raises
:class:`flowherd.console.extras.MissingExtraError` (exit code 3) with the install command. Other
errors: :class:`ValueError` for a pair that is not a packed flow record or an unknown format.
"""

from __future__ import annotations

import csv
import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, BinaryIO, Literal, NamedTuple, TextIO

from flowherd.console.extras import require
from flowherd.models.flows import NS, VALUE, FlowKey, FlowStats
from flowherd.models.report import View
from flowherd.reporter.table.packed import AddrText, Pair, split_key

Format = Literal["csv", "ndjson", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "ndjson", "parquet")
#: Column kinds: text; unsigned 8 and 16 bits; signed 64 bits; a point in time (nanoseconds
#: since the epoch in the row; ISO 8601 text in CSV/NDJSON, ``timestamp[ns, UTC]`` in Parquet).
Kind = Literal["str", "u8", "u16", "i64", "time"]
#: ``keep(key, stats)``: False drops the conversation (both of its uni rows).
Keep = Callable[[FlowKey, FlowStats], bool]
#: Rows handed to a text writer at once.
CHUNK = 4096
#: Parquet rows per row group: the unit of memory when writing.
ROW_GROUP = 65536


class Column(NamedTuple):
    """A column; ``nullable`` ones may hold None (empty in CSV, ``null`` in NDJSON)."""

    name: str
    kind: Kind
    nullable: bool = False


class Extra(NamedTuple):
    """A derived column: ``value(src_or_a_addr, dst_or_b_addr, proto, sport, dport)``, called
    with the row's own orientation (uni: source first; bi: endpoint A first), addresses as
    bytes (4 or 16). A flow hash is one: ``Extra(Column("community_id", "str", True),
    flow_community_id)``."""

    column: Column
    value: Callable[[bytes, bytes, int, int, int], Any]


@dataclass(frozen=True)
class Schema:
    view: View
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def with_extras(self, extras: Sequence[Extra]) -> Schema:
        return Schema(self.view, self.columns + tuple(e.column for e in extras))


_TIMES = (
    Column("first_ns", "i64"),
    Column("last_ns", "i64"),
    Column("first", "time"),
    Column("last", "time"),
    Column("duration_ns", "i64"),
)
UNI = Schema(
    "uni",
    (
        Column("src", "str"),
        Column("dst", "str"),
        Column("proto", "u8"),
        Column("sport", "u16"),
        Column("dport", "u16"),
        Column("packets", "i64"),
        Column("bytes", "i64"),
        *_TIMES,
        Column("tcp_flags", "u8"),
    ),
)
BI = Schema(
    "bi",
    (
        Column("proto", "u8"),
        Column("a_addr", "str"),
        Column("a_port", "u16"),
        Column("b_addr", "str"),
        Column("b_port", "u16"),
        Column("packets_a_to_b", "i64"),
        Column("bytes_a_to_b", "i64"),
        Column("packets_b_to_a", "i64"),
        Column("bytes_b_to_a", "i64"),
        Column("packets", "i64"),
        Column("bytes", "i64"),
        *_TIMES,
        Column("tcp_flags_a_to_b", "u8"),
        Column("tcp_flags_b_to_a", "u8"),
    ),
)


def format_of(path: str) -> Format | None:
    """The format a file name asks for by its suffix (``.csv``, ``.ndjson``/``.jsonl``,
    ``.parquet``/``.pq``), or None."""
    low = path.lower()
    suffixes: tuple[tuple[str, Format], ...] = (
        (".csv", "csv"),
        (".ndjson", "ndjson"),
        (".jsonl", "ndjson"),
        (".parquet", "parquet"),
        (".pq", "parquet"),
    )
    for suffix, fmt in suffixes:
        if low.endswith(suffix):
            return fmt
    return None


def records(
    pairs: Iterable[Pair],
    view: View = "uni",
    keep: Keep | None = None,
    extras: Sequence[Extra] = (),
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``pairs`` in the columns of :data:`UNI` or :data:`BI` (then ``extras``).

    Uni: one row per direction that carried packets. Bi: one row per conversation, oriented
    as :func:`flowherd.reporter.table.views.conv_row` (A sent the earliest packet; on a tie, the
    smaller
    ``(address text, port)``)."""
    if view not in ("uni", "bi"):
        raise ValueError(f"view must be 'uni' or 'bi', not {view!r}")
    addr = AddrText()
    for k, v in pairs:
        a, b, p, ap, bp = split_key(k)
        if keep is not None and not keep(FlowKey(a, b, p, ap, bp), FlowStats.unpack(v)):
            continue
        pa, ba, pb, bb, fa, la, fb, lb, ga, gb = VALUE.unpack(v)
        at, bt = addr(a).decode("ascii"), addr(b).decode("ascii")
        if view == "uni":
            if pa:
                f, t = int(fa), int(la)
                row = (at, bt, p, ap, bp, int(pa), int(ba), f, t, f, t, t - f, ga)
                yield row + tuple(x.value(a, b, p, ap, bp) for x in extras) if extras else row
            if pb:
                f, t = int(fb), int(lb)
                row = (bt, at, p, bp, ap, int(pb), int(bb), f, t, f, t, t - f, gb)
                yield row + tuple(x.value(b, a, p, bp, ap) for x in extras) if extras else row
            continue
        f1, f2 = int(fa), int(fb)
        f, t = min(f1, f2), max(int(la), int(lb))
        if (f2, bt, bp) < (f1, at, ap) and (at, ap) != (bt, bp):
            a, b, at, bt, ap, bp = b, a, bt, at, bp, ap
            pa, ba, pb, bb, ga, gb = pb, bb, pa, ba, gb, ga
        pa, ba, pb, bb = int(pa), int(ba), int(pb), int(bb)
        conv = (p, at, ap, bt, bp, pa, ba, pb, bb, pa + pb, ba + bb, f, t, f, t, t - f, ga, gb)
        yield conv + tuple(x.value(a, b, p, ap, bp) for x in extras) if extras else conv


@functools.lru_cache(maxsize=4096)
def _second_text(s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))


def iso_time(ns: int) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC with 9 decimals: ``2024-01-01T00:00:05.
    000000123Z`` (exact; negative times count back from 1970)."""
    s, frac = divmod(ns, NS)
    return f"{_second_text(s)}.{frac:09d}Z"


def _text_cells(schema: Schema) -> Callable[[tuple[Any, ...]], list[Any]]:
    times = [i for i, c in enumerate(schema.columns) if c.kind == "time"]

    def cells(row: tuple[Any, ...]) -> list[Any]:
        out = list(row)
        for i in times:
            if out[i] is not None:
                out[i] = iso_time(out[i])
        return out

    return cells


def _chunks(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def write_csv(rows: Iterable[tuple[Any, ...]], schema: Schema, out: TextIO) -> int:
    """CSV with a header line (RFC 4180 quoting, ``\\n`` line ends); returns the row count."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(schema.names)
    cells, n = _text_cells(schema), 0
    for chunk in _chunks(rows, CHUNK):
        w.writerows(cells(r) for r in chunk)
        n += len(chunk)
    return n


def write_ndjson(rows: Iterable[tuple[Any, ...]], schema: Schema, out: TextIO) -> int:
    """One JSON object per line, keys in schema order; returns the row count."""
    cells, names, n = _text_cells(schema), schema.names, 0
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for chunk in _chunks(rows, CHUNK):
        out.write("".join(dumps(dict(zip(names, cells(r), strict=True))) + "\n" for r in chunk))
        n += len(chunk)
    return n


def _arrow() -> Any:
    require("pyarrow", "export", "Parquet export")
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


def arrow_schema(schema: Schema) -> Any:
    """The pyarrow schema of ``schema`` (pyarrow must be installed)."""
    pa, _ = _arrow()
    types = {
        "str": pa.string(),
        "u8": pa.uint8(),
        "u16": pa.uint16(),
        "i64": pa.int64(),
        "time": pa.timestamp("ns", tz="UTC"),
    }
    return pa.schema([pa.field(c.name, types[c.kind], c.nullable) for c in schema.columns])


def write_parquet(
    rows: Iterable[tuple[Any, ...]],
    schema: Schema,
    out: str | BinaryIO,
    row_group: int = ROW_GROUP,
    compression: str = "zstd",
) -> int:
    """Parquet, one row group per ``row_group`` rows (memory: one row group's columns, in
    Arrow form); returns the row count. A table without rows gives a file with the schema and
    no rows."""
    pa, pq = _arrow()
    aschema = arrow_schema(schema)
    n, held, batches = 0, 0, []
    # Rows become Arrow arrays CHUNK at a time: few Python objects alive at once (cheaper for
    # the garbage collector than a whole row group of tuples).
    with pq.ParquetWriter(out, aschema, compression=compression) as w:
        for chunk in _chunks(rows, min(CHUNK, row_group)):
            cols = zip(*chunk, strict=True)
            arrays = [pa.array(col, type=f.type) for col, f in zip(cols, aschema, strict=True)]
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=aschema))
            held += len(chunk)
            if held >= row_group:
                table = pa.Table.from_batches(batches, schema=aschema)
                w.write_table(table.slice(0, row_group), row_group_size=row_group)
                rest = table.slice(row_group)
                batches, held = rest.to_batches(), rest.num_rows
            n += len(chunk)
        if held:
            w.write_table(pa.Table.from_batches(batches, schema=aschema), row_group_size=row_group)
    return n
