"""Unit tests of flowherd.workers.decode.dissect: one frame per link type, encapsulation and oracle rule.

Every expected result below is what the oracle (TShark 4.0, ``../shared/oracle``) gives for the
same frame. Frames are built with scapy and turned into bytes, or written as byte literals where
scapy has no layer for the header (or would build a different one).
"""

from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import (
    ARP,
    GRE,
    LLC,
    SNAP,
    STP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Dot3,
    Ether,
)
from scapy.layers.ppp import PPP, PPPoE, PPPoED
from scapy.packet import Packet

from flowherd.workers.decode.dissect import NOT_COUNTED_BUCKETS, PacketInfo, dissect
from flowherd.workers.decode.linktypes import LINKTYPES

pytestmark = pytest.mark.timeout(120)

A4, B4 = "192.0.2.1", "198.51.100.2"
A6, B6 = "2001:db8::1", "2001:db8:ffff::2"
SRC_MAC, DST_MAC = "00:11:22:33:44:55", "00:1b:21:aa:bb:cc"


def key(
    src: str, dst: str, proto: int, sport: int = 0, dport: int = 0, flags: int = 0
) -> PacketInfo:
    return PacketInfo(ip_address(src).packed, ip_address(dst).packed, proto, sport, dport, flags)


def eth(payload: Packet | bytes = b"", etype: int | None = None) -> bytes:
    """An Ethernet II frame: its type from scapy's bindings for ``payload``, or ``etype``."""
    if etype is None:
        return bytes(Ether(src=SRC_MAC, dst=DST_MAC) / payload)
    return bytes(Ether(src=SRC_MAC, dst=DST_MAC, type=etype)) + bytes(payload)


def label(value: int, bottom: bool) -> bytes:
    return struct.pack("!I", value << 12 | int(bottom) << 8 | 64)


TCP4 = IP(src=A4, dst=B4) / TCP(sport=40000, dport=443, flags="S")
TCP4_KEY = key(A4, B4, 6, 40000, 443, 0x02)
UDP4 = IP(src=A4, dst=B4) / UDP(sport=5353, dport=53) / b"query"
UDP4_KEY = key(A4, B4, 17, 5353, 53)
TCP6 = IPv6(src=A6, dst=B6) / TCP(sport=50000, dport=80, flags="PA") / b"GET /"
TCP6_KEY = key(A6, B6, 6, 50000, 80, 0x18)
UDP6 = IPv6(src=A6, dst=B6) / UDP(sport=4500, dport=443) / b"quic"
UDP6_KEY = key(A6, B6, 17, 4500, 443)
TCP4_BYTES, TCP6_BYTES = bytes(TCP4), bytes(TCP6)

