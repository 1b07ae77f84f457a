"""Every flow of a table largest first, in bounded memory (an external merge sort).

The order is :func:`flowherd.reporter.table.order.sort_key` by bytes: bytes descending, then packets
descending, then the key's text as the oracle compares it; the oracle's ``.uni.csv`` and
``.bi.csv`` files are in this order. Two rows tie only when they have the same key text (the
two directions of a conversation whose endpoints are equal); those two are ordered by their
line text here, and by input order in :func:`flowherd.reporter.table.order.top`.

Memory: at most ``run_rows`` rows are held at once. Larger tables are cut into sorted runs of
``run_rows`` rows, written to a temporary directory (about the output's size on disk, removed
afterwards) and merged. Lines are those of :mod:`flowherd.reporter.output.lines`, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import TextIO

from flowherd.models.report import View
from flowherd.reporter.output.lines import CHUNK, Format, chunks, json_lines, write_lines
from flowherd.reporter.table.extsort import external_sort
from flowherd.reporter.table.packed import AddrText, Pair

#: Rows sorted in memory before a run is spilled to disk.
RUN_ROWS = 100_000
_BIG = 10**20 - 1  # 20-digit complements sort descending counts ascending as text
# sort keys: bytes and packets complemented, then the key text as rank.key_text writes it
_UNI_KEY = b"%020d%020d('%s', '%s', %s, %s, %s)\0"
_BI_KEY = b"%020d%020d[%s, '%s', %s, '%s', %s]\0"


def _csv_records(pairs: Iterable[Pair], view: View, seed: int | None) -> Iterator[bytes]:
    """:func:`_records` of CSV lines: the key's fields, packets and bytes are in the line."""
    key, cut, pk, by = (_UNI_KEY, 7, 5, 6) if view == "uni" else (_BI_KEY, 11, 9, 10)
    for lines in chunks(pairs, view, "csv", seed):
        for line in lines:
            f = line.split(b",", cut)
            yield key % (_BIG - int(f[by]), _BIG - int(f[pk]), *f[:5]) + line


def _records(
    pairs: Iterable[Pair], view: View, fmt: Format, seed: int | None = None
) -> Iterator[bytes]:
    """``<sort key>\\0<line>\\n`` per row; plain byte order of records is the ranking."""
    if fmt == "csv":
        yield from _csv_records(pairs, view, seed)
        return
    addr = AddrText()
    if view == "uni":
        for (s, d, p, sp, dp, pk, by, *_), line in json_lines(pairs, addr, view, seed or 0):
            yield b"%020d%020d('%s', '%s', %d, %d, %d)\0%s\n" % (
                _BIG - int(by), _BIG - int(pk), s, d, p, sp, dp, line)  # fmt: skip
    else:
        rows = json_lines(pairs, addr, view, seed or 0)
        for (p, a, ap, b, bp, pab, bab, pba, bba, *_), line in rows:
            pk, by = pab + pba, bab + bba
            yield b"%020d%020d[%d, '%s', %d, '%s', %d]\0%s\n" % (
                _BIG - int(by), _BIG - int(pk), p, a, ap, b, bp, line)  # fmt: skip


def _lines(records: Iterable[bytes], csv: bool) -> Iterator[list[bytes]]:
    out: list[bytes] = []
    for r in records:
        line = r[r.index(b"\0") + 1 :]
        out.append(line if csv else line[:-1])
        if len(out) >= CHUNK:
            yield out
            out = []
    yield out


def ranked_chunks(
    pairs: Iterable[Pair],
    view: View,
    fmt: Format,
    run_rows: int = RUN_ROWS,
    tmpdir: str | None = None,
    community_seed: int | None = None,
) -> Iterator[list[bytes]]:
    """The lines of :func:`flowherd.reporter.output.lines.chunks`, largest row first (see the module
    docstring). Raises :class:`ValueError` for ``run_rows < 1``."""
    csv = fmt == "csv"
    with ExitStack() as stack:
        records = _records(pairs, view, fmt, community_seed)
        yield from _lines(external_sort(records, stack, run_rows, tmpdir), csv)


def write_rows_ranked(
    pairs: Iterable[Pair],
    out: TextIO,
    view: View = "uni",
    fmt: Format = "csv",
    run_rows: int = RUN_ROWS,
    tmpdir: str | None = None,
    community_seed: int | None = None,
) -> int:
    """Write every row of ``pairs`` to ``out`` largest first, as
    :func:`flowherd.reporter.output.lines.write_rows` writes them in table order; returns the row
    count."""
    parts = ranked_chunks(pairs, view, fmt, run_rows, tmpdir, community_seed)
    return write_lines(parts, out, view, fmt, community_seed is not None)
