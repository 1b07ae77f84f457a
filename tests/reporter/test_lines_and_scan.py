"""The streaming reporter core: exports, scans, exact cuts, reports and plot numbers from stored
``(key, value)`` pairs, checked against the in-memory code they replace (no Redis needed).

Golden checks rebuild tables from the tshark oracle in ``../shared/oracle`` (skipped when
absent).
"""

from __future__ import annotations

import csv
import io
import json
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowherd.models.capture import BucketCount, CaptureState, CaptureStatus
from flowherd.models.flows import FlowKey, FlowStats, addr_text, canonical
from flowherd.models.report import ConvRow, FlowRow
from flowherd.reporter.analysis.distribution import (
    ccdf,
    ccdf_points,
    cumulative_share,
    histogram,
    share_points,
    top_blocks,
)
from flowherd.reporter.analysis.elephants import (
    DEFAULT_RULES,
    classify_all,
    classify_dist,
    parse_rule,
)
from flowherd.reporter.analysis.report import make_report, stream_report
from flowherd.reporter.analysis.scan import (
    TableScan,
    scan_table,
    top_from_pairs,
    uni_sizes,
)
from flowherd.reporter.analysis.sizes import AtLeast, Prefix, Reach, SizeDist, cut_sorted, resolve
from flowherd.reporter.output.lines import write_rows
from flowherd.reporter.output.ranked_lines import write_rows_ranked
from flowherd.reporter.output.render import rows_csv, rows_json
from flowherd.reporter.table.order import top
from flowherd.reporter.table.packed import AddrText
from flowherd.reporter.table.views import conv_row, uni_rows

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT.parent / "shared" / "oracle"
UNI_FILES = sorted(ORACLE.glob("*.uni.csv")) if ORACLE.is_dir() else []
needs_oracle = pytest.mark.skipif(not UNI_FILES, reason="no oracle in ../shared/oracle")
NS = 10**9
Table = dict[FlowKey, FlowStats]

# ---------------------------------------------------------------------------------------------
# tables

V4 = [bytes([10, 0, 0, i]) for i in range(3)] + [bytes([192, 168, 1, 1])]
V6 = [
    bytes(16),  # ::
    bytes(15) + b"\x01",  # ::1
    bytes(10) + b"\xff\xff" + bytes([1, 2, 3, 4]),  # IPv4-mapped: inet_ntop writes a dot
    bytes(12) + bytes([1, 2, 3, 4]),  # IPv4-compatible
    bytes.fromhex("20010db8000000000000000000000001"),
    bytes.fromhex("3ffe05010410000002c0dffffe47033e"),
]
TS = st.one_of(
    st.integers(1_704_067_200 * NS, 1_704_067_500 * NS),  # 2024: the fast path
    st.integers(-3 * NS, 3 * NS),  # negative and before 2001: the careful path
    st.integers(0, 10**19 - 2),
)
PACKET = st.tuples(
    st.booleans(),  # IPv6
    st.integers(0, 3),  # source index
    st.integers(0, 3),  # destination index
    st.sampled_from([1, 6, 17]),
    st.integers(0, 2),
    st.integers(0, 2),
    TS,
    st.one_of(st.integers(0, 5), st.integers(40, 1500), st.integers(10**6, 10**12)),
    st.integers(0, 255),
)


def build_table(packets: list[tuple]) -> dict[FlowKey, FlowStats]:  # type: ignore[type-arg]
    table: dict[FlowKey, FlowStats] = {}
    for v6, si, di, proto, sp, dp, ts, length, flags in packets:
        pool = V6 if v6 else V4
        key, d = canonical(pool[si % len(pool)], pool[di % len(pool)], proto, sp, dp)
        table.setdefault(key, FlowStats()).add(d, ts, length, flags)
    return table


def packed(table: dict[FlowKey, FlowStats]) -> list[tuple[bytes, bytes]]:
    return [(k.pack(), s.pack()) for k, s in table.items()]


def rows_of(table: dict[FlowKey, FlowStats], view: str) -> list[FlowRow] | list[ConvRow]:
    if view == "bi":
        return [conv_row(k, s) for k, s in table.items()]
    return [r for k, s in table.items() for r in uni_rows(k, s)]


