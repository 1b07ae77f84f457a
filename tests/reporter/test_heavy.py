"""Heavy hitters beyond size (flowherd.reporter.analysis.heavy, flowherd.reporter.analysis.bursts): rule forms, exact K-sigma
cuts, streaming classification against brute force, per-window peaks through spilled runs."""

from __future__ import annotations

import random
from collections.abc import Iterator
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowherd.models.flows import NS, FlowKey, FlowStats
from flowherd.models.report import HeavyRule
from flowherd.reporter.analysis.bursts import burst_items
from flowherd.reporter.analysis.heavy import (
    CHEETAHS,
    DEFAULT_HEAVY,
    PORCUPINES,
    TORTOISES,
    classify_heavy,
    limit_of,
    parse_duration_ns,
    parse_heavy,
    parse_rate,
    parse_rules,
)
from flowherd.reporter.analysis.measures import (
    MIN_RATE_NS,
    Columns,
    MeasureDist,
    Measures,
    columns,
    uni_items,
)
from flowherd.reporter.analysis.report import make_report, stream_report
from flowherd.reporter.output.heavy_tables import heavy_rule_text, heavy_table, tail_table
from tests.reporter.test_lines_and_scan import status, synthetic


@pytest.mark.parametrize(
    ("text", "metric", "kind", "sigmas", "value"),
    [
        ("duration:3sd", "duration", "mean_sd", 3, None),
        ("tortoises", "duration", "mean_sd", 3, None),
        ("Cheetahs", "rate", "mean_sd", 3, None),
        ("burst:3SD", "burst", "mean_sd", 3, None),
        ("duration:2.5sd", "duration", "mean_sd", 2.5, None),
        ("duration:30s", "duration", "threshold", None, 30 * NS),
        ("duration:1.5min", "duration", "threshold", None, 90 * NS),
        ("duration:250ms", "duration", "threshold", None, NS // 4),
        ("duration:100us", "duration", "threshold", None, 100_000),
        ("rate:10Mbit/s", "rate", "threshold", None, 1_250_000),
        ("rate:10mbps", "rate", "threshold", None, 1_250_000),
        ("rate:1MB/s", "rate", "threshold", None, 10**6),
        ("rate:1.5KiB/s", "rate", "threshold", None, 1536),
        ("rate:1bit/s", "rate", "threshold", None, 1),  # whole bytes/s, rounded up
        ("burst:8Mbit/s", "burst", "threshold", None, 10**6),
    ],
)
def test_rule_forms(
    text: str, metric: str, kind: str, sigmas: float | None, value: int | None
) -> None:
    rule = parse_heavy(text)
    assert rule is not None
    assert (rule.metric, rule.kind, rule.sigmas, rule.value) == (metric, kind, sigmas, value)
    size, heavy = parse_rules([text])
    assert size == [] and heavy == [rule]


def test_rule_names_and_mixing_with_elephant_rules() -> None:
    assert parse_heavy("duration:3sd") is TORTOISES
    assert parse_heavy("rate:3sd") is CHEETAHS and parse_heavy("porcupines") is PORCUPINES
    assert parse_heavy("duration:30s").name == "duration-30s"  # type: ignore[union-attr]
    assert parse_heavy("rate:2sd").name == "rate+2sd"  # type: ignore[union-attr]
    assert parse_heavy("top:5") is None and parse_heavy("bytes:10MB") is None
    size, heavy = parse_rules(["top:5", "duration:3sd", "bytes:3sd", "rate:1MB/s"])
    assert [r.name for r in size] == ["top5", "mean+3sigma"]
    assert [r.name for r in heavy] == ["tortoises", "rate-1MB/s"]
    size, heavy = parse_rules([])
    assert len(size) == 4 and heavy == list(DEFAULT_HEAVY)
    assert heavy_rule_text(TORTOISES) == "duration > mean + 3 sd (tortoises)"
    assert heavy_rule_text(parse_heavy("rate:1MB/s")) == "rate >= 8.00 Mbit/s"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("duration:", "needs an argument"),
        ("duration:abc", "not a duration"),
        ("duration:5 fortnights", "unknown unit .fortnights."),
        ("duration:5w", "unknown unit"),
        ("rate:10furlongs/s", "unknown unit 'furlongs/s' for a rate"),
        ("rate:10Mb", "unknown unit 'Mb' for a rate"),
        ("burst:0sd", "K > 0"),
        ("rate:-1sd", "K > 0"),
        ("rate:-1MB/s", "not a rate"),
        ("bytes:2sd", "K = 3 only"),
        ("speed:3sd", "unknown rule 'speed:3sd': use top:N"),
    ],
)
def test_bad_rules_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_rules([text])
    assert "duration:Ksd" in parse_rules.__globals__["ALL_RULE_FORMS"]
    assert parse_duration_ns("2") == 2 * NS and parse_rate("8bps") == 1


