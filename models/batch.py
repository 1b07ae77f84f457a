"""The batch: raw capture records packed into one compact, versioned binary payload.

Layout (little endian)::

    header   magic b"FHB1" | u16 schema | u16 flags | u32 count | u32 body_len
    body     schema 2 (written):  count x u64 ts_ns | count x u32 wire_len
                                  | count x u16 linktype | count x u32 cap_len
                                  | the frames' captured bytes, back to back
             schema 1 (read):     count x ( u64 ts_ns | u32 wire_len | u16 linktype
                                  | u32 cap_len | cap_len bytes )

Schema 2 stores :class:`~flowherd.models.columns.Columns` as they are, so a batch is packed and read
with a handful of array operations whatever its frame count; both schemas take
:data:`RECORD_OVERHEAD` (18) bytes per frame besides its captured bytes. ``flags`` bit 0 means
the body is zlib-compressed (``body_len`` is then the compressed length).

The producer builds payloads with :class:`BatchBuilder`; workers read them with
:func:`decode_columns` (or :func:`decode_batch`, one record per frame), which raise
:class:`~flowherd.models.errors.BatchError` for anything that is not a well-formed payload of a
schema version this code understands. Nothing here is pickled.

Every ``ts_ns`` satisfies ``0 <= ts_ns < TS_LIMIT`` (:data:`TS_LIMIT`: the flow store writes
timestamps as 19-digit decimal strings and uses ``10**19 - 1`` as its "no packet yet" sentinel).
The capture readers refuse records outside that range with a
:class:`~flowherd.models.errors.CaptureError`; :class:`BatchBuilder` and the decoders refuse them
too, with a :class:`~flowherd.models.errors.BatchError`, so none can reach the store.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import numpy.typing as npt

from flowherd.models.columns import Columns, RawRecord
from flowherd.models.errors import BatchError
from flowherd.models.flows import NO_FIRST

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_BODY_BYTES",
    "RECORD_OVERHEAD",
    "SCHEMA_VERSION",
    "TS_LIMIT",
    "BatchBuilder",
    "Columns",
    "RawRecord",
    "decode_batch",
    "decode_columns",
    "encode_batch",
]

MAGIC = b"FHB1"
#: the schema written; :func:`decode_columns` reads this one and :data:`SCHEMA_V1`
SCHEMA_VERSION = 2
SCHEMA_V1 = 1
FLAG_ZLIB = 1
_HEADER = struct.Struct("<4sHHII")
_RECORD = struct.Struct("<QIHI")  # schema 1's record header
HEADER_SIZE = _HEADER.size
#: bytes per frame besides its captured bytes, in either schema
RECORD_OVERHEAD = _RECORD.size
#: Hard cap on a decoded body: a worker refuses larger payloads before touching them.
MAX_BODY_BYTES = 256 * 1024 * 1024
#: Timestamps are below this many nanoseconds (about the year 2286); see the module docstring.
TS_LIMIT = NO_FIRST
_COLUMNS = (("<u8", 8), ("<u4", 4), ("<u2", 2), ("<u4", 4))  # ts, wire, linktype, cap


class BatchBuilder:
    """Accumulates frames into one payload: one record at a time (:meth:`add`) or a block of
    columns at a time (:meth:`add_columns`); one ``bytes`` at the end."""

    __slots__ = ("_parts", "_records", "count", "size", "ts_min", "wire_bytes")

    def __init__(self) -> None:
        self._parts: list[Columns] = []
        self._records: list[RawRecord] = []  # added one by one, not yet in a block
        self.count = 0
        #: the oldest timestamp added (``TS_LIMIT`` while empty)
        self.ts_min = TS_LIMIT
        #: bytes the uncompressed body holds so far
        self.size = 0
        self.wire_bytes = 0

    def add(self, rec: RawRecord) -> None:
        """Append ``rec``; a timestamp outside ``0 <= ts_ns < TS_LIMIT`` is a BatchError."""
        ts, wire, linktype, data = rec
        if not 0 <= ts < TS_LIMIT:
            raise BatchError(f"record timestamp {ts} ns is outside 0 <= ts_ns < {TS_LIMIT}")
        if not 0 <= wire <= 0xFFFFFFFF or not 0 <= linktype <= 0xFFFF:
            raise BatchError(f"record wire length {wire} or linktype {linktype} out of range")
        self._records.append(rec)
        if ts < self.ts_min:
            self.ts_min = ts
        self.count += 1
        self.size += RECORD_OVERHEAD + len(data)
        self.wire_bytes += wire

    def add_columns(self, cols: Columns) -> None:
        """Append every frame of ``cols``; a timestamp beyond the range is a BatchError."""
        if not len(cols):
            return
        if int(cols.ts.max()) >= TS_LIMIT:
            raise BatchError(
                f"record timestamp {int(cols.ts.max())} ns is outside 0 <= ts_ns < {TS_LIMIT}"
            )
        self._pending()
        self._parts.append(cols)
        self.ts_min = min(self.ts_min, int(cols.ts.min()))
        self.count += len(cols)
        self.size += RECORD_OVERHEAD * len(cols) + len(cols.data)
        self.wire_bytes += cols.wire_bytes

    def _pending(self) -> None:
        """Move the records added one by one into a block of columns."""
        if self._records:
            self._parts.append(Columns.from_records(self._records))
            self._records = []

    def columns(self) -> Columns:
        """The frames added so far."""
        self._pending()
        cols = Columns.concat(self._parts)
        self._parts = [cols]
        return cols

    def payload(self, compress: bool = False) -> bytes:
        cols = self.columns()
        arrays: list[npt.NDArray[np.unsignedinteger]] = [
            cols.ts,
            cols.wire,
            cols.linktype,
            cols.cap,
        ]
        parts = [
            a.astype(d, copy=False).tobytes() for a, (d, _) in zip(arrays, _COLUMNS, strict=True)
        ]
        body = b"".join([*parts, cols.data])
        flags = 0
        if compress:
            body = zlib.compress(body, 1)
            flags |= FLAG_ZLIB
        return _HEADER.pack(MAGIC, SCHEMA_VERSION, flags, self.count, len(body)) + body


def encode_batch(records: list[RawRecord], compress: bool = False) -> bytes:
    """Pack ``records`` into one payload (see the module docstring for the layout)."""
    b = BatchBuilder()
    for r in records:
        b.add(r)
    return b.payload(compress)


def decode_batch(payload: bytes, max_body: int = MAX_BODY_BYTES) -> list[RawRecord]:
    """Validate ``payload`` and return its records (see :func:`decode_columns`)."""
    return decode_columns(payload, max_body).records()


def decode_columns(payload: bytes, max_body: int = MAX_BODY_BYTES) -> Columns:
    """Validate ``payload`` and return its frames as columns.

    The header and every length are checked before anything is returned; any inconsistency
    raises :class:`BatchError` (the payload is refused as a whole, since it did not come from a
    flowherd producer of a known version).
    """
    if len(payload) < HEADER_SIZE:
        raise BatchError(f"batch payload too short ({len(payload)} bytes)")
    magic, schema, flags, count, body_len = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise BatchError(f"not a flowherd batch (magic {magic!r})")
    if schema not in (SCHEMA_VERSION, SCHEMA_V1):
        raise BatchError(
            f"batch schema version {schema} is not supported (expected {SCHEMA_V1} or "
            f"{SCHEMA_VERSION}): upgrade this worker"
        )
    if flags & ~FLAG_ZLIB:
        raise BatchError(f"unknown batch flags {flags:#x}")
    if body_len != len(payload) - HEADER_SIZE:
        raise BatchError(f"batch body length {body_len} does not match payload size {len(payload)}")
    body: bytes | memoryview = memoryview(payload)[HEADER_SIZE:]
    if flags & FLAG_ZLIB:
        d = zlib.decompressobj()
        try:
            body = d.decompress(body, max_body)
        except zlib.error as exc:
            raise BatchError(f"batch body is not valid zlib data: {exc}") from None
        if d.unconsumed_tail or not d.eof:
            raise BatchError(f"batch body exceeds {max_body} bytes or is incomplete")
    elif len(body) > max_body:
        raise BatchError(f"batch body of {len(body)} bytes exceeds {max_body}")
    if schema == SCHEMA_V1:
        return Columns.from_records(_records(bytes(body), count))
    return _columns(bytes(body), count)


def _columns(body: bytes, count: int) -> Columns:
    """Schema 2's body: the four columns, then the frames' bytes."""
    if len(body) < RECORD_OVERHEAD * count:
        raise BatchError("batch body ends inside its columns")
    arrays = []
    pos = 0
    for dtype, width in _COLUMNS:
        arrays.append(np.frombuffer(body, dtype, count, pos).astype(dtype[1:]))
        pos += width * count
    ts, wire, linktype, cap = arrays
    if count and int(ts.max()) >= TS_LIMIT:
        bad = int(ts[np.argmax(ts >= TS_LIMIT)])
        raise BatchError(f"batch record timestamp {bad} ns is beyond the store's range")
    held = len(body) - pos
    need = int(cap.sum(dtype=np.int64))
    if need > held:
        raise BatchError("batch body ends inside a record")
    if need < held:
        raise BatchError(f"batch body has {held - need} trailing bytes after {count} records")
    return Columns(ts, wire, linktype, cap, body[pos:])


def _records(body: bytes, count: int) -> list[RawRecord]:
    # Schema 1: the whole body is validated before anything is returned: a payload is accepted
    # or refused whole. One pass, records built as plain tuples (about 0.7 us each).
    out: list[RawRecord] = []
    add = out.append
    pos = 0
    end = len(body)
    unpack = _RECORD.unpack_from
    make = tuple.__new__
    for _ in range(count):
        if pos + RECORD_OVERHEAD > end:
            raise BatchError("batch body ends inside a record header")
        ts, wire, lt, cap = unpack(body, pos)
        if ts >= TS_LIMIT:
            raise BatchError(f"batch record timestamp {ts} ns is beyond the store's range")
        start = pos + RECORD_OVERHEAD
        pos = start + cap
        if pos > end:
            raise BatchError("batch body ends inside a record")
        add(make(RawRecord, (ts, wire, lt, body[start:pos])))
    if pos != end:
        raise BatchError(f"batch body has {end - pos} trailing bytes after {count} records")
    return out
