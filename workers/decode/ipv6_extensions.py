"""How tshark walks the IPv6 extension-header chain: the upper-layer protocol, and where it stops.

In the oracle (TShark 4.0) ``proto`` is the next-header value after hop-by-hop (0), routing (43),
fragment (44) and destination options (60) headers, and the ports come from the transport header
after them. tshark reads each header field by field: where one is cut, or one of its dissectors
throws (an option or a routing header reading past its data), the chain ends with the last
next-header value it read, and no transport header follows; a non-first fragment ends it too.
scapy's extension-header layers are all-or-nothing, so the chain is read here from the bytes,
following ``packet-ipv6.c`` and checked against ``tshark`` frame by frame. IOAM trace nodes are
not modelled: they are taken to fill their option. Nothing here raises.
"""

from __future__ import annotations

from typing import Final


class _Throws(Exception):
    """tshark's dissector throws here: it reads past its data and abandons the packet."""


_HOP_BY_HOP = 0
_ROUTING = 43
_FRAGMENT = 44
_DEST_OPTS = 60

_OPT_PAD1 = 0x00
_OPT_CALIPSO = 0x07
_OPT_SMF_DPD = 0x08
_OPT_QUICKSTART = 0x26
_OPT_IOAM = 0x31
_OPT_MPL = 0x6D
_OPT_LIO = 0x8C
_IPV6_OPTIONS_READ_AS_FIELDS = frozenset(
    (_OPT_CALIPSO, _OPT_SMF_DPD, _OPT_QUICKSTART, _OPT_IOAM, _OPT_MPL, _OPT_LIO)
)
#: IPv6 option -> bytes its tshark dissector reads whatever the option length says.
_IPV6_OPTION_READS: Final[dict[int, int]] = {
    0x04: 1,  # tunnel encapsulation limit
    0x05: 2,  # router alert
    0x0F: 10,  # PDM
    0x30: 4,  # path MTU
    0x41: 4,  # tunnel payload forwarding
    0x63: 4,  # RPL
    0xC2: 4,  # jumbo payload
    0xC9: 16,  # home address
    0xEE: 3,  # DFF
}
_MPL_SEED_ID_LEN: Final = (0, 2, 8, 16)


def ipv6_upper_layer(raw: bytes, end: int, next_header: int) -> tuple[int, int | None]:
    """Walk the IPv6 extension chain of ``raw`` (fixed header first) up to ``end``.

    ``end`` is where tshark's view of the payload stops (payload length, captured bytes).
    Returns ``(proto, offset of the transport header)``; the offset is ``None`` when tshark
    dissects no further: a non-first fragment, or a header cut short or one it throws on, in
    which case ``proto`` is the last next-header value it read.
    """
    proto = next_header
    off = 40
    try:
        while proto in (_HOP_BY_HOP, _DEST_OPTS, _ROUTING, _FRAGMENT):
            if proto == _FRAGMENT:
                if off + 8 > end:
                    return proto, None
                proto = raw[off]
                if (raw[off + 2] << 8 | raw[off + 3]) & 0xFFF8:
                    return proto, None
                off += 8
            elif proto == _ROUTING:
                if off >= end:
                    return proto, None
                proto = raw[off]
                off = _routing_end(raw, off, end)
            else:
                if off + 2 > end:
                    return proto, None
                proto = raw[off]
                off = _options_end(raw, off, end)
    except _Throws:
        return proto, None
    return proto, off


def _options_end(raw: bytes, off: int, end: int) -> int:
    """End of the hop-by-hop / destination options header at ``off``, as tshark walks it."""
    header_end = off + (raw[off + 1] + 1) * 8
    pos = off + 2
    while pos < header_end:
        if pos + 2 > end:  # tshark reads the type and the length byte, even of a Pad1
            raise _Throws
        kind, length = raw[pos], raw[pos + 1]
        if kind == _OPT_PAD1:
            pos += 1
            continue
        start = pos + 2
        pos = start + _option_reads(raw, kind, length, start, end)
        if pos < start + length:
            pos = start + length  # the rest is shown as unknown data
        if pos > end:
            raise _Throws
    if header_end > end:
        raise _Throws
    return header_end


