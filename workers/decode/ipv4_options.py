"""How tshark reads IPv4 options: a source route moves the destination, a bad option hides ports.

In the oracle (TShark 4.0) the options decide two parts of the flow key: a loose/strict source
route with a valid pointer makes its last hop ``ip.dst``, and an option whose tshark dissector
throws ends the dissection of the packet, so no transport header (no ports) follows -- or, when
that happens before ``ip.dst`` was added, the oracle counts the frame as non-IP. tshark reads the
options field by field, which scapy's ``IPOption`` layers do not model; so they are read here
from the bytes, following ``packet-ip.c`` and checked against ``tshark`` frame by frame. The CIPSO
option's tags are not modelled: they are taken to fill the option. Nothing here raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final


class _Throws(Exception):
    """tshark's dissector throws here: it reads past its data and abandons the packet."""


_IPOPT_EOL = 0x00
_IPOPT_NOP = 0x01
_IPOPT_LSR = 0x83
_IPOPT_SSR = 0x89
_IPOPT_CIPSO = 0x86
_IPOPT_QUICKSTART = 0x19
#: IPv4 option -> bytes its tshark dissector reads (it throws on a shorter option). Others: 2.
_IP_OPTION_READS: Final[dict[int, int]] = {
    0x07: 3,  # record route
    0x0B: 4,  # MTU probe
    0x0C: 4,  # MTU reply
    _IPOPT_QUICKSTART: 8,  # 3 unless a rate request or report: see _ipv4_option_reads
    0x44: 4,  # timestamp
    0x52: 12,  # traceroute
    0x82: 3,  # security
    _IPOPT_LSR: 3,
    0x85: 3,  # extended security
    _IPOPT_CIPSO: 6,
    0x88: 4,  # stream id
    _IPOPT_SSR: 3,
    0x94: 4,  # router alert
}


def ipv4_options(raw: bytes, hlen: int) -> tuple[bytes | None, bool] | None:
    """tshark's view of the options of the IPv4 header ``raw[:hlen]`` (``hlen`` > 20).

    Returns ``(source-route destination or None, whether tshark dissects the payload)``, or
    ``None`` when tshark adds no ``ip.dst`` (the oracle then counts the frame as non-IP).

    Two passes, as in tshark. ``get_dst_offset`` walks the options by their length bytes to the
    first loose/strict source route; when its pointer is valid, the header's destination is not
    ``ip.dst``: a source route option's dissector adds its last hop instead, if its addresses
    fill it exactly. Then the option dissectors run (after a tree item spanning all options,
    which throws when they are cut), and one that reads past its option throws: dissection
    stops there, with no ports, and with no ``ip.dst`` if none was added yet.
    """
    try:
        routed = _has_source_route(raw, hlen)
    except _Throws:
        return None
    dst = None
    if len(raw) >= hlen:
        for off, opt, length in _options(raw, hlen):
            if length < _ipv4_option_reads(raw, off, opt, length):
                break
            if (
                routed
                and dst is None
                and opt in (_IPOPT_LSR, _IPOPT_SSR)
                and _valid_pointer(raw[off + 2], length)
                and (length - 3) & 3 == 0
            ):
                dst = raw[off + length - 4 : off + length]
        else:
            return (dst, True) if dst is not None or not routed else None
    return (dst, False) if dst is not None or not routed else None


def _options(raw: bytes, hlen: int) -> Iterator[tuple[int, int, int]]:
    """``(offset, type, length)`` of the IPv4 options with a length field, as tshark walks them.

    It stops at an end-of-list option and at a length byte that is missing, below 2 or runs past
    the header; raises :class:`_Throws` where it would read past the captured bytes.
    """
    caplen = len(raw)
    off, left = 20, hlen - 20
    while left > 0:
        if off >= caplen:
            raise _Throws
        opt = raw[off]
        left -= 1
        if opt == _IPOPT_EOL:
            return
        if opt == _IPOPT_NOP:
            off += 1
            continue
        if left == 0:
            return
        if off + 1 >= caplen:
            raise _Throws
        length = raw[off + 1]
        left -= 1
        if length < 2 or length - 2 > left:
            return
        yield off, opt, length
        off += length
        left -= length - 2


def _has_source_route(raw: bytes, hlen: int) -> bool:
    """tshark's ``get_dst_offset`` != 0: the first source route option has a valid pointer."""
    for off, opt, length in _options(raw, hlen):
        if opt in (_IPOPT_LSR, _IPOPT_SSR):
            if off + 2 >= len(raw):
                raise _Throws
            return _valid_pointer(raw[off + 2], length)
    return False


def _valid_pointer(pointer: int, length: int) -> bool:
    """A source route pointer that still points into the option (RFC 791)."""
    return 4 <= pointer <= length and not pointer & 3


def _ipv4_option_reads(raw: bytes, off: int, opt: int, length: int) -> int:
    """Bytes the tshark dissector of the option ``opt`` of ``length`` bytes at ``off`` reads."""
    if opt == _IPOPT_QUICKSTART and length >= 3:  # a rate request or report reads 8, others 3
        return 8 if raw[off + 2] >> 4 in (0, 8) else 3
    if opt == _IPOPT_CIPSO and length == 7:
        return 8  # the DOI, then a tag type without its length byte
    return _IP_OPTION_READS.get(opt, 2)