def status(name: str = "t") -> CaptureStatus:
    return CaptureStatus(
        name=name,
        run="0123456789abcdef",
        state=CaptureState.COMPLETE,
        created_ns=0,
        sources=["x.pcap"],
        batches_enqueued=1,
        batches_done=1,
        batches_failed=0,
        total_batches=1,
        packets=10,
        bytes=1000,
        counted_packets=9,
        counted_bytes=900,
        flows=3,
        not_counted={"non_ip": BucketCount(packets=1, bytes=100)},
        first_ns=1,
        last_ns=2,
        warnings=["w"],
    )


tables = st.lists(PACKET, max_size=80).map(build_table)

# ---------------------------------------------------------------------------------------------
# export: byte-identical to the model path


@settings(max_examples=150, deadline=None)
@given(table=tables, view=st.sampled_from(["uni", "bi"]))
def test_export_equals_rows_csv_and_rows_json(table: Table, view: str) -> None:
    pairs, rows = packed(table), rows_of(table, view)
    want = io.StringIO()
    rows_csv(rows, want, view=view)  # type: ignore[arg-type]
    got = io.StringIO()
    assert write_rows(pairs, got, view, "csv") == len(rows)  # type: ignore[arg-type]
    assert got.getvalue() == want.getvalue()
    got = io.StringIO()
    write_rows(pairs, got, view, "json")  # type: ignore[arg-type]
    assert got.getvalue() == rows_json(rows)
    got = io.StringIO()
    write_rows(pairs, got, view, "jsonl")  # type: ignore[arg-type]
    assert [json.loads(line) for line in got.getvalue().splitlines()] == json.loads(rows_json(rows))


@settings(max_examples=100, deadline=None)
@given(table=tables, view=st.sampled_from(["uni", "bi"]), run=st.integers(1, 9))
def test_ranked_export_equals_the_ranked_rows(table: Table, view: str, run: int) -> None:
    pairs, rows = packed(table), rows_of(table, view)
    ranked = top(rows, "bytes", len(rows))  # type: ignore[type-var]
    want = io.StringIO()
    rows_csv(ranked, want, view=view)  # type: ignore[arg-type]
    for run_rows in (run, 10**6):  # spilled to sorted runs, and in memory
        got = io.StringIO()
        write_rows_ranked(pairs, got, view, "csv", run_rows=run_rows)  # type: ignore[arg-type]
        assert got.getvalue() == want.getvalue()
        got = io.StringIO()
        write_rows_ranked(pairs, got, view, "json", run_rows=run_rows)  # type: ignore[arg-type]
        assert got.getvalue() == rows_json(ranked)  # type: ignore[arg-type]


def test_export_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="packed flow key"):
        write_rows([(b"\x05abc", FlowStats().pack())], io.StringIO())
    with pytest.raises(ValueError, match="view"):
        write_rows([], io.StringIO(), "both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="format"):
        write_rows([], io.StringIO(), "uni", "xml")  # type: ignore[arg-type]
    out = io.StringIO()
    assert write_rows([], out, "bi", "json") == 0
    assert out.getvalue() == "[]"
    with pytest.raises(ValueError, match="run_rows"):
        write_rows_ranked([], io.StringIO(), run_rows=0)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16))
def test_address_text_is_addr_text(raw: bytes) -> None:
    assert AddrText()(raw).decode() == addr_text(raw)


@pytest.mark.parametrize("raw", V4 + V6)
def test_address_text_special_addresses(raw: bytes) -> None:
    assert AddrText()(raw).decode() == addr_text(raw)


def test_address_cache_is_bounded_and_keeps_popular_addresses() -> None:
    addr = AddrText(size=8)
    hot = bytes([192, 168, 0, 1])
    for i in range(100):
        assert addr(bytes([10, 0, 0, i])) == f"10.0.0.{i}".encode()
        assert addr(hot) == b"192.168.0.1"
        assert len(addr.cache) <= 8 and len(addr.old) <= 8
        assert hot in addr.cache or hot in addr.old


