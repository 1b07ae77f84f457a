"""Link types: where, in a captured frame of a given LINKTYPE_*, the outermost IP header starts.

:func:`locate` is the one link walker of both engines: it maps ``(linktype, frame bytes)`` to a
:data:`~flowherd.workers.decode.framing.Span` (which network dissector the oracle's tshark would
call, and the slice of the frame it would hand to it), or ``None`` when tshark would find no IP
header or the link type is not in :data:`LINKTYPES`. It starts at the link type's entry of
:data:`LINKTYPES` and continues through the tables of :mod:`flowherd.workers.decode.framing`;
headers are read at the offsets of :mod:`flowherd.workers.decode.headers`, never turned into scapy
objects. Supporting a new link type is one entry here: a
:data:`~flowherd.workers.decode.framing.Next` (a step reading its header, or an IP kind). Per link
type, following TShark 4.0:

* Ethernet (1): :func:`flowherd.workers.decode.framing.ethernet`.
* NULL (0): the address family in the capturing host's byte order, normalised as tshark does
  (either byte order, IRIX/UNICOS 16-bit variants); 2 is IPv4, 24/28/30 IPv6, above 1500 an
  ethertype; 0xff03 first is PPP. scapy's ``Loopback`` reads little-endian only.
  LOOP (108): the address family in network byte order, nothing else.
* PPP (9) and PPP in HDLC framing (50): one tshark dissector,
:func:`flowherd.workers.decode.framing.ppp_hdlc`.
* Linux SLL (113, 16-byte header) and SLL2 (276, 20-byte header): ARPHRD_NETLINK carries no IP;
  protocol values <= 1536 are Linux pseudo-protocols (3 Ethernet, 4 802.2 LLC, 7 PPP in HDLC),
  larger ones ethertypes, or for ARPHRD_IPGRE GRE protocol types.
* Raw IP (101, and 12/14 as some files use): tshark's ``raw`` heuristics (PPP in HDLC at
  offset 0 or 6, ten zero bytes before IPv4), then the version nibble. scapy maps 14 nowhere
  on Linux. 228 is IPv4 and 229 IPv6 whatever the version nibble says.
* Linux NFLOG (239, ``tcpdump -i nflog:N``): :func:`nflog`. scapy has no NFLOG layer.

Every step only reads the frame and never raises.
"""

from __future__ import annotations

from collections.abc import Mapping

from flowherd.workers.decode.framing import (
    ETHERTYPES,
    GRE_PROTOCOLS,
    IPV4,
    IPV6,
    Next,
    Span,
    ethernet,
    follow,
    llc,
    ppp_hdlc,
    u16,
)
from flowherd.workers.decode.headers import LOOPBACK, NFLOG, NFLOG_TLV, SLL, SLL2

_ARPHRD_IPGRE = 778
_ARPHRD_NETLINK = 824
_LOOPBACK_SIZE = LOOPBACK.size
_SLL_HRD, _SLL_ETHTYPE = SLL.at("hrd"), SLL.at("ethtype")
_SLL2_HRD, _SLL2_ETHTYPE = SLL2.at("hrd"), SLL2.at("ethtype")
_ISDN_FAKE_MAC = 6  # Linux ISDN: a 6-byte fake MAC address before PPP in HDLC
_ISDN_LINK_DOWN = b"\x00" * 10  # ISDN with the link down: ten zero bytes before IPv4
_TSHARK_RAW_MIN = 8  # below 8 bytes tshark's raw IP heuristics throw
_NFLOG_FAMILY, _NFLOG_VERSION = NFLOG.at("family"), NFLOG.at("version")
_NFLOG_TLV_SIZE = NFLOG_TLV.size
_NFLOG_TLV_LENGTH, _NFLOG_TLV_TYPE = NFLOG_TLV.at("length"), NFLOG_TLV.at("type")
_NFULA_PACKET_HDR = 1  # value: hw_protocol (an ethertype, big-endian), hook, padding
_NFULA_PACKET_HDR_LENGTH = 8
_NFULA_PAYLOAD = 9  # value: the packet, from its network header
_NFULA_TYPE_MASK = 0x7FFF  # the top bit is netlink's NLA_F_NESTED
_NFULA_TYPES = 0x100  # attribute types are small: a larger one is read in the wrong byte order


