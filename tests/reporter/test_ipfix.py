"""The IPFIX encoder (RFC 7011), read back by a decoder written here from the RFC's layouts:
message and set headers, templates, data records, sizes, sequence numbers, template refresh."""

from __future__ import annotations

import socket
import struct

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowherd.console.hostport import parse_hostport
from flowherd.models.errors import FlowherdError
from flowherd.models.flows import NS, FlowKey, FlowStats, canonical
from flowherd.reporter.cli.export import send_udp
from flowherd.reporter.output.ipfix import DEFAULT_MTU, Encoder, Record, flow_records

# IANA information element ids (https://www.iana.org/assignments/ipfix) and the names we check
IE = {8: "src", 12: "dst", 27: "src", 28: "dst", 7: "sport", 11: "dport", 4: "proto",
      6: "tcp_flags", 2: "packets", 1: "bytes", 152: "first_ms", 153: "last_ms"}  # fmt: skip
MS = 1_000_000


def decode(
    msg: bytes, templates: dict[int, list[tuple[int, int]]]
) -> tuple[dict[str, int], list[dict[str, object]], bool]:
    """(header, data records as {name: value}, whether it carried templates); templates met
    are added to ``templates``."""
    version, length, export_time, seq, domain = struct.unpack_from("!HHIII", msg)
    assert version == 10 and length == len(msg)
    off, recs, had_templates = 16, [], False
    while off < len(msg):
        set_id, set_len = struct.unpack_from("!HH", msg, off)
        assert set_len >= 4 and off + set_len <= len(msg)
        body, off = msg[off + 4 : off + set_len], off + set_len
        if set_id == 2:
            had_templates = True
            p = 0
            while p < len(body):
                tid, count = struct.unpack_from("!HH", body, p)
                fields = [struct.unpack_from("!HH", body, p + 4 + 4 * i) for i in range(count)]
                assert all(ie < 0x8000 for ie, _ in fields)  # no enterprise bit
                templates[tid] = fields
                p += 4 + 4 * count
            continue
        assert set_id >= 256 and set_id in templates, set_id
        fields = templates[set_id]
        size = sum(n for _, n in fields)
        assert len(body) % size == 0  # we send no padding
        for p in range(0, len(body), size):
            rec: dict[str, object] = {}
            for ie, n in fields:
                raw = body[p : p + n]
                rec[IE[ie]] = raw if IE[ie] in ("src", "dst") else int.from_bytes(raw, "big")
                p += n
            recs.append(rec)
    return {"time": export_time, "seq": seq, "domain": domain}, recs, had_templates


def expected(r: Record) -> dict[str, object]:
    return {"src": r.src, "dst": r.dst, "sport": r.sport, "dport": r.dport, "proto": r.proto,
            "tcp_flags": r.tcp_flags, "packets": r.packets, "bytes": r.bytes,
            "first_ms": max(r.first_ns, 0) // MS, "last_ms": max(r.last_ns, 0) // MS}  # fmt: skip


RECORDS = st.builds(
    Record,
    src=st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16)),
    dst=st.just(b""),
    proto=st.integers(0, 255),
    sport=st.integers(0, 65535),
    dport=st.integers(0, 65535),
    tcp_flags=st.integers(0, 255),
    packets=st.integers(1, 2**53),
    bytes=st.integers(1, 2**53),
    first_ns=st.integers(-(10**12), 2**62),
    last_ns=st.integers(0, 2**62),
).map(lambda r: r._replace(dst=bytes(reversed(r.src))))


@given(st.lists(RECORDS, max_size=200), st.integers(200, 9000), st.integers(1, 5))
@settings(max_examples=200, deadline=None)
def test_messages_decode_to_the_records(records: list[Record], mtu: int, every: int) -> None:
    enc = Encoder(domain=7, mtu=mtu, template_every=every)
    templates: dict[int, list[tuple[int, int]]] = {}
    got, seq = [], 0
    msgs = list(enc.messages(records, lambda: 1_700_000_000))
    for i, m in enumerate(msgs):
        assert len(m) <= mtu
        head, recs, had = decode(m, templates)
        assert head == {"time": 1_700_000_000, "seq": seq, "domain": 7}
        assert had == (i % every == 0)  # the first message, then every `every` messages
        assert recs  # no message without data
        seq += len(recs)
        got += recs
    assert got == [expected(r) for r in records]
    assert (enc.records, enc.sent, enc.sequence) == (len(records), len(msgs), len(records))
    if records:  # a message is full: the next record would not have fitted
        assert all(len(m) > mtu - 4 - 71 for m in msgs[:-1])


