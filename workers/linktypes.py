"""Link types: where, in a captured frame of a given LINKTYPE_*, the outermost IP header starts.

:func:`locate_ip` maps ``(linktype, frame bytes)`` to a :class:`~workers.framing.NetSpan` (which
network dissector the oracle's tshark would call, and the slice of the frame it would hand to
it) or ``None`` when tshark would find no IP header. The flow key needs nothing from link-layer
headers but that location, so they are walked from their type and length fields here and in
:mod:`workers.framing`, never turned into scapy objects; :mod:`workers.dissect` runs scapy on the
network and transport headers. Per link type, following TShark 4.0:

* Ethernet (1): see :mod:`workers.framing`.
* NULL (0): the address family in the capturing host's byte order, normalised as tshark does
  (either byte order, IRIX/UNICOS 16-bit variants); 2 is IPv4, 24/28/30 IPv6, above 1500 an
  ethertype; 0xff03 first is PPP. scapy's ``Loopback`` reads little-endian only.
  LOOP (108): the address family in network byte order, nothing else.
* PPP (9) and PPP in HDLC framing (50): one tshark dissector, :func:`workers.framing.ppp_hdlc`.
* Linux SLL (113, 16-byte header) and SLL2 (276, 20-byte header): ARPHRD_NETLINK carries no IP;
  protocol values <= 1536 are Linux pseudo-protocols (3 Ethernet, 4 802.2 LLC, 7 PPP in HDLC),
  larger ones ethertypes, or for ARPHRD_IPGRE GRE protocol types.
* Raw IP (101, and 12/14 as some files use): tshark's ``raw`` heuristics (PPP in HDLC at
  offset 0 or 6, ten zero bytes before IPv4), then the version nibble. scapy maps 14 nowhere
  on Linux. 228 is IPv4 and 229 IPv6 whatever the version nibble says.

Every demultiplexer only reads the frame and never raises.
"""

from __future__ import annotations

from collections.abc import Callable

from workers.framing import (
    IPV4,
    IPV6,
    NetSpan,
    ethernet,
    ethertype,
    gre_protocol,
    llc,
    ppp_hdlc,
    u16,
)

_ARPHRD_IPGRE = 778
_ARPHRD_NETLINK = 824
_BSD_AF_INET = 2
_BSD_AF_INET6 = frozenset((24, 28, 30))


def _cooked(data: bytes, off: int, hatype: int, protocol: int) -> NetSpan | None:
    """The payload of a Linux cooked header (SLL or SLL2)."""
    end = len(data)
    if hatype == _ARPHRD_NETLINK:
        return None
    if protocol > 1536:
        if hatype == _ARPHRD_IPGRE:
            return gre_protocol(data, off, end, protocol)
        return ethertype(data, off, end, protocol)
    if protocol == 0x0003:
        return ethernet(data, off, end)
    if protocol == 0x0004:
        return llc(data, off, end)
    if protocol == 0x0007:
        return ppp_hdlc(data, off, end)
    return None


def _link_ethernet(data: bytes) -> NetSpan | None:
    return ethernet(data, 0, len(data))


def _link_ppp(data: bytes) -> NetSpan | None:
    return ppp_hdlc(data, 0, len(data))


def _link_null(data: bytes) -> NetSpan | None:
    end = len(data)
    if end < 2:
        return None
    if data[0] == 0xFF and data[1] == 0x03:
        return ppp_hdlc(data, 0, end)
    if end < 4:
        return None
    family = int.from_bytes(data[:4], "little")  # tshark reads it in x86 host order
    if family & 0xFFFF0000:
        if family & 0xFF000000 == 0 and family & 0x00FF0000 < 0x00060000:
            family >>= 16  # IRIX / UNICOS 16-bit family in the upper half
        else:
            family = int.from_bytes(data[:4], "big")
    elif family & 0xFF == 0 and family & 0xFF00 < 0x0600:
        family = ((family & 0xFF) << 8) | (family >> 8)  # byte-swapped 16-bit family
    if family > 1500:
        return ethertype(data, 4, end, family & 0xFFFF)
    return _address_family(family, end)


def _address_family(family: int, end: int) -> NetSpan | None:
    if family == _BSD_AF_INET:
        return NetSpan(IPV4, 4, end)
    if family in _BSD_AF_INET6:
        return NetSpan(IPV6, 4, end)
    return None


def _link_loop(data: bytes) -> NetSpan | None:
    if len(data) < 4:
        return None
    return _address_family(int.from_bytes(data[:4], "big"), len(data))


def _link_raw(data: bytes) -> NetSpan | None:
    end = len(data)
    if end < 2:
        return None
    if data[0] == 0xFF and data[1] == 0x03:
        return ppp_hdlc(data, 0, end)
    if end < 8:
        return None
    if data[6] == 0xFF and data[7] == 0x03:  # Linux ISDN: fake MAC address, then PPP
        return ppp_hdlc(data, 6, end)
    if data[:10] == b"\x00" * 10:  # ISDN link down: ten zero bytes, then IPv4
        return NetSpan(IPV4, 10, end)
    nibble = data[0] >> 4
    if nibble == 4:
        return NetSpan(IPV4, 0, end)
    if nibble == 6:
        return NetSpan(IPV6, 0, end)
    return None


def _link_sll(data: bytes) -> NetSpan | None:
    if len(data) < 16:
        return None
    return _cooked(data, 16, u16(data, 2), u16(data, 14))


def _link_sll2(data: bytes) -> NetSpan | None:
    if len(data) < 20:
        return None
    return _cooked(data, 20, u16(data, 8), u16(data, 0))


def _link_ipv4(data: bytes) -> NetSpan | None:
    return NetSpan(IPV4, 0, len(data))


def _link_ipv6(data: bytes) -> NetSpan | None:
    return NetSpan(IPV6, 0, len(data))


#: LINKTYPE_* value -> demultiplexer. Anything else is an unsupported link type.
LINKTYPES: dict[int, Callable[[bytes], NetSpan | None]] = {
    0: _link_null,
    1: _link_ethernet,
    9: _link_ppp,
    12: _link_raw,
    14: _link_raw,
    50: _link_ppp,
    101: _link_raw,
    108: _link_loop,
    113: _link_sll,
    228: _link_ipv4,
    229: _link_ipv6,
    276: _link_sll2,
}


def locate_ip(linktype: int, data: bytes) -> NetSpan | None:
    """Where tshark would find the outermost IP header of ``data``; ``None``: it finds none.

    Raises ``KeyError`` for a ``linktype`` not in :data:`LINKTYPES`; never raises otherwise.
    """
    return LINKTYPES[linktype](data)
