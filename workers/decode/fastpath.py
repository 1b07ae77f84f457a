"""A fast, plain-Python decoder for the common frames, with scapy's dissector as the fallback.

Contract::

    res = decode(linktype, data)        # never raises
    res is a PacketInfo                 # == flowherd.workers.decode.dissect.dissect(linktype, data)
    res is a str                        # == dissect(...): "non_ip" or "unsupported_linktype"
    res is None                         # not sure: ask flowherd.workers.decode.dissect.dissect

    res = dissect_fast(linktype, data)  # decode(), or dissect() where decode() says None

The link layer is walked by the walker :mod:`flowherd.workers.decode.dissect` uses too: a link
type's entry of :data:`flowherd.workers.decode.linktypes.LINKTYPES`, then the tables of
:mod:`flowherd.workers.decode.framing` (for Ethernet, nearly every frame, :func:`decode` does the
Ethernet step's ethertype lookup in :data:`~flowherd.workers.decode.framing.ETHERTYPES` itself,
saving a call). Both engines therefore find the same IP header, or none (``"non_ip"``), by
construction, for every link type and encapsulation the walker knows, and teaching it one is one
table entry for both. :func:`decode` then reads the IP and transport headers with precomputed
:class:`struct.Struct` objects and bytes indexing. It answers only where the answer is certain to
equal :func:`flowherd.workers.decode.dissect.dissect`'s, and returns ``None`` for everything else,
so the one definition of a flow key stays in :mod:`flowherd.workers.decode.dissect`. It understands:

* IPv4 with a 20-byte header (version/IHL byte 0x45), total length >= 20, not a fragment (MF
  clear, offset 0, reserved bit clear);
* IPv6 with a non-zero payload length, walking hop-by-hop (0), routing (43) and destination
  options (60) headers that lie whole inside the payload: routing types 0 and 2 (with its home
  address) only, options only Pad1, PadN and router alert that fill their header exactly; a
  fragment header (44) is left to scapy;
* then a whole TCP (20 bytes) or UDP (8 bytes) header inside the IP payload and the captured
  bytes (ports, and TCP header byte 13 as the flags), or any other protocol (ports and flags 0).

``None`` (the caller falls back to scapy) covers: truncated or inconsistent IP headers, IPv4
options, fragments, PPP Van Jacobson TCP, cut transport headers, anything else unusual, and a
link step that raised (scapy's engine then counts the frame as ``dissect_error``).

The fast engine's workers fold whole batches with :func:`flowherd.workers.fold.vector.fold_vector`,
which reads the commonest of these layouts as numpy arrays and calls :func:`dissect_fast` for every
other frame.
"""

from __future__ import annotations

from collections.abc import Callable
from struct import Struct
from typing import TypeVar

from flowherd.workers.decode.dissect import NON_IP, UNSUPPORTED_LINKTYPE, PacketInfo, dissect
from flowherd.workers.decode.framing import ETHERTYPES, IPV4, IPV6, Next
from flowherd.workers.decode.headers import ETHERNET
from flowherd.workers.decode.linktypes import LINKTYPES

__all__ = ["decode", "dissect_fast"]

_R = TypeVar("_R")

_IPV6_WALKED = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_OPT_PAD1 = 0x00
_OPT_PADN = 0x01
_OPT_ROUTER_ALERT = 0x05
_IPV4_NO_FRAGMENT_MASK = 0xBFFF  # everything in the flags/offset word except DF

_LINKTYPE_ETHERNET = (
    1  # LINKTYPES[1]: flowherd.workers.decode.framing.ethernet, whose dispatch decode() inlines
)
_ETH_SIZE = ETHERNET.size
_ETH_TYPE = ETHERNET.at("type")
_ETH_TYPE_LOW = _ETH_TYPE + 1

_IPV4 = Struct("!BxHxxHxB2x4s4s")  # version/IHL, total length, flags/offset, protocol, src, dst
_IPV6 = Struct("!BxxxHBx16s16s")  # version/class, payload length, next header, src, dst
_TCP = Struct("!HH9xB")  # ports, header byte 13 (flags)
_IPV4_L4 = Struct(_IPV4.format + _TCP.format[1:])  # both, back to back
_IPV4_L4_SIZE = _IPV4_L4.size  # 34
_UDP = Struct("!HH")

# A NamedTuple's generated __new__ is a Python-level call; tuple.__new__ builds the same value.
_new = tuple.__new__
# Bound lookups: CPython 3.11 compiles ``IMPORTED_NAME.get(...)`` as an attribute load it cannot
# specialise, which costs this hot path a tenth of its time. The same dicts: entries added to
# the tables later are seen.
_linktype_entry = LINKTYPES.get
_ethertype_entry = ETHERTYPES.get


def _undecided(linktype: int, data: bytes) -> None:
    """:func:`decode`'s answer where it is not sure."""
    return None


