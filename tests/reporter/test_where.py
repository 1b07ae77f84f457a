"""The ``--where`` filter language: tokenizer, parser, units, error columns, and its meaning
on both views checked against plain Python predicates over the reported rows."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowherd.models.capture import BucketCount, CaptureState, CaptureStatus
from flowherd.models.flows import NS, FlowKey, FlowStats, canonical
from flowherd.models.report import ConvRow, FlowRow
from flowherd.reporter.analysis.scan import top_from_pairs, uni_sizes
from flowherd.reporter.output.lines import write_rows
from flowherd.reporter.table.order import top
from flowherd.reporter.table.views import conv_row, uni_row, uni_rows
from flowherd.reporter.where.apply import WhereError, compile_where, matched_status
from flowherd.reporter.where.parse import Facts, tokenize

T0 = 1_700_000_000 * NS

# ---------------------------------------------------------------------------------------------
# the language on one flow


def facts(**kw: object) -> Facts:
    base = dict(
        src=ip_address("10.0.0.1").packed,
        dst=ip_address("93.184.216.34").packed,
        proto=6,
        sport=40000,
        dport=443,
        packets=10,
        bytes=2_000_000,
        first=T0,
        last=T0 + 4 * NS,
    )
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


F = facts()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("proto tcp and dport 443 and bytes > 1M", True),
        ("proto tcp and dport 443 and bytes > 2M", False),
        ("tcp", True),
        ("udp", False),
        ("proto = 6", True),
        ("proto != tcp", False),
        ("proto 17 or dport == 443", True),
        ("not tcp", False),
        ("! udp", True),
        ("tcp && (port 80 || port 443)", True),
        ("tcp and port 80 or port 443", True),  # and binds tighter
        ("tcp and (port 80 or port 22)", False),
        ("not not tcp", True),
        ("host 10.0.0.1", True),
        ("host 93.184.216.34", True),
        ("src host 93.184.216.34", False),
        ("dst host 93.184.216.34", True),
        ("host != 10.0.0.1", False),
        ("src 10.0.0.1", True),
        ("dst 10.0.0.0/8", False),
        ("net 10.0.0.0/8", True),
        ("src net 10.0.0.0/8 and dst net 93.184.0.0/16", True),
        ("net 2001:db8::/32", False),
        ("net != 192.168.0.0/16", True),
        ("port 443", True),
        ("port 40000", True),
        ("port != 443", False),  # neither port is 443
        ("port < 1024", True),  # either port
        ("sport < 1024", False),
        ("dport <= 443 and dport >= 443", True),
        ("src port 40000 and dst port 443", True),
        ("packets >= 10 and packets < 11", True),
        ("packets > 1k", False),
        ("bytes = 2M", True),
        ("bytes >= 2MB", True),
        ("bytes > 1.9MiB", True),  # 1.9 MiB = 1992294.4 bytes
        ("bytes > 2MiB", False),
        ("bytes < 2000001", True),
        ("bytes >= 2000k", True),
        ("duration = 4s", True),
        ("duration > 3999ms and duration < 4001ms", True),
        ("duration >= 1m", False),
        ("duration < 1h", True),
        ("duration = 4000000000ns", True),
        ("duration > 4", False),  # seconds
        ("rate = 4M", True),  # 2 MB * 8 / 4 s = 4 Mbit/s
        ("rate = 4Mbps and rate = 4000kbit/s and rate = 500kB/s", True),
        ("rate > 4M", False),
        ("first >= 1700000000 and last <= 1700000004", True),
        ("first > 1700000000.5", False),
        ("  tcp  ", True),
        ("TCP AND DPORT 443", True),
    ],
)
def test_filters_on_one_flow(text: str, expected: bool) -> None:
    assert compile_where(text).matches(F) is expected


def test_rate_of_one_packet_or_no_duration_is_zero() -> None:
    assert compile_where("rate = 0").matches(facts(packets=1))
    assert compile_where("rate = 0").matches(facts(last=T0))
    assert not compile_where("rate > 0").matches(facts(last=T0))


def test_family_mismatch_never_matches() -> None:
    v6 = facts(src=ip_address("2001:db8::1").packed, dst=ip_address("::1").packed)
    assert compile_where("net 2001:db8::/32").matches(v6)
    assert not compile_where("net 0.0.0.0/0").matches(v6)
    assert compile_where("dst host ::1").matches(v6)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("proto tcp and dprt 443", "unknown field 'dprt'", 15),
        ("proto tcp and dport 443 and bytes > 1X", "bytes needs a size", 37),
        ("bytes > ", "expected a value", 9),
        ("bytes 5", "bytes needs a comparison", 7),
        ("(tcp or udp", "expected ')'", 12),
        ("tcp udp", "expected and, or or the end", 5),
        ("tcp and", "expected a test", 8),
        ("", "empty filter", 1),
        ("   ", "empty filter", 1),
        ("port 70000", "a port is a number", 6),
        ("proto foo", "unknown protocol 'foo'", 7),
        ("host 10.0.0.0/8", "host takes one address", 6),
        ("net 10.0.0.300/8", "expected a network", 5),
        ("host > 10.0.0.1", "> does not apply here", 6),
        ("duration > 5 parsecs", "expected and, or", 14),
        ("duration > 5y", "duration needs a duration", 12),
        ("rate > 1Mbitz", "rate needs a rate", 8),
        ("first > 1s", "first needs a time", 9),
        ("tcp ; udp", "unexpected character ';'", 5),
        (")", "expected a test", 1),
    ],
)
def test_errors_name_the_column(text: str, message: str, column: int) -> None:
    with pytest.raises(WhereError) as info:
        compile_where(text)
    assert message in str(info.value)
    assert info.value.column == column
    assert str(info.value).startswith("--where: ") and str(info.value).endswith(
        f" at column {column}"
    )
    assert info.value.exit_code == 2 and isinstance(info.value, ValueError)


def test_tokens_carry_columns() -> None:
    toks = tokenize("dport>=443&&!(host ::1)")
    assert [(t.kind, t.text, t.col) for t in toks] == [
        ("word", "dport", 1),
        ("op", ">=", 6),
        ("word", "443", 8),
        ("and", "&&", 11),
        ("not", "!", 13),
        ("(", "(", 14),
        ("word", "host", 15),
        ("word", "::1", 20),
        (")", ")", 23),
        ("end", "", 24),
    ]


# ---------------------------------------------------------------------------------------------
# both views against plain predicates over the rows

V4 = [ip_address(a).packed for a in ("10.0.0.1", "10.0.0.2", "192.168.1.1", "93.184.216.34")]
V6 = [ip_address(a).packed for a in ("2001:db8::1", "2001:db8::2", "::1", "fe80::1")]
PORTS = [0, 22, 53, 80, 443, 40000]
PACKET = st.tuples(
    st.booleans(),
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from([1, 6, 17, 132]),
    st.sampled_from(PORTS),
    st.sampled_from(PORTS),
    st.one_of(st.integers(T0, T0 + 10 * NS), st.sampled_from([T0, T0 + NS])),  # ties too
    st.one_of(st.integers(40, 1500), st.integers(10**5, 10**7)),
)


def build(packets: list[tuple]) -> dict[FlowKey, FlowStats]:  # type: ignore[type-arg]
    table: dict[FlowKey, FlowStats] = {}
    for v6, si, di, proto, sp, dp, ts, length in packets:
        pool = V6 if v6 else V4
        ports = (sp, dp) if proto in (6, 17) else (0, 0)
        key, d = canonical(pool[si], pool[di], proto, *ports)
        table.setdefault(key, FlowStats()).add(d, ts, length, 0)
    return table


def ends(r: FlowRow | ConvRow) -> tuple[str, str, int, int]:
    if isinstance(r, FlowRow):
        return r.src, r.dst, r.sport, r.dport
    return r.a_addr, r.b_addr, r.a_port, r.b_port


def in_net(addr: str, net: str) -> bool:
    return ip_address(addr) in ip_network(net)


def rate_bits(r: FlowRow | ConvRow) -> Fraction:
    d = r.last_ns - r.first_ns
    return Fraction(r.bytes * 8 * NS, d) if r.packets > 1 and d > 0 else Fraction(0)


REFERENCE = {
    "proto tcp and dport 443 and bytes > 1k": lambda r: (
        r.proto == 6 and ends(r)[3] == 443 and r.bytes > 1000
    ),
    "udp or (icmp and packets >= 2)": lambda r: r.proto == 17 or (r.proto == 1 and r.packets >= 2),
    "net 10.0.0.0/8 and not port 53": lambda r: (
        (in_net(ends(r)[0], "10.0.0.0/8") or in_net(ends(r)[1], "10.0.0.0/8"))
        and 53 not in ends(r)[2:]
    ),
    "src net 10.0.0.0/30 or dst host 2001:db8::2": lambda r: (
        in_net(ends(r)[0], "10.0.0.0/30") or ends(r)[1] == "2001:db8::2"
    ),
    "duration >= 1s and rate > 800kbps": lambda r: (
        r.last_ns - r.first_ns >= NS and rate_bits(r) > 800_000
    ),
    "port != 80 and sport < 1024": lambda r: 80 not in ends(r)[2:] and ends(r)[2] < 1024,
    "first >= 1700000001 and last < 1700000005.5": lambda r: (
        r.first_ns >= T0 + NS and r.last_ns < T0 + 5 * NS + NS // 2
    ),
    "not host 10.0.0.1": lambda r: "10.0.0.1" not in ends(r)[:2],
    "proto != 6 and bytes >= 1KiB and bytes <= 1MB": lambda r: (
        r.proto != 6 and 1024 <= r.bytes <= 10**6
    ),
    "src host 10.0.0.1": lambda r: ends(r)[0] == "10.0.0.1",
}


def rows_of(table: dict[FlowKey, FlowStats], view: str) -> list[FlowRow] | list[ConvRow]:
    if view == "bi":
        return [conv_row(k, s) for k, s in table.items()]
    return [r for k, s in table.items() for r in uni_rows(k, s)]


@settings(max_examples=60, deadline=None)
@given(
    packets=st.lists(PACKET, max_size=60),
    text=st.sampled_from(sorted(REFERENCE)),
    view=st.sampled_from(["uni", "bi"]),
)
def test_filtered_rows_equal_the_reference(packets: list, text: str, view: str) -> None:  # type: ignore[type-arg]
    table = build(packets)
    where, ref = compile_where(text), REFERENCE[text]
    want = [r for r in rows_of(table, view) if ref(r)]
    pairs = [(k.pack(), s.pack()) for k, s in table.items()]
    # stored pairs, as every streaming reader takes them
    out = io.StringIO()
    assert write_rows(where.pairs(pairs, view), out, view, "json") == len(want)  # type: ignore[arg-type]
    got = json.loads(out.getvalue())
    assert [(g["first_ns"], g["bytes"], g["proto"]) for g in got] == [
        (r.first_ns, r.bytes, r.proto) for r in want
    ]
    assert [r.model_dump(mode="json") for r in want] == [
        {k: v for k, v in g.items() if k not in ("first_ts", "last_ts")} for g in got
    ]
    # the models: bi() on conversations, uni() on directions
    if view == "bi":
        assert [conv_row(k, s) for k, s in table.items() if where.bi(k, s)] == want
    else:
        kept = [uni_row(k, s, d) for k, s in table.items() for d in (0, 1) if where.uni(k, s, d)]
        assert kept == want
    # (FlowKey, FlowStats) records, as flowherd.reporter.query.rows.all_rows filters them
    assert rows_of(dict(where.flows(table.items(), view)), view) == want  # type: ignore[arg-type]
    # a top N with a filter: the streaming heap over filtered pairs equals sorting the rows
    for by in ("bytes", "rate"):
        assert top_from_pairs(where.pairs(pairs, view), view, 5, by) == top(want, by, 5)  # type: ignore[arg-type, type-var]


@settings(max_examples=30, deadline=None)
@given(packets=st.lists(PACKET, max_size=40))
def test_uni_blanks_only_the_direction_that_does_not_match(packets: list) -> None:  # type: ignore[type-arg]
    table = build(packets)
    pairs = [(k.pack(), s.pack()) for k, s in table.items()]
    where = compile_where("src host 10.0.0.1")
    sizes = sorted(uni_sizes(where.pairs(pairs, "uni")))
    want = sorted(r.bytes for r in rows_of(table, "uni") if r.src == "10.0.0.1")  # type: ignore[union-attr]
    assert sizes == want


def test_bi_src_is_the_first_sender() -> None:
    a, b = ip_address("10.0.0.9").packed, ip_address("10.0.0.1").packed
    key, d = canonical(a, b, 6, 5000, 80)  # 10.0.0.9 sends first: it is A, though B < A
    stats = FlowStats()
    stats.add(d, T0, 100, 0)
    stats.add(1 - d, T0 + 1, 60, 0)
    where = compile_where("src host 10.0.0.9 and dst port 80")
    assert conv_row(key, stats).a_addr == "10.0.0.9"
    assert where.bi(key, stats)
    assert not compile_where("src host 10.0.0.1").bi(key, stats)
    assert compile_where("host 10.0.0.1 and bytes = 160").bi(key, stats)
    assert compile_where("host 10.0.0.1 and bytes = 60").uni(key, stats, 1 - d)


def test_matched_status_totals_the_matching_flows() -> None:
    table = build([(False, 0, 1, 6, 40000, 443, T0, 1000), (False, 1, 0, 6, 443, 40000, T0 + NS, 500),
                   (False, 2, 3, 17, 53, 53, T0 + 2 * NS, 80)])  # fmt: skip
    pairs = [(k.pack(), s.pack()) for k, s in table.items()]
    st_all = CaptureStatus(
        name="t", run="0123456789abcdef", state=CaptureState.COMPLETE, created_ns=0,
        sources=["x.pcap"], batches_enqueued=1, batches_done=1, batches_failed=0,
        total_batches=1, packets=99, bytes=9999, counted_packets=98, counted_bytes=9000,
        flows=3, not_counted={"non_ip": BucketCount(packets=1, bytes=999)}, first_ns=1,
        last_ns=2, warnings=[],
    )  # fmt: skip
    got = matched_status(st_all, compile_where("tcp").pairs(pairs, "uni"))
    assert (got.packets, got.bytes, got.counted_packets, got.flows) == (2, 1500, 2, 1)
    assert (got.first_ns, got.last_ns, got.not_counted) == (T0, T0 + NS, {})
    none = matched_status(st_all, compile_where("icmp").pairs(pairs, "uni"))
    assert (none.packets, none.first_ns, none.last_ns) == (0, None, None)
