"""Tail estimation (flowherd.reporter.analysis.tail): the Hill estimator, the Clauset-Shalizi-Newman fit and
Vuong's test, cross-checked against the ``powerlaw`` package on seeded samples.

Tolerances against ``powerlaw`` (2.x, ``Fit(data, discrete=False)``), every candidate xmin
tried on both sides:

* xmin, alpha and the KS distance: equal to 1e-9 (relative) -- the same estimator;
* where the lognormal's maximum likelihood is inside its domain (a median of at least one
  byte: mu > 0): mu and sigma within 1e-3, R within 0.01 + 1e-3 |R| and p within 0.01. On a pure power-law tail the lognormal's likelihood keeps rising as mu -> -inf
  (it tends to a power law); each optimiser stops somewhere on that ridge, ``powerlaw`` with
  underflowing normalisers there, so only the verdict is compared: R near 0, p > 0.1 on both.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from flowherd.reporter.analysis.sizes import SizeDist
from flowherd.reporter.analysis.tail import (
    TopSizes,
    _log_sf,
    fit_lognormal,
    hill,
    hill_k,
    power_law_fit,
    tail_fit,
    vuong,
)
from flowherd.reporter.output.plots import size_histogram_figure

powerlaw = pytest.importorskip("powerlaw")  # the `test` extra installs it


def _reference(x: np.ndarray) -> tuple[object, float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(x, discrete=False, verbose=False)
        r, p = fit.distribution_compare("power_law", "lognormal")
    return fit, float(r), float(p)


def _samples() -> dict[str, np.ndarray]:
    out = {}
    for seed in (1, 3):
        rng = np.random.default_rng(seed)
        out[f"pareto-{seed}"] = (rng.pareto(1.5, 2000) + 1) * 100  # alpha 2.5
        out[f"pareto-bytes-{seed}"] = np.floor((rng.pareto(1.2, 2000) + 1) * 60)  # whole bytes
        out[f"lognormal-{seed}"] = rng.lognormal(8, 2, 2000)
        out[f"lognormal-bytes-{seed}"] = np.floor(rng.lognormal(9, 1.5, 2000)) + 1
    return out


SAMPLES = _samples()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_csn_fit_equals_powerlaw(name: str) -> None:
    x = SAMPLES[name]
    ours = power_law_fit(np.sort(x), max_xmins=10**9)
    ref, r, p = _reference(x)
    assert ours is not None
    assert ours.xmin == pytest.approx(ref.xmin, rel=1e-9)
    assert ours.alpha == pytest.approx(ref.alpha, rel=1e-9)
    assert ours.ks == pytest.approx(ref.power_law.D, rel=1e-9)
    assert ours.n_tail == ref.n_tail
    if ref.lognormal.mu > 0:  # an interior maximum: the same lognormal, the same test
        assert ours.lognormal_mu == pytest.approx(ref.lognormal.mu, abs=1e-3)
        assert ours.lognormal_sigma == pytest.approx(ref.lognormal.sigma, abs=1e-3)
        assert abs(ours.llr - r) <= 0.01 + 1e-3 * abs(r)
        assert abs(ours.p - p) <= 0.01
    else:  # the ridge toward a power law: undecided on both sides
        assert abs(ours.llr) < 0.5 and ours.p > 0.1 and p > 0.1
        assert ours.preferred == "neither"


@pytest.mark.slow
def test_sign_of_r_lognormal_preferred_on_lognormal_data() -> None:
    x = np.random.default_rng(7).lognormal(8, 2, 3000)
    ours = power_law_fit(np.sort(x), max_xmins=10**9)
    _, r, p = _reference(x)
    assert ours is not None
    assert ours.llr < 0 and r < 0
    assert ours.p < 0.05 and p < 0.05
    assert ours.preferred == "lognormal"


def test_sign_of_r_power_law_never_loses_on_pareto_data() -> None:
    # the lognormal can only approach a power law, so R tends to 0 from above on Pareto data:
    # never significantly negative, however large the sample
    for seed in range(4):
        x = (np.random.default_rng(seed).pareto(1.5, 5000) + 1) * 1000
        ours = power_law_fit(np.sort(x))
        assert ours is not None
        assert ours.llr > -1 and ours.p > 0.1, (seed, ours)
        assert ours.alpha == pytest.approx(2.5, abs=0.15)
        assert ours.preferred != "lognormal"


def test_alpha_is_the_closed_form_mle_and_ks_is_the_plfit_distance() -> None:
    x = np.sort(np.array([1.0, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233]))
    fit = power_law_fit(x, max_xmins=10**9)
    assert fit is not None
    tail = x[x >= fit.xmin]
    n = len(tail)
    assert fit.n_tail == n
    assert fit.alpha == pytest.approx(1 + n / np.sum(np.log(tail / fit.xmin)))
    theo = 1 - (tail / fit.xmin) ** (1 - fit.alpha)
    assert fit.ks == pytest.approx(np.max(np.abs(theo - np.arange(n) / n)))
    assert fit.alpha_se == pytest.approx((fit.alpha - 1) / math.sqrt(n))


def test_a_fit_on_the_largest_sizes_equals_the_fit_on_all() -> None:
    x = np.floor((np.random.default_rng(5).pareto(1.4, 4000) + 1) * 300).astype(np.int64)
    full = power_law_fit(np.sort(x), max_xmins=10**9)
    assert full is not None
    top = TopSizes(m=full.n_tail + 50)
    top.add_many(x.tolist())
    assert not top.complete and top.n == 4000 and len(top.values()) == full.n_tail + 50
    part = power_law_fit(top.values(), complete=False, max_xmins=10**9)
    assert part is not None
    assert (part.xmin, part.alpha, part.n_tail) == (full.xmin, full.alpha, full.n_tail)
    # the smallest kept size is never a candidate: flows of that size may be missing
    edge = power_law_fit(np.sort(x)[-full.n_tail :], complete=False, max_xmins=10**9)
    assert edge is not None and edge.xmin > full.xmin


def test_coarse_then_fine_xmin_search_stays_close() -> None:
    x = np.sort(np.floor(np.random.default_rng(2).lognormal(8, 2, 4000)) + 1)
    exact = power_law_fit(x, max_xmins=10**9)
    quick = power_law_fit(x, max_xmins=100)
    assert exact is not None and quick is not None
    assert quick.ks >= exact.ks
    assert quick.ks <= exact.ks + 0.01


def test_hill_estimator_and_its_k() -> None:
    assert hill_k(1000, 5000) == 100
    assert hill_k(1000, 50) == 49  # capped by the sizes kept
    assert hill_k(3, 3) == 1
    x = np.sort((np.random.default_rng(9).pareto(1.5, 20000) + 1) * 10)
    h = hill(x)
    assert h is not None and h.k == 2000
    ref = x[-h.k - 1]
    assert h.threshold == int(ref)
    expect = 1 / np.mean(np.log(x[-h.k :] / ref))
    assert h.tail_index == pytest.approx(expect)
    assert h.alpha == pytest.approx(1 + expect)
    assert h.tail_index == pytest.approx(1.5, abs=0.1)
    assert "10%" in h.rule and "capped" not in h.rule
    assert hill(np.array([5.0, 5.0, 5.0])) is None  # no spread above x_(k+1)
    assert hill(np.array([7.0])) is None
    capped = hill(x[-100:], n=20000)
    assert capped is not None and capped.k == 99 and "capped" in capped.rule


def test_top_sizes_keeps_the_largest_and_merges() -> None:
    rng = np.random.default_rng(4)
    vals = rng.integers(0, 10**9, 10_000).tolist()
    a, b = TopSizes(m=300), TopSizes(m=300)
    a.add_many(vals[:6000])
    for v in vals[6000:]:
        b.add(v)
    a.merge(b)
    assert a.n == 10_000
    assert a.values().tolist() == sorted(vals)[-300:]
    with pytest.raises(ValueError):
        TopSizes(m=1)


def test_log_sf_is_accurate_on_both_sides_of_the_asymptotic_branch() -> None:
    from scipy.stats import norm  # a dependency of powerlaw

    for z in (-3.0, 0.0, 2.0, 20.0, 35.3, 35.4, 40.0, 80.0):
        assert _log_sf(z) == pytest.approx(float(norm.logsf(z)), rel=1e-9, abs=1e-12)


def test_lognormal_fit_recovers_parameters_and_vuong_is_antisymmetric() -> None:
    x = np.random.default_rng(11).lognormal(3, 0.5, 20000)
    lx = np.log(x)
    mu, sigma = fit_lognormal(lx, float(np.min(lx)) - 10)  # a cut far below: untruncated
    assert mu == pytest.approx(3, abs=0.02) and sigma == pytest.approx(0.5, abs=0.02)
    a = np.random.default_rng(1).normal(0, 1, 500)
    b = a + np.random.default_rng(2).normal(0.1, 1, 500)
    r1, n1, p1 = vuong(a, b)
    r2, n2, p2 = vuong(b, a)
    assert (r1, n1) == pytest.approx((-r2, -n2)) and p1 == pytest.approx(p2)
    assert vuong(a, a) == (0.0, 0.0, 1.0)


def test_tail_fit_of_kept_sizes_and_its_plot() -> None:
    x = np.floor((np.random.default_rng(6).pareto(1.3, 5000) + 1) * 500).astype(int).tolist()
    kept = TopSizes()
    kept.add_many([0, *x])  # a size of 0 has no place in a power law
    fit = tail_fit(kept)
    assert fit.flows == 5001 and fit.complete and fit.sizes_fitted == 5000
    assert fit.hill is not None and fit.hill.k == 501
    assert fit.power_law is not None and fit.power_law.alpha == pytest.approx(2.3, abs=0.15)
    fig = size_histogram_figure(SizeDist.of(x), None, "t", None, fit=fit)
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert any(lb.startswith("power law: alpha=") for lb in labels)
    assert any(lb.startswith("Hill: alpha=") for lb in labels)
    assert tail_fit(TopSizes()).power_law is None
