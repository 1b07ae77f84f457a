"""Rich tables of the heavy hitters beyond size and of the tail fit (formatting only)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from flowherd.console.units import human_bytes, human_rate
from flowherd.models.report import HeavyResult, HeavyRule, TailFit
from flowherd.reporter.analysis.heavy import measure_text

_ANIMAL = {"duration": "tortoises", "rate": "cheetahs", "burst": "porcupines"}


def heavy_rule_text(rule: HeavyRule, window_ns: int = 0) -> str:
    """A heavy rule's definition in words, e.g. ``duration > mean + 3 sd (tortoises)``; a
    burst rule names its window (``bytes in one 5 s window``)."""
    what: str = rule.metric
    if what == "burst":
        what = f"bytes in one {window_ns / 1e9:g} s window" if window_ns else "burst"
    if rule.kind == "threshold" and rule.metric == "burst":  # the value is a rate
        return f"{what} >= {human_rate(rule.value or 0)} over the window"
    if rule.kind == "threshold":
        return f"{what} >= {measure_text(rule.metric, rule.value or 0)}"
    return f"{what} > mean + {rule.sigmas:g} sd ({_ANIMAL[rule.metric]})"


def heavy_table(results: Sequence[HeavyResult]) -> Table:
    """One row per heavy rule: its definition, the flows it selects, their bytes and share of
    all bytes, the least measure among them, and the mean and sd of the measure."""
    t = Table(title="Heavy hitters beyond size (unidirectional flows)")
    t.add_column("rule")
    t.add_column("definition")
    for h in ("flows", "out of", "bytes", "share of bytes", "smallest", "mean", "sd"):
        t.add_column(h, justify="right")
    for r in results:
        m, w = r.rule.metric, r.window_ns

        def show(v: float, m: str = m) -> str:
            return human_bytes(round(v)) if m == "burst" else measure_text(m, round(v))

        t.add_row(
            r.rule.name,
            heavy_rule_text(r.rule, w),
            f"{r.flows:,}",
            f"{r.population:,}",
            human_bytes(r.bytes),
            f"{r.share_of_bytes * 100:.1f}%",
            show(r.smallest) if r.flows else "-",
            show(r.mean) if r.population else "-",
            show(r.sd) if r.population else "-",
        )
    return t


def tail_table(fit: TailFit) -> Table:
    """The Hill estimate with its ``k``, the Clauset-Shalizi-Newman power-law fit and
    Vuong's test against a lognormal, in two columns."""
    t = Table(title="Tail of the flow sizes (unidirectional)", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    of = "all" if fit.complete else f"the {fit.sizes_fitted:,} largest of"
    t.add_row("sizes fitted", f"{of} {fit.flows:,} flows")
    h = fit.hill
    if h is None:
        t.add_row("Hill estimator", "- (too few distinct sizes)")
    else:
        t.add_row(
            "Hill estimator",
            f"alpha = {h.alpha:.3f} (tail index {h.tail_index:.3f}); k = {h.k:,} ({h.rule}), "
            f"sizes > {human_bytes(h.threshold)}",
        )
    p = fit.power_law
    if p is None:
        t.add_row("power law (CSN)", "- (too few distinct sizes)")
        return t
    t.add_row(
        "power law (CSN)",
        f"alpha = {p.alpha:.3f} ± {p.alpha_se:.3f}, xmin = {human_bytes(round(p.xmin))} "
        f"({p.n_tail:,} flows >= xmin), KS distance {p.ks:.4f}",
    )
    if p.lognormal_mu < 0:  # a median below one byte: the fit ran off toward a power law
        logn = "no finite maximum: it tends to a power law (mu -> -inf)"
    else:
        logn = f"mu = {p.lognormal_mu:.3f}, sigma = {p.lognormal_sigma:.3f} (of ln bytes)"
    t.add_row("lognormal above xmin", logn)
    verdict = {
        "power_law": "the power law fits better",
        "lognormal": "the lognormal fits better",
        "neither": "neither is favoured (p >= 0.1)",
    }[p.preferred]
    t.add_row(
        "power law vs lognormal",
        f"R = {p.llr:.3f} (normalised {p.llr_normalized:.3f}), p = {p.p:.3g}: {verdict}",
    )
    return t
