"""Per-packet dissection for the workers: one captured frame -> its flow key, or why it has none.

Contract::

    res = dissect(linktype, data)   # LINKTYPE_* value, captured bytes (may be snaplen-cut)
    res is a PacketInfo             # counted: (src, dst, proto, sport, dport, tcp_flags)
    res in NOT_COUNTED_BUCKETS      # not counted, and why

``dissect`` never raises: a frame that breaks the dissector lands in ``"dissect_error"`` (logged at
DEBUG on this module's logger), so one bad packet cannot fail a batch.

The flow key is the oracle's (``../shared/oracle/README.md``: TShark 4.0, IP defragmentation off),
reproduced field for field:

* the outermost IP header after the link layer (:func:`flowherd.workers.decode.linktypes.locate`,
the link
  walker both engines share, finds it); tunnels are not decapsulated and ICMP errors count
  under the outer ICMP flow;
* an IPv4 header is *malformed* -- the oracle counts the frame as non-IP -- when its version
  nibble is not 4, its header length is below 20, its total length is below the header length
  (0 is read as TCP segmentation offload: the captured bytes are the datagram), or it is cut
  before tshark has read the destination address; a valid loose/strict source route option
  makes its last hop the destination, as in tshark's ``ip.dst``
  (:func:`flowherd.workers.decode.ipv4_options.ipv4_options`);
* an IPv6 header needs its 40 bytes and version 6; the payload is bounded by the payload length
  (or a Jumbo Payload option when that is 0); ``proto`` is the upper-layer value after the
  extension chain, or where tshark stops in it, the last next-header value it read
  (:func:`flowherd.workers.decode.ipv6_extensions.ipv6_upper_layer`);
* ports come from a TCP/UDP header right after the IP header or its chain once its first
  4 bytes are captured (so a TCP header cut after the ports still has them); 0 for non-first
  fragments, other protocols and cut headers. ``tcp_flags`` is TCP header byte 13 when captured.

scapy is the engine for the network and transport headers: ``IP``, ``IPv6``, ``TCP`` and ``UDP``
are dissected from exactly the bytes of their fixed headers, so scapy never guesses a payload
(no HTTP/DNS/TLS/QUIC dissection) and never builds ``Raw`` or ``Padding`` layers, which is where
most of its per-packet time went. Link-layer framing is walked from its type and length fields
(:mod:`flowherd.workers.decode.linktypes`, :mod:`flowherd.workers.decode.framing`): the key needs
nothing else from it, and tshark's dispatch differs from scapy's defaults, which miss IP that tshark
finds -- MPLS over Ethernet unless ``scapy.contrib.mpls`` is loaded (0x8848 even then), MPLS over
PPP (0x0281/0x0283, never bound), 802.1Q 0x9100, big-endian NULL, raw IP as linktype 14. Optional IP
headers are read where tshark reads them partially (:mod:`flowherd.workers.decode.ipv4_options`,
:mod:`flowherd.workers.decode.ipv6_extensions`). No global scapy configuration is changed: no
binding, no layer filter, no ``conf`` setting -- importing this module leaves scapy as it found it.

Known divergences from tshark, on frames no capture of the corpus holds: an Ethernet pseudowire
inside MPLS is told apart without tshark's OUI database
(:func:`flowherd.workers.decode.framing.pseudowire`); a few IPv4/IPv6 option dissectors are modelled
by their declared length; and where tshark adds no outer ``ip.dst`` (a source route whose addresses
do not fill its option) the oracle takes an inner IPv4 header's, while this module calls the header
malformed.
"""

from __future__ import annotations

import logging
from socket import AF_INET6, inet_aton, inet_pton
from typing import Final, NamedTuple

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from flowherd.workers.decode.framing import IPV6, VJ_TCP
from flowherd.workers.decode.ipv4_options import ipv4_options
from flowherd.workers.decode.ipv6_extensions import ipv6_upper_layer
from flowherd.workers.decode.linktypes import LINKTYPES, locate

_log = logging.getLogger(__name__)

NON_IP: Final = "non_ip"
MALFORMED_IP: Final = "malformed_ip"
UNSUPPORTED_LINKTYPE: Final = "unsupported_linktype"
DISSECT_ERROR: Final = "dissect_error"
#: Why a frame is not counted: no IP header / an IP header tshark rejects / a link type this
#: module does not handle / the dissector itself failed. The first two together are the
#: oracle's ``non_ip_frames``.
NOT_COUNTED_BUCKETS: Final = (NON_IP, MALFORMED_IP, UNSUPPORTED_LINKTYPE, DISSECT_ERROR)

_TCP = 6
_UDP = 17
_IPV6_HOP_BY_HOP = 0
_JUMBO_OPTION = 0xC2


class PacketInfo(NamedTuple):
    """The flow-key fields of one counted frame.

    ``src``/``dst`` are the packed outermost IP addresses (4 bytes for IPv4, 16 for IPv6);
    ``proto`` the IPv4 protocol or IPv6 upper-layer next header; ``sport``/``dport`` the TCP/UDP
    ports or 0; ``tcp_flags`` TCP header byte 13 or 0.
    """

    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    tcp_flags: int


