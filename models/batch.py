"""The batch: raw capture records packed into one compact, versioned binary payload.

Layout (little endian)::

    header  magic b"FHB1" | u16 schema | u16 flags | u32 count | u32 body_len
    body    count x ( u64 ts_ns | u32 wire_len | u16 linktype | u32 cap_len | cap_len bytes )

``flags`` bit 0 means the body is zlib-compressed (``body_len`` is then the compressed length).
The producer builds payloads with :class:`BatchBuilder`; workers read them with
:func:`decode_batch`, which raises :class:`~models.errors.BatchError` for anything that is not a
well-formed payload of a schema version this code understands. Nothing here is pickled.

Every ``ts_ns`` satisfies ``0 <= ts_ns < TS_LIMIT`` (:data:`TS_LIMIT`: the flow store writes
timestamps as 19-digit decimal strings and uses ``10**19 - 1`` as its "no packet yet" sentinel).
The capture readers refuse records outside that range with a
:class:`~models.errors.CaptureError`; :class:`BatchBuilder` and :func:`decode_batch` refuse them
too, with a :class:`~models.errors.BatchError`, so none can reach the store.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

from models.errors import BatchError
from models.flows import NO_FIRST

MAGIC = b"FHB1"
SCHEMA_VERSION = 1
FLAG_ZLIB = 1
_HEADER = struct.Struct("<4sHHII")
_RECORD = struct.Struct("<QIHI")
HEADER_SIZE = _HEADER.size
RECORD_OVERHEAD = _RECORD.size
#: Hard cap on a decoded body: a worker refuses larger payloads before touching them.
MAX_BODY_BYTES = 256 * 1024 * 1024
#: Timestamps are below this many nanoseconds (about the year 2286); see the module docstring.
TS_LIMIT = NO_FIRST


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


class BatchBuilder:
    """Accumulates records into one payload; cheap to append, one ``bytes`` at the end."""

    __slots__ = ("_buf", "count", "first_ts", "last_ts", "wire_bytes")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.count = 0
        self.wire_bytes = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def add(self, rec: RawRecord) -> None:
        """Append ``rec``; a timestamp outside ``0 <= ts_ns < TS_LIMIT`` is a BatchError."""
        ts = rec.ts_ns
        if not 0 <= ts < TS_LIMIT:
            raise BatchError(f"record timestamp {ts} ns is outside 0 <= ts_ns < {TS_LIMIT}")
        self._buf += _RECORD.pack(ts, rec.wire_len, rec.linktype, len(rec.data))
        self._buf += rec.data
        self.count += 1
        self.wire_bytes += rec.wire_len
        if self.first_ts is None or ts < self.first_ts:
            self.first_ts = ts
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts

    @property
    def size(self) -> int:
        """Bytes the uncompressed body holds so far."""
        return len(self._buf)

    def payload(self, compress: bool = False) -> bytes:
        body = bytes(self._buf)
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
    """Validate ``payload`` and return its records.

    The header and every record length are checked before a record is yielded; any
    inconsistency raises :class:`BatchError` (the payload is refused as a whole, since it did not
    come from a flowherd producer of a known version).
    """
    if len(payload) < HEADER_SIZE:
        raise BatchError(f"batch payload too short ({len(payload)} bytes)")
    magic, schema, flags, count, body_len = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise BatchError(f"not a flowherd batch (magic {magic!r})")
    if schema != SCHEMA_VERSION:
        raise BatchError(
            f"batch schema version {schema} is not supported (expected {SCHEMA_VERSION})"
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
    return _records(bytes(body), count)


def _records(body: bytes, count: int) -> list[RawRecord]:
    # The whole body is validated before anything is returned: a payload is accepted or refused
    # whole. One pass, records built as plain tuples (about 0.7 us each).
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
