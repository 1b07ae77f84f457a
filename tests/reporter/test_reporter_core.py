"""The reporter's pure core: ranking, elephant rules, distribution numbers, plots and rendering.

Golden checks read the tshark oracle in ``../shared/oracle`` and are skipped when it is absent.
"""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from flowherd.models.capture import BucketCount
from flowherd.models.flows import NS
from flowherd.models.report import ConvRow, ElephantResult, ElephantRule, FlowRow, Summary
from flowherd.reporter.analysis.distribution import (
    ccdf,
    cumulative_share,
    human_bytes,
    human_rate,
    log_bins,
    share_of_top,
    share_top_fraction,
    spans_decades,
    top_fraction_count,
)
from flowherd.reporter.analysis.elephants import (
    DEFAULT_RULES,
    classify,
    classify_all,
    parse_rule,
    parse_size,
    rule_text,
)
from flowherd.reporter.output.plots import save_figure, size_histogram_figure
from flowherd.reporter.output.render import (
    BI_COLUMNS,
    UNI_COLUMNS,
    elephants_table,
    human_duration,
    human_ts,
    proto_name,
    rows_csv,
    rows_json,
    rows_table,
    summary_table,
)
from flowherd.reporter.table.order import parse_proto, rate, sort_key, top

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT.parent / "shared" / "oracle"
UNI_FILES = sorted(ORACLE.glob("*.uni.csv")) if ORACLE.is_dir() else []
BI_FILES = sorted(ORACLE.glob("*.bi.csv")) if ORACLE.is_dir() else []
needs_oracle = pytest.mark.skipif(not UNI_FILES, reason="no oracle in ../shared/oracle")

# ---------------------------------------------------------------------------------------------
# helpers


def parse_ts(text: str) -> int:
    """Oracle epoch-seconds text (9 decimals, maybe negative) to nanoseconds, exactly."""
    neg = text.startswith("-")
    secs, frac = text.lstrip("-").split(".")
    assert len(frac) == 9, text
    ns = int(secs) * NS + int(frac)
    return -ns if neg else ns


def load_uni(path: Path) -> list[FlowRow]:
    with path.open(newline="") as fh:
        return [
            FlowRow(
                src=r["src"],
                dst=r["dst"],
                proto=int(r["proto"]),
                sport=int(r["sport"]),
                dport=int(r["dport"]),
                packets=int(r["packets"]),
                bytes=int(r["bytes"]),
                first_ns=parse_ts(r["first_ts"]),
                last_ns=parse_ts(r["last_ts"]),
            )
            for r in csv.DictReader(fh)
        ]


def load_bi(path: Path) -> list[ConvRow]:
    with path.open(newline="") as fh:
        return [
            ConvRow(
                proto=int(r["proto"]),
                a_addr=r["a_addr"],
                a_port=int(r["a_port"]),
                b_addr=r["b_addr"],
                b_port=int(r["b_port"]),
                packets_a_to_b=int(r["frames_a_to_b"]),
                bytes_a_to_b=int(r["bytes_a_to_b"]),
                packets_b_to_a=int(r["frames_b_to_a"]),
                bytes_b_to_a=int(r["bytes_b_to_a"]),
                packets=int(r["frames"]),
                bytes=int(r["bytes"]),
                first_ns=parse_ts(r["first_ts"]),
                last_ns=parse_ts(r["last_ts"]),
            )
            for r in csv.DictReader(fh)
        ]


def flow(
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    proto: int = 6,
    sport: int = 1,
    dport: int = 2,
    packets: int = 1,
    nbytes: int = 100,
    first_ns: int = 0,
    last_ns: int = 0,
) -> FlowRow:
    return FlowRow(
        src=src,
        dst=dst,
        proto=proto,
        sport=sport,
        dport=dport,
        packets=packets,
        bytes=nbytes,
        first_ns=first_ns,
        last_ns=last_ns,
    )


def text_of(table: Table, width: int = 200) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, legacy_windows=False).print(table)
    return buf.getvalue()


flows_st = st.builds(
    flow,
    src=st.sampled_from(["10.0.0.1", "10.0.0.2", "2001:db8::1"]),
    dst=st.sampled_from(["10.0.0.1", "192.168.1.1"]),
    proto=st.sampled_from([1, 6, 17]),
    sport=st.integers(0, 3),
    dport=st.integers(0, 3),
    packets=st.integers(1, 4),
    nbytes=st.integers(0, 5),
    first_ns=st.integers(0, 3 * NS),
    last_ns=st.integers(3 * NS, 6 * NS),
)
sizes_st = st.lists(st.integers(0, 10**12), max_size=200)
RANKS = ("bytes", "packets", "duration", "rate")

