"""Link-layer framing inside a frame: the encapsulations between a capture's link header and IP.

Each function takes the frame, the offset of a header and the end of the bytes that header may
use (an 802.3 or PPPoE length can end it before the frame does), and returns the
:class:`NetSpan` of the IP header tshark would dissect next, or ``None`` when it finds none.
They only read ``data``, never raise, and return ``None`` for a header too short for what
tshark reads (it throws before it reaches an IP header). The dispatch follows TShark 4.0 (the
oracle), checked frame by frame against it, including where scapy's bindings disagree:

* ethertypes: IPv4 0x0800, IPv6 0x86dd, 802.1Q/802.1ad/QinQ 0x8100/0x88a8/0x9100 (scapy binds
  neither 0x9100 nor, under SLL, 0x88a8), MPLS 0x8847/0x8848 (scapy binds 0x8847 only, and only
  once ``scapy.contrib.mpls`` is loaded), PPPoE session 0x8864, 802.1ah 0x88e7 and transparent
  Ethernet bridging 0x6558 (both carry a whole Ethernet frame); anything else carries no IP.
* Ethernet: a type/length field >= 1536 is an ethertype, 1501-1535 carries nothing, <= 1500 is
  802.3: Cisco ISL, raw IPX, else 802.2 LLC bounded by the length, with SNAP (OUI 00-00-00 or
  00-00-F8: an ethertype follows) or DSAP 0x06 carrying IPv4.
* MPLS: labels up to the bottom of stack; a bottom label 14 (OAM alert) carries no IP; then the
  first nibble says IPv4 (4) or IPv6 (6); a bottom label 13 (GAL) or nibble 1 starts an
  associated channel whose channel type may be IPv4 or IPv6. Nibble 0 is an Ethernet
  pseudowire, with or without a control word: tshark decides with its OUI database, which
  :func:`_pseudowire` approximates. scapy would guess Ethernet for other nibbles too.
* PPPoE session: the PPP payload is bounded by the PPPoE length, has no address/control bytes,
  whatever the PPPoE code (scapy binds PPP for code 0 only and ignores the length).
* PPP: an 0xff address byte is followed by a control byte; a 0x0f/0x8f first byte is Cisco HDLC
  (an ethertype follows). The protocol field may be compressed to one byte: 0x0021 IPv4,
  0x0057 IPv6, 0x0281/0x0283 MPLS (scapy does not bind MPLS to PPP), 0x002f Van Jacobson
  uncompressed TCP (an IPv4 header whose protocol byte holds a slot number: tshark counts TCP).
"""

from __future__ import annotations

from typing import NamedTuple

#: Network dissector tshark would call on a :class:`NetSpan`.
IPV4 = 4  # tshark's "ip": IPv4 when the version nibble is 4, otherwise a malformed IP header
IPV6 = 6  # tshark's "ipv6": no IP header unless the version nibble is 6
VJ_TCP = 0x2F  # PPP Van Jacobson uncompressed TCP: IPv4, protocol byte replaced by TCP

_ETH_HEADER = 14
_LLC_SAP_SNAP = 0xAA
_LLC_SAP_IP = 0x06
_SNAP_ETHERTYPE_OUIS = (b"\x00\x00\x00", b"\x00\x00\xf8")
_ISL_HEADER = 26
_MPLS_LABEL_GAL = 13
_MPLS_LABEL_OAM_ALERT = 14


class NetSpan(NamedTuple):
    """The network header tshark would dissect: its dissector and ``data[start:end]``."""

    kind: int
    start: int
    end: int


def u16(data: bytes, off: int) -> int:
    """The big-endian 16-bit field at ``data[off]`` (the caller has checked it is there)."""
    return (data[off] << 8) | data[off + 1]


def ethertype(data: bytes, off: int, end: int, etype: int) -> NetSpan | None:
    """Dispatch on an ethertype (Ethernet II, VLAN, SNAP, SLL, NULL, Cisco HDLC)."""
    if etype == 0x0800:
        return NetSpan(IPV4, off, end)
    if etype == 0x86DD:
        return NetSpan(IPV6, off, end)
    if etype in (0x8100, 0x88A8, 0x9100):
        return _vlan(data, off, end)
    if etype in (0x8847, 0x8848):
        return _mpls(data, off, end)
    if etype == 0x8864:
        return _pppoe_session(data, off, end)
    if etype == 0x88E7:  # 802.1ah I-tag, then a whole customer Ethernet frame
        return ethernet(data, off + 4, end) if off + 4 <= end else None
    if etype == 0x6558:
        return ethernet(data, off, end)
    return None


def ethernet(data: bytes, off: int, end: int) -> NetSpan | None:
    """An Ethernet header: an ethertype, or an 802.3 length (Cisco ISL, raw IPX, LLC)."""
    if end - off < _ETH_HEADER:
        return None
    etype = u16(data, off + 12)
    if etype >= 1536:
        return ethertype(data, off + _ETH_HEADER, end, etype)
    if etype > 1500:
        return None
    if data[off] in (0x01, 0x0C) and data[off + 1 : off + 5] == b"\x00\x0c\x00\x00":
        # Cisco ISL: a 26-byte header, then the tagged frame (type nibble 0: Ethernet).
        if end - off < _ISL_HEADER or data[off + 5] >> 4:
            return None
        return ethernet(data, off + _ISL_HEADER, end)
    return _ieee8023(data, off + _ETH_HEADER, end, etype)