def _exceeds(x: int, vals: list[int], k: Fraction) -> bool:
    """x > mean + k sd, exactly (population sd)."""
    n, s = len(vals), sum(vals)
    d = n * sum(v * v for v in vals) - s * s  # n^2 var
    lhs = n * x - s  # n (x - mean), compared with k sqrt(d)
    return lhs > 0 and lhs * lhs > k * k * d


@settings(max_examples=200, deadline=None)
@given(
    vals=st.lists(st.integers(0, 10**12), min_size=1, max_size=40),
    k=st.sampled_from([Fraction(1), Fraction(5, 2), Fraction(3), Fraction(3, 10)]),
)
def test_limit_is_the_least_integer_beyond_mean_plus_k_sd(vals: list[int], k: Fraction) -> None:
    rule = HeavyRule(name="t", metric="duration", kind="mean_sd", sigmas=float(k))
    limit = limit_of(rule, len(vals), sum(vals), sum(v * v for v in vals))
    assert limit is not None
    assert _exceeds(limit, vals, k)
    assert not _exceeds(limit - 1, vals, k)


def _brute(items: list[tuple[int, int]], rule: HeavyRule) -> tuple[int, int, int]:
    vals = [v for _, v in items if v >= 0]
    if not vals:
        return 0, 0, 0
    if rule.kind == "threshold":
        chosen = [(b, v) for b, v in items if v >= 0 and v >= (rule.value or 0)]
    else:
        k = Fraction(repr(rule.sigmas))
        chosen = [(b, v) for b, v in items if v >= 0 and _exceeds(v, vals, k)]
    return len(chosen), sum(b for b, _ in chosen), min((v for _, v in chosen), default=0)


@settings(max_examples=150, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.integers(1, 10**6), st.one_of(st.just(-1), st.integers(0, 5000))),
        max_size=60,
    ),
    limit=st.integers(0, 5000),
    spread=st.sampled_from([1, 997, 10**6 + 3]),
)
def test_classification_equals_brute_force(
    items: list[tuple[int, int]], limit: int, spread: int
) -> None:
    # scaled measures land several to a bucket: cuts inside buckets need the rescan
    items = [(b, v * spread if v >= 0 else -1) for b, v in items]
    rules = [
        HeavyRule(name="a", metric="rate", kind="mean_sd", sigmas=3),
        HeavyRule(name="b", metric="rate", kind="mean_sd", sigmas=0.5),
        HeavyRule(name="c", metric="rate", kind="threshold", value=limit * spread),
    ]
    reads = []

    def rescan() -> Iterator[Columns]:
        reads.append(1)
        return columns(items)

    got = classify_heavy(rules, Measures(("rate",)).add_many(items), rescan)
    assert len(reads) <= 1  # every cut inside a bucket is settled by one read
    total = sum(b for b, _ in items)
    for rule, res in zip(rules, got, strict=True):
        assert (res.flows, res.bytes, res.smallest) == _brute(items, rule)
        assert res.share_of_bytes == (res.bytes / total if total else 0.0)
        assert res.population == sum(1 for _, v in items if v >= 0)


def test_a_cut_inside_a_bucket_needs_the_same_flows_again() -> None:
    items = [(1, 10**6 + i) for i in range(50)] + [(1, 10**6 + 10**5)]
    rule = HeavyRule(name="t", metric="rate", kind="threshold", value=10**6 + 20)
    measures = Measures(("rate",)).add_many(items)
    with pytest.raises(ValueError, match="pass rescan"):
        classify_heavy([rule], measures, None)
    with pytest.raises(ValueError, match="changed between reads: 49 measures"):
        classify_heavy([rule], measures, lambda: columns(items[1:]))
    (res,) = classify_heavy([rule], measures, lambda: columns(items))
    assert (res.flows, res.smallest, res.limit) == (31, 10**6 + 20, 10**6 + 20)
    with pytest.raises(ValueError, match="needs the burst"):
        classify_heavy([PORCUPINES], Measures(("rate",)), None)


def _pair(pa: int, ba: int, fa: int, la: int, pb: int = 0, bb: int = 0) -> tuple[bytes, bytes]:
    st_ = FlowStats(pa, ba, pb, bb, fa, la) if not pb else FlowStats(pa, ba, pb, bb, fa, la, fa, la)
    return FlowKey(b"\1\2\3\4", b"\5\6\7\10", 17, 1, 2).pack(), st_.pack()


