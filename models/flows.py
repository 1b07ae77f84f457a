"""Flow keys and counters: the canonical bidirectional record and its two reported views.

One record per *conversation*: the key orders its two endpoints canonically (endpoint A is the
smaller ``(address bytes, port)``), and the counters keep each direction apart, so the
unidirectional 5-tuple table and the bidirectional conversation table both derive from it.

The packed form (:data:`VALUE`) is what Redis stores and what the merge script reads with
Lua's ``struct``: counters as doubles (exact up to 2**53) and timestamps as 19-digit decimal
strings of nanoseconds, which compare correctly as strings. Nothing here does I/O.
"""

from __future__ import annotations

import builtins
import ipaddress
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

#: Lua-compatible layout of a flow's counters: ``store/merge.lua`` reads and writes it as
#: ``struct`` format ``<ddddc19c19c19c19BB``.
VALUE = struct.Struct("<dddd19s19s19s19sBB")
#: Sentinels for a direction that has no packet yet: they lose every min/max comparison.
NO_FIRST = 10**19 - 1
NO_LAST = 0
NS = 1_000_000_000


class FlowKey(NamedTuple):
    """Canonical conversation key: ``(a_addr, a_port) <= (b_addr, b_port)`` byte-wise."""

    a_addr: bytes
    b_addr: bytes
    proto: int
    a_port: int
    b_port: int

    def pack(self) -> bytes:
        return (
            bytes((len(self.a_addr),))
            + self.a_addr
            + self.b_addr
            + struct.pack("<BHH", self.proto, self.a_port, self.b_port)
        )

    @classmethod
    def unpack(cls, raw: bytes) -> FlowKey:
        n = raw[0]
        if n not in (4, 16) or len(raw) != 1 + 2 * n + 5:
            raise ValueError(f"not a packed flow key: {raw!r}")
        proto, ap, bp = struct.unpack_from("<BHH", raw, 1 + 2 * n)
        return cls(raw[1 : 1 + n], raw[1 + n : 1 + 2 * n], proto, ap, bp)


def canonical(src: bytes, dst: bytes, proto: int, sport: int, dport: int) -> tuple[FlowKey, int]:
    """Return the canonical key of a packet and its direction (0: src is A, 1: src is B)."""
    if (src, sport) <= (dst, dport):
        return FlowKey(src, dst, proto, sport, dport), 0
    return FlowKey(dst, src, proto, dport, sport), 1


@dataclass(slots=True)
class FlowStats:
    """Counters of one conversation, per direction (``ab``: A to B, ``ba``: B to A)."""

    pkts_ab: int = 0
    bytes_ab: int = 0
    pkts_ba: int = 0
    bytes_ba: int = 0
    first_ab: int = NO_FIRST
    last_ab: int = NO_LAST
    first_ba: int = NO_FIRST
    last_ba: int = NO_LAST
    flags_ab: int = 0
    flags_ba: int = 0

    def add(self, direction: int, ts_ns: int, wire_len: int, flags: int) -> None:
        if direction == 0:
            self.pkts_ab += 1
            self.bytes_ab += wire_len
            self.flags_ab |= flags
            if ts_ns < self.first_ab:
                self.first_ab = ts_ns
            if ts_ns > self.last_ab:
                self.last_ab = ts_ns
        else:
            self.pkts_ba += 1
            self.bytes_ba += wire_len
            self.flags_ba |= flags
            if ts_ns < self.first_ba:
                self.first_ba = ts_ns
            if ts_ns > self.last_ba:
                self.last_ba = ts_ns

    def merge(self, o: FlowStats) -> None:
        """Fold ``o`` into ``self``: commutative and associative, like the Redis merge."""
        self.pkts_ab += o.pkts_ab
        self.bytes_ab += o.bytes_ab
        self.pkts_ba += o.pkts_ba
        self.bytes_ba += o.bytes_ba
        self.first_ab = min(self.first_ab, o.first_ab)
        self.last_ab = max(self.last_ab, o.last_ab)
        self.first_ba = min(self.first_ba, o.first_ba)
        self.last_ba = max(self.last_ba, o.last_ba)
        self.flags_ab |= o.flags_ab
        self.flags_ba |= o.flags_ba

    @property
    def packets(self) -> int:
        return self.pkts_ab + self.pkts_ba

    @property
    def bytes(self) -> int:
        return self.bytes_ab + self.bytes_ba

    @property
    def first(self) -> int:
        return min(self.first_ab, self.first_ba)

    @property
    def last(self) -> int:
        return max(self.last_ab, self.last_ba)

    def pack(self) -> builtins.bytes:
        return VALUE.pack(
            self.pkts_ab,
            self.bytes_ab,
            self.pkts_ba,
            self.bytes_ba,
            b"%019d" % self.first_ab,
            b"%019d" % self.last_ab,
            b"%019d" % self.first_ba,
            b"%019d" % self.last_ba,
            self.flags_ab,
            self.flags_ba,
        )

    @classmethod
    def unpack(cls, raw: builtins.bytes) -> FlowStats:
        pa, ba, pb, bb, fa, la, fb, lb, ga, gb = VALUE.unpack(raw)
        return cls(int(pa), int(ba), int(pb), int(bb), int(fa), int(la), int(fb), int(lb), ga, gb)


def shard_of(packed_key: bytes, shards: int) -> int:
    """The shard of a conversation: CRC-32 of its packed canonical key, modulo ``shards``.
    Both directions share the key, so a conversation lives in exactly one shard."""
    return zlib.crc32(packed_key) % shards if shards > 1 else 0


def addr_text(raw: bytes) -> str:
    """An address as tshark prints it (dotted quad, or RFC 5952 compressed IPv6)."""
    return str(ipaddress.ip_address(raw))


def ts_text(ns: int) -> str:
    """Nanoseconds since the epoch as epoch seconds with 9 decimals (exact, no float)."""
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    return f"{sign}{ns // NS}.{ns % NS:09d}"