def dissect(linktype: int, data: bytes) -> PacketInfo | str:
    """Dissect one frame of link type ``linktype``.

    Returns its :class:`PacketInfo`, or the name of its bucket in :data:`NOT_COUNTED_BUCKETS`.
    Never raises.
    """
    try:
        span = locate(linktype, data)
        if span is None:
            return NON_IP if linktype in LINKTYPES else UNSUPPORTED_LINKTYPE
        kind, start, end = span
        if kind == IPV6:
            return _ipv6(data[start:end])
        return _ipv4(data[start:end], kind == VJ_TCP)
    except Exception:  # a bad packet must never escape: it is counted instead
        _log.debug("event=dissect_error linktype=%d caplen=%d", linktype, len(data), exc_info=True)
        return DISSECT_ERROR


def _ipv4(raw: bytes, vj_tcp: bool) -> PacketInfo | str:
    """Key of the IPv4 header starting ``raw`` (``vj_tcp``: PPP VJ-uncompressed, proto is TCP)."""
    caplen = len(raw)
    if caplen < 20 or raw[0] >> 4 != 4:
        return MALFORMED_IP
    ip = IP(raw[:20]).fields  # the dissected values, read without Packet.__getattr__
    hlen = ip["ihl"] * 4
    total = ip["len"]
    if hlen < 20 or (total < hlen and total):
        return MALFORMED_IP
    dst = inet_aton(ip["dst"])
    payload_dissected = True
    if hlen > 20:
        options = ipv4_options(raw, hlen)
        if options is None:
            return MALFORMED_IP
        route_dst, payload_dissected = options
        if route_dst is not None:
            dst = route_dst
    src = inet_aton(ip["src"])
    proto = _TCP if vj_tcp else ip["proto"]
    if not payload_dissected or ip["frag"] or proto not in (_TCP, _UDP):
        return PacketInfo(src, dst, proto, 0, 0, 0)
    end = min(total, caplen) if total >= hlen else caplen  # total 0: TSO, the frame's length
    return _with_ports(src, dst, proto, raw[hlen:end])


def _ipv6(raw: bytes) -> PacketInfo | str:
    """Key of the IPv6 header starting ``raw``."""
    if len(raw) < 40 or raw[0] >> 4 != 6:
        return MALFORMED_IP
    ip6 = IPv6(raw[:40]).fields
    next_header = ip6["nh"]
    payload_len = ip6["plen"]
    if payload_len == 0 and next_header == _IPV6_HOP_BY_HOP:
        payload_len = _jumbo_payload_length(raw)
    end = min(len(raw), 40 + payload_len)
    proto, transport = ipv6_upper_layer(raw, end, next_header)
    src = inet_pton(AF_INET6, ip6["src"])
    dst = inet_pton(AF_INET6, ip6["dst"])
    if transport is None or proto not in (_TCP, _UDP):
        return PacketInfo(src, dst, proto, 0, 0, 0)
    return _with_ports(src, dst, proto, raw[transport:end])


def _jumbo_payload_length(raw: bytes) -> int:
    """tshark's ``ipv6_get_jumbo_plen``: a Jumbo Payload length above 65535 in the first header
    (hop-by-hop, at offset 40), else 0. Only options with 6 captured bytes are looked at."""
    if len(raw) < 42:
        return 0
    off, header_end = 42, 40 + (raw[41] + 1) * 8
    while off < header_end and off + 6 <= len(raw):
        kind = raw[off]
        off += 1
        if kind == 0:
            continue
        length = raw[off]
        off += 1
        if kind == _JUMBO_OPTION and length == 4:
            jumbo = int.from_bytes(raw[off : off + 4], "big")
            return jumbo if jumbo > 0xFFFF else 0
        off += length
    return 0


def _with_ports(src: bytes, dst: bytes, proto: int, segment: bytes) -> PacketInfo:
    """The key of a TCP (``proto`` 6) or UDP (17) packet whose transport header starts ``segment``.

    A complete fixed header is dissected by scapy; a cut one still yields the ports from its
    first 4 bytes (and TCP the flags from byte 13), as tshark reads them before it throws.
    """
    size = len(segment)
    if proto == _TCP:
        if size >= 20:
            tcp = TCP(segment[:20]).fields
            return PacketInfo(src, dst, proto, tcp["sport"], tcp["dport"], int(tcp["flags"]) & 0xFF)
        flags = segment[13] if size >= 14 else 0
    else:
        if size >= 8:
            udp = UDP(segment[:8]).fields
            return PacketInfo(src, dst, proto, udp["sport"], udp["dport"], 0)
        flags = 0
    if size < 4:
        return PacketInfo(src, dst, proto, 0, 0, 0)
    sport, dport = segment[0] << 8 | segment[1], segment[2] << 8 | segment[3]
    return PacketInfo(src, dst, proto, sport, dport, flags)
