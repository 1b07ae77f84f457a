"""Linux NFLOG (LINKTYPE 239) and raw IPv4/IPv6 (228, 229) captures through the real pipeline.

Each capture is written with tests/support/helpers.py's pcap builder, submitted with both engines to two
real worker processes, and its flow table must equal :data:`EXPECTED`: what TShark 4.0 (the
oracle's tshark) reads from the same files, recorded here and re-checked against tshark itself
where it is installed (``test_expected_tables_are_tsharks``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from flowherd.models.capture import CaptureState
from flowherd.producer.run.follow import LocalWorkers
from flowherd.store.backend import Store
from tests.support.helpers import pcap_bytes
from tests.support.pipeline import ENGINES, UniKey, run_capture, settings_for, uni_table

pytestmark = [pytest.mark.redis, pytest.mark.e2e, pytest.mark.timeout(180)]

H = bytes.fromhex
TCP4 = bytes(IP(src="10.1.0.1", dst="10.2.0.2") / TCP(sport=40000, dport=443, flags="S"))
TCP4_BACK = bytes(IP(src="10.2.0.2", dst="10.1.0.1") / TCP(sport=443, dport=40000, flags="SA"))
ICMP4 = bytes(IP(src="10.1.0.1", dst="10.9.9.9") / ICMP())
UDP4 = bytes(IP(src="192.0.2.1", dst="198.51.100.2") / UDP(sport=5353, dport=53) / b"q")
UDP6 = bytes(IPv6(src="2001:db8::a", dst="2001:db8::b") / UDP(sport=5353, dport=53) / b"q")
TCP6 = bytes(IPv6(src="2001:db8::b", dst="2001:db8::a") / TCP(sport=22, dport=50000, flags="A"))


def tlv(tlv_type: int, value: bytes, order: str) -> bytes:
    """An NFLOG TLV padded to 4 bytes, its header in byte order ``order``."""
    return struct.pack(order + "HH", 4 + len(value), tlv_type) + value + bytes(-len(value) % 4)


def nflog(family: int, hw_protocol: int | None, packet: bytes, order: str = "<") -> bytes:
    """What the kernel logs for ``tcpdump -i nflog:5``: packet header (hw protocol, hook),
    prefix, uid, then the payload TLV, in the capturing host's byte order."""
    head = [] if hw_protocol is None else [tlv(1, struct.pack("!HBx", hw_protocol, 3), order)]
    prefix = tlv(10, b"flowherd: \0", order)
    uid = tlv(11, H("000003e8"), order)
    return bytes([family, 0]) + H("0005") + b"".join([*head, prefix, uid, tlv(9, packet, order)])


def frames(order: str) -> list[tuple[bytes, int]]:
    """NFLOG frames and their wire lengths (a frame cut by the snaplen has a longer one)."""
    cut = nflog(2, 0x0800, TCP4, order)
    return [
        (nflog(2, 0x0800, TCP4, order), 0),
        (nflog(2, 0x0800, TCP4_BACK, order), 0),
        (nflog(2, 0x0800, TCP4, order), 0),
        (nflog(10, 0x86DD, UDP6, order), 0),
        (nflog(10, None, TCP6, order), 0),  # no packet header: the family says IPv6
        (nflog(2, None, ICMP4, order), 0),
        (nflog(2, 0x0806, bytes(28), order), 0),  # ARP: not IP
        (nflog(7, None, TCP4, order), 0),  # an unknown family: not IP
        (cut[:-20], len(cut)),  # cut inside its payload: tshark finds no IP
    ]


def records(items: list[tuple[bytes, int]]) -> list[tuple[int, int, int, bytes]]:
    return [(1_700_000_000 + i, 0, wire or len(f), f) for i, (f, wire) in enumerate(items)]


#: name -> (linktype, byte order of the file, records)
CAPTURES: dict[str, tuple[int, str, list[tuple[int, int, int, bytes]]]] = {
    "nflog": (239, "<", records(frames("<"))),
    "nflog-big-endian": (239, ">", records(frames(">"))),
    "ipv4": (228, "<", records([(UDP4, 0), (TCP4, 0), (TCP4_BACK, 0), (UDP6, 0)])),
    "ipv6": (229, "<", records([(UDP6, 0), (TCP6, 0), (UDP6, 0), (UDP4, 0)])),
}

