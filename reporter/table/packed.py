"""Fast reading of flow records in their stored form: ``(packed key, packed value)`` pairs.

Redis keeps a conversation as the bytes of :meth:`flowherd.models.flows.FlowKey.pack` (field) and
:meth:`flowherd.models.flows.FlowStats.pack` (value, layout :data:`flowherd.models.flows.VALUE`).
The streaming consumers (:mod:`flowherd.reporter.output.lines`,
:mod:`flowherd.reporter.analysis.scan`) read those bytes directly instead of building models per
flow; this module holds the shared pieces. Pure: no I/O.

Contracts: :func:`split_key` raises :class:`ValueError` for bytes that are not a packed key
(as :meth:`FlowKey.unpack` does); :class:`AddrText` answers exactly what
:func:`flowherd.models.flows.addr_text` answers, as ASCII bytes.
"""

from __future__ import annotations

import socket
import struct

from flowherd.models.flows import NO_FIRST, VALUE, addr_text

#: One stored record: (packed key, packed value), as HSCAN returns it.
Pair = tuple[bytes, bytes]

KEY4 = struct.Struct("<x4s4sBHH")
KEY6 = struct.Struct("<x16s16sBHH")
#: The four counters at the head of a packed value: pkts_ab, bytes_ab, pkts_ba, bytes_ba.
COUNTS = struct.Struct("<dddd")
#: A direction without packets has ``first == NO_FIRST``; as stored (19 digits).
NO_FIRST_TEXT = b"%019d" % NO_FIRST
MINUS = 45  # b"-"[0]: a negative timestamp, which the fast paths hand to the model code
ZERO = 48  # b"0"[0]

__all__ = [
    "COUNTS",
    "KEY4",
    "KEY6",
    "MINUS",
    "NO_FIRST_TEXT",
    "VALUE",
    "ZERO",
    "AddrText",
    "Pair",
    "split_key",
    "ts_bytes",
]


def split_key(raw: bytes) -> tuple[bytes, bytes, int, int, int]:
    """``(a_addr, b_addr, proto, a_port, b_port)`` of a packed key; :class:`ValueError` if it
    is not one."""
    n = len(raw)
    if n == 14 and raw[0] == 4:
        return KEY4.unpack(raw)
    if n == 38 and raw[0] == 16:
        return KEY6.unpack(raw)
    raise ValueError(f"not a packed flow key: {raw!r}")


def ts_bytes(stored: bytes) -> bytes:
    """A stored 19-digit nanosecond timestamp as :func:`flowherd.models.flows.ts_text` writes it."""
    if stored[0] == MINUS:
        from flowherd.models.flows import ts_text

        return ts_text(int(stored)).encode()
    return b"%d.%s" % (int(stored[:10]), stored[10:])


class AddrText:
    """Address bytes (4 or 16) to their text (as ASCII bytes), with a bounded cache.

    ``inet_ntop`` for speed; IPv6 addresses that it prints with an embedded IPv4 part go
    through :func:`flowherd.models.flows.addr_text` (Python's ``ipaddress``), whose output is the
    contract. The cache has two generations of at most ``size`` addresses each: when the
    current one is full it becomes the old one (the previous old one is dropped), and an
    address found in the old one moves back. Popular addresses stay; memory is bounded
    whatever the number of distinct addresses. ``cache`` (the current generation) keeps its
    identity, so a hot loop may hold it and call :meth:`miss` when it lacks an address.
    """

    __slots__ = ("cache", "old", "size")

    def __init__(self, size: int = 1 << 15) -> None:
        self.size = size
        self.cache: dict[bytes, bytes] = {}
        self.old: dict[bytes, bytes] = {}

    def __call__(self, raw: bytes) -> bytes:
        text = self.cache.get(raw)
        if text is None:
            text = self.miss(raw)
        return text

    def miss(self, raw: bytes) -> bytes:
        """The text of ``raw``, from the old generation or computed, now in ``cache``."""
        text = self.old.get(raw)
        if text is None:
            if len(raw) == 4:
                s = socket.inet_ntop(socket.AF_INET, raw)
            else:
                s = socket.inet_ntop(socket.AF_INET6, raw)
                if "." in s:
                    s = addr_text(raw)
            text = s.encode("ascii")
        if len(self.cache) >= self.size:
            self.old = self.cache.copy()
            self.cache.clear()
        self.cache[raw] = text
        return text
