"""Encapsulations between a link header and IP: the table-driven half of the one link walker.

Both engines (:mod:`flowherd.workers.decode.dissect`, :mod:`flowherd.workers.decode.fastpath`) find
the outermost IP header with :func:`flowherd.workers.decode.linktypes.locate`, which starts at a
link type's entry in :data:`flowherd.workers.decode.linktypes.LINKTYPES` and continues through the
tables of this module.
Vocabulary:

* a :data:`Span` ``(kind, start, end)``: the network dissector tshark would call (:data:`IPV4`,
  :data:`IPV6` or :data:`VJ_TCP`) on ``data[start:end]``;
* a :data:`Step` ``step(data, off, end) -> Span | None``: reads the header at ``data[off]``
  (using no byte at or past ``end``: an 802.3 or PPPoE length can end it before the frame does)
  and returns the span it leads to, or ``None`` where tshark finds no IP header. Steps only read
  ``data``, never raise, and return ``None`` for a header too short for what tshark reads;
* a :data:`Next`, what a table maps a protocol number to: a kind (an IP header starts right
  here) or the step for the next header. Teaching the walker a protocol is one table entry.

Header fields are read at the offsets of :mod:`flowherd.workers.decode.headers` (dpkt's names). The
tables follow TShark 4.0 (the oracle), checked frame by frame against it, including where scapy's
bindings
disagree:

* :data:`ETHERTYPES`: IPv4, IPv6, 802.1Q/802.1ad/QinQ 0x8100/0x88a8/0x9100 (scapy binds neither
  0x9100 nor, under SLL, 0x88a8), MPLS 0x8847/0x8848 (scapy binds 0x8847 only, and only once
  ``scapy.contrib.mpls`` is loaded), PPPoE session 0x8864, 802.1ah 0x88e7 and transparent
  Ethernet bridging 0x6558 (both carry a whole Ethernet frame); anything else carries no IP.
* Ethernet: a type/length field >= 1536 is an ethertype, 1501-1535 carries nothing, <= 1500 is
  802.3: Cisco ISL, raw IPX, else 802.2 LLC bounded by the length, with SNAP (OUI 00-00-00 or
  00-00-F8: an ethertype follows) or DSAP 0x06 carrying IPv4. A VLAN tag's type field likewise.
* MPLS: labels up to the bottom of stack; a bottom label 14 (OAM alert) carries no IP, 13 (GAL)
  an associated channel; otherwise the first payload nibble (:data:`MPLS_PAYLOADS`): IPv4 (4),
  IPv6 (6), associated channel (1), whose channel type may be IPv4 or IPv6, or an Ethernet
  pseudowire (0), with or without a control word: tshark decides with its OUI database, which
  :func:`pseudowire` approximates. scapy would guess Ethernet for other nibbles too.
* PPPoE session: the PPP payload is bounded by the PPPoE length, has no address/control bytes,
  whatever the PPPoE code (scapy binds PPP for code 0 only and ignores the length).
* PPP (:data:`PPP_PROTOCOLS`): an 0xff address byte is followed by a control byte; a 0x0f/0x8f
  first byte is Cisco HDLC (an ethertype follows). The protocol field may be compressed to one
  byte: 0x0021 IPv4, 0x0057 IPv6, 0x0281/0x0283 MPLS (scapy does not bind MPLS to PPP), 0x002f
  Van Jacobson uncompressed TCP (an IPv4 header whose protocol byte holds a slot number: tshark
  counts TCP).
* :data:`GRE_PROTOCOLS`: tshark's ``gre.proto`` table, not the whole ethertype table.

Stacked tags and labels are walked in loops; nested frames (ISL, 802.1ah, bridging,
pseudowires) recurse, at least 14 bytes of frame per level.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias

from flowherd.workers.decode.headers import (
    CHDLC,
    ETHERNET,
    ISL,
    ITAG,
    LLC,
    MPLS,
    PPPOE,
    PW_CONTROL_WORD,
    PWACH,
    SNAP,
    VLAN,
)

#: Network dissector tshark would call on a :data:`Span`.
IPV4 = 4  # tshark's "ip": IPv4 when the version nibble is 4, otherwise a malformed IP header
IPV6 = 6  # tshark's "ipv6": no IP header unless the version nibble is 6
VJ_TCP = 0x2F  # PPP Van Jacobson uncompressed TCP: IPv4, protocol byte replaced by TCP

#: ``(kind, start, end)``: tshark's network dissector ``kind`` gets ``data[start:end]``.
Span: TypeAlias = tuple[int, int, int]
#: ``step(data, off, end)``: the span the header at ``data[off]`` leads to; never raises.
Step: TypeAlias = Callable[[bytes, int, int], "Span | None"]
#: A table entry: an IP kind (the header starts here) or the step for the next header.
Next: TypeAlias = "int | Step"

_ETH_SIZE = ETHERNET.size
_ETH_TYPE = ETHERNET.at("type")
_ETH_DST, _ETH_SRC = ETHERNET.at("dst"), ETHERNET.at("src")
_VLAN_SIZE = VLAN.size
_VLAN_TYPE = VLAN.at("type")
_ISL_DA = ISL.at("da")
_ISL_TYPE = ISL.at("_type_pri")
_ISL_DA_FIRST = (0x01, 0x0C)  # 01-00-0c-00-00, or 0c-00-0c-00-00 for some devices
_ISL_DA_REST = b"\x00\x0c\x00\x00"
_LLC_SAP_SNAP = 0xAA
_LLC_SAP_IP = 0x06
_SNAP_OUI = SNAP.at("oui")
_SNAP_TYPE = SNAP.at("type")
_SNAP_OUIS = (b"\x00\x00\x00", b"\x00\x00\xf8")  # an ethertype follows them
_RAW_IPX = 0xFF  # an 802.3 frame starting ff-ff is Novell raw IPX, not LLC
_MPLS_SIZE = MPLS.size
_MPLS_LABEL_GAL = 13
_MPLS_LABEL_OAM_ALERT = 14
_PWACH_CHANNEL_TYPE = PWACH.at("channel_type")
_PPPOE_LEN = PPPOE.at("len")
_PPP_ADDRESS = 0xFF  # then a control byte
_CHDLC_ADDRESSES = (0x0F, 0x8F)
_CHDLC_TYPE = CHDLC.at("type")


def u16(data: bytes, off: int) -> int:
    """The big-endian 16-bit field at ``data[off]`` (the caller has checked it is there)."""
    return (data[off] << 8) | data[off + 1]


def follow(table: Mapping[int, Next], key: int, data: bytes, off: int, end: int) -> Span | None:
    """Where ``table[key]`` leads from ``data[off:end]``; ``None`` when ``key`` is not in it."""
    nxt = table.get(key)
    if nxt is None:
        return None
    if isinstance(nxt, int):
        return nxt, off, end
    return nxt(data, off, end)


def ethernet(data: bytes, off: int, end: int) -> Span | None:
    """An Ethernet header: an ethertype, or an 802.3 length (Cisco ISL, raw IPX, LLC)."""
    if end - off < _ETH_SIZE:
        return None
    etype = (data[off + _ETH_TYPE] << 8) | data[off + _ETH_TYPE + 1]
    if etype >= 1536:
        # follow(ETHERTYPES, ...) written out: this is every Ethernet frame's path
        nxt = ETHERTYPES.get(etype)
        if nxt is None:
            return None
        if isinstance(nxt, int):
            return nxt, off + _ETH_SIZE, end
        return nxt(data, off + _ETH_SIZE, end)
    if etype > 1500:
        return None
    if data[off + _ISL_DA] in _ISL_DA_FIRST and data[off + 1 : off + 5] == _ISL_DA_REST:
        return _isl(data, off, end)
    return _ieee8023(data, off + _ETH_SIZE, end, etype)


def _isl(data: bytes, off: int, end: int) -> Span | None:
    """Cisco ISL: a 26-byte header, then the tagged frame (type nibble 0: Ethernet)."""
    if end - off < ISL.size or data[off + _ISL_TYPE] >> 4:
        return None
    return ethernet(data, off + ISL.size, end)


def _ieee8023(data: bytes, off: int, end: int, length: int) -> Span | None:
    """An 802.3 length field: raw IPX (0xffff) or 802.2 LLC, bounded by the length."""
    if end - off >= 2 and data[off] == _RAW_IPX and data[off + 1] == _RAW_IPX:
        return None
    return llc(data, off, min(end, off + length))


def vlan(data: bytes, off: int, end: int) -> Span | None:
    """A stack of 802.1Q/802.1ad tags, each with an ethertype or an 802.3 length."""
    while True:
        if end - off < _VLAN_SIZE:
            return None
        etype = u16(data, off + _VLAN_TYPE)
        off += _VLAN_SIZE
        if etype <= 1500:
            return _ieee8023(data, off, end, etype)
        nxt = ETHERTYPES.get(etype)
        if nxt is not vlan:
            break
    if nxt is None:
        return None
    if isinstance(nxt, int):
        return nxt, off, end
    return nxt(data, off, end)


def _itag(data: bytes, off: int, end: int) -> Span | None:
    """An 802.1ah I-tag, then a whole customer Ethernet frame."""
    return ethernet(data, off + ITAG.size, end) if off + ITAG.size <= end else None


def llc(data: bytes, off: int, end: int) -> Span | None:
    """An 802.2 LLC header: SNAP with an ethertype, or the IP SAP for I and UI frames."""
    if end - off < LLC.size:
        return None
    dsap, ssap, control = data[off], data[off + 1], data[off + 2]
    # U-format control fields are one byte, I- and S-format ones two.
    hdr = off + LLC.size if control & 0x03 == 0x03 else off + LLC.size + 1
    if dsap == _LLC_SAP_SNAP and ssap == _LLC_SAP_SNAP:
        if end - hdr < SNAP.size or data[hdr + _SNAP_OUI : hdr + _SNAP_TYPE] not in _SNAP_OUIS:
            return None
        return follow(ETHERTYPES, u16(data, hdr + _SNAP_TYPE), data, hdr + SNAP.size, end)
    is_info = control & 0x01 == 0
    is_ui = control & 0xEF == 0x03
    if dsap == _LLC_SAP_IP and (is_info or is_ui) and hdr < end:
        return IPV4, hdr, end
    return None


def mpls(data: bytes, off: int, end: int) -> Span | None:
    """An MPLS label stack, then what its bottom label or first payload nibble announces."""
    while True:
        if end - off < _MPLS_SIZE:
            return None
        entry = off
        off += _MPLS_SIZE
        if data[entry + 2] & 0x01:  # bottom of stack
            break
    label = (data[entry] << 12) | (data[entry + 1] << 4) | (data[entry + 2] >> 4)
    if label == _MPLS_LABEL_OAM_ALERT or off >= end:
        return None
    if label == _MPLS_LABEL_GAL:
        return pwach(data, off, end)
    return follow(MPLS_PAYLOADS, data[off] >> 4, data, off, end)


def pwach(data: bytes, off: int, end: int) -> Span | None:
    """A pseudowire associated channel header: its channel type may be IPv4 or IPv6."""
    if end - off < PWACH.size:
        return None
    channel = u16(data, off + _PWACH_CHANNEL_TYPE)
    return follow(PWACH_CHANNEL_TYPES, channel, data, off + PWACH.size, end)


def _looks_like_ethernet(data: bytes, off: int, end: int) -> bool:
    """Approximates tshark's "both MAC addresses have a known vendor OUI" test.

    tshark consults its manufacturer database; without it, an all-zero OUI (what a pseudowire
    control word looks like) is taken as unknown and any other OUI as known.
    """
    dst, src = off + _ETH_DST, off + _ETH_SRC
    return (
        end - off >= _ETH_SIZE
        and data[dst : dst + 3] != b"\x00\x00\x00"
        and data[src : src + 3] != b"\x00\x00\x00"
    )


def pseudowire(data: bytes, off: int, end: int) -> Span | None:
    """Ethernet over MPLS: without a control word when it looks like Ethernet, else with one."""
    if _looks_like_ethernet(data, off, end):
        return ethernet(data, off, end)
    return ethernet(data, off + PW_CONTROL_WORD.size, end)


def pppoe_session(data: bytes, off: int, end: int) -> Span | None:
    """A PPPoE session header, then PPP bounded by its payload length."""
    if end - off < PPPOE.size:
        return None
    payload_end = min(end, off + PPPOE.size + u16(data, off + _PPPOE_LEN))
    return ppp_protocol(data, off + PPPOE.size, payload_end)


def ppp_protocol(data: bytes, off: int, end: int) -> Span | None:
    """A PPP protocol field, possibly compressed to one byte (low bit set), then its payload."""
    if off >= end:
        return None
    if data[off] & 0x01:
        protocol, off = data[off], off + 1
    elif end - off >= 2:
        protocol, off = u16(data, off), off + 2
    else:
        return None
    return follow(PPP_PROTOCOLS, protocol, data, off, end)


def ppp_hdlc(data: bytes, off: int, end: int) -> Span | None:
    """PPP with optional HDLC address/control bytes, or Cisco HDLC (tshark's ``ppp_hdlc``)."""
    if off >= end:
        return None
    first = data[off]
    if first == _PPP_ADDRESS:
        return ppp_protocol(data, off + 2, end)
    if first in _CHDLC_ADDRESSES:
        if end - off < CHDLC.size:
            return None
        return follow(ETHERTYPES, u16(data, off + _CHDLC_TYPE), data, off + CHDLC.size, end)
    return ppp_protocol(data, off, end)


#: Ethertype (keys >= 0x0600, as ethertypes are) -> what follows (Ethernet II, VLAN, SNAP, SLL,
#: NULL, Cisco HDLC).
ETHERTYPES: dict[int, Next] = {
    0x0800: IPV4,
    0x86DD: IPV6,
    0x8100: vlan,
    0x88A8: vlan,
    0x9100: vlan,
    0x8847: mpls,
    0x8848: mpls,
    0x8864: pppoe_session,
    0x88E7: _itag,
    0x6558: ethernet,
}
#: First nibble after the bottom MPLS label -> what follows.
MPLS_PAYLOADS: dict[int, Next] = {0: pseudowire, 1: pwach, 4: IPV4, 6: IPV6}
#: Associated channel type (a PPP DLL protocol number) -> what follows.
PWACH_CHANNEL_TYPES: dict[int, Next] = {0x0021: IPV4, 0x0057: IPV6}
#: PPP protocol -> what follows.
PPP_PROTOCOLS: dict[int, Next] = {
    0x0021: IPV4,
    0x0057: IPV6,
    0x0281: mpls,
    0x0283: mpls,
    0x002F: VJ_TCP,
}
#: GRE protocol type -> what follows (under SLL's ARPHRD_IPGRE).
GRE_PROTOCOLS: dict[int, Next] = {
    0x0800: IPV4,
    0x86DD: IPV6,
    0x6558: ethernet,
    0x8847: mpls,
    0x8848: mpls,
    0x880B: ppp_hdlc,
}
