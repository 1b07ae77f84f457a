"""An external merge sort of byte records: bounded memory, temporary files for the rest.

At most ``run_rows`` records are held at once. Past that, each full buffer is sorted and
spilled as a run to a temporary directory (removed when ``stack`` closes), and the runs are
merged with the last, in-memory one. Records compare as bytes; ``read`` reads a run's records
back from its file (lines by default: records ending in a newline; fixed-width records pass
their own reader).
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import BinaryIO

Reader = Callable[[BinaryIO], Iterator[bytes]]


def fixed_width(size: int) -> Reader:
    """A reader of ``size``-byte records."""

    def read(fh: BinaryIO) -> Iterator[bytes]:
        while rec := fh.read(size):
            yield rec

    return read


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    return iter(fh)


def external_sort(
    records: Iterable[bytes],
    stack: ExitStack,
    run_rows: int,
    tmpdir: str | None = None,
    read: Reader = _lines,
) -> Iterator[bytes]:
    """``records`` in ascending byte order. The run files stay open (and on disk) until
    ``stack`` closes. Raises :class:`ValueError` for ``run_rows < 1``."""
    if run_rows < 1:
        raise ValueError(f"run_rows must be >= 1, not {run_rows}")
    runs: list[str] = []
    buf: list[bytes] = []
    d = ""
    for rec in records:
        buf.append(rec)
        if len(buf) >= run_rows:
            if not runs:
                d = stack.enter_context(tempfile.TemporaryDirectory(dir=tmpdir))
            buf.sort()
            runs.append(os.path.join(d, f"run{len(runs)}"))
            with open(runs[-1], "wb") as fh:
                fh.writelines(buf)
            buf = []
    buf.sort()
    if not runs:
        return iter(buf)
    # closed by the caller's stack, after the merge is consumed
    files = [stack.enter_context(open(p, "rb", buffering=1 << 16)) for p in runs]  # noqa: SIM115
    return heapq.merge(buf, *(read(f) for f in files))
