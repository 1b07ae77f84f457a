"""Differential tests of the fast decoder against the scapy dissector.

The rule under test: wherever ``flowherd.workers.decode.fastpath.decode`` answers (not ``None``), its answer equals
``flowherd.workers.decode.dissect.dissect``'s, and ``dissect_fast`` equals ``dissect`` on every frame. Each suite
also counts the frames ``decode`` handled itself, so a fast path that silently does nothing fails.
Both engines share the link walker (``flowherd.workers.decode.linktypes.locate``), so ``decode`` answers for
every link layer the walker knows; what it leaves to scapy (``False`` below) are IP and
transport oddities.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR, IPOption_SSRR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    RouterAlert,
)
from scapy.layers.l2 import (
    ARP,
    GRE,
    LLC,
    SNAP,
    CookedLinux,
    CookedLinuxV2,
    Dot1AD,
    Dot1Q,
    Dot3,
    Ether,
)
from scapy.layers.ppp import PPP, PPPoE

from flowherd.models.batch import RawRecord
from flowherd.models.errors import TruncatedCaptureError
from flowherd.producer.readers.capture import open_capture
from flowherd.producer.traces.sample import write_sample
from flowherd.workers.decode import framing
from flowherd.workers.decode.dissect import PacketInfo, dissect
from flowherd.workers.decode.fastpath import decode, dissect_fast
from flowherd.workers.decode.linktypes import LINKTYPES as WALKED_LINKTYPES
from flowherd.workers.fold.aggregate import fold

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
PCAPS = SHARED / "pcaps"
#: the benchmark trace, where bench/ keeps it (bench/run.py and bench/cluster.py build it there)
BIG = Path(__file__).resolve().parents[2] / "out" / "big.pcap"
LINKTYPES = (0, 1, 9, 12, 14, 50, 101, 108, 113, 147, 228, 229, 276)
#: Link types decode() knows (the shared walker's); a capture holding one of them must get
#: some frames decoded.
FAST_LINKTYPES = frozenset(WALKED_LINKTYPES)


def check(linktype: int, data: bytes) -> bool:
    """Assert the contract on one frame; True when decode() answered without scapy."""
    ref = dissect(linktype, data)
    fast = decode(linktype, data)
    assert fast is None or fast == ref, (linktype, data.hex(), fast, ref)
    assert dissect_fast(linktype, data) == ref, (linktype, data.hex(), ref)
    return fast is not None


# --- the shared corpus -------------------------------------------------------------------------

CAPTURES = sorted(p.name for p in PCAPS.glob("*.pcap*")) if PCAPS.is_dir() else []


def _records(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with open_capture(str(path)) as cap:
            for rec in cap:
                yield rec.linktype, rec.data
    except TruncatedCaptureError:  # a cut file: its complete records were delivered
        return


@pytest.mark.corpus
@pytest.mark.skipif(not CAPTURES, reason=f"shared corpus not found at {PCAPS}")
@pytest.mark.parametrize("name", CAPTURES)
def test_corpus_capture(name: str) -> None:
    frames = handled = 0
    linktypes = set()
    for linktype, data in _records(PCAPS / name):
        frames += 1
        linktypes.add(linktype)
        handled += check(linktype, data)
    assert frames > 0
    if linktypes & FAST_LINKTYPES:
        assert handled > 0, f"{name}: decode() handled none of {frames} frames"


# --- generated edge cases ----------------------------------------------------------------------

MAC: dict[str, Any] = {"src": "00:1b:21:00:00:01", "dst": "00:1b:21:00:00:02"}
V4: dict[str, Any] = {"src": "192.0.2.1", "dst": "198.51.100.7"}
V6: dict[str, Any] = {"src": "2001:db8::1", "dst": "2001:db8:5::7"}
TCP_SYN = TCP(sport=40000, dport=443, flags="S", options=[("MSS", 1460), ("NOP", None)])
TCP_ACK = TCP(sport=443, dport=40000, flags="PA") / (b"x" * 30)
UDP_DNS = UDP(sport=5353, dport=53) / (b"q" * 20)
V4_TCP = IP(**V4) / TCP_SYN
V4_UDP = IP(**V4) / UDP_DNS
V6_TCP = IPv6(**V6) / TCP_ACK
V6_UDP = IPv6(**V6) / UDP_DNS


def mpls(*labels: int, ttl: int = 64) -> bytes:
    """A label stack; the last label gets the bottom-of-stack bit."""
    return b"".join(
        struct.pack("!I", (lab << 12) | (int(i == len(labels) - 1) << 8) | ttl)
        for i, lab in enumerate(labels)
    )


def eth(etype: int, payload: bytes) -> bytes:
    return bytes(Ether(**MAC, type=etype)) + payload


def pppoe(ppp_proto: bytes, payload: bytes, length: int | None = None, code: int = 0) -> bytes:
    body = ppp_proto + payload
    hdr = bytes(PPPoE(sessionid=7, code=code, len=len(body) if length is None else length))
    return eth(0x8864, hdr + body)


def v6_ext(first: int, ext: bytes, plen: int | None = None) -> bytes:
    """An IPv6 header whose next header is ``first``, then ``ext`` (raw extension headers); the
    payload length covers ``ext`` and a 20-byte transport header unless ``plen`` is given."""
    header = IPv6(**V6, nh=first, plen=len(ext) + 20 if plen is None else plen)
    return bytes(header) + ext


def ip_with(**fields: object) -> bytes:
    """IPv4/TCP with some header fields forced (checksum and length left as built)."""
    forced = IP(bytes(IP(**V4) / TCP_SYN))
    for k, v in fields.items():
        setattr(forced, k, v)
    return bytes(forced)


# (id, linktype, frame, decode() must answer it without scapy)
CASES: list[tuple[str, int, bytes, bool]] = [
    ("eth-v4-tcp", 1, bytes(Ether(**MAC) / V4_TCP), True),
    ("eth-v4-udp", 1, bytes(Ether(**MAC) / V4_UDP), True),
    ("eth-v6-tcp", 1, bytes(Ether(**MAC) / V6_TCP), True),
    ("eth-v6-udp", 1, bytes(Ether(**MAC) / V6_UDP), True),
    ("eth-v4-padded", 1, bytes(Ether(**MAC) / IP(**V4) / UDP(sport=1, dport=2)) + bytes(18), True),
    ("eth-v4-tcp-ns-ece-cwr", 1, bytes(Ether(**MAC) / IP(**V4) / TCP(flags="NECSA")), True),
    ("vlan", 1, bytes(Ether(**MAC) / Dot1Q(vlan=10) / V4_TCP), True),
    ("qinq-88a8", 1, bytes(Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=10) / V6_TCP), True),
    ("qinq-9100", 1, eth(0x9100, bytes(Dot1Q(vlan=5, type=0x8100) / Dot1Q(vlan=6) / V4_UDP)), True),
    ("vlan-arp", 1, bytes(Ether(**MAC) / Dot1Q(vlan=10) / ARP()), True),
    ("vlan-cut", 1, bytes(Ether(**MAC) / Dot1Q(vlan=10) / V4_TCP)[:16], True),
    (
        "vlan-8023-llc",
        1,
        bytes(Ether(**MAC) / Dot1Q(vlan=10, type=40) / LLC() / (b"s" * 37)),
        True,
    ),
    ("arp", 1, bytes(Ether(**MAC) / ARP()), True),
    ("lldp-ethertype", 1, eth(0x88CC, bytes(30)), True),
    ("unknown-ethertype", 1, eth(0x1234, bytes(V4_TCP)), True),
    ("ethertype-1501", 1, eth(1501, bytes(V4_TCP)), True),
    ("dot3-snap-ip", 1, bytes(Dot3(**MAC) / LLC() / SNAP(OUI=0, code=0x800) / V4_UDP), True),
    ("dot3-stp", 1, bytes(Dot3(**MAC) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / bytes(35)), True),
    ("eth-short", 1, bytes(Ether(**MAC))[:10], True),
    ("mpls-v4", 1, eth(0x8847, mpls(100) + bytes(V4_TCP)), True),
    ("mpls-stack-v6", 1, eth(0x8847, mpls(100, 200, 300) + bytes(V6_UDP)), True),
    ("mpls-8848", 1, eth(0x8848, mpls(16) + bytes(V4_UDP)), True),
    (
        "mpls-vlan",
        1,
        bytes(Ether(**MAC) / Dot1Q(vlan=3, type=0x8847)) + mpls(1, 2) + bytes(V4_TCP),
        True,
    ),
    ("mpls-gal", 1, eth(0x8847, mpls(13) + bytes(V4_TCP)), True),
    (
        "mpls-pseudowire-cw",
        1,
        eth(0x8847, mpls(99) + bytes(4) + bytes(Ether(**MAC) / V4_TCP)),
        True,
    ),
    ("mpls-pseudowire", 1, eth(0x8847, mpls(99) + bytes(Ether(**MAC) / V4_TCP)), True),
    ("mpls-no-bottom", 1, eth(0x8847, mpls(5, 6)[:4]), True),
    ("mpls-nibble-5", 1, eth(0x8847, mpls(5) + b"\x50" + bytes(40)), True),
    ("pppoe-v4", 1, pppoe(b"\x00\x21", bytes(V4_TCP)), True),
    ("pppoe-v6", 1, pppoe(b"\x00\x57", bytes(V6_TCP)), True),
    ("pppoe-scapy", 1, bytes(Ether(**MAC) / PPPoE(sessionid=1) / PPP(proto=0x21) / V4_UDP), True),
    ("pppoe-len-cuts-tcp", 1, pppoe(b"\x00\x21", bytes(V4_TCP), length=2 + 20 + 10), False),
    ("pppoe-len-short-of-ip", 1, pppoe(b"\x00\x21", bytes(V4_TCP), length=2 + 10), False),
    ("pppoe-len-0", 1, pppoe(b"\x00\x21", bytes(V4_TCP), length=0), True),
    ("pppoe-len-long", 1, pppoe(b"\x00\x21", bytes(V4_UDP), length=1400), True),
    ("pppoe-code-padi", 1, pppoe(b"\x00\x21", bytes(V4_UDP), code=9), True),
    ("pppoe-compressed", 1, pppoe(b"\x21", bytes(V4_UDP)), True),
    ("pppoe-lcp", 1, pppoe(b"\xc0\x21", bytes(20)), True),
    ("sll-v4", 113, bytes(CookedLinux(proto=0x800) / V4_TCP), True),
    ("sll-v6", 113, bytes(CookedLinux(proto=0x86DD) / V6_UDP), True),
    ("sll-vlan", 113, bytes(CookedLinux(proto=0x8100) / Dot1Q(vlan=4) / V4_UDP), True),
    ("sll-arp", 113, bytes(CookedLinux(proto=0x806) / ARP()), True),
    ("sll-netlink", 113, bytes(CookedLinux(lladdrtype=824, proto=0x800) / V4_TCP), True),
    ("sll-ipgre", 113, bytes(CookedLinux(lladdrtype=778, proto=0x800) / V4_TCP), True),
    (
        "sll-ipgre-vlan",
        113,
        bytes(CookedLinux(lladdrtype=778, proto=0x8100) / Dot1Q() / V4_TCP),
        True,
    ),
    ("sll-ipgre-arp", 113, bytes(CookedLinux(lladdrtype=778, proto=0x806) / ARP()), True),
    ("sll-pseudo-eth", 113, bytes(CookedLinux(proto=3) / Ether(**MAC) / V4_TCP), True),
    ("sll-short", 113, bytes(CookedLinux(proto=0x800))[:12], True),
    ("sll2-v4", 276, bytes(CookedLinuxV2(proto=0x800) / V4_UDP), True),
    ("sll2-v6", 276, bytes(CookedLinuxV2(proto=0x86DD) / V6_TCP), True),
    ("sll2-netlink", 276, bytes(CookedLinuxV2(lladdrtype=824, proto=0x800) / V4_UDP), True),
    ("sll2-ppp", 276, bytes(CookedLinuxV2(proto=7)) + b"\xff\x03\x00\x21" + bytes(V4_UDP), True),
    ("raw101-v4", 101, bytes(V4_TCP), True),
    ("raw101-v6", 101, bytes(V6_UDP), True),
    ("raw12-v4", 12, bytes(V4_UDP), True),
    ("raw14-v6", 14, bytes(V6_TCP), True),
    ("raw101-ppp", 101, b"\xff\x03\x00\x21" + bytes(V4_UDP), True),
    ("raw101-isdn", 101, bytes(6) + b"\xff\x03\x00\x21" + bytes(V4_UDP), True),
    ("raw101-ten-zeros", 101, bytes(10) + bytes(V4_UDP), True),
    ("raw101-v6-ff03", 101, bytes(IPv6(**V6, nh=0xFF, hlim=3) / (b"z" * 20)), True),
    ("raw101-short", 101, bytes(V4_UDP)[:7], True),
    ("ipv4-linktype", 228, bytes(V4_TCP), True),
    ("ipv4-linktype-v6", 228, bytes(V6_TCP), False),
    ("ipv6-linktype", 229, bytes(V6_UDP), True),
    ("ipv6-linktype-v4", 229, bytes(V4_UDP), False),
    ("null-le-v4", 0, struct.pack("<I", 2) + bytes(V4_TCP), True),
    ("null-be-v4", 0, struct.pack(">I", 2) + bytes(V4_TCP), True),
    *[(f"null-le-v6-{af}", 0, struct.pack("<I", af) + bytes(V6_TCP), True) for af in (24, 28, 30)],
    *[(f"null-be-v6-{af}", 0, struct.pack(">I", af) + bytes(V6_UDP), True) for af in (24, 28, 30)],
    ("null-linux-af10", 0, struct.pack("<I", 10) + bytes(V6_UDP), True),
    ("null-irix", 0, struct.pack("<I", 2 << 16) + bytes(V4_UDP), True),
    ("null-swapped16", 0, struct.pack("<HH", 0x0200, 0) + bytes(V4_UDP), True),
    ("null-ethertype", 0, struct.pack("<I", 0x800) + bytes(V4_UDP), True),
    ("null-ppp", 0, b"\xff\x03\x00\x21" + bytes(V4_UDP), True),
    ("null-short", 0, b"\x02\x00", True),
    ("loop-be-v4", 108, struct.pack(">I", 2) + bytes(V4_UDP), True),
    ("loop-be-v6", 108, struct.pack(">I", 28) + bytes(V6_TCP), True),
    ("loop-le-v4", 108, struct.pack("<I", 2) + bytes(V4_UDP), True),
    ("ppp", 9, b"\xff\x03\x00\x21" + bytes(V4_UDP), True),
    ("ppp-hdlc-50", 50, b"\xff\x03\x00\x57" + bytes(V6_UDP), True),
    ("unknown-linktype", 147, bytes(V4_UDP), True),
    # IPv4 oddities
    ("v4-options-rr", 1, bytes(Ether(**MAC) / IP(**V4, options=[IPOption_RR()]) / TCP_SYN), False),
    (
        "v4-options-nop",
        1,
        bytes(Ether(**MAC) / IP(**V4, options=[IPOption_NOP()] * 4) / UDP_DNS),
        False,
    ),
    (
        "v4-options-ssrr",
        1,
        bytes(
            Ether(**MAC)
            / IP(**V4, options=[IPOption_SSRR(routers=["10.1.1.1", "10.2.2.2"])])
            / UDP_DNS
        ),
        False,
    ),
    ("v4-frag-first", 1, bytes(Ether(**MAC) / IP(**V4, flags="MF") / TCP_ACK), False),
    ("v4-frag-later", 1, bytes(Ether(**MAC) / IP(**V4, frag=185) / (b"d" * 40)), False),
    ("v4-frag-last", 1, bytes(Ether(**MAC) / IP(**V4, frag=185, proto=17) / (b"d" * 40)), False),
    ("v4-evil-bit", 1, bytes(Ether(**MAC) / IP(**V4, flags="evil") / UDP_DNS), False),
    ("v4-df", 1, bytes(Ether(**MAC) / IP(**V4, flags="DF") / UDP_DNS), True),
    ("v4-tso-len0", 1, eth(0x0800, ip_with(len=0)), False),
    ("v4-len-10", 1, eth(0x0800, ip_with(len=10)), False),
    ("v4-len-cuts-tcp", 1, eth(0x0800, ip_with(len=30)), False),
    ("v4-len-header-only", 1, eth(0x0800, ip_with(len=20)), False),
    ("v4-ihl-4", 1, eth(0x0800, ip_with(ihl=4)), False),
    ("v4-version-6", 1, eth(0x0800, ip_with(version=6)), False),
    ("v4-bad-checksum", 1, eth(0x0800, ip_with(chksum=0x1234)), True),
    ("v4-icmp-echo", 1, bytes(Ether(**MAC) / IP(**V4) / ICMP()), True),
    (
        "v4-icmp-error",
        1,
        bytes(Ether(**MAC) / IP(**V4) / ICMP(type=3, code=3) / IP(**V4) / UDP_DNS),
        True,
    ),
    (
        "v4-gre",
        1,
        bytes(Ether(**MAC) / IP(**V4) / GRE() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP_SYN),
        True,
    ),
    ("v4-ipip", 1, bytes(Ether(**MAC) / IP(**V4) / V4_TCP), True),
    ("v4-6in4", 1, bytes(Ether(**MAC) / IP(**V4) / V6_UDP), True),
    (
        "v4-vxlan-udp",
        1,
        bytes(
            Ether(**MAC) / IP(**V4) / UDP(sport=1234, dport=4789) / bytes(8) / Ether(**MAC) / V4_TCP
        ),
        True,
    ),
    ("v4-udp-zero-payload", 1, bytes(Ether(**MAC) / IP(**V4) / UDP()), True),
    ("v4-proto-255", 1, bytes(Ether(**MAC) / IP(**V4, proto=255) / b"abc"), True),
    # IPv6 extension headers
    ("v6-hbh", 1, bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrHopByHop() / TCP_SYN), True),
    (
        "v6-hbh-router-alert",
        1,
        bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / UDP_DNS),
        True,
    ),
    (
        "v6-routing",
        1,
        bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrRouting(addresses=["2001:db8::9"]) / UDP_DNS),
        True,
    ),
    ("v6-destopt", 1, bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrDestOpt() / TCP_ACK), True),
    (
        "v6-chain",
        1,
        bytes(
            Ether(**MAC)
            / IPv6(**V6)
            / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrRouting(addresses=["2001:db8::9", "2001:db8::a"])
            / IPv6ExtHdrDestOpt()
            / TCP_SYN
        ),
        True,
    ),
    (
        "v6-frag-first",
        1,
        bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrFragment(m=1) / TCP_ACK),
        False,
    ),
    (
        "v6-frag-later",
        1,
        bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrFragment(offset=100, nh=6) / (b"d" * 40)),
        False,
    ),
    (
        "v6-hbh-frag",
        1,
        bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment() / UDP_DNS),
        False,
    ),
    ("v6-no-next", 1, bytes(Ether(**MAC) / IPv6(**V6, nh=59)), False),
    ("v6-no-next-payload", 1, bytes(Ether(**MAC) / IPv6(**V6, nh=59) / (b"p" * 8)), True),
    ("v6-icmpv6", 1, bytes(Ether(**MAC) / IPv6(**V6) / ICMPv6EchoRequest()), True),
    ("v6-esp", 1, bytes(Ether(**MAC) / IPv6(**V6, nh=50) / (b"e" * 24)), True),
    (
        "v6-plen-cuts-ext",
        1,
        bytes(Ether(**MAC) / IPv6(**V6, plen=4) / IPv6ExtHdrHopByHop() / TCP_SYN),
        False,
    ),
    ("v6-plen-cuts-tcp", 1, bytes(Ether(**MAC) / IPv6(**V6, plen=12) / TCP_SYN), False),
    ("v6-plen-long", 1, bytes(Ether(**MAC) / IPv6(**V6, plen=1400) / TCP_SYN), True),
    (
        "v6-ext-len-overruns",
        1,
        bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrDestOpt(len=30) / UDP_DNS),
        False,
    ),
    (
        "v6-hbh-jumbo-opt",
        1,
        eth(0x86DD, v6_ext(0, bytes([6, 0, 0xC2, 4, 0, 1, 0, 0])) + bytes(TCP_SYN)),
        False,
    ),
    (
        "v6-hbh-jumbo-plen0",
        1,
        eth(0x86DD, v6_ext(0, bytes([17, 0, 0xC2, 4, 0, 1, 0, 0]), plen=0) + bytes(UDP_DNS)),
        False,
    ),
    (
        "v6-hbh-unknown-opt",
        1,
        eth(0x86DD, v6_ext(0, bytes([6, 0, 0x1E, 4, 1, 2, 3, 4])) + bytes(TCP_SYN)),
        False,
    ),
    (
        "v6-hbh-padn-overruns",
        1,
        eth(0x86DD, v6_ext(0, bytes([6, 0, 1, 9, 0, 0, 0, 0])) + bytes(TCP_SYN)),
        False,
    ),
    (
        "v6-hbh-padn-pad1s",
        1,
        eth(0x86DD, v6_ext(0, bytes([6, 0, 1, 2, 0, 0, 0, 0])) + bytes(TCP_SYN)),
        True,
    ),
    (
        "v6-hbh-pad1s",
        1,
        eth(0x86DD, v6_ext(0, bytes([17, 0, 0, 0, 0, 0, 0, 0])) + bytes(UDP_DNS)),
        True,
    ),
    (
        "v6-hbh-ra-len4",
        1,
        eth(0x86DD, v6_ext(0, bytes([6, 0, 5, 4, 0, 0, 0, 0])) + bytes(TCP_SYN)),
        False,
    ),
    ("v6-destopt-pad1-at-end", 1, eth(0x86DD, v6_ext(60, bytes([59, 0, 1, 3, 0, 0, 0, 0]))), False),
    ("v6-destopt-last-nonext", 1, eth(0x86DD, v6_ext(60, bytes([59, 0, 1, 4, 0, 0, 0, 0]))), True),
    (
        "v6-destopt-home-addr",
        1,
        eth(0x86DD, v6_ext(60, bytes([6, 2, 0xC9, 16, *range(16), 1, 2])) + bytes(TCP_SYN)),
        False,
    ),
    (
        "v6-routing-type2",
        1,
        eth(0x86DD, v6_ext(43, bytes([6, 2, 2, 1, 0, 0, 0, 0, *range(16)])) + bytes(TCP_SYN)),
        True,
    ),
    (
        "v6-routing-type2-short",
        1,
        eth(0x86DD, v6_ext(43, bytes([6, 0, 2, 1, 0, 0, 0, 0])) + bytes(TCP_SYN)),
        False,
    ),
    (
        "v6-routing-srh",
        1,
        eth(0x86DD, v6_ext(43, bytes([17, 2, 4, 0, 0, 0, 0, 0, *range(16)])) + bytes(UDP_DNS)),
        False,
    ),
    (
        "v6-routing-rpl",
        1,
        eth(0x86DD, v6_ext(43, bytes([17, 0, 3, 0, 0, 0, 0, 0])) + bytes(UDP_DNS)),
        False,
    ),
    ("v6-version-4", 1, eth(0x86DD, b"\x45" + bytes(V6_UDP)[1:]), False),
    ("v6-in-0800", 1, eth(0x0800, bytes(V6_UDP)), False),
]


@pytest.mark.parametrize(
    ("linktype", "data", "fast"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_generated_case(linktype: int, data: bytes, fast: bool) -> None:
    assert check(linktype, data) == fast


def test_case_ids_unique() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)


def test_the_inlined_ethernet_dispatch_matches_the_walker() -> None:
    """decode() looks Ethernet's type field up in ETHERTYPES itself: that is the Ethernet step's
    lookup only while link type 1 is that step and every key is an ethertype (>= 0x0600)."""
    assert WALKED_LINKTYPES[1] is framing.ethernet
    assert min(framing.ETHERTYPES) >= 0x0600
    base = bytes(Ether(**MAC) / V4_UDP)
    for etype in range(0x10000):  # the same answer as the scapy engine for every type value
        frame = base[:12] + etype.to_bytes(2, "big") + base[14:]
        assert dissect_fast(1, frame) == dissect(1, frame), hex(etype)


def test_decode_values() -> None:
    """Spot-check the values themselves, not only the agreement with dissect()."""
    res = decode(1, bytes(Ether(**MAC) / Dot1Q(vlan=1) / V4_TCP))
    assert res == PacketInfo(bytes([192, 0, 2, 1]), bytes([198, 51, 100, 7]), 6, 40000, 443, 0x02)
    res = decode(1, bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrHopByHop() / UDP_DNS))
    assert isinstance(res, PacketInfo)
    assert (res.proto, res.sport, res.dport, len(res.src)) == (17, 5353, 53, 16)
    assert decode(1, bytes(Ether(**MAC) / ARP())) == "non_ip"


TRUNCATION_BASES = [
    ("eth-v6-tcp", 1, bytes(Ether(**MAC) / IPv6(**V6) / IPv6ExtHdrDestOpt() / TCP_ACK)),
    ("eth-v4-tcp", 1, bytes(Ether(**MAC) / Dot1Q(vlan=7) / V4_TCP)),
    ("pppoe-v4", 1, pppoe(b"\x00\x21", bytes(V4_UDP))),
    ("sll2-v6", 276, bytes(CookedLinuxV2(proto=0x86DD) / V6_TCP)),
    ("null-v4", 0, struct.pack("<I", 2) + bytes(V4_TCP)),
]


@pytest.mark.parametrize(
    ("linktype", "data"), [b[1:] for b in TRUNCATION_BASES], ids=[b[0] for b in TRUNCATION_BASES]
)
def test_truncated_at_every_offset(linktype: int, data: bytes) -> None:
    handled = [k for k in range(len(data) + 1) if check(linktype, data[:k])]
    assert handled, "the whole frame at least must be decoded"
    assert len(data) in handled


# --- property tests ----------------------------------------------------------------------------

VALID = [(c[1], c[2]) for c in CASES if c[3]]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linktype=st.sampled_from(LINKTYPES), data=st.binary(max_size=120))
def test_random_bytes(linktype: int, data: bytes) -> None:
    check(linktype, data)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[int, bytes]:
    linktype, frame = draw(st.sampled_from(VALID))
    buf = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        pos = draw(st.integers(0, min(len(buf) - 1, 100)))
        buf[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(buf)))
    if draw(st.booleans()):
        buf = buf[:cut]
    return linktype, bytes(buf)


@pytest.mark.slow
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_frames(case: tuple[int, bytes]) -> None:
    check(*case)


# Option TLVs for random hop-by-hop / destination options: mostly Pad1, PadN and router alerts
# (what decode() accepts), sometimes jumbo, tunnel limit, home address or arbitrary bytes.
_PADN = st.integers(0, 6).map(lambda n: bytes([1, n]) + bytes(n))
OPTION = st.one_of(
    *[st.just(b"\x00"), _PADN, st.just(b"\x05\x02\x00\x00")] * 3,
    st.sampled_from([b"\xc2\x04\x00\x01\x00\x00", b"\x04\x01\x05", b"\xc9\x10" + bytes(16)]),
    st.binary(min_size=2, max_size=10),
)


def _options(draw: st.DrawFn, size: int) -> bytes:
    """Options for ``size`` bytes: drawn TLVs, then Pad1s; cut where they overrun."""
    body = b"".join(draw(st.lists(OPTION, max_size=3)))
    return (body + bytes(size))[:size]


@st.composite
def ipv6_chain(draw: st.DrawFn) -> bytes:
    """An Ethernet/IPv6 frame with a random extension chain and transport header; mostly
    well-formed so that decode() answers often, sometimes cut or with lengths that lie."""
    kinds = draw(st.lists(st.sampled_from([0, 43, 60] * 3 + [44]), min_size=1, max_size=3))
    upper = draw(st.sampled_from([6, 17] * 3 + [58, 59, 0, 60]))
    chain = []
    for i, kind in enumerate(kinds):
        nxt = kinds[i + 1] if i + 1 < len(kinds) else upper
        units = draw(st.integers(0, 2))
        size = 8 if kind == 44 else (units + 1) * 8
        if kind == 43:
            routing = draw(st.sampled_from([0, 0, 2, 3, 4]))
            body = bytes([routing, draw(st.integers(0, 3))]) + _options(draw, size - 4)
        elif kind == 44:
            body = bytes([0, 0, draw(st.sampled_from([0, 0, 1, 8])), 0, 0, 0])
        else:
            body = _options(draw, size - 2)
        length = 0 if kind == 44 else draw(st.sampled_from([units] * 6 + [units + 1, 7]))
        chain.append(bytes([nxt, length]) + body)
    ext = b"".join(chain)
    transport = draw(st.sampled_from([bytes(TCP_SYN), bytes(UDP_DNS), b"", bytes(TCP_ACK)[:13]]))
    plen = len(ext) + len(transport)
    plen = draw(st.sampled_from([plen] * 6 + [plen - 8, plen + 8, 0]))
    frame = eth(0x86DD, v6_ext(kinds[0], ext + transport, max(plen, 0)))
    if draw(st.sampled_from([False, False, False, True])):
        frame = frame[: draw(st.integers(14, len(frame)))]
    return frame


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=ipv6_chain())
def test_ipv6_extension_chains(frame: bytes) -> None:
    check(1, frame)


# --- whole traces ------------------------------------------------------------------------------


def _all_records(path: Path, limit: int | None = None) -> list[RawRecord]:
    with open_capture(str(path)) as cap:
        return list(itertools.islice(cap, limit))


def test_sample_trace(tmp_path: Path) -> None:
    path = tmp_path / "sample.pcap"
    write_sample(path, flows=500)
    records = _all_records(path)
    handled = sum(check(r.linktype, r.data) for r in records)
    assert handled == len(records) > 1000  # plain Ethernet IPv4/IPv6 TCP/UDP: never scapy
    fast, ref = fold(records, dissect_fast), fold(records, dissect)
    assert (fast.flows, fast.not_counted, fast.packets, fast.bytes) == (
        ref.flows,
        ref.not_counted,
        ref.packets,
        ref.bytes,
    )


@pytest.mark.skipif(not BIG.is_file(), reason=f"benchmark trace {BIG} not built")
def test_benchmark_slice() -> None:
    records = _all_records(BIG, 10_000)
    handled = sum(check(r.linktype, r.data) for r in records)
    assert handled == len(records) == 10_000