_NFLOG_TABLE: dict[UniKey, list[int]] = {
    ("10.1.0.1", "10.2.0.2", 6, 40000, 443): [2, 160],
    ("10.2.0.2", "10.1.0.1", 6, 443, 40000): [1, 80],
    ("2001:db8::a", "2001:db8::b", 17, 5353, 53): [1, 92],
    ("2001:db8::b", "2001:db8::a", 6, 22, 50000): [1, 92],
    ("10.1.0.1", "10.9.9.9", 1, 0, 0): [1, 60],
}
#: name -> (uni table: [packets, wire bytes] per flow, frames not counted), as tshark reads them.
#: An IPv6 packet in LINKTYPE_IPV4 (and IPv4 in LINKTYPE_IPV6) has no IP header for the oracle
#: (tshark's "ip" dissector has no ip.src for it); both engines count it as malformed_ip.
EXPECTED: dict[str, tuple[dict[UniKey, list[int]], int]] = {
    "nflog": (_NFLOG_TABLE, 3),
    "nflog-big-endian": (_NFLOG_TABLE, 3),
    "ipv4": (
        {
            ("192.0.2.1", "198.51.100.2", 17, 5353, 53): [1, 29],
            ("10.1.0.1", "10.2.0.2", 6, 40000, 443): [1, 40],
            ("10.2.0.2", "10.1.0.1", 6, 443, 40000): [1, 40],
        },
        1,
    ),
    "ipv6": (
        {
            ("2001:db8::a", "2001:db8::b", 17, 5353, 53): [2, 98],
            ("2001:db8::b", "2001:db8::a", 6, 22, 50000): [1, 60],
        },
        1,
    ),
}


def write(tmp_path: Path, name: str) -> Path:
    linktype, order, recs = CAPTURES[name]
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(pcap_bytes(recs, endian=order, network=linktype))
    return path


_FIELDS = ["frame.len", "frame.protocols", "ip.src", "ip.dst", "ip.proto"]
_FIELDS += ["ipv6.src", "ipv6.dst", "ipv6.nxt", "tcp.srcport", "tcp.dstport"]
_FIELDS += ["udp.srcport", "udp.dstport"]


def tshark_table(path: Path) -> tuple[dict[UniKey, list[int]], int]:
    """The oracle's rules (../shared/oracle/README.md) on tshark's fields: the first IP header's
    addresses, proto and the ports of a TCP/UDP header right after it; no IP: not counted."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
        + [a for f in _FIELDS for a in ("-e", f)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    table: dict[UniKey, list[int]] = {}
    not_counted = 0
    for line in out.splitlines():
        f = dict(zip(_FIELDS, line.split("\t"), strict=True))
        tokens = f["frame.protocols"].split(":")
        fam = next((t for t in tokens if t in ("ip", "ipv6")), None)
        if fam is None or not f[f"{fam}.src"]:
            not_counted += 1
            continue
        proto = int(f["ip.proto"] if fam == "ip" else f["ipv6.nxt"])
        after = tokens[tokens.index(fam) + 1 : tokens.index(fam) + 2]
        l4 = {6: "tcp", 17: "udp"}.get(proto, "")
        ports = (int(f[f"{l4}.srcport"]), int(f[f"{l4}.dstport"])) if after == [l4] else (0, 0)
        key = (f[f"{fam}.src"], f[f"{fam}.dst"], proto, *ports)
        packets, size = table.get(key, [0, 0])
        table[key] = [packets + 1, size + int(f["frame.len"])]
    return table, not_counted


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_expected_tables_are_tsharks(tmp_path: Path, name: str) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (scripts/install.sh --test installs it)")
    assert tshark_table(write(tmp_path, name)) == EXPECTED[name]


@pytest.mark.parametrize("engine", ENGINES)
def test_link_types_through_the_pipeline(
    store: Store, redis_url: str, tmp_path: Path, engine: str
) -> None:
    """Every capture, in batches of 4 frames, with two worker processes: the flow table and
    totals tshark reads, with either engine."""
    settings = settings_for(redis_url, batch_packets=4, engine=engine)
    with LocalWorkers(redis_url, settings.queue, 2) as w:
        for name in sorted(CAPTURES):
            path = write(tmp_path, name)
            st = run_capture(store, settings, [str(path)], f"{engine}-{name}", w)
            table, not_counted = EXPECTED[name]
            recs = CAPTURES[name][2]
            assert st.state is CaptureState.COMPLETE, (name, st)
            assert uni_table(store, f"{engine}-{name}") == table, name
            assert (st.packets, st.bytes) == (len(recs), sum(r[2] for r in recs)), name
            assert sum(b.packets for b in st.not_counted.values()) == not_counted, name
            assert "unsupported_linktype" not in st.not_counted, name


def test_an_unknown_link_type_is_still_counted_apart(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    """LINKTYPE_USER0 (147): every frame lands in ``unsupported_linktype``, with either engine."""
    path = tmp_path / "user0.pcap"
    path.write_bytes(pcap_bytes([(1, 0, len(UDP4), UDP4)] * 3, network=147))
    for engine in ENGINES:
        settings = settings_for(redis_url, engine=engine)
        with LocalWorkers(redis_url, settings.queue, 1) as w:
            st = run_capture(store, settings, [str(path)], f"user0-{engine}", w)
        assert st.state is CaptureState.COMPLETE
        assert uni_table(store, f"user0-{engine}") == {}
        assert st.not_counted["unsupported_linktype"].packets == 3