# ---------------------------------------------------------------------------------------------
# rank


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("tcp", 6),
        ("UDP", 17),
        (" icmp ", 1),
        ("icmpv6", 58),
        ("ipv6-icmp", 58),
        ("gre", 47),
        ("esp", 50),
        ("sctp", 132),
        ("0", 0),
        ("255", 255),
        ("41", 41),
    ],
)
def test_parse_proto_accepts_names_and_numbers(text: str, want: int) -> None:
    assert parse_proto(text) == want


@pytest.mark.parametrize("text", ["", "tpc", "256", "-1", "6.0", "0x06", "١"])
def test_parse_proto_rejects_with_a_helpful_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"tcp.*0-255|0-255"):
        parse_proto(text)


def test_rate_is_bytes_per_second_and_zero_without_duration() -> None:
    assert rate(flow(packets=3, nbytes=1000, first_ns=NS, last_ns=3 * NS)) == 500
    assert rate(flow(packets=2, nbytes=3, first_ns=0, last_ns=2 * NS)) == Fraction(3, 2)
    assert rate(flow(packets=1, nbytes=1000, first_ns=NS, last_ns=NS)) == 0
    assert rate(flow(packets=5, nbytes=1000, first_ns=NS, last_ns=NS)) == 0


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(flows_st, max_size=60), n=st.integers(0, 70), by=st.sampled_from(RANKS))
def test_top_is_the_prefix_of_a_full_sort(rows: list[FlowRow], n: int, by: str) -> None:
    got = top(rows, by, n)  # type: ignore[arg-type]
    assert got == sorted(rows, key=sort_key(by))[:n]  # type: ignore[arg-type]
    measure = {
        "bytes": lambda r: r.bytes,
        "packets": lambda r: r.packets,
        "duration": lambda r: r.duration_ns,
        "rate": rate,
    }[by]
    # independent of sort_key: the measures are the largest ones, in descending order
    assert [measure(r) for r in got] == sorted(map(measure, rows), reverse=True)[:n]


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(flows_st, max_size=60))
def test_top_by_bytes_breaks_ties_like_the_oracle(rows: list[FlowRow]) -> None:
    def oracle_key(r: FlowRow) -> tuple[int, int, str]:
        return (-r.bytes, -r.packets, str((r.src, r.dst, r.proto, r.sport, r.dport)))

    assert top(rows, "bytes", len(rows)) == sorted(rows, key=oracle_key)


def test_top_filters_by_protocol_and_checks_arguments() -> None:
    rows = [flow(proto=6, nbytes=10), flow(proto=17, nbytes=20, sport=5), flow(proto=6, nbytes=5)]
    assert [r.bytes for r in top(rows, "bytes", 5, proto=6)] == [10, 5]
    assert [r.bytes for r in top(rows, "bytes", 1)] == [20]
    assert top(rows, "bytes", 0) == []
    with pytest.raises(ValueError, match="n must be"):
        top(rows, "bytes", -1)
    with pytest.raises(ValueError, match="cannot rank by"):
        top(rows, "size", 3)  # type: ignore[arg-type]


def test_top_by_rate_puts_one_packet_flows_last() -> None:
    burst = flow(packets=1, nbytes=10**6, sport=1)
    slow = flow(packets=2, nbytes=10, first_ns=0, last_ns=10 * NS, sport=2)
    fast = flow(packets=2, nbytes=1000, first_ns=0, last_ns=NS, sport=3)
    assert top([burst, slow, fast], "rate", 3) == [fast, slow, burst]
    assert top([burst, slow, fast], "duration", 1) == [slow]


def test_top_ranks_conversations() -> None:
    def conv(a: str, nbytes: int, packets: int) -> ConvRow:
        return ConvRow(
            proto=6,
            a_addr=a,
            a_port=1,
            b_addr="10.0.0.9",
            b_port=2,
            packets_a_to_b=packets,
            bytes_a_to_b=nbytes,
            packets_b_to_a=0,
            bytes_b_to_a=0,
            packets=packets,
            bytes=nbytes,
            first_ns=0,
            last_ns=NS,
        )

    rows = [conv("10.0.0.3", 5, 1), conv("10.0.0.2", 5, 1), conv("10.0.0.1", 5, 2)]
    assert [r.a_addr for r in top(rows, "bytes", 3)] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]