def test_templates_are_the_iana_elements_and_refresh_with_time() -> None:
    clock = iter([100, 100, 130, 170, 171, 172]).__next__
    enc = Encoder(mtu=200, template_every=1000, template_s=60)
    v4 = Record(
        bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 6, 1000, 80, 0x12, 3, 180, 5 * NS, 6 * NS
    )
    v6 = v4._replace(src=bytes(15) + b"\x01", dst=bytes(15) + b"\x02")
    templates: dict[int, list[tuple[int, int]]] = {}
    seen = [decode(m, templates)[2] for m in enc.messages([v4, v6] * 5, clock)]
    assert seen == [True, False, False, True, False, False]  # 60 s after the first: resent
    assert templates[256] == [
        (8, 4),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (6, 2),
        (2, 8),
        (1, 8),
        (152, 8),
        (153, 8),
    ]
    assert templates[257][:2] == [(27, 16), (28, 16)] and templates[257][2:] == templates[256][2:]
    # the sequence continues over calls (one transport session)
    more = list(enc.messages([v4], lambda: 200))
    assert decode(more[0], templates)[0]["seq"] == 10 and enc.sequence == 11
    with pytest.raises(ValueError, match="at least"):
        Encoder(mtu=100)


def test_a_message_mixes_families_in_separate_sets() -> None:
    v4 = Record(bytes([1, 2, 3, 4]), bytes([5, 6, 7, 8]), 17, 53, 5353, 0, 1, 80, NS, NS)
    v6 = v4._replace(src=bytes(16), dst=bytes(15) + b"\x01")
    (msg,) = Encoder().messages([v4, v4, v6, v4], lambda: 0)
    sets, off = [], 16
    while off < len(msg):
        sid, n = struct.unpack_from("!HH", msg, off)
        sets.append(sid)
        off += n
    assert sets == [2, 256, 257, 256] and len(msg) <= DEFAULT_MTU


def test_flow_records_are_the_directions_with_packets() -> None:
    a, b = bytes([10, 0, 0, 9]), bytes([10, 0, 0, 1])
    key, d = canonical(a, b, 6, 40000, 443)
    st_ = FlowStats()
    st_.add(d, 2 * NS, 60, 0x02)
    st_.add(d, 3 * NS, 1500, 0x10)
    st_.add(1 - d, 2 * NS + 5, 60, 0x12)
    one = FlowStats()
    one.add(0, 9 * NS, 70, 0)
    pairs = [(key.pack(), st_.pack()), (FlowKey(b, a, 17, 1, 2).pack(), one.pack())]
    recs = list(flow_records(pairs))
    assert [r for r in recs if r.src == a] == [
        Record(a, b, 6, 40000, 443, 0x12, 2, 1560, 2 * NS, 3 * NS)
    ]
    assert [r for r in recs if r.src == b and r.proto == 6] == [
        Record(b, a, 6, 443, 40000, 0x12, 1, 60, 2 * NS + 5, 2 * NS + 5)
    ]
    assert len(recs) == 3
    assert [r.proto for r in flow_records(pairs, keep=lambda k, s: k.proto == 17)] == [17]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:4739", ("127.0.0.1", 4739)),
        ("[::1]:2055", ("::1", 2055)),
        ("collector:9995", ("collector", 9995)),
    ],
)
def test_parse_hostport(text: str, want: tuple[str, int]) -> None:
    assert parse_hostport(text) == want


@pytest.mark.parametrize("text", ["127.0.0.1", ":4739", "host:0", "host:70000", "host:x"])
def test_parse_hostport_refuses(text: str) -> None:
    with pytest.raises(click.BadParameter, match="HOST:PORT"):
        parse_hostport(text)


def test_send_udp_delivers_each_message_as_one_datagram() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        port = rx.getsockname()[1]
        msgs = [bytes([i]) * (100 + i) for i in range(20)]
        send_udp(msgs, "127.0.0.1", port, rate=0)
        rx.settimeout(10)
        got = [rx.recv(65535) for _ in msgs]
    assert got == msgs


def test_send_udp_says_when_nothing_listens() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    with pytest.raises(FlowherdError, match="is a collector listening"):
        send_udp([b"x"] * 50, "127.0.0.1", port, rate=0)
