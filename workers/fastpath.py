"""A fast, plain-Python decoder for the common frames, with scapy's dissector as the fallback.

Contract::

    res = decode(linktype, data)        # never raises
    res is a PacketInfo                 # == workers.dissect.dissect(linktype, data)
    res == "non_ip"                     # == dissect(...): a known non-IP ethertype
    res is None                         # not sure: ask workers.dissect.dissect

    res = dissect_fast(linktype, data)  # decode(), or dissect() where decode() says None

:func:`decode` reads the headers with precomputed :class:`struct.Struct` objects and bytes indexing.
It answers only where the answer is certain to equal :func:`workers.dissect.dissect`'s, and returns
``None`` for everything else, so the one definition of a flow key stays in
:mod:`workers.dissect`/:mod:`workers.linktypes`. It understands:

* link layers: Ethernet (1) with any stack of 802.1Q/802.1ad/0x9100 tags, MPLS label stacks
  (0x8847/0x8848; IPv4 or IPv6 by the first nibble after the bottom of stack), PPPoE session
  (0x8864, version/type 0x11, code 0, PPP protocol 0x0021/0x0057 uncompressed); Linux SLL (113)
  and SLL2 (276) with an ethertype (only IPv4/IPv6 under ARPHRD_IPGRE); raw IP (101, 12, 14, 228,
  229); NULL (0; AF_INET/AF_INET6 in either byte order) and LOOP (108; network byte order);
* IPv4 with a 20-byte header (version/IHL byte 0x45), total length >= 20, not a fragment (MF
  clear, offset 0, reserved bit clear);
* IPv6 with a non-zero payload length, walking hop-by-hop (0), routing (43) and destination
  options (60) headers that lie whole inside the payload: routing types 0 and 2 (with its home
  address) only, options only Pad1, PadN and router alert that fill their header exactly; a
  fragment header (44) is left to scapy;
* then a whole TCP (20 bytes) or UDP (8 bytes) header inside the IP payload and the captured
  bytes (ports, and TCP header byte 13 as the flags), or any other protocol (ports and flags 0).

``None`` (the caller falls back to scapy) covers: truncated or inconsistent headers, IPv4 options,
fragments, VLAN tags over 802.3 lengths, MPLS pseudowires and reserved labels, PPP (9, 50), other
link types, PPP-in-HDLC or ISDN heuristics under raw IP, 16-bit NULL families, and anything else
unusual. ``"non_ip"`` is returned only for a complete link header whose final ethertype is one of
:data:`NON_IP_ETHERTYPES`.
"""

from __future__ import annotations

from struct import Struct
from typing import Final

from workers.dissect import NON_IP, PacketInfo, dissect

__all__ = ["NON_IP_ETHERTYPES", "decode", "dissect_fast"]

#: Ethertypes that never lead to an IP header (ARP, RARP, Wake-on-LAN, MAC control, slow
#: protocols, PPPoE discovery, EAPOL, LLDP, PTP, CFM, Ethernet loopback).
NON_IP_ETHERTYPES: Final = frozenset(
    (0x0806, 0x8035, 0x0842, 0x8808, 0x8809, 0x8863, 0x888E, 0x88CC, 0x88F7, 0x8902, 0x9000)
)

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_VLAN_ETHERTYPES = frozenset((0x8100, 0x88A8, 0x9100))
_MPLS_ETHERTYPES = frozenset((0x8847, 0x8848))
_ETHERTYPE_PPPOE_SESSION = 0x8864
_MPLS_RESERVED_LABELS = frozenset((13, 14))  # GAL (an associated channel), OAM alert
_ARPHRD_NETLINK = 824
_ARPHRD_IPGRE = 778
_GRE_PROTOCOLS_IP = frozenset((_ETHERTYPE_IPV4, _ETHERTYPE_IPV6))
_RAW_IP_LINKTYPES = frozenset((101, 12, 14))
# NULL/LOOP address family (AF_INET, and the BSDs' AF_INET6 values) -> IPv6?, keyed by the 4
# header bytes read little-endian: NULL has it in either byte order, LOOP in network order only.
_AF_IPV6 = {2: False, 24: True, 28: True, 30: True}
_FAMILIES_BE: Final = {
    int.from_bytes(af.to_bytes(4, "big"), "little"): v for af, v in _AF_IPV6.items()
}
_FAMILIES_EITHER: Final = {**_FAMILIES_BE, **_AF_IPV6}
_IPV6_WALKED = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_OPT_PAD1 = 0x00
_OPT_PADN = 0x01
_OPT_ROUTER_ALERT = 0x05
_IPV4_NO_FRAGMENT_MASK = 0xBFFF  # everything in the flags/offset word except DF

