"""Small uncompressed classic pcap files read whole, in one step: the many-small-files case.

A directory of rotated captures can hold hundreds of thousands of files of a few hundred
packets each. Opening each through :func:`flowherd.producer.readers.capture.open_capture` (a
stream, a decompressor check, generators around generators) costs more than reading its
records; :func:`small_blocks` reads such a file with one ``read`` and cuts it with the same
block parser (:func:`flowherd.producer.readers.pcap.pcap_blocks`), so the records, blocks and
errors are those of ``open_capture``. Anything else (pcapng, compressed, larger than
:data:`SMALL` bytes, a URL) is not handled here: :func:`small_blocks` returns None.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from flowherd.models.columns import Columns
from flowherd.producer.readers import pcap

#: the largest file read whole (one read-ahead chunk of the stream reader)
SMALL = pcap.CHUNK


def _nothing(n: int) -> bytes:
    return b""


def small_blocks(path: str) -> tuple[int, Iterator[Columns]] | None:
    """(size, blocks) of a small uncompressed classic pcap at ``path``, or None for anything
    else (the caller opens it with ``open_capture``, which reports any problem). The blocks
    raise what ``open_capture``'s blocks raise (:class:`TruncatedCaptureError`, ...)."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if size > SMALL or size < pcap.HEADER_LEN:
                return None
            data = f.read()
    except OSError:
        return None
    if data[:4] not in pcap.MAGICS or len(data) != size:
        return None
    header = pcap.parse_header(path, data)
    return size, pcap.pcap_blocks(path, header, _nothing, data)
