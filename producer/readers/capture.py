"""Open a packet capture and stream its records: pcap, nanosecond pcap or pcapng, compressed or not.

::

    with open_capture("trace.pcapng.gz") as cap:
        print(cap.format, cap.compression, cap.size)
        for rec in cap:  # flowherd.models.batch.RawRecord
            ...

``cap.blocks()`` yields the same records as :class:`~flowherd.models.batch.Columns` blocks instead
(read with array operations for classic pcap): what the producer feeds its batches with.

Format and compression are told by magic bytes, never by file name. Records stream through a
buffer of about 1 MiB, so memory does not grow with the file. Every problem with the input is a
:class:`~flowherd.models.errors.CaptureError`; a file cut inside a record delivers its complete
records and then raises :class:`~flowherd.models.errors.TruncatedCaptureError`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import os
import stat
import struct
import zlib
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Literal, TypeVar

from flowherd.models.batch import Columns, RawRecord
from flowherd.models.errors import CaptureError, TruncatedCaptureError
from flowherd.producer.readers import pcap, pcapng
from flowherd.producer.readers.http import UrlFile, is_url, open_url

log = logging.getLogger(__name__)

Format = Literal["pcap", "pcap-ns", "pcapng"]
Compression = Literal["gzip", "bzip2", "xz"]

_COMPRESSION_MAGICS: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_CAPTURE_MAGICS = (*pcap.MAGICS, pcapng.MAGIC)
# Formats that are easily mistaken for a capture, to say what the file is instead.
_LOOKALIKES = (
    (b"\xa1\xb2\xcd\x34", "a modified (Kuznetzov) pcap, which is not supported"),
    (b"\x34\xcd\xb2\xa1", "a modified (Kuznetzov) pcap, which is not supported"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data, which is not supported"),
    (b"\x04\x22\x4d\x18", "lz4-compressed data, which is not supported"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"snoop\x00", "a Solaris snoop capture, which is not supported"),
    (b"GMBU", "a Microsoft Network Monitor capture, which is not supported"),
)
_DECOMPRESSION_ERRORS = (OSError, zlib.error, lzma.LZMAError, struct.error, ValueError)
T = TypeVar("T")


class _Source:
    """The uncompressed byte stream of an open file.

    It reads through ``read1`` and holds an error back until the bytes read before it have been
    delivered, so that the records ahead of a corrupt or cut-off stretch still come out.
    """

    def __init__(
        self, path: str, stream: io.BufferedIOBase, compression: Compression | None
    ) -> None:
        self._path = path
        self._read1 = stream.read1
        self._compression = compression
        self._error: CaptureError | None = None  # raised by the next read
        self.cut_short = False  # the compressed stream ended before its end-of-stream marker
        self.consumed = 0  # uncompressed bytes delivered so far

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the data or before an error."""
        if self._error is not None:
            raise self._error
        parts: list[bytes] = []
        got = 0
        try:
            while got < n and not self.cut_short:
                part = self._read1(n - got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except EOFError:
            self.cut_short = True
        except _DECOMPRESSION_ERRORS as exc:
            self._error = self._describe(exc, self.consumed + got)
            if not got:
                raise self._error from None
        self.consumed += got
        return b"".join(parts)

    def _describe(self, exc: Exception, offset: int) -> CaptureError:
        if self._compression is None:
            return CaptureError(self._path, f"cannot read the file: {exc}")
        return CaptureError(
            self._path,
            f"corrupt {self._compression} stream after {offset} uncompressed bytes: {exc}",
        )


class CaptureReader:
    """An open capture: its format, compression and size, and an iterator over its records.

    Made by :func:`open_capture`; use it as a context manager, or call :meth:`close`. Iterating
    yields :class:`~flowherd.models.batch.RawRecord` in file order and may be done once (like a
    file, a second loop continues where the first stopped). ``position`` is the offset reached in
    the file on disk (compressed bytes for a compressed file); it advances in read-ahead steps, so
    it suits a progress bar against ``size``.

    Iteration raises :class:`CaptureError` when the rest of the file cannot be read, and
    :class:`TruncatedCaptureError` after the last complete record of a file cut inside a record.
    """

    def __init__(
        self,
        path: str,
        fmt: Format,
        compression: Compression | None,
        raw: io.BufferedReader,
        stream: io.BufferedIOBase,
        records: Generator[RawRecord, None, int],
        blocks: Generator[Columns, None, int],
    ) -> None:
        self.path = path
        self.format: Format = fmt
        self.compression: Compression | None = compression
        self.size = _size_of(raw)
        self._raw = raw
        self._stream = stream
        self._records = records
        self._blocks = blocks
        self._closed_at: int | None = None

    @property
    def position(self) -> int:
        """Bytes of the file on disk consumed so far (0 ... ``size``)."""
        if self._closed_at is not None:
            return self._closed_at
        return self._raw.tell()

    def __iter__(self) -> Iterator[RawRecord]:
        return self._records

    def blocks(self) -> Iterator[Columns]:
        """The records as blocks of columns, in file order, with the same errors as iterating
        (the complete records before an error come first). Read either the records or the
        blocks of one reader, not both."""
        return self._blocks

    def close(self) -> None:
        """Stop iteration and close the file; calling it again does nothing."""
        if self._closed_at is None:
            self._closed_at = self._raw.tell()
            self._records.close()
            self._blocks.close()
            self._stream.close()
            self._raw.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_capture(path: str | os.PathLike[str]) -> CaptureReader:
    """Open the capture at ``path`` (a file, or an ``http(s)://`` URL streamed by
    :mod:`flowherd.producer.readers.http`) and read its header.

    Raises :class:`CaptureError` (``str(exc)`` names the file and the problem) when the file is
    missing, a directory, unreadable, empty, not a pcap or pcapng file (possibly after gzip, bzip2
    or xz decompression), or its compressed stream is corrupt; raises
    :class:`TruncatedCaptureError` (offset 0, no records) when it ends inside its first header.
    A file that holds a header and no record is valid and yields nothing.
    """
    name = os.fsdecode(path)
    if is_url(name):
        raw: io.BufferedReader = open_url(name)  # streamed, never copied to disk
        try:
            return _start(name, raw)
        except BaseException:
            raw.close()
            raise
    try:
        raw = open(path, "rb")  # noqa: SIM115 -- handed to the reader, which closes it
    except FileNotFoundError:
        raise CaptureError(name, "no such file") from None
    except IsADirectoryError:
        raise CaptureError(name, "is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(name, "permission denied") from None
    except OSError as exc:
        raise CaptureError(name, f"cannot open the file: {exc.strerror or exc}") from None
    try:
        return _start(name, raw)
    except BaseException:
        raw.close()
        raise


def _size_of(raw: io.BufferedReader) -> int:
    """Bytes of the file, or of a URL's body (0 when the server did not say)."""
    if isinstance(raw, UrlFile):
        return raw.content_length or 0
    return os.fstat(raw.fileno()).st_size


def _start(name: str, raw: io.BufferedReader) -> CaptureReader:
    url = isinstance(raw, UrlFile)
    st = None if url else os.fstat(raw.fileno())
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise CaptureError(name, "is a directory, not a capture file")
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise CaptureError(name, "empty file")
    try:
        if url:
            magic = raw.peek(6)[:6]  # a stream: look, do not seek
        else:
            magic = raw.read(6)
            raw.seek(0)
    except OSError as exc:
        raise CaptureError(name, f"cannot read the file: {exc.strerror or exc}") from None
    compression = next((c for m, c in _COMPRESSION_MAGICS if magic.startswith(m)), None)
    stream: io.BufferedIOBase = raw
    if compression == "gzip":
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
    elif compression == "bzip2":
        stream = bz2.BZ2File(raw)
    elif compression == "xz":
        stream = lzma.LZMAFile(raw)  # noqa: SIM115 -- the reader closes it
    try:
        source = _Source(name, stream, compression)
        head = source.read(pcap.CHUNK)
        fmt, records, blocks = _parse_start(name, head, source, compression)
    except BaseException:
        stream.close()
        raise
    if compression is not None:
        records = _check_end(name, records, source)
        blocks = _check_end(name, blocks, source)
    log.debug("capture opened path=%s format=%s compression=%s", name, fmt, compression)
    return CaptureReader(name, fmt, compression, raw, stream, records, blocks)


def _parse_start(
    name: str, head: bytes, source: _Source, compression: Compression | None
) -> tuple[Format, Generator[RawRecord, None, int], Generator[Columns, None, int]]:
    """Tell the format from the first bytes and make its record and block generators (only
    the one iterated first reads the stream)."""
    if not head:
        if source.cut_short:
            raise TruncatedCaptureError(name, 0, 0)
        inside = f" (its {compression} stream holds no data)" if compression else ""
        raise CaptureError(name, f"empty file{inside}")
    if len(head) < 12 and any(m.startswith(head[:4]) for m in _CAPTURE_MAGICS):
        raise TruncatedCaptureError(name, 0, 0)
    if head[:4] in pcap.MAGICS:
        if len(head) < pcap.HEADER_LEN:
            raise TruncatedCaptureError(name, 0, 0)
        header = pcap.parse_header(name, head)
        fmt: Format = "pcap-ns" if header.nanosecond else "pcap"
        return (
            fmt,
            pcap.pcap_records(name, header, source.read, head),
            pcap.pcap_blocks(name, header, source.read, head),
        )
    if head[:4] == pcapng.MAGIC:
        if pcapng.byte_order(head) is None:
            raise CaptureError(
                name,
                f"not a pcapng file: bad byte-order magic {head[8:12].hex(' ')} in its "
                "section header block",
            )
        return (
            "pcapng",
            pcapng.pcapng_records(name, source.read, head),
            pcapng.pcapng_blocks(name, source.read, head),
        )
    raise CaptureError(name, f"not a pcap or pcapng file: {_describe(head, compression)}")


def _describe(head: bytes, compression: Compression | None) -> str:
    """Say what the first bytes look like, for the not-a-capture error."""
    first = head[:8]
    shown = first.hex(" ") + f" ({first!r})"
    where = f"after {compression} decompression it" if compression else "it"
    what = next((w for m, w in _LOOKALIKES if head.startswith(m)), None)
    if what is None and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:256]):
        what = "text"
    return f"{where} begins with {shown}" + (f", which looks like {what}" if what else "")


def _check_end(
    name: str, items: Generator[T, None, int], source: _Source
) -> Generator[T, None, int]:
    """Pass ``items`` (records or blocks) through; then report a compressed stream that was cut
    short between records (a cut inside a record is reported by the format reader itself)."""
    count = yield from items
    if source.cut_short:
        raise TruncatedCaptureError(name, source.consumed, count)
    return count
