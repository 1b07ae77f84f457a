"""The Python API's tables: pandas DataFrames and Arrow streams of flows, rows and statistics.

Columns are the CLI's CSV columns (``reporter top``/``flows``: ``src, dst, proto, sport, dport,
packets, bytes, first_ts, last_ts, community_id``; ``--direction bi``: ``proto, a_addr, a_port,
b_addr, b_port, frames_a_to_b, bytes_a_to_b, frames_b_to_a, bytes_b_to_a, frames, bytes,
first_ts, last_ts, community_id``; ``reporter stats``: ``key, packets, bytes, flows, ...``) with
their types: integers, ``datetime64[ns, UTC]`` timestamps, addresses as text. The Arrow stream
of :func:`flow_reader` has the export schema (``docs/exports.md``: ``first``/``last`` as
timestamps and ``first_ns``/``last_ns``, ``duration_ns``, TCP flags) and a ``community_id``.

pandas and pyarrow come with the ``notebook`` extra; without them every function here raises
:class:`flowherd.console.extras.MissingExtraError` naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from flowherd.console.extras import require
from flowherd.models.community import flow_community_id
from flowherd.models.report import ConvRow, FlowRow, Row, View
from flowherd.reporter.analysis.stats import StatRow
from flowherd.reporter.output import files
from flowherd.reporter.output.lines import BI_COLUMNS, CID_COLUMN, UNI_COLUMNS
from flowherd.reporter.output.stats import COLUMNS as STAT_COLUMNS
from flowherd.reporter.table.packed import Pair

#: rows per Arrow record batch: what :func:`flow_reader` holds at a time
BATCH_ROWS = 32768
#: the flow hash of every row (seed 0), as ``reporter top``/``flows`` print it
COMMUNITY = files.Extra(files.Column(CID_COLUMN, "str", True), flow_community_id)
_EXPORT_TO_CSV_BI = {
    "packets_a_to_b": "frames_a_to_b",
    "packets_b_to_a": "frames_b_to_a",
    "packets": "frames",
}


def pandas() -> Any:
    """The pandas module, or :class:`MissingExtraError` naming the ``notebook`` extra."""
    require("pandas", "notebook", "flowherd's DataFrames")
    import pandas as pd

    return pd


def pyarrow() -> Any:
    """The pyarrow module, or :class:`MissingExtraError` naming the ``notebook`` extra."""
    require("pyarrow", "notebook", "flowherd's Arrow streams")
    import pyarrow as pa

    return pa


def _times(ns: Sequence[int]) -> Any:
    pd = pandas()
    return pd.to_datetime(pd.array(list(ns), dtype="int64"), unit="ns", utc=True)


def rows_frame(rows: Sequence[Row], view: View) -> Any:
    """Flow rows (``top``) as a DataFrame with the CSV columns of ``view``."""
    pd = pandas()
    uni = [r for r in rows if isinstance(r, FlowRow)]
    bi = [r for r in rows if isinstance(r, ConvRow)]
    cols: dict[str, Any]
    if view == "uni":
        cols = {
            "src": pd.array([r.src for r in uni], dtype="str"),
            "dst": pd.array([r.dst for r in uni], dtype="str"),
            "proto": pd.array([r.proto for r in uni], dtype="uint8"),
            "sport": pd.array([r.sport for r in uni], dtype="uint16"),
            "dport": pd.array([r.dport for r in uni], dtype="uint16"),
            "packets": pd.array([r.packets for r in uni], dtype="int64"),
            "bytes": pd.array([r.bytes for r in uni], dtype="int64"),
        }
        src: Sequence[FlowRow | ConvRow] = uni
    else:
        cols = {
            "proto": pd.array([r.proto for r in bi], dtype="uint8"),
            "a_addr": pd.array([r.a_addr for r in bi], dtype="str"),
            "a_port": pd.array([r.a_port for r in bi], dtype="uint16"),
            "b_addr": pd.array([r.b_addr for r in bi], dtype="str"),
            "b_port": pd.array([r.b_port for r in bi], dtype="uint16"),
            "frames_a_to_b": pd.array([r.packets_a_to_b for r in bi], dtype="int64"),
            "bytes_a_to_b": pd.array([r.bytes_a_to_b for r in bi], dtype="int64"),
            "frames_b_to_a": pd.array([r.packets_b_to_a for r in bi], dtype="int64"),
            "bytes_b_to_a": pd.array([r.bytes_b_to_a for r in bi], dtype="int64"),
            "frames": pd.array([r.packets for r in bi], dtype="int64"),
            "bytes": pd.array([r.bytes for r in bi], dtype="int64"),
        }
        src = bi
    cols["first_ts"] = _times([r.first_ns for r in src])
    cols["last_ts"] = _times([r.last_ns for r in src])
    cols[CID_COLUMN] = pd.array([r.community_id for r in src], dtype="str")
    frame = pd.DataFrame(cols)
    assert list(frame.columns) == [*(UNI_COLUMNS if view == "uni" else BI_COLUMNS), CID_COLUMN]
    return frame


def stats_frame(rows: Iterable[StatRow]) -> Any:
    """Statistics by key as a DataFrame with ``reporter stats``' CSV columns."""
    pd = pandas()
    rs = list(rows)
    frame = pd.DataFrame(
        {
            "key": pd.array([r.key for r in rs], dtype="str"),
            "packets": pd.array([r.packets for r in rs], dtype="int64"),
            "bytes": pd.array([r.bytes for r in rs], dtype="int64"),
            "flows": pd.array([r.flows for r in rs], dtype="int64"),
            "packets_pct": pd.array([r.packets_pct for r in rs], dtype="float64"),
            "bytes_pct": pd.array([r.bytes_pct for r in rs], dtype="float64"),
            "flows_pct": pd.array([r.flows_pct for r in rs], dtype="float64"),
            "pps": pd.array([r.pps for r in rs], dtype="float64"),
            "bps": pd.array([r.bps for r in rs], dtype="float64"),
            "first_ts": _times([r.first_ns for r in rs]),
            "last_ts": _times([r.last_ns for r in rs]),
        }
    )
    assert tuple(frame.columns) == STAT_COLUMNS
    return frame