_IPV4 = Struct("!BxHxxHxB2x4s4s")  # version/IHL, total length, flags/offset, protocol, src, dst
_IPV6 = Struct("!BxxxHBx16s16s")  # version/class, payload length, next header, src, dst
_TCP = Struct("!HH9xB")  # ports, header byte 13 (flags)
_UDP = Struct("!HH")

# A NamedTuple's generated __new__ is a Python-level call; tuple.__new__ builds the same value.
_new = tuple.__new__

#: Where the IP header of a frame is: (IPv6?, start offset, end offset of the IP span).
_Span = tuple[bool, int, int]


def decode(linktype: int, data: bytes) -> PacketInfo | str | None:
    """Decode one frame where the result is certain; ``None`` where scapy must decide.

    A non-``None`` result equals ``workers.dissect.dissect(linktype, data)``. Never raises.
    """
    end = len(data)
    where: _Span | str | None
    if linktype == 1 and end >= 14:
        etype = (data[12] << 8) | data[13]
        if etype == _ETHERTYPE_IPV4:
            v6, off = False, 14
        elif etype == _ETHERTYPE_IPV6:
            v6, off = True, 14
        else:
            where = _ethertype(data, 14, end, etype)
            if where is None or isinstance(where, str):
                return where
            v6, off, end = where
    else:
        where = _link(linktype, data, end)
        if where is None or isinstance(where, str):
            return where
        v6, off, end = where

    if v6:
        if end - off < 40:
            return None
        vtc, plen, proto, src, dst = _IPV6.unpack_from(data, off)
        if vtc >> 4 != 6 or not plen:
            return None
        l4 = off + 40
        seg_end = l4 + plen
        if seg_end > end:
            seg_end = end
        while proto in _IPV6_WALKED:
            if seg_end - l4 < 8:
                return None
            size = (data[l4 + 1] + 1) << 3
            if l4 + size > seg_end:
                return None
            if proto == 43:  # routing type 0, or 2 with its home address; others vary
                if data[l4 + 2] and (data[l4 + 2] != 2 or size < 24):
                    return None
            elif not _plain_options(data, l4 + 2, l4 + size, seg_end):
                return None
            proto = data[l4]
            l4 += size
        if proto == 44:
            return None
    else:
        if end - off < 20:
            return None
        vihl, total, fragment, proto, src, dst = _IPV4.unpack_from(data, off)
        if vihl != 0x45 or total < 20 or fragment & _IPV4_NO_FRAGMENT_MASK:
            return None
        l4 = off + 20
        seg_end = off + total
        if seg_end > end:
            seg_end = end

    if proto == 6:
        if seg_end - l4 < 20:
            return None
        sport, dport, flags = _TCP.unpack_from(data, l4)
        return _new(PacketInfo, (src, dst, 6, sport, dport, flags))
    if proto == 17:
        if seg_end - l4 < 8:
            return None
        sport, dport = _UDP.unpack_from(data, l4)
        return _new(PacketInfo, (src, dst, 17, sport, dport, 0))
    return _new(PacketInfo, (src, dst, proto, 0, 0, 0))


