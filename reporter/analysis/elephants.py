"""Elephant flows: which flows count as "large", under several published definitions.

Each :class:`~flowherd.models.report.ElephantRule` selects a set of flows from a list of flow sizes
in bytes; :func:`classify` reports how many flows it selects and what share of all bytes they carry.
Every rule selects a *largest-first prefix* of the flows sorted by size, so the result is summarised
by its smallest member, ``threshold_bytes`` (0 when nothing is selected).

* ``top_n``: the ``n`` largest flows (ties at the boundary are cut: exactly ``min(n, flows)``);
* ``threshold``: flows of at least ``bytes`` bytes, or of at least ``fraction`` of all bytes;
* ``constant_load``: the fewest largest flows whose cumulative bytes reach ``beta`` of all bytes
  (the "constant load" elephant definition of Papagiannaki et al.);
* ``mean_3sigma``: flows strictly larger than the mean size plus three (population) standard
  deviations.

Arithmetic is exact (integers and :class:`~fractions.Fraction`); ``fraction`` and ``beta`` are
taken as the decimals they print as (``0.8`` is 4/5, not the nearest double). An empty input, or
one whose sizes are all 0, selects nothing under ``threshold`` (by fraction),
``constant_load`` and ``mean_3sigma``, and reports a share of ``0.0``. Pure: no I/O.

Each rule is planned as a cut of the sizes sorted largest first (:func:`plan`);
:func:`classify_all` takes the cut on the sorted list (in memory, the reference) and
:func:`classify_dist` from a :class:`~flowherd.reporter.analysis.sizes.SizeDist` in bounded memory,
with the same results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

from flowherd.console.units import human_bytes
from flowherd.console.units import rule_text as rule_text  # re-exported
from flowherd.models import numbers
from flowherd.models.report import ElephantResult, ElephantRule
from flowherd.reporter.analysis.sizes import (
    CAP,
    FAN,
    AtLeast,
    Cut,
    Prefix,
    Query,
    Reach,
    SizeDist,
    cut_sorted,
    resolve,
)

DEFAULT_RULES: tuple[ElephantRule, ...] = (
    ElephantRule(name="top10", kind="top_n", n=10),
    ElephantRule(name="over-1pct", kind="threshold", fraction=0.01),
    ElephantRule(name="constant-load-0.8", kind="constant_load", beta=0.8),
    ElephantRule(name="mean+3sigma", kind="mean_3sigma"),
)

#: Byte units accepted by :func:`parse_rule` (case-insensitive): SI and binary prefixes.
UNITS: dict[str, int] = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
RULE_FORMS = (
    "top:N, bytes:SIZE (e.g. 10MB, 512KiB), share:F (0-1 or N%), load:BETA, 3sigma (= bytes:3sd)"
)


def _exact(x: float) -> Fraction:
    return Fraction(repr(x))


def _pct(f: float) -> str:
    return f"{f * 100:g}pct"


def parse_size(text: str) -> int:
    """A byte count such as ``10MB``, ``1.5 GiB``, ``512kb`` or ``1000`` (bytes).

    Units, any case: ``B``, ``KB``/``MB``/``GB``/``TB`` or ``k``/``M``/``G``/``T`` (powers of
    1000) and ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024), as
    :func:`flowherd.models.numbers.size` reads them. Raises :class:`ValueError` for an unknown
    unit or a value that is not a whole number of bytes.
    """
    return numbers.size(text, "a size such as 10MB, 512KiB or 1000")


def _fraction_arg(arg: str, what: str) -> float:
    return float(numbers.fraction(arg, what))


def parse_rule(text: str) -> ElephantRule:
    """An elephant rule from its command-line form.

    ``top:20`` (the 20 largest flows), ``bytes:10MB`` (flows of at least 10 MB, units as in
    :func:`parse_size`), ``share:0.05`` or ``share:5%`` (flows of at least 5% of all bytes),
    ``load:0.9`` (constant load, beta=0.9), ``3sigma`` or ``bytes:3sd`` (mean + 3 sigma, as
    :mod:`flowherd.reporter.analysis.heavy` spells its rules); the name of a default
    rule (``top10``, ``over-1pct``, ``constant-load-0.8``, ``mean+3sigma``) also works. Raises
    :class:`ValueError` naming the accepted forms for anything else.
    """
    t = text.strip()
    for rule in DEFAULT_RULES:
        if t.lower() == rule.name:
            return rule
    if t.lower() in ("3sigma", "sigma", "mean+3sigma"):
        return DEFAULT_RULES[3]
    kind, sep, arg = t.partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if not sep or not arg:
        raise ValueError(f"unknown elephant rule {text!r}: use {RULE_FORMS}")
    if kind == "top":
        n = numbers.count(arg, "top:N's N, a whole number >= 1", lo=1, hi=10**9)
        return ElephantRule(name=f"top{n}", kind="top_n", n=n)
    if kind == "bytes" and arg.lower().endswith("sd"):
        if arg[:-2].strip() not in ("3", "3.0"):
            raise ValueError(f"bytes:Ksd takes K = 3 only (mean + 3 sigma), not {arg!r}")
        return DEFAULT_RULES[3]
    if kind == "bytes":
        b = parse_size(arg)
        return ElephantRule(name=f"over-{arg.replace(' ', '')}", kind="threshold", bytes=b)
    if kind == "share":
        f = _fraction_arg(arg, "share")
        return ElephantRule(name=f"over-{_pct(f)}", kind="threshold", fraction=f)
    if kind == "load":
        beta = _fraction_arg(arg, "load")
        return ElephantRule(name=f"constant-load-{beta:g}", kind="constant_load", beta=beta)
    raise ValueError(f"unknown elephant rule {text!r}: use {RULE_FORMS}")


def _threshold_3sigma(n: int, s: int, q: int) -> int:
    """The smallest integer size ``x`` with ``x > mean + 3 sigma`` (population sigma), for
    ``n`` flows whose sizes sum to ``s`` and whose squares sum to ``q``.

    ``x > s/n + 3 sqrt(D)/n`` with ``D = n q - s**2`` is ``n x > s + sqrt(9 D)``.
    """
    nine_d = 9 * (n * q - s * s)
    r = math.isqrt(nine_d)
    if r * r == nine_d:
        return (s + r) // n + 1
    # sqrt(9 D) lies strictly between r and r + 1, so the integer n x must reach s + r + 1
    return -(-(s + r + 1) // n)


def plan(rule: ElephantRule, n: int, total: int, sumsq: int) -> tuple[Query, str]:
    """What ``rule`` selects among ``n`` flows of ``total`` bytes (sum of squares ``sumsq``),
    as a cut of the sizes sorted largest first, and the why for the description."""
    if rule.kind == "top_n":
        assert rule.n is not None
        return Prefix(min(rule.n, n)), f"top {rule.n} by bytes"
    if rule.kind == "threshold":
        if rule.bytes is not None:
            return AtLeast(rule.bytes), f">= {human_bytes(rule.bytes)} each"
        assert rule.fraction is not None
        f = _exact(rule.fraction)
        limit = -(-f.numerator * total // f.denominator)  # ceil(fraction * total)
        why = f">= {rule.fraction * 100:g}% of bytes each, i.e. >= {human_bytes(limit)}"
        return (AtLeast(limit) if total else Prefix(0)), why
    if rule.kind == "constant_load":
        assert rule.beta is not None
        b = _exact(rule.beta)
        # the fewest largest flows whose bytes reach beta * total: an integer sum reaches it
        # exactly when it reaches its ceiling
        return Reach(-(-b.numerator * total // b.denominator)), f"constant load, beta={rule.beta:g}"
    if n == 0:
        return Prefix(0), "larger than mean + 3 sigma"
    limit = _threshold_3sigma(n, total, sumsq)
    return AtLeast(limit), f"larger than mean + 3 sigma, i.e. >= {human_bytes(limit)}"


def _result(rule: ElephantRule, why: str, cut: Cut, n: int, total: int) -> ElephantResult:
    k = cut.k
    share = cut.total / total if total else 0.0
    verb = "flow carries" if k == 1 else "flows carry"
    return ElephantResult(
        rule=rule,
        description=f"{k} {verb} {share * 100:.1f}% of bytes ({why}; {n} flows in all)",
        flows=k,
        bytes=cut.total,
        share_of_bytes=share,
        threshold_bytes=cut.last,
    )


def classify_all(sizes: Sequence[int], rules: Sequence[ElephantRule]) -> list[ElephantResult]:
    """:func:`classify` under each rule in turn, sorting the sizes only once (in memory: the
    reference for :func:`classify_dist`)."""
    if any(s < 0 for s in sizes):
        raise ValueError("flow sizes must be >= 0")
    desc = sorted(sizes, reverse=True)
    n, total = len(desc), sum(desc)
    sumsq = sum(x * x for x in desc) if any(r.kind == "mean_3sigma" for r in rules) else 0
    out = []
    for rule in rules:
        q, why = plan(rule, n, total, sumsq)
        out.append(_result(rule, why, cut_sorted(desc, q), n, total))
    return out


def classify_dist(
    dist: SizeDist,
    rules: Sequence[ElephantRule],
    rescan: Callable[[], Iterable[int]] | None,
    extra: Sequence[Query] = (),
    *,
    cap: int = CAP,
    fan: int = FAN,
) -> tuple[list[ElephantResult], list[Cut]]:
    """:func:`classify_all` from a :class:`~flowherd.reporter.analysis.sizes.SizeDist` in bounded
    memory, exactly: the same results for the same sizes. ``rescan`` returns the sizes again when a
    rule's cut falls inside a bucket of different sizes (see
    :func:`flowherd.reporter.analysis.sizes.resolve`). The cuts of ``extra`` queries are resolved in
    the same rescans and returned second; ``cap`` and
    ``fan`` are :func:`~flowherd.reporter.analysis.sizes.resolve`'s."""
    plans = [plan(rule, dist.n, dist.total, dist.sumsq) for rule in rules]
    cuts = resolve(dist, [q for q, _ in plans] + list(extra), rescan, cap, fan)
    results = [
        _result(rule, why, cut, dist.n, dist.total)
        for rule, (_, why), cut in zip(rules, plans, cuts, strict=False)
    ]
    return results, cuts[len(rules) :]


def classify(sizes: Sequence[int], rule: ElephantRule) -> ElephantResult:
    """The elephants among flows of ``sizes`` bytes under ``rule`` (see the module docstring).

    ``threshold_bytes`` is the size of the smallest selected flow (0 if none), ``bytes`` their
    total and ``share_of_bytes`` that total over the sum of all sizes (``0.0`` when it is 0).
    Raises :class:`ValueError` for a negative size.
    """
    return classify_all(sizes, [rule])[0]
