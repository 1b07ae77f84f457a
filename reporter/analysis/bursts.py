"""Per-flow peaks over a capture's windows, in bounded memory (an external merge sort).

A capture submitted with ``--window`` keeps one flow table per tumbling window. The burst of
a unidirectional flow is the most bytes it carried in one window; its bytes over the windows
kept are their sum (every window kept: the whole-capture bytes). Joining the windows by flow
would hold every flow; instead each window's records become fixed-width
``key | direction | bytes`` records, sorted in runs of at most ``run_rows`` in memory,
spilled to a temporary directory (about 47 bytes per flow and window, removed afterwards)
and merged: records of one flow then arrive together. Pure apart from the temporary files.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack

from flowherd.reporter.analysis.measures import Item
from flowherd.reporter.table.extsort import external_sort, fixed_width
from flowherd.reporter.table.packed import COUNTS, Pair

RUN_ROWS = 200_000
_KEY = 39  # packed key (at most 38 bytes, zero-padded) and the direction
_BYTES = struct.Struct(">Q")
_REC = _KEY + _BYTES.size


def _records(windows: Iterable[Iterable[Pair]]) -> Iterator[bytes]:
    unpack = COUNTS.unpack_from
    for pairs in windows:
        for k, v in pairs:
            pa, ba, pb, bb = unpack(v)
            key = k.ljust(38, b"\0")
            if pa:
                yield key + b"\0" + _BYTES.pack(int(ba))
            if pb:
                yield key + b"\1" + _BYTES.pack(int(bb))


def burst_items(
    windows: Callable[[], Iterable[Iterable[Pair]]],
    run_rows: int = RUN_ROWS,
    tmpdir: str | None = None,
) -> Iterator[Item]:
    """``(bytes over the windows, peak bytes in one window)`` of every unidirectional flow
    found in the windows ``windows()`` returns (each an iterable of stored pairs), in key
    order. Raises :class:`ValueError` for ``run_rows < 1``."""
    with ExitStack() as stack:
        merged = external_sort(_records(windows()), stack, run_rows, tmpdir, fixed_width(_REC))
        key = b""
        total = peak = 0
        for rec in merged:
            b = _BYTES.unpack_from(rec, _KEY)[0]
            if rec[:_KEY] != key:
                if key:
                    yield total, peak
                key, total, peak = rec[:_KEY], 0, 0
            total += b
            peak = max(peak, b)
        if key:
            yield total, peak