def flow_schema(view: View) -> Any:
    """The Arrow schema of :func:`flow_reader`: the export schema of ``view`` and
    ``community_id``."""
    pyarrow()
    return files.arrow_schema((files.UNI if view == "uni" else files.BI).with_extras([COMMUNITY]))


def _batches(rows: Iterator[tuple[Any, ...]], schema: Any, size: int) -> Iterator[Any]:
    pa = pyarrow()
    while chunk := list(islice(rows, size)):
        cols = zip(*chunk, strict=True)
        arrays = [pa.array(c, type=f.type) for c, f in zip(cols, schema, strict=True)]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def flow_reader(pairs: Iterable[Pair], view: View, size: int = BATCH_ROWS) -> Any:
    """A ``pyarrow.RecordBatchReader`` of every flow of ``pairs`` (stored records, streamed):
    batches of ``size`` rows built as they are read, so memory holds one batch."""
    pa = pyarrow()
    schema = flow_schema(view)
    rows = files.records(pairs, view, extras=[COMMUNITY])
    return pa.RecordBatchReader.from_batches(schema, _batches(rows, schema, size))


def flows_frame(reader: Any, view: View) -> Any:
    """The flows of a :func:`flow_reader` as a DataFrame with the CSV columns of ``view``."""
    table = reader.read_all()
    keep = [*(UNI_COLUMNS if view == "uni" else BI_COLUMNS), CID_COLUMN]
    names = {"first": "first_ts", "last": "last_ts"}
    if view == "bi":
        names.update(_EXPORT_TO_CSV_BI)
    table = table.rename_columns([names.get(n, n) for n in table.column_names]).select(keep)
    frame = table.to_pandas()
    for col in ("src", "dst", "a_addr", "b_addr", CID_COLUMN):
        if col in frame:
            frame[col] = frame[col].astype("str")
    return frame