ETHERNET_CASES = {
    "ipv4 tcp": (eth(TCP4), TCP4_KEY),
    "ipv4 udp": (eth(UDP4), UDP4_KEY),
    "ipv4 icmp echo": (eth(IP(src=A4, dst=B4) / ICMP()), key(A4, B4, 1)),
    "icmp error quoting udp counts under the outer icmp flow": (
        eth(
            IP(src=A4, dst=B4) / ICMP(type=3, code=3) / IP(src=B4, dst=A4) / UDP(sport=53, dport=9)
        ),
        key(A4, B4, 1),
    ),
    "gre is not decapsulated": (eth(IP(src=A4, dst=B4) / GRE() / TCP6), key(A4, B4, 47)),
    "ip-in-ip is not decapsulated": (eth(IP(src=A4, dst=B4) / TCP6), key(A4, B4, 41)),
    "vxlan counts under the outer udp ports": (
        eth(IP(src=A4, dst=B4) / UDP(sport=1234, dport=4789) / (bytes(8) + eth(TCP4))),
        key(A4, B4, 17, 1234, 4789),
    ),
    "ipv4 first fragment has the ports": (
        eth(IP(src=A4, dst=B4, flags="MF") / UDP(sport=2049, dport=800) / bytes(64)),
        key(A4, B4, 17, 2049, 800),
    ),
    "ipv4 non-first fragment has none": (
        eth(IP(src=A4, dst=B4, frag=185, proto=17) / bytes(64)),
        key(A4, B4, 17),
    ),
    "ipv4 total length 0 is tso": (
        eth(IP(src=A4, dst=B4, len=0) / TCP(sport=1, dport=2)),
        key(A4, B4, 6, 1, 2, 2),
    ),
    "ipv4 trailer after the datagram is ignored": (eth(TCP4) + b"\x00" * 6, TCP4_KEY),
    "ipv6 tcp": (eth(TCP6), TCP6_KEY),
    "ipv6 udp": (eth(UDP6), UDP6_KEY),
    "icmpv6": (eth(IPv6(src=A6, dst=B6) / ICMPv6EchoRequest()), key(A6, B6, 58)),
    "ipv6 hop-by-hop": (eth(IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / UDP6[UDP]), UDP6_KEY),
    "ipv6 routing keeps the header destination": (
        eth(IPv6(src=A6, dst=B6) / IPv6ExtHdrRouting(addresses=["2001:db8::99"]) / UDP6[UDP]),
        UDP6_KEY,
    ),
    "ipv6 destination options": (
        eth(IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / TCP6[TCP]),
        TCP6_KEY,
    ),
    "ipv6 chain of three": (
        eth(
            IPv6(src=A6, dst=B6)
            / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrRouting()
            / IPv6ExtHdrDestOpt()
            / TCP6[TCP]
        ),
        TCP6_KEY,
    ),
    "ipv6 first fragment has the ports": (
        eth(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(m=1) / UDP6[UDP]),
        UDP6_KEY,
    ),
    "ipv6 non-first fragment has none": (
        eth(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=100, nh=17) / bytes(40)),
        key(A6, B6, 17),
    ),
    "ipv6 payload length cuts the chain": (
        eth(IPv6(src=A6, dst=B6, plen=4) / IPv6ExtHdrHopByHop() / UDP6[UDP]),
        key(A6, B6, 17),
    ),
    "802.1q": (eth(Dot1Q(vlan=10) / TCP4), TCP4_KEY),
    "802.1ad qinq": (eth(Dot1AD(vlan=100) / Dot1Q(vlan=10) / TCP6), TCP6_KEY),
    "0x9100 qinq": (
        eth(Dot1Q(vlan=100, type=0x8100) / Dot1Q(vlan=10) / UDP4, etype=0x9100),
        UDP4_KEY,
    ),
    "mpls label stack": (eth(MPLS(label=16, s=0) / MPLS(label=17, s=1) / TCP4), TCP4_KEY),
    "mpls multicast 0x8848 with ipv6": (eth(label(18, True) + TCP6_BYTES, etype=0x8848), TCP6_KEY),
    "vlan then mpls": (eth(Dot1Q(vlan=7) / MPLS(label=16, s=1) / UDP4), UDP4_KEY),
    "ethernet pseudowire with control word in mpls": (
        eth(label(30, True) + bytes(4) + eth(UDP4), etype=0x8847),
        UDP4_KEY,
    ),
    "mpls gal associated channel carrying ipv4": (
        eth(label(13, True) + b"\x10\x00\x00\x21" + bytes(UDP4), etype=0x8847),
        UDP4_KEY,
    ),
    "mpls oam alert label": (eth(label(14, True) + bytes(UDP4), etype=0x8847), "non_ip"),
    "pppoe session ipv4": (eth(PPPoE(sessionid=7) / PPP(proto=0x0021) / TCP4), TCP4_KEY),
    "pppoe session ipv6, compressed protocol": (
        eth(
            bytes(PPPoE(sessionid=7, len=len(TCP6_BYTES) + 1)) + b"\x57" + TCP6_BYTES, etype=0x8864
        ),
        TCP6_KEY,
    ),
    "pppoe length bounds the payload": (
        eth(PPPoE(sessionid=7, len=12) / PPP(proto=0x0021) / TCP4),
        "malformed_ip",
    ),
    "pppoe discovery": (eth(PPPoED(code=0x09)), "non_ip"),
    "802.3 llc snap": (bytes(Dot3(src=SRC_MAC, dst=DST_MAC) / LLC() / SNAP() / UDP4), UDP4_KEY),
    "802.1ah provider backbone": (eth(b"\x00\x00\x00\x01" + eth(TCP4), etype=0x88E7), TCP4_KEY),
    "transparent ethernet bridging": (eth(eth(UDP6), etype=0x6558), UDP6_KEY),
    "cisco isl around ethernet": (
        bytes.fromhex("01000c0000") + bytes(21) + eth(TCP4),
        TCP4_KEY,
    ),
    "802.1q with an 802.3 length and llc snap": (
        eth(Dot1Q(vlan=5, type=8 + len(bytes(UDP4))) / LLC() / SNAP() / UDP4),
        UDP4_KEY,
    ),
    "arp": (eth(ARP()), "non_ip"),
    "stp": (bytes(Dot3(src=SRC_MAC, dst=DST_MAC) / LLC() / STP()), "non_ip"),
    "lldp": (eth(bytes(20), etype=0x88CC), "non_ip"),
    "frame shorter than an ethernet header": (b"\x00\x1b\x21\xaa\xbb", "non_ip"),
    "ethertype ipv4 without a header": (eth(etype=0x0800), "malformed_ip"),
}