def _ieee8023(data: bytes, off: int, end: int, length: int) -> NetSpan | None:
    """An 802.3 length field: raw IPX (0xffff) or 802.2 LLC, bounded by the length."""
    if end - off >= 2 and data[off] == 0xFF and data[off + 1] == 0xFF:
        return None
    return llc(data, off, min(end, off + length))


def _vlan(data: bytes, off: int, end: int) -> NetSpan | None:
    """An 802.1Q/802.1ad tag: TCI, then an ethertype or an 802.3 length."""
    if end - off < 4:
        return None
    etype = u16(data, off + 2)
    if etype <= 1500:
        return _ieee8023(data, off + 4, end, etype)
    return ethertype(data, off + 4, end, etype)


def llc(data: bytes, off: int, end: int) -> NetSpan | None:
    """An 802.2 LLC header: SNAP with an ethertype, or the IP SAP for I and UI frames."""
    if end - off < 3:
        return None
    dsap, ssap, control = data[off], data[off + 1], data[off + 2]
    # U-format control fields are one byte, I- and S-format ones two.
    hdr = off + 3 if control & 0x03 == 0x03 else off + 4
    if dsap == _LLC_SAP_SNAP and ssap == _LLC_SAP_SNAP:
        if end - hdr < 5 or data[hdr : hdr + 3] not in _SNAP_ETHERTYPE_OUIS:
            return None
        return ethertype(data, hdr + 5, end, u16(data, hdr + 3))
    is_info = control & 0x01 == 0
    is_ui = control & 0xEF == 0x03
    if dsap == _LLC_SAP_IP and (is_info or is_ui) and hdr < end:
        return NetSpan(IPV4, hdr, end)
    return None


def _mpls(data: bytes, off: int, end: int) -> NetSpan | None:
    """An MPLS label stack, then what its bottom label and first payload nibble announce."""
    while True:
        if end - off < 4:
            return None
        label = (data[off] << 12) | (data[off + 1] << 4) | (data[off + 2] >> 4)
        bottom = data[off + 2] & 0x01
        off += 4
        if bottom:
            break
    if label == _MPLS_LABEL_OAM_ALERT or off >= end:
        return None
    nibble = data[off] >> 4
    if label == _MPLS_LABEL_GAL or nibble == 1:
        return _associated_channel(data, off, end)
    if nibble == 4:
        return NetSpan(IPV4, off, end)
    if nibble == 6:
        return NetSpan(IPV6, off, end)
    if nibble == 0:
        return _pseudowire(data, off, end)
    return None


def _associated_channel(data: bytes, off: int, end: int) -> NetSpan | None:
    """A pseudowire associated channel header: its channel type may be IPv4 or IPv6."""
    if end - off < 4:
        return None
    channel = u16(data, off + 2)
    if channel == 0x0021:
        return NetSpan(IPV4, off + 4, end)
    if channel == 0x0057:
        return NetSpan(IPV6, off + 4, end)
    return None


def _looks_like_ethernet(data: bytes, off: int, end: int) -> bool:
    """Approximates tshark's "both MAC addresses have a known vendor OUI" test.

    tshark consults its manufacturer database; without it, an all-zero OUI (what a pseudowire
    control word looks like) is taken as unknown and any other OUI as known.
    """
    return (
        end - off >= _ETH_HEADER
        and data[off : off + 3] != b"\x00\x00\x00"
        and data[off + 6 : off + 9] != b"\x00\x00\x00"
    )


def _pseudowire(data: bytes, off: int, end: int) -> NetSpan | None:
    """Ethernet over MPLS: without a control word when it looks like Ethernet, else with one."""
    if _looks_like_ethernet(data, off, end):
        return ethernet(data, off, end)
    return ethernet(data, off + 4, end)


def _pppoe_session(data: bytes, off: int, end: int) -> NetSpan | None:
    """A PPPoE session header, then PPP bounded by its payload length."""
    if end - off < 6:
        return None
    payload_end = min(end, off + 6 + u16(data, off + 4))
    return _ppp_protocol(data, off + 6, payload_end)


def _ppp_protocol(data: bytes, off: int, end: int) -> NetSpan | None:
    """A PPP protocol field, possibly compressed to one byte (low bit set), then its payload."""
    if off >= end:
        return None
    if data[off] & 0x01:
        protocol, off = data[off], off + 1
    elif end - off >= 2:
        protocol, off = u16(data, off), off + 2
    else:
        return None
    if protocol == 0x0021:
        return NetSpan(IPV4, off, end)
    if protocol == 0x0057:
        return NetSpan(IPV6, off, end)
    if protocol in (0x0281, 0x0283):
        return _mpls(data, off, end)
    if protocol == 0x002F:
        return NetSpan(VJ_TCP, off, end)
    return None


def ppp_hdlc(data: bytes, off: int, end: int) -> NetSpan | None:
    """PPP with optional HDLC address/control bytes, or Cisco HDLC (tshark's ``ppp_hdlc``)."""
    if off >= end:
        return None
    first = data[off]
    if first == 0xFF:
        return _ppp_protocol(data, off + 2, end)
    if first in (0x0F, 0x8F):
        if end - off < 4:
            return None
        return ethertype(data, off + 4, end, u16(data, off + 2))
    return _ppp_protocol(data, off, end)


def gre_protocol(data: bytes, off: int, end: int, protocol: int) -> NetSpan | None:
    """A GRE protocol type (tshark's ``gre.proto`` table: not the whole ethertype table)."""
    if protocol in (0x0800, 0x86DD, 0x6558, 0x8847, 0x8848):
        return ethertype(data, off, end, protocol)
    if protocol == 0x880B:
        return ppp_hdlc(data, off, end)
    return None