# ---------------------------------------------------------------------------------------------
# elephants


def test_default_rules() -> None:
    assert [(r.name, r.kind) for r in DEFAULT_RULES] == [
        ("top10", "top_n"),
        ("over-1pct", "threshold"),
        ("constant-load-0.8", "constant_load"),
        ("mean+3sigma", "mean_3sigma"),
    ]
    assert DEFAULT_RULES[0].n == 10
    assert DEFAULT_RULES[1].fraction == 0.01
    assert DEFAULT_RULES[2].beta == 0.8


@pytest.mark.parametrize(
    ("text", "kind", "field", "value"),
    [
        ("top:20", "top_n", "n", 20),
        ("bytes:10MB", "threshold", "bytes", 10_000_000),
        ("bytes:512", "threshold", "bytes", 512),
        ("bytes:1KiB", "threshold", "bytes", 1024),
        ("bytes:1.5 GiB", "threshold", "bytes", 3 * 2**29),
        ("bytes:2gb", "threshold", "bytes", 2e9),
        ("bytes:3kb", "threshold", "bytes", 3000),
        ("bytes:7B", "threshold", "bytes", 7),
        ("share:0.05", "threshold", "fraction", 0.05),
        ("share:5%", "threshold", "fraction", 0.05),
        ("load:0.9", "constant_load", "beta", 0.9),
        ("3sigma", "mean_3sigma", "n", None),
        ("top10", "top_n", "n", 10),
        ("constant-load-0.8", "constant_load", "beta", 0.8),
    ],
)
def test_parse_rule(text: str, kind: str, field: str, value: object) -> None:
    rule = parse_rule(text)
    assert rule.kind == kind
    assert getattr(rule, field) == value


@pytest.mark.parametrize(
    "text",
    [
        "top:0",
        "top:x",
        "top:",
        "bytes:10XB",
        "bytes:1.5B",
        "bytes:",
        "bytes:-1MB",
        "share:0",
        "share:1.5",
        "share:abc",
        "load:0",
        "load:2",
        "size:10",
        "elephants",
        "",
    ],
)
def test_parse_rule_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rule(text)


def test_parse_size_units() -> None:
    assert parse_size("1MiB") == 2**20
    assert parse_size("1mb") == 10**6
    assert parse_size("0.5KB") == 500
    with pytest.raises(ValueError, match="unit"):
        parse_size("1 parsecs")


def test_classify_by_hand() -> None:
    sizes = [5, 50, 10, 30, 5]  # 100 bytes in all
    r = classify(sizes, parse_rule("top:2"))
    assert (r.flows, r.bytes, r.share_of_bytes, r.threshold_bytes) == (2, 80, 0.8, 30)
    # exact: 0.8 * 100 is exactly 80, so the first two flows are enough (a float would say 3)
    r = classify(sizes, DEFAULT_RULES[2])
    assert (r.flows, r.bytes, r.threshold_bytes) == (2, 80, 30)
    assert r.description.startswith("2 flows carry 80.0% of bytes (constant load, beta=0.8")
    r = classify(sizes, parse_rule("share:0.1"))  # >= 10 bytes
    assert (r.flows, r.bytes, r.threshold_bytes) == (3, 90, 10)
    r = classify(sizes, parse_rule("bytes:30"))
    assert (r.flows, r.bytes) == (2, 80)
    r = classify(sizes, parse_rule("top:100"))
    assert (r.flows, r.share_of_bytes) == (5, 1.0)


