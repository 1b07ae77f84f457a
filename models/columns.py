"""Captured frames as columns: one array per header field and every frame's bytes back to back.

:class:`Columns` is how records travel in bulk: a capture reader hands the producer a block of a
classic pcap file as columns read with array operations, the producer cuts them into batches, a
batch payload stores them as they are (:mod:`flowherd.models.batch`), and the fast engine reads the
frames' headers from the same arrays. :class:`RawRecord` is the one-frame view of the same data
(:meth:`Columns.records` and :meth:`Columns.from_records` convert).

Every column has one entry per frame: ``ts`` (u64 nanoseconds since the Unix epoch), ``wire``
(u32 length on the wire), ``linktype`` (u16 LINKTYPE_* value), ``cap`` (u32 captured length);
``data`` holds the captured bytes of frame ``i`` at ``starts[i] : starts[i] + cap[i]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
U16 = npt.NDArray[np.uint16]
I64 = npt.NDArray[np.int64]

_TS, _WIRE, _LINKTYPE, _DATA = (itemgetter(i) for i in range(4))


class RawRecord(NamedTuple):
    """One captured frame, exactly as the capture file holds it.

    ``ts_ns`` is the timestamp in integer nanoseconds since the Unix epoch, ``wire_len`` the
    original length on the wire, ``linktype`` the LINKTYPE_* value of the frame's interface and
    ``data`` the captured bytes (possibly shorter than ``wire_len``).
    """

    ts_ns: int
    wire_len: int
    linktype: int
    data: bytes


class Columns:
    """Frames as columns (see the module docstring). The arrays are not copied: slices share
    them, so treat them as read-only."""

    __slots__ = ("_starts", "cap", "data", "linktype", "ts", "wire")

    def __init__(self, ts: U64, wire: U32, linktype: U16, cap: U32, data: bytes) -> None:
        self.ts, self.wire, self.linktype, self.cap, self.data = ts, wire, linktype, cap, data
        self._starts: I64 | None = None

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def starts(self) -> I64:
        """Where each frame's bytes start in :attr:`data`."""
        if self._starts is None:
            starts = np.zeros(len(self.cap), np.int64)
            if len(self.cap) > 1:
                np.cumsum(self.cap[:-1], out=starts[1:])
            self._starts = starts
        return self._starts

    @property
    def wire_bytes(self) -> int:
        return int(self.wire.sum(dtype=np.int64))

    def slice(self, i: int, j: int) -> Columns:
        """Frames ``i`` up to (not including) ``j``."""
        n = len(self)
        i, j = max(0, min(i, n)), max(0, min(j, n))
        if i == 0 and j == n:
            return self
        starts = self.starts
        lo = int(starts[i]) if i < n else len(self.data)
        hi = int(starts[j]) if j < n else len(self.data)
        return Columns(
            self.ts[i:j], self.wire[i:j], self.linktype[i:j], self.cap[i:j], self.data[lo:hi]
        )

    def take(self, idx: I64) -> Columns:
        """The frames ``idx``, in that order."""
        if len(idx) == len(self) and bool(np.all(idx[1:] > idx[:-1])):
            return self
        cap = self.cap[idx].astype(np.int64)
        # every byte's source: its frame's start, plus its place in the frame
        out_starts = np.cumsum(cap) - cap
        src = np.repeat(self.starts[idx] - out_starts, cap) + np.arange(int(cap.sum()))
        data = np.frombuffer(self.data, np.uint8)[src].tobytes()
        return Columns(self.ts[idx], self.wire[idx], self.linktype[idx], self.cap[idx], data)

    def record(self, i: int) -> RawRecord:
        """Frame ``i`` as a record."""
        s = int(self.starts[i])
        data = self.data[s : s + int(self.cap[i])]
        return RawRecord(int(self.ts[i]), int(self.wire[i]), int(self.linktype[i]), data)

    def records(self) -> list[RawRecord]:
        """Every frame as a record, in order."""
        data = self.data
        ends = (self.starts + self.cap).tolist()
        make = tuple.__new__
        return [
            make(RawRecord, (t, w, lt, data[s:e]))
            for t, w, lt, s, e in zip(
                self.ts.tolist(),
                self.wire.tolist(),
                self.linktype.tolist(),
                self.starts.tolist(),
                ends,
                strict=True,
            )
        ]

    @classmethod
    def from_records(cls, records: Sequence[RawRecord]) -> Columns:
        """The columns of ``records`` (each field must fit its column's width)."""
        n = len(records)
        datas = list(map(_DATA, records))
        return cls(
            np.fromiter(map(_TS, records), np.uint64, n),
            np.fromiter(map(_WIRE, records), np.uint32, n),
            np.fromiter(map(_LINKTYPE, records), np.uint16, n),
            np.fromiter(map(len, datas), np.uint32, n),
            b"".join(datas),
        )

    @classmethod
    def concat(cls, parts: Iterable[Columns]) -> Columns:
        """The frames of ``parts``, one after another."""
        parts = list(parts)
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.wire for p in parts]),
            np.concatenate([p.linktype for p in parts]),
            np.concatenate([p.cap for p in parts]),
            b"".join(p.data for p in parts),
        )

    @classmethod
    def empty(cls) -> Columns:
        return cls(
            np.zeros(0, np.uint64),
            np.zeros(0, np.uint32),
            np.zeros(0, np.uint16),
            np.zeros(0, np.uint32),
            b"",
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Columns):
            return NotImplemented
        return (
            self.data == other.data
            and np.array_equal(self.ts, other.ts)
            and np.array_equal(self.wire, other.wire)
            and np.array_equal(self.linktype, other.linktype)
            and np.array_equal(self.cap, other.cap)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Columns({len(self)} frames, {len(self.data)} bytes)"