def dissect_fast(linktype: int, data: bytes) -> PacketInfo | str:
    """:func:`decode`, falling back to ``workers.dissect.dissect`` frame by frame. Never raises."""
    res = decode(linktype, data)
    if res is None:
        return dissect(linktype, data)
    return res


def _ethertype(data: bytes, off: int, end: int, etype: int) -> _Span | str | None:
    """Follow an ethertype at ``data[off:end]`` through VLAN tags, MPLS and PPPoE."""
    while etype in _VLAN_ETHERTYPES:
        if end - off < 4:
            return None
        etype = (data[off + 2] << 8) | data[off + 3]
        off += 4
    if etype == _ETHERTYPE_IPV4:
        return False, off, end
    if etype == _ETHERTYPE_IPV6:
        return True, off, end
    if etype in _MPLS_ETHERTYPES:
        return _mpls(data, off, end)
    if etype == _ETHERTYPE_PPPOE_SESSION:
        return _pppoe(data, off, end)
    if etype in NON_IP_ETHERTYPES:
        return NON_IP
    return None


def _mpls(data: bytes, off: int, end: int) -> _Span | None:
    """An MPLS label stack, then IPv4 or IPv6 by the first nibble after the bottom label."""
    while True:
        if end - off < 4:
            return None
        off += 4
        if data[off - 2] & 0x01:  # bottom of stack
            break
    label = (data[off - 4] << 12) | (data[off - 3] << 4) | (data[off - 2] >> 4)
    if label in _MPLS_RESERVED_LABELS or off >= end:
        return None
    nibble = data[off] >> 4
    if nibble == 4:
        return False, off, end
    if nibble == 6:
        return True, off, end
    return None


def _pppoe(data: bytes, off: int, end: int) -> _Span | None:
    """A PPPoE session header; its length field bounds the PPP frame."""
    if end - off < 8 or data[off] != 0x11 or data[off + 1] != 0:
        return None
    payload_end = off + 6 + ((data[off + 4] << 8) | data[off + 5])
    if payload_end > end:
        payload_end = end
    if payload_end - off < 8:
        return None
    protocol = (data[off + 6] << 8) | data[off + 7]
    if protocol == 0x0021:
        return False, off + 8, payload_end
    if protocol == 0x0057:
        return True, off + 8, payload_end
    return None


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


def _link(linktype: int, data: bytes, end: int) -> _Span | str | None:
    """Every link type but a complete Ethernet header."""
    if linktype in _RAW_IP_LINKTYPES:
        # Below 8 bytes, or with PPP-in-HDLC at offset 0 or 6, tshark's heuristics decide.
        if end < 8 or (data[0] == 0xFF and data[1] == 0x03) or (data[6] == 0xFF and data[7] == 3):
            return None
        nibble = data[0] >> 4
        if nibble == 4:
            return False, 0, end
        if nibble == 6:
            return True, 0, end
        return None
    if linktype == 113 or linktype == 276:
        if linktype == 113:
            if end < 16:
                return None
            hatype, protocol, off = (data[2] << 8) | data[3], (data[14] << 8) | data[15], 16
        else:
            if end < 20:
                return None
            hatype, protocol, off = (data[8] << 8) | data[9], (data[0] << 8) | data[1], 20
        if hatype == _ARPHRD_NETLINK or protocol <= 1536:
            return None
        if hatype == _ARPHRD_IPGRE and protocol not in _GRE_PROTOCOLS_IP:
            return None  # a GRE protocol type, not an ethertype: tshark's table differs
        return _ethertype(data, off, end, protocol)
    if linktype == 0 or linktype == 108:
        if end < 4:
            return None
        families = _FAMILIES_EITHER if linktype == 0 else _FAMILIES_BE
        v6 = families.get(int.from_bytes(data[:4], "little"))
        return None if v6 is None else (v6, 4, end)
    if linktype == 228:
        return False, 0, end
    if linktype == 229:
        return True, 0, end
    return None