def test_classify_mean_3sigma_by_hand() -> None:
    sizes = [1] * 99 + [1000]  # mean 10.99, sigma about 99.4: only the 1000-byte flow is above
    r = classify(sizes, DEFAULT_RULES[3])
    assert (r.flows, r.bytes, r.threshold_bytes) == (1, 1000, 1000)
    assert r.description.startswith("1 flow carries 91.0% of bytes")
    assert classify([7, 7, 7], DEFAULT_RULES[3]).flows == 0  # sigma 0: nothing is an outlier
    # boundaries: mean 2 + 3 * sigma 2 is exactly 8, and 8 is not *larger*; then 18 falls short
    # of 58/11 + 3 * sqrt(2180)/11 = 18.0004 by a hair
    boundary = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3, 3, 8]
    assert classify(boundary, DEFAULT_RULES[3]).flows == 0
    assert classify([*boundary[:-1], 9], DEFAULT_RULES[3]).flows == 1
    assert classify([2, 3, 5, 4, 2, 6, 3, 5, 6, 4, 18], DEFAULT_RULES[3]).flows == 0
    assert classify([2, 3, 5, 4, 2, 6, 3, 5, 6, 4, 19], DEFAULT_RULES[3]).flows == 1
    assert classify([10**9], DEFAULT_RULES[3]).flows == 0


@pytest.mark.parametrize("sizes", [[], [0, 0, 0]])
def test_classify_without_bytes(sizes: list[int]) -> None:
    for res in classify_all(sizes, DEFAULT_RULES):
        assert res.share_of_bytes == 0.0
        assert res.bytes == 0
        assert res.description
    got = {r.rule.name: r.flows for r in classify_all(sizes, DEFAULT_RULES)}
    assert got == {"top10": len(sizes), "over-1pct": 0, "constant-load-0.8": 0, "mean+3sigma": 0}


def test_classify_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        classify([1, -1], DEFAULT_RULES[0])


@settings(max_examples=300, deadline=None)
@given(sizes=sizes_st, beta=st.sampled_from([0.1, 0.5, 0.8, 0.9, 0.99, 1.0]))
def test_constant_load_is_minimal(sizes: list[int], beta: float) -> None:
    res = classify(sizes, ElephantRule(name="cl", kind="constant_load", beta=beta))
    desc = sorted(sizes, reverse=True)
    b, total = Fraction(str(beta)), sum(sizes)
    assert res.bytes == sum(desc[: res.flows])
    assert res.bytes >= b * total
    if res.flows:
        # dropping the smallest member leaves less than beta; no k-1 flows beat the largest k-1
        assert res.bytes - res.threshold_bytes < b * total
        assert res.threshold_bytes == desc[res.flows - 1]


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 10**9), max_size=200) | st.lists(st.integers(0, 5)))
def test_mean_3sigma_matches_exact_statistics(sizes: list[int]) -> None:
    res = classify(sizes, DEFAULT_RULES[3])
    if not sizes:
        assert res.flows == 0
        return
    n = len(sizes)
    mean = Fraction(sum(sizes), n)
    var = sum((Fraction(s) - mean) ** 2 for s in sizes) / n

    def above(s: int) -> bool:  # s > mean + 3 sigma, without square roots
        return s - mean > 0 and (s - mean) ** 2 > 9 * var

    assert res.flows == sum(1 for s in sizes if above(s))
    assert res.bytes == sum(s for s in sizes if above(s))


@settings(max_examples=200, deadline=None)
@given(sizes=sizes_st, rules=st.lists(st.sampled_from(DEFAULT_RULES), min_size=1, max_size=4))
def test_classify_all_agrees_with_classify(sizes: list[int], rules: list[ElephantRule]) -> None:
    results = classify_all(sizes, rules)
    assert results == [classify(sizes, r) for r in rules]
    for res in results:
        assert 0.0 <= res.share_of_bytes <= 1.0
        assert res.flows <= len(sizes)
        assert all(s >= res.threshold_bytes for s in sorted(sizes, reverse=True)[: res.flows])


def test_rule_text() -> None:
    assert rule_text(DEFAULT_RULES[0]) == "the 10 largest flows"
    assert rule_text(DEFAULT_RULES[1]) == ">= 1% of all bytes"
    assert "beta=0.8" in rule_text(DEFAULT_RULES[2])
    assert rule_text(parse_rule("bytes:10MB")) == ">= 10.0 MB"


# ---------------------------------------------------------------------------------------------
# distribution


def test_ccdf_by_hand() -> None:
    assert ccdf([5, 1, 2, 1]) == ([1, 2, 5], [1.0, 0.5, 0.25])
    assert ccdf([]) == ([], [])