IPV4_LINK, IPV6_LINK = 228, 229
IP_HEADER_CASES = {
    "ipv4 header cut": (IPV4_LINK, TCP4_BYTES[:19], "malformed_ip"),
    "ipv4 header length 16": (IPV4_LINK, b"\x44" + TCP4_BYTES[1:], "malformed_ip"),
    "ipv4 total length below header length": (
        IPV4_LINK,
        TCP4_BYTES[:2] + b"\x00\x10" + TCP4_BYTES[4:],
        "malformed_ip",
    ),
    "ipv4 version 6": (IPV4_LINK, b"\x65" + TCP4_BYTES[1:], "malformed_ip"),
    "ipv4 options cut": (
        IPV4_LINK,
        bytes(IP(src=A4, dst=B4, options=b"\x01\x01\x01\x00") / TCP())[:22],
        "malformed_ip",
    ),
    "ipv4 options ended by eol are not read further": (
        IPV4_LINK,
        bytes(IP(src=A4, dst=B4, options=b"\x00\x00\x00\x00") / TCP())[:21],
        key(A4, B4, 6),
    ),
    "tcp cut before the ports": (IPV4_LINK, TCP4_BYTES[:23], key(A4, B4, 6)),
    "tcp cut right after the ports": (IPV4_LINK, TCP4_BYTES[:24], key(A4, B4, 6, 40000, 443)),
    "tcp cut after the flags": (IPV4_LINK, TCP4_BYTES[:34], TCP4_KEY),
    "udp cut after the ports": (IPV4_LINK, bytes(UDP4)[:26], UDP4_KEY),
    "ipv6 header cut": (IPV6_LINK, TCP6_BYTES[:39], "malformed_ip"),
    "ipv6 version 7": (IPV6_LINK, b"\x70" + TCP6_BYTES[1:], "malformed_ip"),
    "ipv6 tcp cut after the ports": (IPV6_LINK, TCP6_BYTES[:44], key(A6, B6, 6, 50000, 80)),
    "hop-by-hop next header needs two bytes": (
        IPV6_LINK,
        bytes(IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / TCP6[TCP])[:41],
        key(A6, B6, 0),
    ),
    "hop-by-hop next header with its length": (
        IPV6_LINK,
        bytes(IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / TCP6[TCP])[:42],
        key(A6, B6, 6),
    ),
    "routing next header needs one byte": (
        IPV6_LINK,
        bytes(IPv6(src=A6, dst=B6) / IPv6ExtHdrRouting() / UDP6[UDP])[:41],
        key(A6, B6, 17),
    ),
    "fragment next header needs the whole header": (
        IPV6_LINK,
        bytes(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(m=1) / UDP6[UDP])[:47],
        key(A6, B6, 44),
    ),
    "ipv6 jumbogram: a jumbo payload option replaces payload length 0": (
        IPV6_LINK,
        bytes(IPv6(src=A6, dst=B6, nh=0, plen=0))
        + b"\x11\x00\xc2\x04\x00\x01\x11\x70"
        + bytes(UDP6[UDP]),
        UDP6_KEY,
    ),
    "ipv6 payload length 0 without a jumbo option is empty": (
        IPV6_LINK,
        bytes(IPv6(src=A6, dst=B6, plen=0) / IPv6ExtHdrHopByHop() / UDP6[UDP]),
        key(A6, B6, 0),
    ),
    "ipv6 option running past the payload stops the chain": (
        IPV6_LINK,
        bytes(IPv6(src=A6, dst=B6, nh=60) / b"\x11\x00\x01\x30\x00\x00\x00\x00" / UDP6[UDP]),
        key(A6, B6, 17),
    ),
    "loose source route makes its last hop the destination": (
        IPV4_LINK,
        bytes(
            IP(src=A4, dst=B4, options=b"\x83\x07\x04\xcb\x00\x71\x09\x00") / UDP(sport=7, dport=9)
        ),
        key(A4, "203.0.113.9", 17, 7, 9),
    ),
    "record route option is kept out of the key": (
        IPV4_LINK,
        bytes(
            IP(src=A4, dst=B4, options=b"\x07\x07\x04\x00\x00\x00\x00\x00") / UDP(sport=7, dport=9)
        ),
        key(A4, B4, 17, 7, 9),
    ),
    "an option shorter than its dissector reads hides the ports": (
        IPV4_LINK,
        bytes(IP(src=A4, dst=B4, options=b"\x94\x02\x00\x00") / UDP(sport=7, dport=9)),
        key(A4, B4, 17),
    ),
}