# ---------------------------------------------------------------------------------------------
# exact cuts of the sorted sizes

SIZES = st.lists(
    st.one_of(st.integers(0, 600), st.integers(0, 10**6), st.integers(10**9, 10**9 + 5000)),
    max_size=300,
)


def queries_for(sizes: list[int], data: st.DataObject) -> list:  # type: ignore[type-arg]
    n, total = len(sizes), sum(sizes)
    return [
        Prefix(data.draw(st.integers(0, n))),
        AtLeast(data.draw(st.integers(0, 10**9 + 6000))),
        Reach(data.draw(st.integers(0, total))),
    ]


@settings(max_examples=300, deadline=None)
@given(sizes=SIZES, data=st.data(), cap=st.integers(1, 8), fan=st.integers(2, 9))
def test_resolve_equals_the_sorted_list(
    sizes: list[int], data: st.DataObject, cap: int, fan: int
) -> None:
    """Small cap and fan force several rounds of refinement, split and kept."""
    qs = queries_for(sizes, data)
    desc = sorted(sizes, reverse=True)
    reads = []

    def rescan() -> list[int]:
        reads.append(1)
        return list(sizes)

    dist = SizeDist.of(sizes)
    assert resolve(dist, qs, rescan, cap, fan) == [cut_sorted(desc, q) for q in qs]
    big = resolve(dist, qs, lambda: sizes)  # the defaults: at most one round here
    assert big == [cut_sorted(desc, q) for q in qs]


