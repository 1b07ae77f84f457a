"""Unit tests of the link walker (flowherd.workers.decode.linktypes.locate, flowherd.workers.decode.framing, flowherd.workers.decode.headers).

Every frame is a byte literal, so each case says exactly which header bytes the walker reads; the
expected value is the span ``(kind, start, end)`` both engines then dissect, or ``None`` (no IP
header: "non_ip"). What tshark makes of the same frames is checked end to end by
tests/workers/test_dissect.py and the oracle tests; here the walker itself is pinned, table by table.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowherd.workers.decode import framing, headers
from flowherd.workers.decode.dissect import PacketInfo, dissect
from flowherd.workers.decode.fastpath import decode, dissect_fast
from flowherd.workers.decode.framing import ETHERTYPES, IPV4, IPV6, VJ_TCP, Next, Span, follow
from flowherd.workers.decode.linktypes import LINKTYPES, locate

pytestmark = pytest.mark.timeout(120)

H = bytes.fromhex
MACS = H("001b21aabbcc 001122334455")  # dst, src
# IPv4/UDP 192.0.2.1:5353 -> 198.51.100.2:53 and IPv6/UDP 2001:db8::1 -> 2001:db8:ffff::2
IP4 = H("4500 001c 0000 0000 40 11 0000 c0000201 c6336402") + H("14e9 0035 0008 0000")
IP6 = (
    H("60000000 0008 11 40")
    + H("20010db8000000000000000000000001")
    + H("20010db8ffff00000000000000000002")
    + H("1194 0035 0008 0000")
)
IP4_KEY = PacketInfo(H("c0000201"), H("c6336402"), 17, 5353, 53, 0)
IP6_KEY = PacketInfo(
    H("20010db8000000000000000000000001"), H("20010db8ffff00000000000000000002"), 17, 4500, 53, 0
)


def eth(etype: str, payload: bytes) -> bytes:
    return MACS + H(etype) + payload


def label(value: int, bottom: bool) -> bytes:
    return struct.pack("!I", value << 12 | int(bottom) << 8 | 64)


SNAP_IP4 = H("aaaa03 000000 0800") + IP4  # LLC (SNAP SAPs, UI), SNAP (OUI 0, IPv4)
PPPOE_HDR = H("11 00 0007")  # ver/type, code 0, session 7; the length follows
SLL_HDR = H("0000 0001 0006 001b21aabbcc0000")  # type, hrd (ARPHRD_ETHER), hlen, addr
ISL_HDR = H("01000c0000 00 001122334455 0000 aaaa03 00000c 0000 0000 0000")
SLL_IPGRE = H("0000 030a 0000 0000000000000000")  # hrd ARPHRD_IPGRE
SLL2_HDR = H("0000 00000002 0001 00 06 001b21aabbcc0000")  # after the protocol: mbz .. addr


def tlv(tlv_type: int, value: bytes, order: str = "<") -> bytes:
    """An NFLOG TLV (a netlink attribute) padded to 4 bytes; x86 byte order unless ``order``."""
    return struct.pack(order + "HH", 4 + len(value), tlv_type) + value + bytes(-len(value) % 4)


def nflog(family: int, *tlvs: bytes, version: int = 0) -> bytes:
    """An NFLOG frame: family (NFPROTO_), version, resource id 0, then ``tlvs``."""
    return bytes([family, version]) + H("0000") + b"".join(tlvs)


# (id, linktype, frame, expected span or None)
# fmt: off
CASES: list[tuple[str, int, bytes, Span | None]] = [
    # Ethernet (1) and the ethertype table
    ("eth ipv4", 1, eth("0800", IP4), (IPV4, 14, 42)),
    ("eth ipv6", 1, eth("86dd", IP6), (IPV6, 14, 62)),
    ("eth trailer stays in the span", 1, eth("0800", IP4) + bytes(6), (IPV4, 14, 48)),
    ("eth arp", 1, eth("0806", bytes(28)), None),
    ("eth unknown ethertype", 1, eth("1234", IP4), None),
    ("eth type 1501-1535 carries nothing", 1, eth("05dd", IP4), None),
    ("eth cut before its type", 1, MACS + H("08"), None),
    ("eth ipv4 without a header", 1, eth("0800", b""), (IPV4, 14, 14)),
    ("802.1q", 1, eth("8100", H("0064 0800") + IP4), (IPV4, 18, 46)),
    ("802.1ad then 802.1q", 1, eth("88a8", H("00c8 8100 0064 86dd") + IP6), (IPV6, 22, 70)),
    ("0x9100 qinq", 1, eth("9100", H("0005 8100 0006 0800") + IP4), (IPV4, 22, 50)),
    ("802.1q cut", 1, eth("8100", H("0064")), None),
    ("802.1q, 802.3 length, snap", 1, eth("8100", H("0005 0024") + SNAP_IP4), (IPV4, 26, 54)),
    ("802.1q to an unknown ethertype", 1, eth("8100", H("0005 1234") + IP4), None),
    ("802.3 snap bounded by its length", 1, MACS + H("0024") + SNAP_IP4 + bytes(4), (IPV4, 22, 50)),
    ("802.3 snap, cisco oui", 1, MACS + H("0024 aaaa03 0000f8 0800") + IP4, (IPV4, 22, 50)),
    ("802.3 snap, another oui", 1, MACS + H("0024 aaaa03 080007 0800") + IP4, None),
    ("802.3 llc ip sap, ui frame", 1, MACS + H("001f 06 06 03") + IP4, (IPV4, 17, 45)),
    ("802.3 llc ip sap, i frame", 1, MACS + H("0020 06 06 0000") + IP4, (IPV4, 18, 46)),
    ("802.3 llc ip sap, s frame", 1, MACS + H("0020 06 06 0100") + IP4, None),
    ("802.3 stp", 1, MACS + H("0026 42 42 03") + bytes(35), None),
    ("802.3 raw ipx", 1, MACS + H("001e ffff") + bytes(28), None),
    ("cisco isl around ethernet", 1, ISL_HDR + eth("0800", IP4), (IPV4, 40, 68)),
    ("cisco isl, other frame type", 1, ISL_HDR[:5] + H("10") + ISL_HDR[6:] + eth("0800", IP4), None),
    ("802.1ah i-tag", 1, eth("88e7", H("00000001") + eth("0800", IP4)), (IPV4, 32, 60)),
    ("802.1ah cut", 1, eth("88e7", H("0000")), None),
    ("transparent ethernet bridging", 1, eth("6558", eth("86dd", IP6)), (IPV6, 28, 76)),
    # MPLS
    ("mpls ipv4", 1, eth("8847", label(16, True) + IP4), (IPV4, 18, 46)),
    ("mpls stack ipv6", 1, eth("8847", label(16, False) + label(17, True) + IP6), (IPV6, 22, 70)),
    ("mpls multicast", 1, eth("8848", label(18, True) + IP4), (IPV4, 18, 46)),
    ("mpls without a bottom label", 1, eth("8847", label(16, False)), None),
    ("mpls empty payload", 1, eth("8847", label(16, True)), None),
    ("mpls oam alert", 1, eth("8847", label(14, True) + IP4), None),
    ("mpls gal, channel ipv4", 1, eth("8847", label(13, True) + H("1000 0021") + IP4), (IPV4, 22, 50)),
    ("mpls nibble 1, channel ipv6", 1, eth("8847", label(30, True) + H("1000 0057") + IP6), (IPV6, 22, 70)),
    ("mpls channel, other type", 1, eth("8847", label(13, True) + H("1000 0007") + IP4), None),
    ("mpls nibble 5", 1, eth("8847", label(30, True) + H("50") + IP4), None),
    ("pseudowire, no control word", 1, eth("8847", label(30, True) + eth("0800", IP4)), (IPV4, 32, 60)),
    ("pseudowire, control word", 1, eth("8847", label(30, True) + bytes(4) + eth("0800", IP4)), (IPV4, 36, 64)),
    # PPPoE and PPP
    ("pppoe ipv4", 1, eth("8864", PPPOE_HDR + H("001e 0021") + IP4), (IPV4, 22, 50)),
    ("pppoe compressed ipv6", 1, eth("8864", PPPOE_HDR + H("0031 57") + IP6), (IPV6, 21, 69)),
    ("pppoe length ends the span", 1, eth("8864", PPPOE_HDR + H("000c 0021") + IP4), (IPV4, 22, 32)),
    ("pppoe mpls", 1, eth("8864", PPPOE_HDR + H("0022 0281") + label(3, True) + IP4), (IPV4, 26, 54)),
    ("pppoe lcp", 1, eth("8864", PPPOE_HDR + H("0006 c021") + bytes(4)), None),
    ("pppoe cut", 1, eth("8864", PPPOE_HDR), None),
    ("ppp address and control", 9, H("ff 03 0021") + IP4, (IPV4, 4, 32)),
    ("ppp compressed", 9, H("21") + IP4, (IPV4, 1, 29)),
    ("ppp ipv6 (50)", 50, H("ff 03 0057") + IP6, (IPV6, 4, 52)),
    ("ppp mpls multicast", 50, H("ff 03 0283") + label(7, True) + IP6, (IPV6, 8, 56)),
    ("ppp van jacobson tcp", 9, H("ff 03 002f") + IP4, (VJ_TCP, 4, 32)),
    ("ppp lcp", 9, H("ff 03 c021 01010004"), None),
    ("ppp protocol cut", 9, H("ff 03 00"), None),
    ("cisco hdlc", 9, H("0f 00 0800") + IP4, (IPV4, 4, 32)),
    ("cisco hdlc cut", 50, H("8f 00 08"), None),
    # Linux cooked captures
    ("sll ipv4", 113, SLL_HDR + H("0800") + IP4, (IPV4, 16, 44)),
    ("sll vlan", 113, SLL_HDR + H("8100 0003 86dd") + IP6, (IPV6, 20, 68)),
    ("sll netlink", 113, H("0000 0338 0006") + bytes(8) + H("0800") + IP4, None),
    ("sll ethernet pseudo-protocol", 113, SLL_HDR + H("0003") + eth("0800", IP4), (IPV4, 30, 58)),
    ("sll llc pseudo-protocol", 113, SLL_HDR + H("0004") + SNAP_IP4, (IPV4, 24, 52)),
    ("sll ppp pseudo-protocol", 113, SLL_HDR + H("0007 ff 03 0021") + IP4, (IPV4, 20, 48)),
    ("sll other pseudo-protocol", 113, SLL_HDR + H("0001") + IP4, None),
    ("sll cut", 113, SLL_HDR, None),
    ("sll ipgre ipv6", 113, SLL_IPGRE + H("86dd") + IP6, (IPV6, 16, 64)),
    ("sll ipgre bridging", 113, SLL_IPGRE + H("6558") + eth("0800", IP4), (IPV4, 30, 58)),
    ("sll ipgre ppp", 113, SLL_IPGRE + H("880b ff 03 0021") + IP4, (IPV4, 20, 48)),
    ("sll ipgre vlan: no gre protocol", 113, SLL_IPGRE + H("8100 0001 0800") + IP4, None),
    ("sll2 ipv6", 276, H("86dd") + SLL2_HDR + IP6, (IPV6, 20, 68)),
    ("sll2 mpls", 276, H("8847") + SLL2_HDR + label(5, True) + IP4, (IPV4, 24, 52)),
    ("sll2 netlink", 276, H("0800 0000 00000002 0338 00 06") + bytes(8) + IP4, None),
    ("sll2 cut", 276, H("0800") + SLL2_HDR[:-1], None),
    # BSD loopback
    ("null af_inet little-endian", 0, H("02000000") + IP4, (IPV4, 4, 32)),
    ("null af_inet big-endian", 0, H("00000002") + IP4, (IPV4, 4, 32)),
    ("null af_inet6 24", 0, H("18000000") + IP6, (IPV6, 4, 52)),
    ("null af_inet6 28 big-endian", 0, H("0000001c") + IP6, (IPV6, 4, 52)),
    ("null af_inet6 30", 0, H("1e000000") + IP6, (IPV6, 4, 52)),
    ("null linux af_inet6 10", 0, H("0a000000") + IP6, None),
    ("null irix 16-bit family", 0, H("00000200") + IP4, (IPV4, 4, 32)),
    ("null byte-swapped 16-bit family", 0, H("00020000") + IP4, (IPV4, 4, 32)),
    ("null ethertype", 0, H("00080000") + IP4, (IPV4, 4, 32)),
    ("null ppp", 0, H("ff 03 0057") + IP6, (IPV6, 4, 52)),
    ("null cut", 0, H("020000"), None),
    ("loop af_inet", 108, H("00000002") + IP4, (IPV4, 4, 32)),
    ("loop af_inet6", 108, H("0000001e") + IP6, (IPV6, 4, 52)),
    ("loop is network byte order only", 108, H("02000000") + IP4, None),
    # Raw IP
    ("raw ipv4", 101, IP4, (IPV4, 0, 28)),
    ("raw ipv6", 101, IP6, (IPV6, 0, 48)),
    ("raw legacy 12", 12, IP4, (IPV4, 0, 28)),
    ("raw legacy 14", 14, IP6, (IPV6, 0, 48)),
    ("raw ppp in hdlc", 101, H("ff 03 0021") + IP4, (IPV4, 4, 32)),
    ("raw isdn fake mac", 14, bytes(6) + H("ff 03 0021") + IP4, (IPV4, 10, 38)),
    ("raw isdn link down", 101, bytes(10) + IP4, (IPV4, 10, 38)),
    ("raw version 5", 101, H("50") + IP4[1:], None),
    ("raw shorter than tshark reads", 101, IP4[:7], None),
    ("ipv4 linktype", 228, IP6, (IPV4, 0, 48)),
    ("ipv6 linktype", 229, IP4, (IPV6, 0, 28)),
    ("ipv4 linktype, empty", 228, b"", (IPV4, 0, 0)),
    # Linux NFLOG (239): family, version, resource id, then TLVs in the capturing host's order
    ("nflog ipv4", 239, nflog(2, tlv(1, H("0800 03 00")), tlv(10, b"fw: \0"), tlv(9, IP4)), (IPV4, 28, 56)),
    ("nflog ipv6", 239, nflog(10, tlv(1, H("86dd 01 00")), tlv(9, IP6)), (IPV6, 16, 64)),
    ("nflog family, no packet header", 239, nflog(2, tlv(9, IP4)), (IPV4, 8, 36)),
    ("nflog hw protocol before family", 239, nflog(7, tlv(1, H("0800 03 00")), tlv(9, IP4)), (IPV4, 16, 44)),
    ("nflog hw protocol 0: family", 239, nflog(10, tlv(1, H("0000 03 00")), tlv(9, IP6)), (IPV6, 16, 64)),
    ("nflog hw protocol vlan", 239, nflog(2, tlv(1, H("8100 03 00")), tlv(9, H("0001 0800") + IP4)), (IPV4, 20, 48)),
    ("nflog hw protocol arp", 239, nflog(2, tlv(1, H("0806 03 00")), tlv(9, bytes(28))), None),
    ("nflog packet header of another length", 239, nflog(2, tlv(1, H("86dd 03 00 00")), tlv(9, IP4)), (IPV4, 20, 48)),
    ("nflog unknown family", 239, nflog(7, tlv(9, IP4)), None),
    ("nflog last payload wins", 239, nflog(2, tlv(9, IP6), tlv(9, IP4)), (IPV4, 60, 88)),
    ("nflog nested flag on the type", 239, nflog(2, H("2000 0980") + IP4), (IPV4, 8, 36)),
    ("nflog tlv shorter than 4 ends it", 239, nflog(2, tlv(9, IP4), H("0200 0000")), None),
    ("nflog tlv past the frame", 239, nflog(2, H("2800 0900") + IP4), None),
    ("nflog trailing bytes", 239, nflog(2, tlv(9, IP4)) + H("0800"), (IPV4, 8, 36)),
    ("nflog no payload", 239, nflog(2, tlv(1, H("0800 03 00"))), None),
    ("nflog big-endian tlvs", 239, nflog(2, tlv(1, H("86dd 03 00"), ">"), tlv(9, IP6, ">")), (IPV6, 16, 64)),
    ("nflog version 1 is little-endian", 239, nflog(2, tlv(9, IP4, ">"), version=1), None),
    ("nflog cut", 239, H("0200 00"), None),
    ("unknown linktype", 147, eth("0800", IP4), None),
]
# fmt: on


@pytest.mark.parametrize(
    ("linktype", "frame", "span"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_locate(linktype: int, frame: bytes, span: Span | None) -> None:
    assert locate(linktype, frame) == span


def test_case_ids_unique() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)


def test_every_link_type_and_ethertype_has_a_case() -> None:
    """A table entry added without a case here fails this test."""
    assert set(LINKTYPES) <= {c[1] for c in CASES}
    ethertypes = {int.from_bytes(f[12:14], "big") for _, lt, f, _ in CASES if lt == 1}
    assert set(ETHERTYPES) <= ethertypes


def test_unknown_linktype_is_not_in_the_table() -> None:
    assert 147 not in LINKTYPES
    assert dissect(147, eth("0800", IP4)) == "unsupported_linktype"
    assert decode(147, eth("0800", IP4)) == "unsupported_linktype"


@pytest.mark.parametrize(
    ("layout", "size"),
    [
        (headers.ETHERNET, 14),
        (headers.VLAN, 4),
        (headers.ISL, 26),
        (headers.ITAG, 4),
        (headers.MPLS, 4),
        (headers.PW_CONTROL_WORD, 4),
        (headers.PWACH, 4),
        (headers.PPPOE, 6),
        (headers.PPP, 4),
        (headers.CHDLC, 4),
        (headers.LLC, 3),
        (headers.SNAP, 5),
        (headers.SLL, 16),
        (headers.SLL2, 20),
        (headers.LOOPBACK, 4),
        (headers.NFLOG, 4),
        (headers.NFLOG_TLV, 4),
    ],
    ids=lambda v: v.name if isinstance(v, headers.Layout) else str(v),
)
def test_layout_sizes(layout: headers.Layout, size: int) -> None:
    assert layout.size == size


def test_layout_offsets() -> None:
    assert headers.ETHERNET.at("type") == 12
    assert headers.VLAN.at("type") == 2
    assert headers.ISL.at("_type_pri") == 5
    assert headers.PPPOE.at("len") == 4
    assert (headers.SLL.at("hrd"), headers.SLL.at("ethtype")) == (2, 14)
    assert (headers.SLL2.at("ethtype"), headers.SLL2.at("hrd")) == (0, 8)
    assert headers.SNAP.at("type") == 3
    with pytest.raises(KeyError):
        headers.ETHERNET.at("ethtype")


def test_layout_rejects_a_repeated_field() -> None:
    with pytest.raises(ValueError, match="twice"):
        headers.Layout("bad", (("type", "H"), ("type", "H")))


def test_follow() -> None:
    table: dict[int, Next] = {1: IPV4, 2: framing.ethernet}
    frame = eth("86dd", IP6)
    assert follow(table, 1, frame, 3, 9) == (IPV4, 3, 9)
    assert follow(table, 2, frame, 0, len(frame)) == (IPV6, 14, len(frame))
    assert follow(table, 3, frame, 0, len(frame)) is None


def test_deep_tag_stacks_are_walked_in_a_loop() -> None:
    """Tags and labels loop rather than recurse, so a stack deeper than Python's recursion
    limit is still walked to its IP header."""
    tags = H("00018100") * 2000
    frame = eth("8100", tags + H("00010800") + IP4)
    assert locate(1, frame) == (IPV4, len(frame) - len(IP4), len(frame))
    labels = label(16, False) * 2000 + label(16, True)
    assert locate(1, eth("8847", labels + IP4)) == (IPV4, 14 + len(labels), 14 + len(labels) + 28)


@settings(max_examples=400, deadline=None)
@given(linktype=st.sampled_from(sorted(LINKTYPES)), data=st.binary(max_size=120))
def test_spans_lie_inside_the_frame(linktype: int, data: bytes) -> None:
    span = locate(linktype, data)
    if span is not None:
        kind, start, end = span
        assert kind in (IPV4, IPV6, VJ_TCP)
        assert 0 <= start <= end <= len(data)


#: An NFLOG frame with two payload TLVs is read at its last one; cut where the second begins,
#: the frame holds only the first, which is then the last: the one case where the prefix of a
#: frame has a span the whole frame does not (tested on its own below).
_PREFIX_CASES = [c for c in CASES if c[3] is not None and c[0] != "nflog last payload wins"]


@settings(max_examples=400, deadline=None)
@given(case=st.sampled_from(_PREFIX_CASES), cut=st.integers(0, 80))
def test_a_cut_frame_has_the_whole_frames_span_clipped_or_none(
    case: tuple[str, int, bytes, Span], cut: int
) -> None:
    _, linktype, frame, (kind, start, end) = case
    assert locate(linktype, frame[:cut]) in (None, (kind, start, min(end, cut)))


# --- teaching the walker something new: one table entry ----------------------------------------

USER1 = 148  # LINKTYPE_USER1, private use: here a 2-byte ethertype, then the packet


def user_header(data: bytes, off: int, end: int) -> Span | None:
    """A made-up link header: an ethertype and nothing else."""
    if end - off < 2:
        return None
    return follow(ETHERTYPES, framing.u16(data, off), data, off + 2, end)


def test_a_new_link_type_is_one_entry_of_a_local_table() -> None:
    table = {**LINKTYPES, USER1: user_header}
    frame = H("0800") + IP4
    assert locate(USER1, frame, table) == (IPV4, 2, 30)
    assert locate(USER1, H("86dd") + IP6, table) == (IPV6, 2, 50)
    assert locate(USER1, H("0806") + IP4, table) is None
    assert locate(USER1, frame) is None  # production's table is untouched
    assert USER1 not in LINKTYPES


def test_one_entry_teaches_both_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = H("0800") + IP4
    assert dissect(USER1, frame) == dissect_fast(USER1, frame) == "unsupported_linktype"
    monkeypatch.setitem(LINKTYPES, USER1, user_header)
    assert dissect(USER1, frame) == IP4_KEY  # the scapy engine
    assert decode(USER1, frame) == IP4_KEY  # the fast engine, without scapy
    assert dissect(USER1, H("86dd") + IP6) == decode(USER1, H("86dd") + IP6) == IP6_KEY
    assert dissect(USER1, H("0806") + IP4) == decode(USER1, H("0806") + IP4) == "non_ip"


@pytest.mark.parametrize(
    ("linktype", "frame", "key"),
    [
        (239, nflog(2, tlv(1, H("0800 03 00")), tlv(9, IP4)), IP4_KEY),
        (239, nflog(10, tlv(1, H("86dd 03 00"), ">"), tlv(9, IP6, ">")), IP6_KEY),
        (239, nflog(2, tlv(9, IP4 + bytes(4))), IP4_KEY),
        (228, IP4, IP4_KEY),
        (229, IP6, IP6_KEY),
        (239, nflog(7, tlv(9, IP4)), "non_ip"),
        (228, IP6, "malformed_ip"),
    ],
    ids=[
        "nflog ipv4",
        "nflog big-endian ipv6",
        "nflog trailer",
        "ipv4",
        "ipv6",
        "nflog family 7",
        "ipv4 holding ipv6",
    ],
)
def test_nflog_and_raw_ip_link_types_in_both_engines(
    linktype: int, frame: bytes, key: PacketInfo | str
) -> None:
    """The frames tests/workers/test_linktypes.py checks against tshark, frame by frame: both engines
    find the same key, the fast engine without scapy wherever it decides alone."""
    assert dissect(linktype, frame) == dissect_fast(linktype, frame) == key
    assert decode(linktype, frame) in (key, None)
    if isinstance(key, PacketInfo):
        assert decode(linktype, frame) == key


def test_one_ethertype_entry_teaches_both_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = eth("88b5", IP4)  # IEEE local experimental ethertype 1
    assert dissect(1, frame) == decode(1, frame) == "non_ip"
    monkeypatch.setitem(ETHERTYPES, 0x88B5, IPV4)
    assert dissect(1, frame) == decode(1, frame) == IP4_KEY
    tagged = eth("8100", H("000988b5") + IP4)  # reached through any table that leads to it
    assert dissect(1, tagged) == decode(1, tagged) == IP4_KEY


def test_a_raising_step_is_a_dissect_error_in_both_engines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(data: bytes, off: int, end: int) -> Span | None:
        raise ValueError("corrupt")

    monkeypatch.setitem(ETHERTYPES, 0x0800, broken)
    frame = eth("0800", IP4)
    assert decode(1, frame) is None
    assert dissect(1, frame) == dissect_fast(1, frame) == "dissect_error"


def test_nflog_cut_before_its_last_payload_reads_the_one_it_holds() -> None:
    ((_, linktype, frame, span),) = [c for c in CASES if c[0] == "nflog last payload wins"]
    assert span is not None
    second = span[1] - 4  # the last payload TLV's header precedes its value
    first = locate(linktype, frame[:second])
    # the family byte (2: IPv4) names the payload's kind; the first payload, whole
    assert first == (span[0], 8, second)
    for cut in range(0, 80):  # every other cut: the last payload's span clipped, or none
        if cut != second:
            assert locate(linktype, frame[:cut]) in (
                None,
                (span[0], span[1], min(span[2], cut)),
                first,
            )