LINKTYPE_CASES = {
    "sll ipv4": (113, bytes(CookedLinux(proto=0x0800) / TCP4), TCP4_KEY),
    "sll vlan": (113, bytes(CookedLinux(proto=0x8100) / Dot1Q(vlan=3) / UDP6), UDP6_KEY),
    "sll arp": (113, bytes(CookedLinux(proto=0x0806) / ARP()), "non_ip"),
    "sll netlink": (
        113,
        struct.pack("!HHH8sH", 0, 824, 0, bytes(8), 0x0800) + TCP4_BYTES,
        "non_ip",
    ),
    "sll ipgre": (113, struct.pack("!HHH8sH", 0, 778, 0, bytes(8), 0x86DD) + TCP6_BYTES, TCP6_KEY),
    "sll carrying a whole ethernet frame": (
        113,
        struct.pack("!HHH8sH", 0, 1, 6, bytes(8), 0x0003) + eth(UDP4),
        UDP4_KEY,
    ),
    "sll cut": (113, bytes(CookedLinux(proto=0x0800))[:12], "non_ip"),
    "sll2 ipv6": (276, bytes(CookedLinuxV2(proto=0x86DD) / TCP6), TCP6_KEY),
    "sll2 mpls": (276, bytes(CookedLinuxV2(proto=0x8847) / MPLS(s=1) / UDP4), UDP4_KEY),
    "raw ipv4 (101)": (101, TCP4_BYTES, TCP4_KEY),
    "raw ipv6 (101)": (101, TCP6_BYTES, TCP6_KEY),
    "raw ipv4 (legacy 12)": (12, bytes(UDP4), UDP4_KEY),
    "raw ipv6 (legacy 14)": (14, TCP6_BYTES, TCP6_KEY),
    "raw with ppp-in-hdlc": (101, b"\xff\x03\x00\x21" + TCP4_BYTES, TCP4_KEY),
    "raw after ten zero bytes (isdn link down)": (101, bytes(10) + TCP4_BYTES, TCP4_KEY),
    "raw after a fake mac address (isdn)": (
        14,
        bytes(6) + b"\xff\x03\x00\x21" + TCP4_BYTES,
        TCP4_KEY,
    ),
    "raw neither ipv4 nor ipv6": (101, b"\x50" + TCP4_BYTES[1:], "non_ip"),
    "raw shorter than tshark reads": (101, TCP4_BYTES[:7], "non_ip"),
    "ipv4 linktype (228)": (228, TCP4_BYTES, TCP4_KEY),
    "ipv4 linktype with ipv6": (228, TCP6_BYTES, "malformed_ip"),
    "ipv6 linktype (229)": (229, TCP6_BYTES, TCP6_KEY),
    "ipv6 linktype with ipv4": (229, TCP4_BYTES, "malformed_ip"),
    "null af_inet little-endian": (0, struct.pack("<I", 2) + TCP4_BYTES, TCP4_KEY),
    "null af_inet big-endian": (0, struct.pack(">I", 2) + TCP4_BYTES, TCP4_KEY),
    "null af_inet6 24 (bsd)": (0, struct.pack("<I", 24) + TCP6_BYTES, TCP6_KEY),
    "null af_inet6 28 (freebsd) big-endian": (0, struct.pack(">I", 28) + TCP6_BYTES, TCP6_KEY),
    "null af_inet6 30 (darwin)": (0, struct.pack("<I", 30) + bytes(UDP6), UDP6_KEY),
    "null linux af_inet6 10 is not ip": (0, struct.pack("<I", 10) + TCP6_BYTES, "non_ip"),
    "null ethertype": (0, struct.pack("<I", 0x0800) + TCP4_BYTES, TCP4_KEY),
    "null with ppp in hdlc": (0, b"\xff\x03\x00\x57" + TCP6_BYTES, TCP6_KEY),
    "null cut": (0, b"\x02\x00\x00", "non_ip"),
    "loop af_inet": (108, struct.pack(">I", 2) + TCP4_BYTES, TCP4_KEY),
    "loop af_inet6": (108, struct.pack(">I", 30) + TCP6_BYTES, TCP6_KEY),
    "loop is network byte order only": (108, struct.pack("<I", 2) + TCP4_BYTES, "non_ip"),
    "ppp with address and control": (9, b"\xff\x03\x00\x21" + TCP4_BYTES, TCP4_KEY),
    "ppp compressed": (9, b"\x21" + TCP4_BYTES, TCP4_KEY),
    "ppp ipv6": (9, b"\xff\x03\x00\x57" + TCP6_BYTES, TCP6_KEY),
    "ppp lcp": (9, b"\xff\x03\xc0\x21\x01\x01\x00\x04", "non_ip"),
    "cisco hdlc under ppp": (9, b"\x0f\x00\x08\x00" + TCP4_BYTES, TCP4_KEY),
    "ppp-in-hdlc (50)": (50, b"\xff\x03\x00\x57" + bytes(UDP6), UDP6_KEY),
    "mpls over ppp (0x0281)": (9, b"\xff\x03\x02\x81" + label(100, True) + bytes(UDP4), UDP4_KEY),
    "mpls multicast over ppp (0x0283)": (
        50,
        b"\xff\x03\x02\x83" + label(7, False) + label(8, True) + TCP6_BYTES,
        TCP6_KEY,
    ),
    "ppp van jacobson uncompressed tcp": (
        9,
        b"\xff\x03\x00\x2f" + TCP4_BYTES[:9] + b"\x03" + TCP4_BYTES[10:],
        TCP4_KEY,
    ),
}

