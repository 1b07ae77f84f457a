"""IPFIX (RFC 7011) messages of unidirectional flows: a pure encoder, no I/O.

Two templates, one per address family, with IANA information elements (no enterprise ones):

    id 256 (IPv4): sourceIPv4Address(8) destinationIPv4Address(12)
    id 257 (IPv6): sourceIPv6Address(27) destinationIPv6Address(28)
    then both:     sourceTransportPort(7) destinationTransportPort(11) protocolIdentifier(4)
                   tcpControlBits(6, 2 octets: RFC 7125) packetDeltaCount(2) octetDeltaCount(1)
                   flowStartMilliseconds(152) flowEndMilliseconds(153)

:class:`Encoder` packs records into messages of at most ``mtu`` octets, in record order, one
Data Set per run of records of one family. The header's sequence number is the count (modulo
2**32) of Data Records sent before the message, per observation domain (RFC 7011 3.1). Over
UDP a collector that starts late or restarts learns templates only from a retransmission, so
the Template Set is repeated (RFC 7011 8.4): in the first message, then every
``template_every`` messages and whenever ``template_s`` seconds of export time have passed.
Templates are never withdrawn (withdrawals are not sent over UDP).

Times are milliseconds since the epoch, truncated (a flow's nanoseconds are not carried);
negative times are sent as 0. ``octetDeltaCount`` is what flowherd counts: frame bytes on the
wire (link layer included), not IP octets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from flowherd.models.flows import VALUE, FlowKey, FlowStats
from flowherd.reporter.output.files import Keep
from flowherd.reporter.table.packed import Pair, split_key

VERSION = 10
HEADER = struct.Struct("!HHIII")  # version, length, export time, sequence, domain
SET_HEADER = struct.Struct("!HH")  # set id, length
TEMPLATE_SET_ID = 2
TEMPLATE_V4, TEMPLATE_V6 = 256, 257
#: (information element id, length) after the two addresses, shared by both templates.
_COMMON = ((7, 2), (11, 2), (4, 1), (6, 2), (2, 8), (1, 8), (152, 8), (153, 8))
FIELDS = {
    TEMPLATE_V4: ((8, 4), (12, 4), *_COMMON),
    TEMPLATE_V6: ((27, 16), (28, 16), *_COMMON),
}
RECORD = {
    TEMPLATE_V4: struct.Struct("!4s4sHHBHQQQQ"),
    TEMPLATE_V6: struct.Struct("!16s16sHHBHQQQQ"),
}
#: A path MTU of 1500 less IPv6 (40) and UDP (8) headers, rounded down.
DEFAULT_MTU = 1400
MS = 1_000_000


def template_set() -> bytes:
    """The Template Set announcing both templates."""
    body = b""
    for tid, fields in FIELDS.items():
        body += struct.pack("!HH", tid, len(fields))
        body += b"".join(struct.pack("!HH", ie, n) for ie, n in fields)
    return SET_HEADER.pack(TEMPLATE_SET_ID, SET_HEADER.size + len(body)) + body


TEMPLATES = template_set()


class Record(NamedTuple):
    """One unidirectional flow; addresses as 4 or 16 bytes, times in ns since the epoch."""

    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    tcp_flags: int
    packets: int
    bytes: int
    first_ns: int
    last_ns: int


def flow_records(pairs: Iterable[Pair], keep: Keep | None = None) -> Iterator[Record]:
    """The unidirectional flows of stored pairs: one per direction that carried packets, in
    the order of ``pairs``; ``keep(key, stats)`` False drops a conversation."""
    for k, v in pairs:
        a, b, p, ap, bp = split_key(k)
        if keep is not None and not keep(FlowKey(a, b, p, ap, bp), FlowStats.unpack(v)):
            continue
        pa, ba, pb, bb, fa, la, fb, lb, ga, gb = VALUE.unpack(v)
        if pa:
            yield Record(a, b, p, ap, bp, ga, int(pa), int(ba), int(fa), int(la))
        if pb:
            yield Record(b, a, p, bp, ap, gb, int(pb), int(bb), int(fb), int(lb))


def pack_record(r: Record) -> tuple[int, bytes]:
    """The template id and Data Record bytes of ``r``."""
    tid = TEMPLATE_V4 if len(r.src) == 4 else TEMPLATE_V6
    first, last = max(r.first_ns, 0) // MS, max(r.last_ns, 0) // MS
    body = RECORD[tid].pack(
        r.src, r.dst, r.sport, r.dport, r.proto, r.tcp_flags, r.packets, r.bytes, first, last
    )
    return tid, body


class Encoder:
    """IPFIX messages for one observation domain; keeps the sequence and template state
    across calls of :meth:`messages` (one exporting process, one transport session).

    ``ValueError`` when ``mtu`` cannot hold a header, the templates and one IPv6 record."""

    def __init__(
        self,
        domain: int = 1,
        mtu: int = DEFAULT_MTU,
        template_every: int = 64,
        template_s: int = 60,
    ) -> None:
        least = HEADER.size + len(TEMPLATES) + SET_HEADER.size + RECORD[TEMPLATE_V6].size
        if mtu < least:
            raise ValueError(f"an IPFIX message needs at least {least} octets, not {mtu}")
        if template_every < 1:
            raise ValueError("template_every must be at least 1")
        self.domain = domain
        self.mtu = mtu
        self.template_every = template_every
        self.template_s = template_s
        self.sequence = 0  # data records sent, modulo 2**32 (the next message's number)
        self.records = 0  # data records sent
        self.sent = 0  # messages produced
        self.template_messages = 0
        self._since_templates = 0
        self._templates_at: int | None = None

    def _wants_templates(self, now: int) -> bool:
        return (
            self._templates_at is None
            or self._since_templates >= self.template_every
            or now - self._templates_at >= self.template_s
        )

    def messages(self, records: Iterable[Record], clock: Callable[[], int]) -> Iterator[bytes]:
        """The messages carrying ``records``, each at most ``mtu`` octets; ``clock()`` gives
        the export time in epoch seconds (read once per message)."""
        parts: list[bytes] = []
        size, count, tid, set_start = 0, 0, 0, 0
        now = 0

        def start() -> None:
            nonlocal size, count, tid, set_start, now
            now = clock()
            parts.clear()
            parts.append(b"")  # the header, filled in by finish()
            size, count, tid = HEADER.size, 0, 0
            if self._wants_templates(now):
                parts.append(TEMPLATES)
                size += len(TEMPLATES)
                self._templates_at, self._since_templates = now, 0
                self.template_messages += 1
            set_start = len(parts)

        def close_set() -> None:
            if tid:
                body = b"".join(parts[set_start:])
                parts[set_start:] = [SET_HEADER.pack(tid, SET_HEADER.size + len(body)) + body]

        def finish() -> bytes:
            close_set()
            parts[0] = HEADER.pack(VERSION, size, now & 0xFFFFFFFF, self.sequence, self.domain)
            self.sequence = (self.sequence + count) % (1 << 32)
            self.records += count
            self.sent += 1
            self._since_templates += 1
            return b"".join(parts)

        start()
        for r in records:
            rtid, body = pack_record(r)
            need = len(body) + (SET_HEADER.size if rtid != tid else 0)
            if size + need > self.mtu:
                yield finish()
                start()
                need = len(body) + SET_HEADER.size
            if rtid != tid:
                close_set()
                tid, set_start = rtid, len(parts)
            parts.append(body)
            size += need
            count += 1
        if count:
            yield finish()
