"""Classic libpcap files: the 24-byte global header and the stream of 16-byte-headed records.

Both timestamp resolutions (magic ``a1b2c3d4``: microseconds, ``a1b23c4d``: nanoseconds) are read in
either byte order. Timestamps become exact integer nanoseconds; a fraction field that is out of
range (>= 1e6 or >= 1e9) is kept as it is, as libpcap does. Unsigned 32-bit seconds and fraction
keep every timestamp within ``0 <= ts_ns < 4.3e18``, inside the batch range
(:data:`flowherd.models.batch.TS_LIMIT`), so no classic pcap record is refused for its time.

No record may hold more than :data:`MAX_RECORD` (262144) captured bytes, whatever the file's
snaplen says: that is libpcap's and tcpdump's largest snaplen (libpcap refuses such records too).
The buffer grows only by what was actually read, :data:`CHUNK` at a time, so a record header
that claims more than the file holds costs no memory.

This module parses bytes only; :mod:`flowherd.producer.readers.capture` opens files, undoes
compression and hands it a ``read`` callable (see :data:`Read`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterator
from typing import NamedTuple

import numpy as np

from flowherd.models.batch import Columns, RawRecord
from flowherd.models.errors import CaptureError, TruncatedCaptureError

#: ``read(n)`` returns up to ``n`` bytes, fewer only at the end of the data, ``b""`` after it;
#: it raises :class:`~flowherd.models.errors.CaptureError` when the data cannot be read.
Read = Callable[[int], bytes]

#: The four leading bytes of a classic pcap file, mapped to (byte order, nanosecond resolution).
MAGICS: dict[bytes, tuple[str, bool]] = {
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True),
    b"\xa1\xb2\x3c\x4d": (">", True),
}
HEADER_LEN = 24
#: Bytes asked of ``read`` each time the buffer runs dry (never more: see the module docstring).
CHUNK = 1 << 20
#: No record may hold more captured bytes than this (libpcap's MAXIMUM_SNAPLEN), whatever the
#: file's snaplen says; a smaller snaplen is not enforced, since files with a wrong one exist.
MAX_RECORD = 262144
_LINKTYPE_MASK = 0x0FFFFFFF  # the upper 4 bits of the network field carry FCS information
_G = 1_000_000_000

#: ``tuple.__new__`` builds a RawRecord without NamedTuple's Python-level ``__new__``: a third of
#: the cost, and this is the per-record hot path.
new_record: Callable[[type[RawRecord], tuple[int, int, int, bytes]], RawRecord]
new_record = tuple.__new__


class PcapHeader(NamedTuple):
    """The global header: byte order (``"<"`` or ``">"``), resolution, snaplen and linktype."""

    endian: str
    nanosecond: bool
    snaplen: int
    linktype: int


def parse_header(path: str, head: bytes) -> PcapHeader:
    """Parse the global header at the start of ``head``.

    The caller guarantees that ``head`` holds at least :data:`HEADER_LEN` bytes and starts with
    one of :data:`MAGICS`; the version, time zone and sigfigs fields are not checked (libpcap
    ignores them too). A linktype above 65535 (LINKTYPE_* values are 16-bit, as in pcapng and
    in flowherd's batches) is a :class:`CaptureError`.
    """
    endian, nano = MAGICS[head[:4]]
    snaplen, network = struct.unpack_from(endian + "II", head, 16)
    linktype = network & _LINKTYPE_MASK
    if linktype > 0xFFFF:
        raise CaptureError(path, f"pcap header names linktype {linktype}, which does not exist")
    return PcapHeader(endian, nano, snaplen, linktype)


def pcap_records(
    path: str, header: PcapHeader, read: Read, buf: bytes
) -> Generator[RawRecord, None, int]:
    """:func:`pcap_blocks`, one record at a time: the same records and errors."""
    return records_of(pcap_blocks(path, header, read, buf))


def records_of(blocks: Iterator[Columns]) -> Generator[RawRecord, None, int]:
    """The records of ``blocks``, in order (an error of ``blocks`` is raised after the records
    before it); returns their number."""
    count = 0
    for block in blocks:
        yield from block.records()
        count += len(block)
    return count


def pcap_blocks(
    path: str, header: PcapHeader, read: Read, buf: bytes
) -> Generator[Columns, None, int]:
    """Yield the records of a classic pcap stream whose first bytes are ``buf``, as blocks of
    :class:`Columns`.

    ``buf`` starts at stream offset 0 (the global header, already parsed into ``header``); the
    rest of the stream comes from ``read``. A block holds the complete records of one buffer
    (about :data:`CHUNK` bytes); memory stays below two chunks. One light loop finds where the
    records start; the headers are then read and the frames' bytes gathered with array
    operations. Returns the number of records.

    Raises :class:`CaptureError` naming the record (1-based) and its byte offset for a record
    that claims more than :data:`MAX_RECORD` captured bytes (the file is corrupt or not really
    pcap), and :class:`TruncatedCaptureError` after the last complete record when the stream
    ends inside a record; the records before the error come first.
    """
    unpack_cap = struct.Struct(header.endian + "I").unpack_from
    field = np.dtype(header.endian + "u4")
    frac_ns = 1 if header.nanosecond else 1000
    linktype = header.linktype
    limit = MAX_RECORD
    base = 0  # stream offset of buf[0]
    pos = HEADER_LEN
    count = 0
    while True:
        n = len(buf)
        starts: list[int] = []
        add = starts.append
        p = pos
        # Hot loop: every record that lies wholly inside the buffer.
        while p + 16 <= n:
            cap = unpack_cap(buf, p + 8)[0]
            end = p + 16 + cap
            if end > n or cap > limit:
                break
            add(p)
            p = end
        if starts:
            yield _block(buf, starts, p, field, frac_ns, linktype)
            count += len(starts)
        pos = p
        if n - pos >= 16:
            cap = unpack_cap(buf, pos + 8)[0]
            if cap > limit:
                raise CaptureError(
                    path,
                    f"record {count + 1} at byte offset {base + pos} claims {cap} captured "
                    f"bytes (more than the limit of {limit}): the file is corrupt",
                )
        refilled = refill(read, buf, pos, base, path, count)
        if refilled is None:
            return count
        buf, base = refilled
        pos = 0


def refill(
    read: Read, buf: bytes, pos: int, base: int, path: str, count: int
) -> tuple[bytes, int] | None:
    """What is left of ``buf`` from ``pos`` on, with a chunk more read after it, and the stream
    offset the new buffer starts at; None at the end of the stream when nothing is left. Raises
    :class:`TruncatedCaptureError` when the stream ends inside a record (after ``count``
    complete ones). Never asks for what a record claims: only for a chunk more of what is
    there."""
    more = read(CHUNK)
    if not more:
        if pos < len(buf):
            raise TruncatedCaptureError(path, base + pos, count)
        return None
    return buf[pos:] + more, base + pos


_HEADER_BYTES = np.arange(16, dtype=np.int64)


def _block(
    buf: bytes, starts: list[int], end: int, field: np.dtype[np.uint32], frac_ns: int, lt: int
) -> Columns:
    """The records at ``starts`` (the last one ending at ``end``) of ``buf`` as columns."""
    first = starts[0]
    at = np.array(starts, np.int64)
    # the header's u32 fields at every byte offset of the records' span
    words = np.ndarray(((end - first) - 3,), field, buf, first, (1,))
    rel = at - first
    sec, frac = words[rel].astype(np.uint64), words[rel + 4].astype(np.uint64)
    cap, wire = words[rel + 8].astype(np.uint32), words[rel + 12].astype(np.uint32)
    span = np.frombuffer(buf, np.uint8, end - first, first)
    keep = np.ones(end - first, np.bool_)
    keep[(rel[:, None] + _HEADER_BYTES).ravel()] = False
    return Columns(
        sec * np.uint64(_G) + frac * np.uint64(frac_ns),
        wire,
        np.full(len(starts), lt, np.uint16),
        cap,
        span[keep].tobytes(),
    )
