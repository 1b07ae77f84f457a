"""Heavy hitters beyond size: tortoises (duration), cheetahs (rate) and porcupines (burstiness).

Lan and Heidemann ("A measurement study of correlations of Internet flow characteristics",
Computer Networks 50(1), 2006) call a flow heavy in one dimension when its measure exceeds the
mean plus three standard deviations of that measure over all flows: elephants by size
(:mod:`flowherd.reporter.analysis.elephants`), tortoises by duration, cheetahs by rate, porcupines
by burstiness. Here, per unidirectional flow (the view elephants use):

* duration: last packet minus first packet, in ns;
* rate: bytes over the duration, in whole bytes per second (rounded down), for flows of at
  least two packets lasting at least :data:`MIN_RATE_NS` (100 ms, the cut Zhang, Breslau,
  Paxson and Shenker used for flow rates, so that two back-to-back packets are not a "fast"
  flow); other flows have no rate and are not in the rate population;
* burst: the most bytes the flow carried in one tumbling window of the capture (its peak rate
  at the window's time scale), for captures with windows (:mod:`flowherd.reporter.analysis.bursts`).
  Lan and Heidemann measured burstiness from packet trains; flowherd keeps no per-packet times, and
  the window is the shortest interval it keeps per flow.

A rule (:class:`~flowherd.models.report.HeavyRule`) is ``mean_sd`` (measure > mean + K sd,
population sd) or ``threshold`` (measure >= a value). Counts and sums are exact integers (so the
result does not depend on the order flows are read, or on how shards are combined); the K-sigma cut
is exact too (:func:`limit_of`). Measures are bucketed as :mod:`flowherd.reporter.analysis.sizes`
buckets sizes; a cut inside a bucket of different measures is settled by one more read of the flows,
counting only that bucket's, in constant memory. Pure: no
I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

import numpy as np

from flowherd.console.units import human_bytes, human_duration, human_rate
from flowherd.models import numbers
from flowherd.models.flows import NS
from flowherd.models.report import (
    HEAVY_METRICS,
    ElephantRule,
    HeavyResult,
    HeavyRule,
    one_of,
)
from flowherd.reporter.analysis.elephants import DEFAULT_RULES, RULE_FORMS, parse_rule
from flowherd.reporter.analysis.measures import MIN_RATE_NS as MIN_RATE_NS  # re-exported
from flowherd.reporter.analysis.measures import Columns, MeasureDist, Measures
from flowherd.reporter.analysis.measures import uni_items as uni_items  # re-exported

TORTOISES = HeavyRule(name="tortoises", metric="duration", kind="mean_sd", sigmas=3)
CHEETAHS = HeavyRule(name="cheetahs", metric="rate", kind="mean_sd", sigmas=3)
PORCUPINES = HeavyRule(name="porcupines", metric="burst", kind="mean_sd", sigmas=3)
#: The rules a report carries by default (porcupines need windows: ask for them by name).
DEFAULT_HEAVY: tuple[HeavyRule, ...] = (TORTOISES, CHEETAHS)
NAMED = {r.name: r for r in (TORTOISES, CHEETAHS, PORCUPINES)}
HEAVY_FORMS = (
    "duration:Ksd|DURATION (e.g. 3sd, 30s, 1.5min), rate:Ksd|RATE (e.g. 3sd, 10Mbit/s, 1MB/s), "
    "burst:Ksd|RATE (captures with windows); tortoises, cheetahs, porcupines (= METRIC:3sd)"
)
ALL_RULE_FORMS = f"{RULE_FORMS}; {HEAVY_FORMS}"


def parse_duration_ns(text: str) -> int:
    """Nanoseconds in ``30s``, ``500ms``, ``1.5min``, ``2h``, ``100us`` (a bare number: s);
    whole nanoseconds (:func:`flowherd.models.numbers.duration_ns`)."""
    return numbers.duration_ns(text, "a duration such as 30s, 500ms or 1.5min", lo=0)


def parse_rate(text: str) -> int:
    """Whole bytes per second (rounded up) in ``10Mbit/s``, ``10Mbps``, ``1MB/s``,
    ``512KiB/s``: ``bit/s`` or ``bps`` for bits with SI prefixes, ``B/s`` for bytes."""
    return math.ceil(numbers.byte_rate(text, "a rate such as 10Mbit/s or 1MB/s"))


def _sigmas(arg: str) -> float | None:
    if not arg.lower().endswith("sd"):
        return None
    k = numbers.scaled(arg[:-2], {"": 1}, "K in Ksd (K > 0)", whole=False, hi=1000)
    if k <= 0:
        raise ValueError(f"Ksd needs a number K > 0, not {arg!r}")
    return float(k)


def parse_heavy(text: str) -> HeavyRule | None:
    """A heavy-hitter rule from its command-line form (:data:`HEAVY_FORMS`), or None when
    ``text`` is not one (then it may be an elephant rule). Raises :class:`ValueError` for a
    malformed argument of a heavy rule."""
    t = text.strip()
    if t.lower() in NAMED:
        return NAMED[t.lower()]
    kind, sep, arg = t.partition(":")
    metric, arg = kind.strip().lower(), arg.strip()
    if not sep or metric not in HEAVY_METRICS:
        return None
    if not arg:
        raise ValueError(f"{metric}: needs an argument: use {HEAVY_FORMS}")
    m = one_of(metric, HEAVY_METRICS)
    k = _sigmas(arg)
    if k is not None:
        if k == 3:
            return {"duration": TORTOISES, "rate": CHEETAHS, "burst": PORCUPINES}[m]
        return HeavyRule(name=f"{m}+{k:g}sd", metric=m, kind="mean_sd", sigmas=k)
    value = parse_duration_ns(arg) if m == "duration" else parse_rate(arg)
    return HeavyRule(name=f"{m}-{arg.replace(' ', '')}", metric=m, kind="threshold", value=value)


def parse_rules(texts: Sequence[str]) -> tuple[list[ElephantRule], list[HeavyRule]]:
    """The elephant and heavy rules named by ``texts`` (any mix, in order), or the defaults
    of both when there are none. Raises :class:`ValueError` naming every accepted form."""
    if not texts:
        return list(DEFAULT_RULES), list(DEFAULT_HEAVY)
    size: list[ElephantRule] = []
    other: list[HeavyRule] = []
    for text in texts:
        rule = parse_heavy(text)
        if rule is not None:
            other.append(rule)
            continue
        try:
            size.append(parse_rule(text))
        except ValueError as exc:
            if str(exc).startswith("unknown elephant rule"):
                raise ValueError(f"unknown rule {text!r}: use {ALL_RULE_FORMS}") from None
            raise
    return size, other


def limit_of(rule: HeavyRule, n: int, total: int, sumsq: int, window_ns: int = 0) -> int | None:
    """The least integer measure ``rule`` selects among ``n`` measures of sum ``total`` and
    sum of squares ``sumsq``; None when it selects nothing (no measures).

    For ``mean_sd`` with ``K = p/q``: ``x > s/n + K sqrt(D)/n`` with ``D = n q2 - s**2`` is
    ``q n x - q s > sqrt(p**2 D)``, i.e. the integer ``q n x - q s`` reaches ``isqrt(p**2 D)
    + 1``. A burst threshold is a rate: times the window width, in bytes per window."""
    if n == 0:
        return None
    if rule.kind == "threshold":
        assert rule.value is not None
        if rule.metric == "burst":
            return math.ceil(Fraction(rule.value * window_ns, NS))
        return rule.value
    k = Fraction(repr(rule.sigmas))
    p, q = k.numerator, k.denominator
    r = math.isqrt(p * p * (n * sumsq - total * total))
    return -(-(q * total + r + 1) // (q * n))


def _words(rule: HeavyRule, limit: int | None, window_ns: int) -> str:
    show = _show(rule.metric, window_ns)
    if rule.kind == "threshold":
        return f"{rule.metric} >= {show(limit or 0)}"
    cut = f", i.e. >= {show(limit)}" if limit is not None else ""
    return f"{rule.metric} > mean + {rule.sigmas:g} sd{cut}"


def _show(metric: str, window_ns: int) -> Callable[[int], str]:
    if metric == "duration":
        return human_duration
    if metric == "rate":
        return human_rate
    return lambda v: f"{human_rate(Fraction(v * NS, window_ns or 1))} ({human_bytes(v)}/window)"


def measure_text(metric: str, value: int, window_ns: int = 0) -> str:
    """A measure in human units (burst: as a rate over the window, and bytes per window)."""
    return _show(metric, window_ns)(value)


def classify_heavy(
    rules: Sequence[HeavyRule],
    measures: Measures,
    rescan: Callable[[], Iterable[Columns]] | None,
    window_ns: int = 0,
) -> list[HeavyResult]:
    """What each rule selects among the items ``measures`` summarises; ``rescan`` returns
    the same items again, as chunks of columns
    (:func:`flowherd.reporter.analysis.measures.columns`), when a cut falls inside a bucket of
    different measures (one read settles every such cut). Raises :class:`ValueError` when a rescan
    is needed and ``rescan`` is None, when the items
    changed between reads, or for a rule on a metric that ``measures`` lacks."""
    plans: list[tuple[int | None, list[int], tuple[int, int, int, int, int] | None]] = []
    for rule in rules:
        if rule.metric not in measures.dists:
            raise ValueError(f"rule {rule.name!r} needs the {rule.metric} of each flow")
        d = measures.dists[rule.metric]
        limit = limit_of(rule, d.n, d.total, d.sumsq, window_ns)
        acc = [0, 0, 0]  # flows, bytes, smallest
        edge = None
        for i in sorted(d.buckets, reverse=True):
            c, b, lo, hi = d.buckets[i]
            if limit is None or hi < limit:
                break
            if lo >= limit:
                acc = [acc[0] + c, acc[1] + b, lo]
            else:
                edge = (1 + measures.metrics.index(rule.metric), limit, lo, hi, c)
        plans.append((limit, acc, edge))
    edges = {e for _, _, e in plans if e is not None}
    found = {e: [0, 0, 0, 0] for e in edges}  # flows, bytes, least selected; in the bucket
    if edges:
        if rescan is None:
            raise ValueError("an exact answer needs the flows again: pass rescan")
        for cols in rescan():
            nbytes = np.asarray(cols[0], dtype=np.int64)
            for e in edges:
                v = np.asarray(cols[e[0]], dtype=np.int64)
                f = found[e]
                f[3] += int(np.count_nonzero((v >= e[2]) & (v <= e[3])))
                hit = (v >= e[1]) & (v <= e[3])  # [limit, hi] lies in the edge's bucket
                if hit.any():
                    least = int(v[hit].min())
                    f[2] = least if not f[0] else min(f[2], least)
                    f[0] += int(hit.sum())
                    f[1] += sum(nbytes[hit].tolist())
    for e, f in found.items():
        if f[3] != e[4]:
            raise ValueError(
                f"the flows changed between reads: {f[3]} measures in [{e[2]}, {e[3]}], "
                f"expected {e[4]} (the table is still being written?)"
            )
    out = []
    for rule, (limit, acc, edge) in zip(rules, plans, strict=True):
        if edge is not None:
            f = found[edge]
            acc = [acc[0] + f[0], acc[1] + f[1], f[2] if f[0] else acc[2]]
        d = measures.dists[rule.metric]
        out.append(_result(rule, measures, d, limit, acc, window_ns))
    return out


def _result(
    rule: HeavyRule, ms: Measures, d: MeasureDist, limit: int | None, acc: list[int], w: int
) -> HeavyResult:
    k, nbytes, smallest = acc
    mean = d.total / d.n if d.n else 0.0
    sd = math.sqrt(d.n * d.sumsq - d.total * d.total) / d.n if d.n else 0.0
    share = nbytes / ms.bytes if ms.bytes else 0.0
    verb = "flow carries" if k == 1 else "flows carry"
    has = {"duration": "flows", "rate": "flows with a rate", "burst": "flows in windows"}
    why = _words(rule, limit, w)
    return HeavyResult(
        rule=rule,
        description=f"{k} {verb} {share * 100:.1f}% of bytes ({why}; "
        f"{d.n} {has[rule.metric]} in all)",
        population=d.n,
        flows=k,
        bytes=nbytes,
        share_of_bytes=share,
        limit=limit if limit is not None else 0,
        smallest=smallest if k else 0,
        mean=mean,
        sd=sd,
        window_ns=w if rule.metric == "burst" else 0,
    )