def _option_reads(raw: bytes, kind: int, length: int, start: int, end: int) -> int:
    """How many bytes the tshark dissector of IPv6 option ``kind`` consumes from ``start``."""
    reads = _IPV6_OPTION_READS.get(kind)
    if reads is not None:
        return reads
    if kind not in _IPV6_OPTIONS_READ_AS_FIELDS:
        return length  # PadN, unknown and experimental options: shown as bytes
    if kind == _OPT_IOAM:
        return _ioam_reads(raw, length, start, end)
    needed = 5 if kind == _OPT_CALIPSO else 1
    if start + needed > end:
        raise _Throws
    first = raw[start]
    if kind == _OPT_QUICKSTART:  # a rate request or report, else just the function byte
        return 6 if first >> 4 in (0, 8) else 0
    if kind == _OPT_MPL:
        return 2 + _MPL_SEED_ID_LEN[first >> 6]
    if kind == _OPT_LIO:  # the line ID length is clamped to the option
        return 1 + min(first, length - 1) if length else 0
    if kind == _OPT_CALIPSO:  # DOI, compartment length, level, checksum, bitmap
        return 8 + 4 * raw[start + 4]
    if first & 0x80:  # SMF_DPD with a hash-assist value
        return length
    tagger = (first & 0x0F) + 1 if first & 0x70 else 0
    return max(1 + tagger, length)


def _ioam_reads(raw: bytes, length: int, start: int, end: int) -> int:
    """IOAM option: reserved byte and type, then for a trace its 8-byte header; trace data is
    taken to fill the option (its node-by-node reads are not modelled)."""
    if length == 0 or start + 2 > end:  # length 0: a subtree of length -2 throws
        raise _Throws
    if raw[start + 1] not in (0, 1):
        return 2
    if start + 10 > end:
        raise _Throws
    node_len, remaining_len = raw[start + 4] >> 3, raw[start + 5] & 0x7F
    if not node_len or remaining_len * 4 > length - 10:
        return 10
    return length


def _routing_end(raw: bytes, off: int, end: int) -> int:
    """End of the routing header at ``off`` (its next header already read), or throws."""
    if off + 4 > end:
        raise _Throws
    hdr_len, kind, segments_left = raw[off + 1], raw[off + 2], raw[off + 3]
    total = (hdr_len + 1) * 8
    if off + total > end:
        raise _Throws
    data, size = off + 4, total - 4
    if kind == 2:  # Mobile IPv6: reserved word and one home address
        needed = 20
    elif kind == 3:  # RPL: compressed addresses
        needed = _rpl_reads(raw, data, hdr_len)
    elif kind == 4:  # segment routing: a 4-byte word, then last_entry + 1 addresses
        needed = 4 + 16 * (raw[data] + 1)
        if segments_left:
            needed = max(needed, 20)
    elif kind in (5, 6):  # compact routing headers
        needed = _crh_reads(raw, data, size, 2 if kind == 5 else 4, hdr_len, segments_left)
    else:  # type 0 fits its length; unknown types are shown as data
        needed = 0
    if needed > size:
        raise _Throws
    return off + total


def _rpl_reads(raw: bytes, data: int, hdr_len: int) -> int:
    cmpr_i, cmpr_e, pad = raw[data] >> 4, raw[data] & 0x0F, raw[data + 1] >> 4
    if not hdr_len:
        return 4
    numerator = hdr_len * 8 - pad - (16 - cmpr_e)
    count = int(numerator / (16 - cmpr_i)) + 1  # C division truncates toward zero
    if count <= 0:
        return 4
    return 4 + (count - 1) * (16 - cmpr_i) + (16 - cmpr_e)


def _crh_reads(
    raw: bytes, data: int, size: int, width: int, hdr_len: int, segments_left: int
) -> int:
    """Compact routing header: the current SID, then SIDs until a zero one or the count."""
    needed = width * segments_left + width
    count = hdr_len * 4 + 2 if width == 2 else hdr_len * 2 + 1
    pos = 0
    if pos + width > size:
        return max(needed, pos + width)
    sid = int.from_bytes(raw[data : data + width], "big")
    index = 0
    while index < count and sid:
        pos += width
        if pos + width > size:
            return max(needed, pos + width)
        sid = int.from_bytes(raw[data + pos : data + pos + width], "big")
        index += 1
    return needed