def _is_ppp_in_hdlc(data: bytes, off: int) -> bool:
    """An ff-03 address/control pair at ``data[off]`` (the caller has checked it is there)."""
    return data[off] == 0xFF and data[off + 1] == 0x03


def _cooked(data: bytes, off: int, end: int, hrd: int, protocol: int) -> Span | None:
    """The payload of a Linux cooked header (SLL or SLL2) with ARPHRD_ type ``hrd``."""
    if hrd == _ARPHRD_NETLINK:
        return None
    if protocol > 1536:
        table = GRE_PROTOCOLS if hrd == _ARPHRD_IPGRE else ETHERTYPES
        return follow(table, protocol, data, off, end)
    return follow(COOKED_PROTOCOLS, protocol, data, off, end)


def sll(data: bytes, off: int, end: int) -> Span | None:
    """A Linux cooked v1 header (LINKTYPE_LINUX_SLL)."""
    if end - off < SLL.size:
        return None
    hrd, protocol = u16(data, off + _SLL_HRD), u16(data, off + _SLL_ETHTYPE)
    return _cooked(data, off + SLL.size, end, hrd, protocol)


def sll2(data: bytes, off: int, end: int) -> Span | None:
    """A Linux cooked v2 header (LINKTYPE_LINUX_SLL2)."""
    if end - off < SLL2.size:
        return None
    hrd, protocol = u16(data, off + _SLL2_HRD), u16(data, off + _SLL2_ETHTYPE)
    return _cooked(data, off + SLL2.size, end, hrd, protocol)


def null(data: bytes, off: int, end: int) -> Span | None:
    """A BSD loopback header in the capturing host's byte order (LINKTYPE_NULL), or PPP."""
    if end - off < 2:
        return None
    if _is_ppp_in_hdlc(data, off):
        return ppp_hdlc(data, off, end)
    if end - off < _LOOPBACK_SIZE:
        return None
    raw = data[off : off + _LOOPBACK_SIZE]
    family = int.from_bytes(raw, "little")  # tshark reads it in x86 host order
    if family & 0xFFFF0000:
        if family & 0xFF000000 == 0 and family & 0x00FF0000 < 0x00060000:
            family >>= 16  # IRIX / UNICOS 16-bit family in the upper half
        else:
            family = int.from_bytes(raw, "big")
    elif family & 0xFF == 0 and family & 0xFF00 < 0x0600:
        family = ((family & 0xFF) << 8) | (family >> 8)  # byte-swapped 16-bit family
    off += _LOOPBACK_SIZE
    if family > 1500:
        return follow(ETHERTYPES, family & 0xFFFF, data, off, end)
    return follow(BSD_FAMILIES, family, data, off, end)


def loop(data: bytes, off: int, end: int) -> Span | None:
    """A BSD loopback header in network byte order (LINKTYPE_LOOP)."""
    if end - off < _LOOPBACK_SIZE:
        return None
    family = int.from_bytes(data[off : off + _LOOPBACK_SIZE], "big")
    return follow(BSD_FAMILIES, family, data, off + _LOOPBACK_SIZE, end)


def raw(data: bytes, off: int, end: int) -> Span | None:
    """Raw IP (LINKTYPE_RAW) with tshark's PPP and ISDN heuristics, then the version nibble."""
    if end - off < 2:
        return None
    if _is_ppp_in_hdlc(data, off):
        return ppp_hdlc(data, off, end)
    if end - off < _TSHARK_RAW_MIN:
        return None
    if _is_ppp_in_hdlc(data, off + _ISDN_FAKE_MAC):
        return ppp_hdlc(data, off + _ISDN_FAKE_MAC, end)
    if data[off : off + len(_ISDN_LINK_DOWN)] == _ISDN_LINK_DOWN:
        return IPV4, off + len(_ISDN_LINK_DOWN), end
    return follow(IP_VERSIONS, data[off] >> 4, data, off, end)


def _host_u16(data: bytes, off: int, big: bool) -> int:
    """The 16-bit field at ``data[off]``, big- or little-endian (the caller checked it is there)."""
    return u16(data, off) if big else data[off + 1] << 8 | data[off]