ALL_CASES = (
    [(name, 1, frame, want) for name, (frame, want) in ETHERNET_CASES.items()]
    + [(name, lt, frame, want) for name, (lt, frame, want) in IP_HEADER_CASES.items()]
    + [(name, lt, frame, want) for name, (lt, frame, want) in LINKTYPE_CASES.items()]
)


@pytest.mark.parametrize(
    ("linktype", "frame", "expected"),
    [pytest.param(lt, frame, want, id=name) for name, lt, frame, want in ALL_CASES],
)
def test_frame(linktype: int, frame: bytes, expected: PacketInfo | str) -> None:
    assert dissect(linktype, frame) == expected


def test_buckets_are_the_published_names() -> None:
    assert NOT_COUNTED_BUCKETS == (
        "non_ip",
        "malformed_ip",
        "unsupported_linktype",
        "dissect_error",
    )


@pytest.mark.parametrize("linktype", [105, 127, 147, 65535, -1])
def test_unknown_linktype(linktype: int) -> None:
    assert dissect(linktype, eth(TCP4)) == "unsupported_linktype"


def test_a_failing_dissector_is_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes, off: int, end: int) -> None:
        raise ValueError("corrupt")

    monkeypatch.setitem(LINKTYPES, 1, broken)
    assert dissect(1, eth(TCP4)) == "dissect_error"


def test_counted_frame_fields() -> None:
    info = dissect(1, eth(TCP4))
    assert isinstance(info, PacketInfo)
    assert info._fields == ("src", "dst", "proto", "sport", "dport", "tcp_flags")
    assert (len(info.src), len(info.dst)) == (4, 4)


def _check_result(res: PacketInfo | str) -> None:
    """A well-formed result; the dissector itself never fails (no ``dissect_error``)."""
    if isinstance(res, str):
        assert res in NOT_COUNTED_BUCKETS and res != "dissect_error"
        return
    assert isinstance(res, PacketInfo)
    assert len(res.src) == len(res.dst) and len(res.src) in (4, 16)
    assert 0 <= res.proto <= 255 and 0 <= res.tcp_flags <= 255
    assert 0 <= res.sport <= 65535 and 0 <= res.dport <= 65535
    if res.proto not in (6, 17):
        assert res.sport == res.dport == res.tcp_flags == 0


@pytest.mark.parametrize("linktype", [*sorted(LINKTYPES), 42])
@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_never_raise(linktype: int, data: bytes) -> None:
    _check_result(dissect(linktype, data))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([name for name, lt, _, _ in ALL_CASES]),
    st.integers(min_value=0, max_value=200),
    st.binary(min_size=1, max_size=8),
)
def test_cut_or_corrupted_frames_never_raise(name: str, cut: int, noise: bytes) -> None:
    linktype, frame = next((lt, frame) for n, lt, frame, _ in ALL_CASES if n == name)
    _check_result(dissect(linktype, frame[:cut]))
    pos = cut % len(frame)
    _check_result(dissect(linktype, frame[:pos] + noise + frame[pos + len(noise) :]))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([TCP4, UDP4, TCP6, UDP6]), st.binary(max_size=40))
def test_ethernet_trailer_never_changes_the_key(packet: IP | IPv6, trailer: bytes) -> None:
    assert dissect(1, eth(packet) + trailer) == dissect(1, eth(packet))
