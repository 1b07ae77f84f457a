"""flowherd.reporter.analysis.stats, pure: every key, view and order against the plain reference
(tests/support/stats_reference.py), with and without spilling to disk; tshark's and nfdump's
definitions on hand-made flows; key parsing."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowherd.models.flows import NO_FIRST, NO_LAST, FlowKey, FlowStats, canonical
from flowherd.reporter.analysis.stats import BY, KINDS, KeySpec, StatRow, key_stats, parse_key
from tests.support.stats_reference import reference

A4 = [bytes([10, 0, i // 4, i]) for i in range(6)] + [bytes([192, 168, 1, 200])]
A6 = [bytes(15) + bytes([i]) for i in (1, 2)] + [b"\x20\x01\x0d\xb8" + bytes(11) + b"\x07"]
A6 += [bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])]  # IPv4-mapped: text as ipaddress writes it
KEYS = ["srcip", "dstip", "ip", "sport", "dport", "port", "proto", "pair"]
KEYS += ["srcnet/24", "dstnet/30,120", "net/8", "net/0,0", "net/32,128"]
T0 = 1_700_000_000 * 10**9


def _pairs(table: dict[FlowKey, FlowStats]) -> list[tuple[bytes, bytes]]:
    return [(k.pack(), v.pack()) for k, v in table.items()]


def _rows(rows: list[StatRow]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in rows]


def run(table: dict[FlowKey, FlowStats], key: str, **kw: Any) -> tuple[Any, list[dict[str, Any]]]:
    with key_stats(_pairs(table), parse_key(key), **kw) as (tot, rows):
        return tot, _rows(list(rows))


@st.composite
def tables(draw: st.DrawFn) -> dict[FlowKey, FlowStats]:
    out: dict[FlowKey, FlowStats] = {}
    for _ in range(draw(st.integers(0, 25))):
        pool = A4 if draw(st.booleans()) else A6
        src, dst = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        proto = draw(st.sampled_from([6, 17, 1]))
        sp, dp = (draw(st.sampled_from([0, 53, 80, 443, 5000])) for _ in range(2))
        key, _ = canonical(src, dst, proto, sp, dp)
        stats = FlowStats()
        same = (key.a_addr, key.a_port) == (key.b_addr, key.b_port)
        for d in (0,) if same else (0, 1):
            for _ in range(draw(st.integers(0 if d or not same else 1, 4))):
                ts = T0 + draw(st.integers(0, 4)) * 500_000_000  # timestamps tie often
                stats.add(d, ts, draw(st.integers(60, 1500)), 0)
        if stats.packets:
            out.setdefault(key, FlowStats()).merge(stats)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    table=tables(),
    key=st.sampled_from(KEYS),
    view=st.sampled_from(["uni", "bi"]),
    by=st.sampled_from(BY),
    n=st.integers(0, 6),
    max_keys=st.sampled_from([1, 2, 3, 100_000]),
)
def test_equals_reference(
    table: dict[FlowKey, FlowStats], key: str, view: str, by: str, n: int, max_keys: int
) -> None:
    tot, rows = run(table, key, view=view, by=by, n=n, max_keys=max_keys)
    rtot, rrows = reference(table.items(), key, view, by, n)
    assert (tot.packets, tot.bytes, tot.flows) == (rtot["packets"], rtot["bytes"], rtot["flows"])
    assert rows == rrows


@settings(max_examples=100, deadline=None)
@given(
    table=tables(),
    key=st.sampled_from(KEYS),
    by=st.sampled_from(["bytes", "packets", "flows"]),
    pct=st.sampled_from([0.0, 1.0, 10.0, 12.5, 33.3, 50.0, 100.0]),
    max_keys=st.sampled_from([2, 100_000]),
)
def test_percentage_and_threshold_equal_reference(
    table: dict[FlowKey, FlowStats], key: str, by: str, pct: float, max_keys: int
) -> None:
    _, rows = run(table, key, by=by, n=0, percentage=pct, max_keys=max_keys)
    assert rows == reference(table.items(), key, "uni", by, 0, percentage=pct)[1]
    limit = 1000.0 if by == "bytes" else 2.0
    _, rows = run(table, key, by=by, n=3, threshold=limit, max_keys=max_keys)
    assert rows == reference(table.items(), key, "uni", by, 3, threshold=limit)[1]


@settings(max_examples=60, deadline=None)
@given(table=tables(), key=st.sampled_from(KEYS), view=st.sampled_from(["uni", "bi"]))
def test_keep_counts_only_what_it_accepts(
    table: dict[FlowKey, FlowStats], key: str, view: str
) -> None:
    def keep(k: FlowKey, s: FlowStats) -> bool:
        return k.proto == 6

    tot, rows = run(table, key, view=view, n=0, keep=keep)
    tcp = [(k, s) for k, s in table.items() if k.proto == 6]
    rtot, rrows = reference(tcp, key, view, "bytes", 0)
    assert tot.flows == rtot["flows"] and rows == rrows


def _flow(src: str, dst: str, sp: int, dp: int, *pkts: tuple[float, int]) -> tuple[FlowKey, FlowStats]:  # fmt: skip
    """A conversation whose packets (seconds after T0, wire bytes) all go src -> dst."""
    import ipaddress

    a, b = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    key, d = canonical(a, b, 17, sp, dp)
    s = FlowStats()
    for t, size in pkts:
        s.add(d, T0 + round(t * 1e9), size, 0)
    return key, s


def test_ip_counts_a_self_addressed_packet_twice_and_its_flow_once() -> None:
    # tshark -z endpoints,ip: a packet counts for its source and its destination (Tx + Rx)
    table = dict([_flow("10.0.0.1", "10.0.0.1", 53, 53, (0, 100), (1, 100))])
    table.update([_flow("10.0.0.1", "10.0.0.2", 1, 2, (0, 60))])
    tot, rows = run(table, "ip", n=0)
    assert (tot.packets, tot.flows) == (3, 2)
    got = {r["key"]: (r["packets"], r["bytes"], r["flows"]) for r in rows}
    assert got == {"10.0.0.1": (5, 460, 2), "10.0.0.2": (1, 60, 1)}
    assert rows[0]["packets_pct"] == pytest.approx(500 / 3)


def test_rates_are_over_the_keys_active_span_like_nfdump() -> None:
    table = dict(
        [
            _flow("10.0.0.1", "10.0.0.9", 1, 2, (1, 500), (2, 500)),
            _flow("10.0.0.1", "10.0.0.8", 3, 4, (3, 250), (3, 250)),  # one instant
            _flow("10.0.0.2", "10.0.0.9", 5, 6, (4, 100)),
        ]
    )
    _, rows = run(table, "srcip", by="bps", n=0)
    by_key = {r["key"]: r for r in rows}
    # 10.0.0.1: 4 packets, 1500 bytes from t=1 s to t=3 s
    assert by_key["10.0.0.1"]["pps"] == 2.0 and by_key["10.0.0.1"]["bps"] == 6000.0
    assert by_key["10.0.0.2"]["pps"] == 0.0 and by_key["10.0.0.2"]["bps"] == 0.0
    assert [r["key"] for r in rows] == ["10.0.0.1", "10.0.0.2"]


def test_bi_source_is_the_endpoint_that_sent_first() -> None:
    import ipaddress

    a, b = ipaddress.ip_address("10.0.0.9").packed, ipaddress.ip_address("10.0.0.1").packed
    key, d = canonical(a, b, 6, 40000, 80)  # 10.0.0.9 opens, 10.0.0.1 answers
    s = FlowStats()
    s.add(d, T0, 60, 2)
    s.add(1 - d, T0 + 1, 1500, 18)
    _, rows = run({key: s}, "srcip", view="bi", n=0)
    assert [(r["key"], r["bytes"], r["flows"]) for r in rows] == [("10.0.0.9", 1560, 1)]
    _, rows = run({key: s}, "srcip", view="uni", n=0)
    assert [(r["key"], r["bytes"]) for r in rows] == [("10.0.0.1", 1500), ("10.0.0.9", 60)]


def test_spills_to_disk_and_removes_its_files(tmp_path: Path) -> None:
    import ipaddress

    table = dict(
        _flow(str(ipaddress.ip_address(0x0A000000 + i)), "10.9.9.9", 1, 2, (i, 100 + i))
        for i in range(300)
    )
    with key_stats(_pairs(table), parse_key("srcip"), n=0, max_keys=16, tmpdir=str(tmp_path)) as (tot, rows):  # fmt: skip
        first = next(rows)
        runs = [f for d in os.listdir(tmp_path) for f in os.listdir(tmp_path / d)]
        assert len(runs) >= 300 // 16  # counters and ranking both went through files
        rest = list(rows)
    assert os.listdir(tmp_path) == []
    assert tot.flows == 300 and first.key == "10.0.1.43" and len(rest) == 299
    assert [r.bytes for r in [first, *rest]] == sorted((100 + i for i in range(300)), reverse=True)


def test_empty_table() -> None:
    tot, rows = run({}, "ip", n=0)
    assert (tot.packets, tot.flows, rows) == (0, 0, [])
    assert (tot.first_ns, tot.last_ns) == (NO_FIRST, NO_LAST)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("srcip", KeySpec("srcip")),
        ("PAIR", KeySpec("pair")),
        ("net/16", KeySpec("net", 16, 64)),
        ("srcnet/24,48", KeySpec("srcnet", 24, 48)),
        ("dstnet", KeySpec("dstnet", 24, 64)),
        ("net/0,128", KeySpec("net", 0, 128)),
    ],
)
def test_parse_key(text: str, spec: KeySpec) -> None:
    assert parse_key(text) == spec
    assert parse_key(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("host", "unknown key"),
        ("srcip/24", "takes no prefix"),
        ("net/33", "/0 to /32"),
        ("net/24,129", "/0 to /128"),
        ("net/x", "net/N"),
        ("net/24,", "net/N"),
    ],
)
def test_parse_key_errors(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_key(text)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="percentage of pps"):
        run({}, "ip", by="pps", percentage=5.0)
    with pytest.raises(ValueError, match="n must be"):
        run({}, "ip", n=-1)
    assert set(KINDS) == {split.partition("/")[0] for split in KEYS}