def test_resolve_rounds_are_bounded_and_shared() -> None:
    rng = random.Random(5)
    sizes = [rng.randrange(10**12, 2 * 10**12) for _ in range(5000)]
    reads = []

    def rescan() -> list[int]:
        reads.append(1)
        return sizes

    qs = [Prefix(k) for k in (1, 50, 2500)] + [Reach(sum(sizes) // 2)]
    dist = SizeDist.of(sizes)
    assert resolve(dist, qs, rescan, cap=16, fan=64) == [
        cut_sorted(sorted(sizes, reverse=True), q) for q in qs
    ]
    # widths of at most 2**32 shrink 64-fold per round below cap=16 sizes: a handful of rounds
    # shared by all four cuts, not one per cut
    assert 1 <= len(reads) <= 6
    reads.clear()
    resolve(dist, qs, rescan)  # the defaults: one round keeps each boundary bucket's sizes
    assert len(reads) == 1


def test_resolve_without_rescan_or_with_a_changed_table() -> None:
    sizes = [10**6, 10**6 + 1, 10**6 + 2]  # one bucket
    dist = SizeDist.of(sizes)
    assert resolve(dist, [Prefix(3), AtLeast(0)], None) == [cut_sorted(sizes[::-1], Prefix(3))] * 2
    with pytest.raises(ValueError, match="rescan"):
        resolve(dist, [Prefix(1)], None)
    with pytest.raises(ValueError, match="changed"):
        resolve(dist, [Prefix(1)], lambda: sizes[:2])
    with pytest.raises(ValueError, match="cap"):
        resolve(dist, [], None, cap=0)


@settings(max_examples=200, deadline=None)
@given(a=SIZES, b=SIZES)
def test_dists_merge_like_concatenation(a: list[int], b: list[int]) -> None:
    one = SizeDist()
    for v in a + b:
        one.add(v)
    assert SizeDist.of(a).merge(SizeDist.of(b)) == one == SizeDist.of(a + b, chunk=7)
    assert one.n == len(a + b) and one.total == sum(a + b)
    assert one.sumsq == sum(v * v for v in a + b)
    assert one.exact == all(
        len({v for v in a + b if lo <= v <= hi}) <= 1 for _, _, lo, hi in one.buckets.values()
    )


def test_bucket_bounds() -> None:
    from flowherd.reporter.analysis.sizes import bucket_bounds, bucket_of

    for v in [*range(0, 3000), 2**40 - 1, 2**40, 2**53 - 1, 10**15]:
        lo, hi = bucket_bounds(bucket_of(v))
        assert lo <= v <= hi
        assert hi - lo <= max(0, lo >> 8)
    assert bucket_of(511) == 511 and bucket_bounds(511) == (511, 511)
    with pytest.raises(ValueError, match=">= 0"):
        SizeDist.of([1, -1])


# ---------------------------------------------------------------------------------------------
# elephants and reports


@settings(max_examples=200, deadline=None)
@given(sizes=SIZES, cap=st.integers(1, 5), fan=st.integers(2, 5))
def test_classify_dist_equals_classify_all(sizes: list[int], cap: int, fan: int) -> None:
    rules = [*DEFAULT_RULES, parse_rule("load:0.9"), parse_rule("bytes:1MB"), parse_rule("top:3")]
    got, extra = classify_dist(
        SizeDist.of(sizes), rules, lambda: sizes, [Prefix(min(10, len(sizes)))], cap=cap, fan=fan
    )
    assert got == classify_all(sizes, rules)
    assert extra[0].total == sum(sorted(sizes, reverse=True)[:10])


@settings(max_examples=100, deadline=None)
@example(  # a flow lasting 2**63 ns: beyond int64, folded exactly on both paths
    table=build_table(
        [
            (False, 0, 0, 1, 0, 0, 1_704_067_200 * NS, 0, 0),
            (True, 0, 2, 1, 0, 1, 0, 0, 0),
            (True, 0, 2, 1, 0, 1, 2**63, 0, 0),
        ]
    ),
    n=1,
    shards=1,
)
@given(table=tables, n=st.integers(1, 6), shards=st.integers(1, 3))
def test_stream_report_equals_make_report(table: Table, n: int, shards: int) -> None:
    pairs = packed(table)
    rules = [*DEFAULT_RULES, parse_rule("load:0.9")]
    want = make_report(status(), table.items(), 7, n, rules)
    assert stream_report(status(), lambda: pairs, 7, n, rules) == want
    # shards scanned apart and merged give the same document
    parts = [pairs[i::shards] for i in range(shards)]
    scan = TableScan(n)
    for part in parts:
        scan.merge(scan_table(part, n))
    assert stream_report(status(), lambda: pairs, 7, n, rules, scan) == want


@settings(max_examples=100, deadline=None)
@given(
    table=tables,
    view=st.sampled_from(["uni", "bi"]),
    by=st.sampled_from(["bytes", "packets", "duration", "rate"]),
    n=st.integers(0, 8),
    proto=st.sampled_from([None, 6, 17]),
)
def test_top_from_pairs_equals_rank_top(
    table: Table, view: str, by: str, n: int, proto: int | None
) -> None:
    want = top(rows_of(table, view), by, n, proto)  # type: ignore[arg-type, type-var]
    assert top_from_pairs(packed(table), view, n, by, proto) == want  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# plot numbers


@settings(max_examples=200, deadline=None)
@given(sizes=SIZES)
def test_distribution_points_are_exact(sizes: list[int]) -> None:
    dist = SizeDist.of(sizes)
    xs, ys = ccdf_points(dist)
    full_x, full_y = ccdf([s for s in sizes if s > 0])
    at = dict(zip(full_x, full_y, strict=True))
    assert all(at[x] == y for x, y in zip(xs, ys, strict=True))
    if dist.exact:
        assert (xs, ys) == (full_x, full_y)
    ks, shares = share_points(dist)
    _, all_s = cumulative_share(sizes)
    assert all(all_s[k - 1] == s for k, s in zip(ks, shares, strict=True))
    assert (ks[-1] if ks else 0) == len(sizes)
    top = len(sizes) // 2
    blocks = top_blocks(dist, top)
    assert sum(c for c, _, _ in blocks) == top
    if blocks:
        edges = [0.0, blocks[0][2] / 2, float(blocks[0][2])]
        assert sum(histogram(blocks, edges)) == top


def test_histogram_counts_each_bucket_in_the_bin_of_its_smallest_size() -> None:
    dist = SizeDist.of([1, 2, 2, 10, 10, 10, 100])
    blocks = top_blocks(dist, None)
    assert histogram(blocks, [1, 5, 50, 100]) == [3, 3, 1]
    assert top_blocks(dist, 2) == [(1, 100, 100), (1, 10, 10)]


# ---------------------------------------------------------------------------------------------
# bounded memory


def synthetic(n: int, seed: int = 1) -> Iterator[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    hosts = [rng.randbytes(4) for _ in range(4096)]  # fewer than the address cache holds
    for i in range(n):
        a, b = sorted((rng.choice(hosts), rng.choice(hosts)))
        t = 1_704_067_200 * NS + rng.randrange(300 * NS)
        st_ = FlowStats(
            rng.randrange(1, 9), int(rng.paretovariate(1.1) * 100), 1, 60, t, t + 9, t + 1, t + 5
        )
        yield FlowKey(a, b, 6, i & 0xFFFF, 443).pack(), st_.pack()


class _Sink(io.StringIO):
    def write(self, s: str) -> int:
        return len(s)


@pytest.mark.slow
@pytest.mark.parametrize("what", ["export", "scan", "report"])
def test_memory_does_not_grow_with_the_table(what: str) -> None:
    """The traced peak for 80,000 conversations is about what 20,000 need (a table held in
    memory would take four times as much): chunks, caches and buckets are bounded."""

    def peak(n: int) -> int:
        tracemalloc.start()
        if what == "export":
            write_rows(synthetic(n), _Sink())
        elif what == "scan":
            scan_table(synthetic(n))
        else:
            stream_report(status(), lambda: synthetic(n), 1)
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p

    small, large = peak(20_000), peak(80_000)
    assert large < 1.25 * small + 1_000_000, (small, large)


# ---------------------------------------------------------------------------------------------
# golden: tables rebuilt from the tshark oracle


def oracle_table(path: Path) -> dict[FlowKey, FlowStats]:
    """The conversations behind an oracle ``.uni.csv`` (every row is one direction)."""
    import ipaddress

    table: dict[FlowKey, FlowStats] = {}
    with path.open(newline="") as fh:
        for r in csv.DictReader(fh):
            src = ipaddress.ip_address(r["src"]).packed
            dst = ipaddress.ip_address(r["dst"]).packed
            key, d = canonical(src, dst, int(r["proto"]), int(r["sport"]), int(r["dport"]))
            st_ = table.setdefault(key, FlowStats())
            counts = (int(r["packets"]), int(r["bytes"]), _ns(r["first_ts"]), _ns(r["last_ts"]))
            if d == 0:
                st_.pkts_ab, st_.bytes_ab, st_.first_ab, st_.last_ab = counts
            else:
                st_.pkts_ba, st_.bytes_ba, st_.first_ba, st_.last_ba = counts
    return table


def _ns(text: str) -> int:
    neg = text.startswith("-")
    secs, frac = text.lstrip("-").split(".")
    ns = int(secs) * NS + int(frac)
    return -ns if neg else ns


@needs_oracle
@pytest.mark.corpus
@pytest.mark.parametrize("path", UNI_FILES, ids=lambda p: p.name)
def test_oracle_tables_export_and_report(path: Path) -> None:
    table = oracle_table(path)
    pairs = packed(table)
    random.Random(path.name).shuffle(pairs)
    got = io.StringIO()
    write_rows_ranked(pairs, got, "uni", "csv", run_rows=50)
    assert got.getvalue() == path.read_text()
    bi = path.with_name(path.name.replace(".uni.csv", ".bi.csv"))
    got = io.StringIO()
    write_rows_ranked(pairs, got, "bi", "csv", run_rows=50)
    assert got.getvalue() == bi.read_text()
    got = io.StringIO()
    write_rows(pairs, got, "uni", "csv")
    head, *rows = got.getvalue().splitlines(keepends=True)
    want_head, *want_rows = path.read_text().splitlines(keepends=True)
    assert head == want_head and sorted(rows) == sorted(want_rows)
    rules = [*DEFAULT_RULES, parse_rule("load:0.9")]
    assert stream_report(status(), lambda: pairs, 1, 20, rules) == make_report(
        status(), [(FlowKey.unpack(k), FlowStats.unpack(v)) for k, v in pairs], 1, 20, rules
    )
    assert sum(uni_sizes(pairs)) == sum(int(r.split(",")[6]) for r in want_rows)