@settings(max_examples=200, deadline=None)
@given(sizes=sizes_st)
def test_ccdf_is_non_increasing(sizes: list[int]) -> None:
    xs, ys = ccdf(sizes)
    assert xs == sorted(set(sizes))
    assert all(a >= b for a, b in pairwise(ys))
    for x, y in zip(xs, ys, strict=True):
        assert y == sum(1 for s in sizes if s >= x) / len(sizes)
    if sizes:
        assert ys[0] == 1.0


@settings(max_examples=200, deadline=None)
@given(sizes=sizes_st)
def test_cumulative_share_is_monotone_in_unit_interval(sizes: list[int]) -> None:
    ks, shares = cumulative_share(sizes)
    assert ks == list(range(1, len(sizes) + 1))
    assert all(0.0 <= s <= 1.0 for s in shares)
    assert all(a <= b for a, b in pairwise(shares))
    if sum(sizes):
        assert shares[-1] == 1.0
    for k in {1, len(sizes) // 2, len(sizes)} & set(ks):
        assert shares[k - 1] == share_of_top(sizes, k)


def test_share_helpers_by_hand() -> None:
    sizes = [1] * 240 + [100, 60, 200, 400, 500, 300, 7, 8, 9, 10]  # 250 flows
    assert top_fraction_count(250, 0.01) == 2  # 250 // 100
    assert top_fraction_count(50, 0.01) == 1
    assert top_fraction_count(199, 0.01) == 1  # floor, not round
    assert top_fraction_count(100, 0.29) == 29  # the decimal 0.29, not the double below it
    assert top_fraction_count(0, 0.01) == 0
    assert share_top_fraction(sizes, 0.01) == 900 / sum(sizes)
    assert share_of_top(sizes, 1) == 500 / sum(sizes)
    assert share_of_top([], 3) == 0.0
    assert share_of_top([0, 0], 1) == 0.0
    with pytest.raises(ValueError):
        share_of_top(sizes, -1)
    with pytest.raises(ValueError):
        top_fraction_count(10, 0)


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(1, 10**9), min_size=1, max_size=100), n=st.integers(1, 60))
def test_log_bins_cover_every_size(sizes: list[int], n: int) -> None:
    edges = log_bins(sizes, n)
    assert len(edges) == n + 1
    assert all(a < b for a, b in pairwise(edges))
    assert edges[0] <= min(sizes) and max(sizes) <= edges[-1]
    if min(sizes) != max(sizes):
        assert (edges[0], edges[-1]) == (min(sizes), max(sizes))