def _nflog_tlvs_big_endian(data: bytes, pos: int, end: int) -> bool:
    """Whether the first TLV at ``data[pos]`` reads as a TLV in big-endian order only.

    TLV headers are in the capturing host's byte order, and a big-endian pcap file holds a
    big-endian host's, which tshark's file reader swaps (for NFLOG version 0) before it reads
    them in x86 order. A batch does not carry the file's byte order: the first TLV tells it.
    """
    if end - pos < _NFLOG_TLV_SIZE:
        return False
    return not _plausible_tlv(data, pos, False) and _plausible_tlv(data, pos, True)


def _plausible_tlv(data: bytes, pos: int, big: bool) -> bool:
    length = _host_u16(data, pos + _NFLOG_TLV_LENGTH, big)
    tlv_type = _host_u16(data, pos + _NFLOG_TLV_TYPE, big) & _NFULA_TYPE_MASK
    return length >= _NFLOG_TLV_SIZE and tlv_type < _NFULA_TYPES


def nflog(data: bytes, off: int, end: int) -> Span | None:
    """Linux NFLOG (LINKTYPE_NFLOG): the last NFULA_PAYLOAD TLV, as tshark's ``nflog`` reads it.

    The payload is an IP packet: the ethertype of an NFULA_PACKET_HDR TLV (one of value length
    4) says which when it is not 0, else the header's family (NFPROTO_IPV4 2, NFPROTO_IPV6 10).
    TLV headers are in x86 (little-endian) order, or big-endian where only that reads as a TLV
    (:func:`_nflog_tlvs_big_endian`). tshark finds no payload when a TLV's length is below 4,
    or when a TLV runs past the captured bytes (a frame cut by the snaplen inside its payload).
    """
    if end - off < NFLOG.size:
        return None
    family = data[off + _NFLOG_FAMILY]
    pos = off + NFLOG.size
    big = data[off + _NFLOG_VERSION] == 0 and _nflog_tlvs_big_endian(data, pos, end)
    hw_protocol, payload = 0, None
    while end - pos >= _NFLOG_TLV_SIZE:
        length = _host_u16(data, pos + _NFLOG_TLV_LENGTH, big)
        if length < _NFLOG_TLV_SIZE or length > end - pos:
            return None
        tlv_type = _host_u16(data, pos + _NFLOG_TLV_TYPE, big) & _NFULA_TYPE_MASK
        if tlv_type == _NFULA_PAYLOAD:
            payload = pos + _NFLOG_TLV_SIZE, pos + length
        elif tlv_type == _NFULA_PACKET_HDR and length == _NFULA_PACKET_HDR_LENGTH:
            hw_protocol = u16(data, pos + _NFLOG_TLV_SIZE)
        pos += (length + 3) & ~3
    if payload is None:
        return None
    start, stop = payload
    if hw_protocol:
        return follow(ETHERTYPES, hw_protocol, data, start, stop)
    return follow(NFPROTO_FAMILIES, family, data, start, stop)


#: BSD address family (NULL, LOOP) -> what follows: AF_INET, and the BSDs' AF_INET6 values.
BSD_FAMILIES: dict[int, Next] = {2: IPV4, 24: IPV6, 28: IPV6, 30: IPV6}
#: Linux pseudo-protocol of a cooked header (<= 1536) -> what follows.
COOKED_PROTOCOLS: dict[int, Next] = {0x0003: ethernet, 0x0004: llc, 0x0007: ppp_hdlc}
#: IP version nibble of a raw IP frame -> its dissector.
IP_VERSIONS: dict[int, Next] = {4: IPV4, 6: IPV6}
#: Netfilter protocol family of an NFLOG header -> its payload's dissector.
NFPROTO_FAMILIES: dict[int, Next] = {2: IPV4, 10: IPV6}

#: LINKTYPE_* value -> what the frame starts with. Anything else is an unsupported link type.
LINKTYPES: dict[int, Next] = {
    0: null,
    1: ethernet,
    9: ppp_hdlc,
    12: raw,
    14: raw,
    50: ppp_hdlc,
    101: raw,
    108: loop,
    113: sll,
    228: IPV4,
    229: IPV6,
    239: nflog,
    276: sll2,
}


def locate(linktype: int, data: bytes, linktypes: Mapping[int, Next] = LINKTYPES) -> Span | None:
    """Where tshark would find the outermost IP header of ``data``, captured with ``linktype``.

    ``None``: it finds none, or ``linktype`` is not in ``linktypes`` (tell the two apart with
    ``linktype in linktypes``). Never raises for a table of well-behaved steps.
    """
    return follow(linktypes, linktype, data, 0, len(data))