def _decoder(
    fallback: Callable[[int, bytes], _R],
) -> Callable[[int, bytes], PacketInfo | str | _R]:
    """The decoder, answering ``fallback(linktype, data)`` wherever it is not sure.

    One body serves :func:`decode` and :func:`dissect_fast`, so the worker's per-frame call is
    one Python call, not two (a few percent of a common frame's time).
    """

    def decode(linktype: int, data: bytes) -> PacketInfo | str | _R:
        end = len(data)
        nxt: Next | None
        if linktype == _LINKTYPE_ETHERNET and end >= _ETH_SIZE:
            # ethernet()'s dispatch on its type field, done here for nearly every frame: an
            # entry of ETHERTYPES leads on from offset 14 (none: ethernet() reads the frame).
            nxt = _ethertype_entry((data[_ETH_TYPE] << 8) | data[_ETH_TYPE_LOW])
            off = _ETH_SIZE
        else:
            nxt = None
        if nxt is None:
            nxt, off = _linktype_entry(linktype), 0
            if nxt is None:
                return UNSUPPORTED_LINKTYPE
        if isinstance(nxt, int):
            kind = nxt
        else:
            try:
                span = nxt(data, off, end)
            except Exception:  # a broken step: dissect() counts the frame as dissect_error
                return fallback(linktype, data)
            if span is None:
                return NON_IP
            kind, off, end = span
        if kind == IPV4:
            if end - off >= _IPV4_L4_SIZE:
                # Nearly every frame: an IPv4 header without options and its first transport
                # bytes in one unpack, answered when the rules below would answer the same.
                vihl, total, fragment, proto, src, dst, sport, dport, flags = _IPV4_L4.unpack_from(
                    data, off
                )
                if vihl == 0x45 and not fragment & _IPV4_NO_FRAGMENT_MASK:
                    if proto == 6:
                        if total >= 40 and end - off >= 40:
                            return _new(PacketInfo, (src, dst, 6, sport, dport, flags))
                    elif proto == 17:
                        if total >= 28:
                            return _new(PacketInfo, (src, dst, 17, sport, dport, 0))
                    elif total >= 20:
                        return _new(PacketInfo, (src, dst, proto, 0, 0, 0))
            if end - off < 20:
                return fallback(linktype, data)
            vihl, total, fragment, proto, src, dst = _IPV4.unpack_from(data, off)
            if vihl != 0x45 or total < 20 or fragment & _IPV4_NO_FRAGMENT_MASK:
                return fallback(linktype, data)
            l4 = off + 20
            seg_end = off + total
            if seg_end > end:
                seg_end = end
        elif kind == IPV6:
            if end - off < 40:
                return fallback(linktype, data)
            vtc, plen, proto, src, dst = _IPV6.unpack_from(data, off)
            if vtc >> 4 != 6 or not plen:
                return fallback(linktype, data)
            l4 = off + 40
            seg_end = l4 + plen
            if seg_end > end:
                seg_end = end
            while proto in _IPV6_WALKED:
                if seg_end - l4 < 8:
                    return fallback(linktype, data)
                size = (data[l4 + 1] + 1) << 3
                if l4 + size > seg_end:
                    return fallback(linktype, data)
                if proto == 43:  # routing type 0, or 2 with its home address; others vary
                    if data[l4 + 2] and (data[l4 + 2] != 2 or size < 24):
                        return fallback(linktype, data)
                elif not _plain_options(data, l4 + 2, l4 + size, seg_end):
                    return fallback(linktype, data)
                proto = data[l4]
                l4 += size
            if proto == 44:
                return fallback(linktype, data)
        else:  # PPP Van Jacobson uncompressed TCP
            return fallback(linktype, data)

        if proto == 6:
            if seg_end - l4 < 20:
                return fallback(linktype, data)
            sport, dport, flags = _TCP.unpack_from(data, l4)
            return _new(PacketInfo, (src, dst, 6, sport, dport, flags))
        if proto == 17:
            if seg_end - l4 < 8:
                return fallback(linktype, data)
            sport, dport = _UDP.unpack_from(data, l4)
            return _new(PacketInfo, (src, dst, 17, sport, dport, 0))
        return _new(PacketInfo, (src, dst, proto, 0, 0, 0))

    return decode


#: Decode one frame where the result is certain; ``None`` where scapy must decide. A
#: non-``None`` result equals ``flowherd.workers.decode.dissect.dissect(linktype, data)``. Never
#: raises.
decode: Callable[[int, bytes], PacketInfo | str | None] = _decoder(_undecided)
#: :func:`decode`, falling back to ``flowherd.workers.decode.dissect.dissect`` frame by frame. Never
#: raises.
dissect_fast: Callable[[int, bytes], PacketInfo | str] = _decoder(dissect)
decode.__name__ = decode.__qualname__ = "decode"
dissect_fast.__name__ = dissect_fast.__qualname__ = "dissect_fast"


def _plain_options(data: bytes, pos: int, header_end: int, end: int) -> bool:
    """Whether the options of a hop-by-hop/destination options header are only Pad1, PadN and
    router alerts that fill it exactly (each with its type and length byte inside ``end``)."""
    while pos < header_end:
        if pos + 2 > end:
            return False
        kind = data[pos]
        if kind == _OPT_PAD1:
            pos += 1
        elif kind == _OPT_PADN or (kind == _OPT_ROUTER_ALERT and data[pos + 1] == 2):
            pos += 2 + data[pos + 1]
        else:
            return False
    return pos == header_end