def test_uni_items_duration_and_rate() -> None:
    t = 1_700_000_000 * NS
    items = list(uni_items([_pair(5, 1000, t, t + 2 * NS), _pair(1, 60, t, t)]))
    assert items == [(1000, 2 * NS, 500), (60, 0, -1)]
    short = list(uni_items([_pair(2, 3000, t, t + MIN_RATE_NS - 1)]))
    assert short == [(3000, MIN_RATE_NS - 1, -1)]  # too short to have a rate
    both = list(uni_items([_pair(3, 900, t, t + NS, 2, 100)]))
    assert both == [(900, NS, 900), (100, NS, 100)]


def test_burst_items_spill_and_merge_runs() -> None:
    rng = random.Random(3)
    keys = [FlowKey(rng.randbytes(4), rng.randbytes(4), 6, i, 80).pack() for i in range(300)]
    windows: list[list[tuple[bytes, bytes]]] = []
    expect: dict[tuple[bytes, int], list[int]] = {}
    for _ in range(7):
        win = []
        for k in rng.sample(keys, 120):
            ba, bb = rng.choice([0, rng.randrange(1, 10**7)]), rng.randrange(1, 10**5)
            win.append((k, FlowStats(1 if ba else 0, ba, 1, bb, 1, 1, 1, 1).pack()))
            for d, b in ((0, ba), (1, bb)):
                if b:
                    expect.setdefault((k, d), []).append(b)
        windows.append(win)
    want = sorted((sum(v), max(v)) for v in expect.values())
    for run_rows in (1, 17, 10**6):
        got = list(burst_items(lambda: windows, run_rows=run_rows))
        assert sorted(got) == want
    with pytest.raises(ValueError):
        list(burst_items(lambda: windows, run_rows=0))


def test_stream_report_heavy_and_tail_equal_make_report() -> None:
    pairs = list(synthetic(3000, seed=4))
    rules = [TORTOISES, CHEETAHS, parse_heavy("duration:5ns"), parse_heavy("rate:2sd")]
    want = make_report(
        status(), [(FlowKey.unpack(k), FlowStats.unpack(v)) for k, v in pairs], 7,
        heavy=rules,  # type: ignore[arg-type]
    )  # fmt: skip
    got = stream_report(status(), lambda: pairs, 7, heavy=rules)  # type: ignore[arg-type]
    assert got == want
    assert [r.rule.name for r in got.heavy] == ["tortoises", "cheetahs", "duration-5ns", "rate+2sd"]
    assert got.tail is not None and got.tail.flows == got.summary.flows_uni
    assert heavy_table(got.heavy).row_count == 4
    assert tail_table(got.tail).row_count == 5
    with pytest.raises(ValueError, match="windows"):
        stream_report(status(), lambda: pairs, 7, heavy=[PORCUPINES])
    bare = stream_report(status(), lambda: pairs, 7, heavy=[], fit=False)
    assert bare.heavy == [] and bare.tail is None


@settings(max_examples=100, deadline=None)
@given(
    vals=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 2000), st.integers(0, 2**53 - 1), st.integers(0, 2**62)),
            st.integers(1, 10**9),
        ),
        max_size=50,
    )
)
def test_vectorised_fold_equals_one_by_one(vals: list[tuple[int, int]]) -> None:
    import numpy as np

    one = MeasureDist()
    for v, b in vals:
        one.add(v, b)
    half = len(vals) // 2
    a, c = MeasureDist(), MeasureDist()
    for part, d in ((vals[:half], a), (vals[half:], c)):
        d.add_arrays(
            np.array([v for v, _ in part], dtype=np.int64),
            np.array([b for _, b in part], dtype=np.int64),
        )
    a.merge(c)
    assert (a.n, a.total, a.sumsq, a.buckets) == (one.n, one.total, one.sumsq, one.buckets)


@settings(max_examples=60, deadline=None)
@given(
    flows=st.lists(
        st.tuples(
            st.integers(0, 5),
            st.integers(0, 2**53),
            st.integers(0, 5),
            st.integers(0, 2**40),
            st.integers(-(10**12), 4 * 10**18),
            st.integers(0, 10**12),
        ),
        max_size=30,
    ),
    big=st.integers(1, 100),
)
def test_numpy_decoding_equals_the_record_by_record_one(
    flows: list[tuple[int, int, int, int, int, int]], big: int
) -> None:
    from flowherd.reporter.analysis.measures import uni_columns

    pairs = []
    for pa, ba, pb, bb, t, d in flows:
        st_ = FlowStats(pa, ba if pa else 0, pb, bb if pb else 0)
        if pa:
            st_.first_ab, st_.last_ab = t, t + d
        if pb:
            st_.first_ba, st_.last_ba = t + 7, t + 7 + d // 3
        pairs.append((_pair(1, 1, 0, 0)[0], st_.pack()))
    pairs *= big  # past one decoding block (2048 records) now and then
    want = sorted(uni_items(pairs))
    got = sorted(zip(*uni_columns(pairs), strict=True))
    assert got == want