def test_log_bins_edge_cases() -> None:
    assert log_bins([100, 100], 2) == pytest.approx([50, 100, 200])
    assert log_bins([0, 10, 1000], 2) == pytest.approx([10, 100, 1000])
    with pytest.raises(ValueError):
        log_bins([0], 3)
    with pytest.raises(ValueError):
        log_bins([1, 2], 0)
    assert spans_decades([1, 10]) and not spans_decades([5, 9, 0]) and not spans_decades([])


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.00 kB"),
        (1234, "1.23 kB"),
        (12_345, "12.3 kB"),
        (123_456, "123 kB"),
        (999_499, "999 kB"),
        (999_500, "1.00 MB"),
        (45_600_000, "45.6 MB"),
        (7 * 10**9, "7.00 GB"),
        (-1500, "-1.50 kB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_human_rate() -> None:
    assert human_rate(1_000_000) == "8.00 Mbit/s"
    assert human_rate(Fraction(1, 10)) == "0.800 bit/s"
    assert human_rate(124) == "992 bit/s"
    assert human_rate(125) == "1.00 kbit/s"


# ---------------------------------------------------------------------------------------------
# plots

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<?xml"}
HEAVY = [40 * 10**6, 9 * 10**6, 3 * 10**6] + [1500 * (i % 50 + 1) for i in range(500)]


@pytest.mark.parametrize("ext", [".png", ".svg", ".PDF"])
def test_plot_files_have_the_right_magic(tmp_path: Path, ext: str) -> None:
    path = save_figure(size_histogram_figure(HEAVY, top=100, title="heavy"), tmp_path / f"f{ext}")
    data = path.read_bytes()
    assert data.startswith(MAGIC[ext.lower()])
    assert len(data) > 1000
    if ext == ".svg":
        assert b"<svg" in data[:2000]


@pytest.mark.parametrize("name", ["f.jpg", "f", "f.png.txt"])
def test_plot_bad_extension_raises(tmp_path: Path, name: str) -> None:
    fig = size_histogram_figure([1, 2, 3], top=None, title="x")
    with pytest.raises(ValueError, match=r"\.pdf"):
        save_figure(fig, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_plot_panels_scales_and_labels() -> None:
    fig = size_histogram_figure(HEAVY, top=None, title="heavy")
    hist, ccdf_ax = fig.axes[0], fig.axes[1]
    assert hist.get_yscale() == "log" and hist.get_xscale() == "log"  # spans 4 decades
    assert "KB" in hist.get_xlabel() and hist.get_title()
    assert ccdf_ax.get_xscale() == "log" and ccdf_ax.get_yscale() == "log"
    assert any("share of bytes" in ax.get_ylabel() for ax in fig.axes[2:])
    assert any("fraction of flows" in ax.get_xlabel() for ax in fig.axes[2:])
    legend = hist.get_legend()
    assert legend is not None
    assert any("constant-load-0.8" in t.get_text() for t in legend.get_texts())
    narrow = size_histogram_figure([1000, 2000, 3000], top=2, title="narrow")
    assert narrow.axes[0].get_xscale() == "linear"
    assert "top 2 flows" in narrow.axes[0].get_title()


def test_plot_empty_input_still_saves(tmp_path: Path) -> None:
    path = save_figure(size_histogram_figure([], top=10, title="empty"), tmp_path / "e.png")
    assert path.read_bytes().startswith(MAGIC[".png"])
    with pytest.raises(ValueError):
        size_histogram_figure([1], top=-1, title="bad")


def test_plots_never_import_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom flowherd.reporter.output.plots import save_figure, size_histogram_figure\n"
        f"save_figure(size_histogram_figure([1, 10, 10**6], 5, 't'), {str(tmp_path / 'p.svg')!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------------------
# render

V6 = "3ffe:501:410:0:2c0:dfff:fe47:33e"


def test_rows_csv_formats() -> None:
    rows = [flow(src=V6, dst="::1", proto=17, nbytes=5, first_ns=-1, last_ns=NS + 5)]
    out = io.StringIO()
    rows_csv(rows, out)
    assert out.getvalue() == (
        ",".join(UNI_COLUMNS) + "\n" + f"{V6},::1,17,1,2,1,5,-0.000000001,1.000000005\n"
    )
    out = io.StringIO()
    rows_csv([], out, view="bi")
    assert out.getvalue() == ",".join(BI_COLUMNS) + "\n"
    with pytest.raises(ValueError, match="view"):
        rows_csv([], io.StringIO())
    conv = ConvRow(
        proto=6,
        a_addr="a",
        a_port=1,
        b_addr="b",
        b_port=2,
        packets_a_to_b=1,
        bytes_a_to_b=1,
        packets_b_to_a=0,
        bytes_b_to_a=0,
        packets=1,
        bytes=1,
        first_ns=0,
        last_ns=0,
    )
    with pytest.raises(TypeError):
        rows_csv([rows[0], conv], io.StringIO())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rows_csv(rows, io.StringIO(), view="bi")


def test_rows_json_round_trips() -> None:
    rows = [flow(nbytes=7, first_ns=1_500_000_000, last_ns=2 * NS, packets=2), flow(src=V6)]
    items = json.loads(rows_json(rows))
    assert [i["first_ts"] for i in items] == ["1.500000000", "0.000000000"]
    assert items[0]["last_ts"] == "2.000000000"
    for item, row in zip(items, rows, strict=True):
        del item["first_ts"], item["last_ts"]
        assert FlowRow.model_validate(item) == row
    assert json.loads(rows_json([])) == []


def test_rows_table_human_units() -> None:
    rows = [
        flow(
            src=V6,
            dst="fe80::260:97ff:fe07:69ea",
            proto=6,
            packets=30,
            nbytes=6335,
            first_ns=921159918 * NS + 323110000,
            last_ns=921159923 * NS + 604621000,
        ),
        flow(proto=50, nbytes=1234567, sport=0, dport=0),
    ]
    table = rows_table(rows, "top flows")
    assert table.row_count == 2
    text = text_of(table)
    assert V6 in text and "fe80::260:97ff:fe07:69ea" in text
    narrow = text_of(table, width=120)  # too narrow: addresses fold, numbers stay intact
    assert "…" not in narrow and "6.34 kB" in narrow and "9.60 kbit/s" in narrow
    assert V6 not in narrow and V6[:8] in narrow and V6[-3:] in narrow
    assert "TCP" in text and "ESP" in text
    assert "6.34 kB" in text and "1.23 MB" in text
    assert "5.282 s" in text  # 5.281511 s
    assert "9.60 kbit/s" in text  # 6335 B * 8 / 5.281511 s
    assert "top flows" in text


def test_rows_table_conversations() -> None:
    conv = ConvRow(
        proto=17,
        a_addr="10.0.0.1",
        a_port=53,
        b_addr="10.0.0.2",
        b_port=999,
        packets_a_to_b=2,
        bytes_a_to_b=2000,
        packets_b_to_a=1,
        bytes_b_to_a=500,
        packets=3,
        bytes=2500,
        first_ns=0,
        last_ns=2 * NS,
    )
    text = text_of(rows_table([conv], "conversations"))
    assert "A→B" in text and "UDP" in text and "2.00 kB" in text and "2.50 kB" in text
    assert "10.0 kbit/s" in text


def test_helpers() -> None:
    assert [proto_name(p) for p in (6, 17, 1, 58, 47, 50, 99)] == [
        "TCP",
        "UDP",
        "ICMP",
        "ICMPv6",
        "GRE",
        "ESP",
        "99",
    ]
    assert human_duration(1_234_567_890) == "1.235 s"
    assert human_ts(921159918 * NS + 266121000) == "1999-03-11 13:45:18.266121000 UTC"


def test_summary_and_elephants_tables() -> None:
    summary = Summary(
        packets=161,
        bytes=25651,
        counted_packets=150,
        counted_bytes=25000,
        flows_uni=64,
        flows_bi=42,
        not_counted={"non_ip": BucketCount(packets=11, bytes=651)},
        first_ns=921159907 * NS,
        last_ns=921159966 * NS + 755968000,
        share_top1pct_uni=0.2469,
        share_top10_uni=0.6526,
    )
    text = text_of(summary_table(summary))
    for want in (
        "161 packets",
        "25.7 kB",
        "non_ip",
        "651 B",
        "64",
        "42",
        "1999-03-11",
        "59.756 s",
        "24.7%",
        "65.3%",
    ):
        assert want in text, want
    results = classify_all([5, 50, 10, 30, 5], DEFAULT_RULES)
    table = elephants_table(results)
    assert table.row_count == len(DEFAULT_RULES)
    text = text_of(table)
    assert all(r.name in text for r in DEFAULT_RULES)
    assert "80.0%" in text  # constant load: 2 flows, 80 of 100 bytes
    assert isinstance(results[0], ElephantResult)


# ---------------------------------------------------------------------------------------------
# golden checks against the tshark oracle


@needs_oracle
@pytest.mark.corpus
@pytest.mark.parametrize("path", UNI_FILES, ids=lambda p: p.name)
def test_oracle_uni_csv_round_trips_byte_identical(path: Path) -> None:
    rows = load_uni(path)
    random.Random(path.name).shuffle(rows)
    out = io.StringIO()
    rows_csv(top(rows, "bytes", len(rows)), out)
    assert out.getvalue() == path.read_text()


@needs_oracle
@pytest.mark.corpus
@pytest.mark.parametrize("path", BI_FILES, ids=lambda p: p.name)
def test_oracle_bi_csv_round_trips_byte_identical(path: Path) -> None:
    rows = load_bi(path)
    random.Random(path.name).shuffle(rows)
    out = io.StringIO()
    rows_csv(top(rows, "bytes", len(rows)), out)
    assert out.getvalue() == path.read_text()


@needs_oracle
@pytest.mark.corpus
@pytest.mark.parametrize("path", UNI_FILES, ids=lambda p: p.name)
def test_oracle_shares_match_summary(path: Path) -> None:
    summary = json.loads(path.with_name(path.name.replace(".uni.csv", ".summary.json")).read_text())
    sizes = [r.bytes for r in load_uni(path)]
    assert sum(sizes) == summary["ip_bytes"]
    assert round(share_top_fraction(sizes, 0.01), 4) == summary["share_of_bytes_top1pct_flows"]
    assert round(share_of_top(sizes, 10), 4) == summary["share_of_bytes_top10_flows"]
    top10 = classify(sizes, DEFAULT_RULES[0])
    assert top10.bytes == sum(f["bytes"] for f in summary["top10_flows_by_bytes"])
