"""pcapng files: sections, interfaces and packet blocks.

Read: Section Header Blocks (either byte order; several sections per file, interface ids restart
in each), Interface Description Blocks (linktype, snaplen, ``if_tsresol``, ``if_tsoffset``),
Enhanced Packet Blocks, Simple Packet Blocks and the obsolete Packet Blocks. Every other block
type is skipped, as the format requires. Each record carries the linktype of its own interface.

Timestamps are exact integer nanoseconds: ``units * 10**9 // units_per_second + tsoffset * 10**9``
(rounded down when the resolution is finer than a nanosecond or a power of two; ``if_tsoffset``
is a signed 64-bit number of seconds, so it may move timestamps back). A Simple Packet Block has
no timestamp (tshark shows none); its record gets ``ts_ns == 0``. Its captured length is the
smallest of its wire length, the snaplen of interface 0 and what the block holds.

Limits: a timestamp outside ``0 <= ts_ns < 10**19 - 1`` (before 1970, say by a negative
``if_tsoffset``, or after about 2286; :data:`flowherd.models.batch.TS_LIMIT`, what the flow store
can hold) is refused, not clamped or wrapped: the records are not what the file says, so the reader
raises a one-line :class:`~flowherd.models.errors.CaptureError` naming the file, the record number
and the timestamp. A packet may hold at most :data:`~flowherd.producer.readers.pcap.MAX_RECORD`
(262144) captured bytes and its block :data:`MAX_PACKET_BLOCK` bytes; any other block
:data:`MAX_BLOCK` (16 MiB, libpcap's bounds). The buffer grows only by what was actually read,
:data:`~flowherd.producer.readers.pcap.CHUNK` at a time, so a block length that claims more than the
file holds costs no memory.
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from flowherd.models.batch import TS_LIMIT, Columns, RawRecord
from flowherd.models.errors import CaptureError
from flowherd.producer.readers.pcap import MAX_RECORD, Read, new_record, records_of, refill

MAGIC = b"\x0a\x0d\x0d\x0a"
#: Largest packet block: an EPB holding MAX_RECORD bytes and 128 KiB of options (libpcap's
#: MAX_BLOCKSIZE_FOR_SNAPLEN).
MAX_PACKET_BLOCK = 32 + MAX_RECORD + 131072
#: Largest block of any other type (libpcap's INITIAL_MAX_BLOCKSIZE).
MAX_BLOCK = 16 * 1024 * 1024
_SHB = 0x0A0D0D0A
_IDB, _PB, _SPB, _EPB = 1, 2, 3, 6
_PACKETS = (_EPB, _PB, _SPB)
_BYTE_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
_MIN_LEN = {_SHB: 28, _IDB: 20, _PB: 32, _SPB: 16, _EPB: 32}
_NAMES = {
    _SHB: "section header",
    _IDB: "interface description",
    _PB: "packet",
    _SPB: "simple packet",
    _EPB: "enhanced packet",
}
_G = 1_000_000_000


class _Iface(NamedTuple):
    linktype: int
    snaplen: int
    mul: int  # ts_ns = units * mul // div + off_ns
    div: int
    off_ns: int


class _Order(NamedTuple):
    """The struct parsers of one byte order."""

    head: struct.Struct  # block type, block length
    epb: struct.Struct  # interface, ts high, ts low, captured length, wire length
    pb: struct.Struct  # interface (u16), drops (u16), ts high, ts low, captured, wire
    idb: struct.Struct  # linktype, reserved, snaplen
    opt: struct.Struct  # option code, option length (also: SHB major, minor version)
    u32: struct.Struct
    s64: struct.Struct


_ORDERS = {
    e: _Order(*(struct.Struct(e + f) for f in ("II", "IIIII", "HHIIII", "HHI", "HH", "I", "q")))
    for e in "<>"
}


def byte_order(head: bytes) -> str | None:
    """``"<"`` or ``">"`` from the byte-order magic of the SHB at the start of ``head``, or None."""
    return _BYTE_ORDER.get(head[8:12])


def _resolution(tsresol: int) -> tuple[int, int]:
    """(mul, div) that turn timestamp units into nanoseconds for an ``if_tsresol`` byte."""
    if tsresol & 0x80:
        return _G, 1 << (tsresol & 0x7F)
    if tsresol <= 9:
        return 10 ** (9 - tsresol), 1
    return 1, 10 ** (tsresol - 9)


def _interface(at: _Where, order: _Order, buf: bytes, pos: int) -> _Iface:
    """Parse the whole IDB at ``buf[pos:]``; a malformed option is a CaptureError."""
    blen = order.u32.unpack_from(buf, pos + 4)[0]
    linktype, _, snaplen = order.idb.unpack_from(buf, pos + 8)
    tsresol = 6
    offset = 0
    o, end = pos + 16, pos + blen - 4
    while o + 4 <= end:
        code, olen = order.opt.unpack_from(buf, o)
        if code == 0:
            break
        if o + 4 + olen > end:
            raise at.corrupt(f"has an option (code {code}) that runs past the end of the block")
        if code == 9 and olen >= 1:
            tsresol = buf[o + 4]
        elif code == 14 and olen == 8:
            offset = order.s64.unpack_from(buf, o + 4)[0]  # signed: "q"
        o += 4 + ((olen + 3) & ~3)
    mul, div = _resolution(tsresol)
    return _Iface(linktype, snaplen, mul, div, offset * _G)


def pcapng_records(path: str, read: Read, buf: bytes) -> Generator[RawRecord, None, int]:
    """:func:`pcapng_blocks`, one record at a time: the same records and errors."""
    return records_of(pcapng_blocks(path, read, buf))


def pcapng_blocks(path: str, read: Read, buf: bytes) -> Generator[Columns, None, int]:
    """Yield the packet records of a pcapng stream whose first bytes are ``buf`` as blocks of
    columns, in order; an error (see :func:`_read`) is raised after the records before it.
    Runs of well-formed Enhanced Packet Blocks are read with array operations; the other
    packet blocks join the next block of columns."""
    pending: list[RawRecord] = []
    items = _read(path, read, buf)
    while True:
        try:
            item = next(items)
        except StopIteration as stop:
            total = int(stop.value)
            break
        except CaptureError:
            if pending:
                yield Columns.from_records(pending)
            raise
        if isinstance(item, Columns):
            if pending:
                yield Columns.from_records(pending)
                pending = []
            yield item
        else:
            pending.append(item)
    if pending:
        yield Columns.from_records(pending)
    return total


def _read(path: str, read: Read, buf: bytes) -> Generator[RawRecord | Columns, None, int]:
    """Yield the packet records of a pcapng stream whose first bytes are ``buf``: runs of
    well-formed Enhanced Packet Blocks as :class:`Columns` (see :func:`_epbs`), every other
    packet as a record.

    ``buf`` starts at stream offset 0 with a Section Header Block whose byte-order magic the
    caller has checked (:func:`byte_order`); the rest comes from ``read``. Memory stays at about
    :data:`~flowherd.producer.readers.pcap.CHUNK` plus the largest block. Returns the number of
    records yielded.

    Raises :class:`CaptureError` for a block length that is not a multiple of 4, is below 12 or
    the block type's minimum, exceeds :data:`MAX_PACKET_BLOCK` (packet blocks) or
    :data:`MAX_BLOCK` (others) or disagrees with the block's trailing copy; for a bad byte-order
    magic, an unsupported major version, a malformed option, a packet that overruns its block or
    holds more than :data:`~flowherd.producer.readers.pcap.MAX_RECORD` bytes, a packet block naming
    an interface its section does not define, and a timestamp out of range (see the module
    docstring). An error about a packet block names its record number (1-based, in the file). Raises
    :class:`TruncatedCaptureError` after the last complete record when the stream ends inside a
    block.
    """
    new = new_record
    rec_type = RawRecord
    order = _ORDERS[byte_order(buf) or "<"]
    ifaces: list[_Iface] = []
    base = pos = count = 0
    while True:
        n = len(buf)
        # Hot loop: Enhanced Packet Blocks wholly inside the buffer, found by their lengths
        # alone; their fields are then read and checked as arrays, up to the first block that
        # needs the general path below (as does any other block and the end of the buffer).
        head, u32 = order.head.unpack_from, order.u32.unpack_from
        starts: list[int] = []
        add = starts.append
        while pos + 12 <= n:
            btype, blen = head(buf, pos)
            end = pos + blen
            if (
                btype != _EPB
                or end > n
                or blen < 32
                or blen & 3
                or blen > MAX_PACKET_BLOCK
                or u32(buf, end - 4)[0] != blen
            ):
                break
            add(pos)
            pos = end
        if starts:
            cols = _epbs(buf, starts, pos, order is _ORDERS[">"], ifaces)
            if len(cols):
                yield cols
                count += len(cols)
            if len(cols) < len(starts):
                pos = starts[len(cols)]  # the general path reads it (or says what is wrong)
        if n - pos >= 12:
            btype, blen = order.head.unpack_from(buf, pos)
            if btype == _SHB:
                order = _section_order(path, buf, pos, base)
                blen = order.u32.unpack_from(buf, pos + 4)[0]
            at = _Where(path, btype, base + pos, count + 1)
            if blen % 4 or blen < _MIN_LEN.get(btype, 12):
                raise at.corrupt(f"has an impossible length {blen}")
            limit = MAX_PACKET_BLOCK if btype in _PACKETS else MAX_BLOCK
            if blen > limit:
                raise at.corrupt(
                    f"has an impossible length {blen} (more than the limit of {limit})"
                )
            end = pos + blen
            if end <= n:
                if order.u32.unpack_from(buf, end - 4)[0] != blen:
                    raise at.corrupt(
                        f"has a trailing length that differs from its leading length {blen}"
                    )
                if btype in (_EPB, _PB):
                    if btype == _EPB:
                        iid, hi, lo, cap, wire = order.epb.unpack_from(buf, pos + 8)
                    else:
                        iid, _, hi, lo, cap, wire = order.pb.unpack_from(buf, pos + 8)
                    if cap > blen - 32 or cap > MAX_RECORD or iid >= len(ifaces):
                        raise at.bad_packet(cap, blen - 32, iid, len(ifaces))
                    lt, _, mul, div, off = ifaces[iid]
                    ts = ((hi << 32) | lo) * mul // div + off
                    if not 0 <= ts < TS_LIMIT:
                        raise at.bad_time(ts)
                    yield new(rec_type, (ts, wire, lt, buf[pos + 28 : pos + 28 + cap]))
                    count += 1
                elif btype == _SPB:
                    if not ifaces:
                        raise at.corrupt("comes before any interface")
                    wire = order.u32.unpack_from(buf, pos + 8)[0]
                    lt, snaplen = ifaces[0][:2]
                    cap = min(wire, blen - 16, snaplen or wire)
                    if cap > MAX_RECORD:
                        raise at.bad_packet(cap, blen - 16, 0, len(ifaces))
                    yield new(rec_type, (0, wire, lt, buf[pos + 12 : pos + 12 + cap]))
                    count += 1
                elif btype == _IDB:
                    ifaces.append(_interface(at, order, buf, pos))
                elif btype == _SHB:
                    major = order.opt.unpack_from(buf, pos + 12)[0]
                    if major != 1:
                        raise at.corrupt(
                            f"has version {major}.x; only pcapng version 1 is supported"
                        )
                    ifaces = []
                pos = end
                continue
        refilled = refill(read, buf, pos, base, path, count)
        if refilled is None:
            return count
        buf, base = refilled
        pos = 0


def _section_order(path: str, buf: bytes, pos: int, base: int) -> _Order:
    """The byte order of the SHB at ``buf[pos:]`` (12 bytes of it are in ``buf``)."""
    endian = byte_order(buf[pos : pos + 12])
    if endian is None:
        magic = buf[pos + 8 : pos + 12].hex(" ")
        raise _Where(path, _SHB, base + pos, 0).corrupt(f"has a bad byte-order magic {magic}")
    return _ORDERS[endian]


class _Where(NamedTuple):
    """A block of a file, to name it in an error: a packet block also by its record number."""

    path: str
    btype: int
    offset: int
    record: int  # the record a packet block would be (1-based)

    def __str__(self) -> str:
        name = _NAMES.get(self.btype, f"type {self.btype:#x}")
        block = f"{name} block at byte offset {self.offset}"
        return f"record {self.record} ({block})" if self.btype in _PACKETS else block

    def corrupt(self, problem: str) -> CaptureError:
        return CaptureError(self.path, f"{self} {problem}: file is corrupt")

    def bad_packet(self, cap: int, room: int, iid: int, defined: int) -> CaptureError:
        if cap > room:
            return self.corrupt(f"claims {cap} captured bytes in {room}")
        if cap > MAX_RECORD:
            return self.corrupt(
                f"claims {cap} captured bytes (more than the limit of {MAX_RECORD})"
            )
        return CaptureError(
            self.path,
            f"{self} refers to interface {iid}, but its section defines only {defined} "
            "interface(s)",
        )

    def bad_time(self, ts: int) -> CaptureError:
        if ts < 0:
            why = "before 1970-01-01 (a negative if_tsoffset?)"
        else:
            why = "which is 10**19 - 1 ns or later (after the year 2286)"
        return CaptureError(
            self.path, f"{self} has timestamp {ts} ns, {why}: flowherd cannot store it"
        )


#: The array path's bounds for exact int64 arithmetic (the general path takes the others): the
#: whole units times the multiplier, and the multiplier times the divisor, at most ``_SAFE``
#: (timestamps to the year 2116, binary resolutions to 2**-32 s); offsets within ``_SAFE_OFFSET``
#: (about 73 years) either way.
_SAFE = 1 << 62
_SAFE_OFFSET = 1 << 61
I64 = npt.NDArray[np.int64]


def _epbs(buf: bytes, starts: list[int], end: int, big: bool, ifaces: list[_Iface]) -> Columns:
    """The Enhanced Packet Blocks at ``starts`` (well formed as blocks, the last ending at
    ``end``) as columns, up to (not including) the first one the array checks leave to the
    general path: a packet that overruns its block or the record limit, an undefined
    interface, a timestamp before 1970 or beyond exact int64 arithmetic (see :data:`_SAFE`)."""
    first = starts[0]
    words = np.ndarray(((end - first) - 3,), np.dtype(">u4" if big else "<u4"), buf, first, (1,))
    at: I64 = np.array(starts, np.int64) - first
    blen, iid = words[at + 4].astype(np.int64), words[at + 8].astype(np.int64)
    units = (words[at + 12].astype(np.uint64) << np.uint64(32)) | words[at + 16]
    cap, wire = words[at + 20].astype(np.int64), words[at + 24]
    # per interface: linktype, mul, div, offset; an interface whose resolution or offset is
    # beyond exact arithmetic gets mul 0, which leaves its packets to the general path
    params = [
        (i.linktype, i.mul, i.div, i.off_ns)
        if i.mul * i.div <= _SAFE and abs(i.off_ns) < _SAFE_OFFSET
        else (i.linktype, 0, 1, 0)
        for i in ifaces
    ]
    lt, mul, div, off = (np.array(c, np.int64) for c in zip(*params, (0, 0, 1, 0), strict=True))
    ix = np.where(iid < len(ifaces), iid, len(ifaces))  # the last row: no such interface
    m, d = mul[ix].astype(np.uint64), div[ix].astype(np.uint64)
    ok = (cap <= blen - 32) & (cap <= MAX_RECORD) & (m > 0)
    # units x mul // div as q x mul + r x mul // div (units = q x div + r): each part exact
    q, r = units // d, units % d
    ok &= q < np.uint64(_SAFE) // np.maximum(m, np.uint64(1))
    q, r = np.where(ok, q, np.uint64(0)), np.where(ok, r, np.uint64(0))
    ts = (q * m).astype(np.int64) + ((r * m) // d).astype(np.int64) + off[ix]
    ok &= ts >= 0
    good = len(starts) if ok.all() else int(np.argmin(ok))
    if good < len(starts):
        end = first + (int(at[good - 1] + blen[good - 1]) if good else 0)
        at, cap, wire, ts, ix = at[:good], cap[:good], wire[:good], ts[:good], ix[:good]
    # the frames' bytes: +1 where each starts, -1 where it ends; keep where the sum is 1
    span = end - first
    mark = np.zeros(span + 1, np.int8)
    mark[at + 28] = 1
    mark[at + 28 + cap] -= 1
    keep = np.cumsum(mark[:-1], dtype=np.int8).astype(np.bool_)
    return Columns(
        ts.astype(np.uint64),
        wire.astype(np.uint32),
        lt[ix].astype(np.uint16),
        cap.astype(np.uint32),
        np.frombuffer(buf, np.uint8, span, first)[keep].tobytes(),
    )
