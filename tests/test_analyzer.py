"""Tests for research_agents.analysis.stats: every statistic is checked against scipy or a hand example."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from research_agents.analysis.stats import (
    Comparison,
    adjust_pvalues,
    apply_correction,
    cohens_d,
    compare_paired,
    compare_unpaired,
    hedges_g,
    lr_sensitivity,
    mannwhitney_min_p,
    mannwhitney_n_per_arm_needed,
    noise_floor,
    stability,
    steps_to_target,
    summarize,
    wilcoxon_min_p,
    wilcoxon_pairs_needed,
)
from research_agents.report.words import comparison_summary, limit_text

R = 2000  # bootstrap resamples in tests: fast and deterministic with a fixed seed

# Fixed data without ties (so scipy's exact rank tests apply).
A8 = [3.512, 3.487, 3.530, 3.498, 3.541, 3.505, 3.522, 3.493]
B8 = [3.471, 3.480, 3.502, 3.455, 3.520, 3.468, 3.509, 3.476]
A6 = [2.91, 2.97, 2.88, 3.02, 2.95, 2.99]
B7 = [2.85, 2.93, 2.90, 2.81, 2.87, 2.96, 2.84]


def _paired(a, b, **kw):
    return compare_paired(dict(enumerate(a)), dict(enumerate(b)), "a", "b", n_resamples=R, **kw)


def _json_ok(model) -> None:
    json.dumps(model.model_dump(), allow_nan=False)


# ----------------------------------------------------------------------- summarize


def test_summarize_against_numpy_scipy():
    x = [2.91, 2.97, 2.88, 3.02, 2.95, 2.99, 3.30]
    s = summarize(x, n_resamples=R, seed=0)
    assert s.n == 7
    assert s.mean == pytest.approx(np.mean(x))
    assert s.sd == pytest.approx(np.std(x, ddof=1))
    assert s.sem == pytest.approx(np.std(x, ddof=1) / math.sqrt(7))
    assert s.median == pytest.approx(np.median(x))
    assert (s.min, s.max) == (min(x), max(x))
    assert s.ci_low < s.mean < s.ci_high
    assert s.iqm == pytest.approx(stats.trim_mean(x, 0.25))
    ref = stats.bootstrap(
        (np.array(x),), np.mean, n_resamples=R, rng=np.random.default_rng(0), method="BCa"
    ).confidence_interval
    assert (s.ci_low, s.ci_high) == pytest.approx((ref.low, ref.high))
    _json_ok(s)


def test_summarize_small_n():
    one = summarize([3.0], n_resamples=R)
    assert one.n == 1 and one.mean == 3.0
    assert one.sd is None and one.sem is None and one.ci_low is None and one.ci_high is None
    assert one.iqm is None
    two = summarize([3.0, 3.2], n_resamples=R)
    lo, hi = stats.t.interval(0.95, df=1, loc=3.1, scale=np.std([3.0, 3.2], ddof=1) / math.sqrt(2))
    assert (two.ci_low, two.ci_high) == pytest.approx((lo, hi))
    assert two.iqm is None
    three = summarize([3.0, 3.2, 3.1], n_resamples=R)
    assert three.ci_low <= three.mean <= three.ci_high and three.iqm is None
    four = summarize([3.0, 3.2, 3.1, 9.0], n_resamples=R)
    assert four.iqm == pytest.approx(stats.trim_mean([3.0, 3.2, 3.1, 9.0], 0.25)) == pytest.approx(3.15)
    _json_ok(one)
    empty = summarize([])
    assert empty.n == 0 and empty.mean is None


# --------------------------------------------------------------------- noise floor


def test_noise_floor_hand_example():
    nf = noise_floor({"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0], "z": [5.0]})
    # variances: x = 1 (df 2), y = 2 (df 1); pooled = sqrt((2*1 + 1*2) / 3)
    assert nf.pooled_sd == pytest.approx(math.sqrt(4 / 3))
    assert nf.threshold == pytest.approx(2 * math.sqrt(4 / 3))
    assert nf.sd_by_config == pytest.approx({"x": 1.0, "y": math.sqrt(2)})
    assert nf.median_sd == pytest.approx((1 + math.sqrt(2)) / 2)
    assert (nf.n_configs, nf.n_configs_with_repeats, nf.n_runs, nf.df) == (3, 2, 6, 3)
    # per-config threshold uses the noisier config; pooled fallback for unrepeated ones
    assert nf.threshold_for("x", "y") == pytest.approx(2 * math.sqrt(2))
    assert nf.threshold_for("x", "z") == pytest.approx(2.0)
    assert nf.threshold_for("z") == pytest.approx(nf.threshold)
    _json_ok(nf)


def test_noise_floor_no_repeats():
    nf = noise_floor({"x": [1.0], "y": [2.0]})
    assert nf.pooled_sd is None and nf.threshold is None and nf.median_sd is None
    assert nf.n_configs == 2 and nf.n_runs == 2
    assert nf.threshold_for("x") is None


# -------------------------------------------------------------------- effect sizes


def test_hedges_g_hand_example():
    # means 2 and 3, both variances 1 -> s_pooled 1, d = (3 - 2) / 1 = 1 (b minus a)
    # df = 4, J = 1 - 3 / (4*4 - 1) = 0.8 -> g = 0.8
    assert cohens_d([1, 2, 3], [2, 3, 4]) == pytest.approx(1.0)
    assert hedges_g([1, 2, 3], [2, 3, 4]) == pytest.approx(0.8)
    # direction: b lower loss -> negative
    assert hedges_g([2, 3, 4], [1, 2, 3]) == pytest.approx(-0.8)
    assert hedges_g([1], [2, 3]) is None
    assert hedges_g([1, 1], [2, 2]) is None  # zero pooled sd


def test_paired_hedges_g_hand_example():
    a = [10.0, 10.0, 10.0]
    b = [9.0, 8.0, 7.0]  # d = [-1, -2, -3]: mean -2, sd 1, d_z = -2
    c = _paired(a, b)
    # J = 1 - 3 / (4*(3-1) - 1) = 4/7
    assert c.hedges_g == pytest.approx(-2 * 4 / 7)


# ------------------------------------------------------------------------- paired


def test_paired_matches_scipy():
    c = _paired(A8, B8)
    ref = stats.ttest_rel(B8, A8)
    assert c.p_value == pytest.approx(ref.pvalue)
    assert c.t_statistic == pytest.approx(ref.statistic)
    assert c.t_df == pytest.approx(ref.df)
    d = np.array(B8) - np.array(A8)
    w = stats.wilcoxon(d)
    assert c.rank_p_value == pytest.approx(w.pvalue)
    assert c.rank_statistic == pytest.approx(w.statistic)
    assert c.rank_test_method == "exact"
    assert c.diff == pytest.approx(d.mean())
    assert c.diff < 0  # b lower loss
    ref_ci = stats.bootstrap(
        (d,), np.mean, n_resamples=R, rng=np.random.default_rng(0), method="BCa"
    ).confidence_interval
    assert (c.diff_ci_low, c.diff_ci_high) == pytest.approx((ref_ci.low, ref_ci.high))
    assert c.prob_improvement == pytest.approx(np.mean(d < 0))
    assert c.rank_test_can_reach_alpha is True
    assert c.verdict == "b better"
    assert c.n_pairs == 8 and c.seeds_dropped == []
    _json_ok(c)


def test_paired_pairs_by_seed_and_records_dropped():
    a = {1: 3.0, 2: 3.1, 3: 3.2, 7: 3.3}
    b = {3: 3.0, 2: 3.05, 1: 2.9, 9: 2.0}
    c = compare_paired(a, b, "adam", "muon", n_resamples=R)
    assert c.n_pairs == 3 and c.seeds_used == [1, 2, 3] and c.seeds_dropped == [7, 9]
    d = np.array([2.9 - 3.0, 3.05 - 3.1, 3.0 - 3.2])
    assert c.diff == pytest.approx(d.mean())
    assert c.p_value == pytest.approx(stats.ttest_rel([2.9, 3.05, 3.0], [3.0, 3.1, 3.2]).pvalue)
    assert any("[7, 9]" in limit_text(s) for s in c.limits)


def test_paired_prob_improvement_ties_count_half():
    c = _paired([1.0, 2.0, 3.0, 4.0], [0.5, 2.0, 3.5, 3.0])  # wins: 1, tie, loss, win
    assert c.prob_improvement == pytest.approx((2 + 0.5) / 4)


def test_three_pairs_wilcoxon_cannot_reach_alpha():
    a = [5.0, 5.1, 5.2]
    b = [x - 1.0 for x in a]
    c = compare_paired(dict(enumerate(a)), dict(enumerate(b)), "adamw", "muon", n_resamples=R)
    assert c.rank_p_value == pytest.approx(0.25)
    assert c.rank_test_min_p == pytest.approx(0.25)
    assert c.rank_test_can_reach_alpha is False
    note = " ".join(limit_text(lim) for lim in c.limits)
    assert "Wilcoxon signed-rank with n=3 pairs cannot reach p < 0.05" in note
    assert "smallest possible two-sided p = 0.25" in note and "6 pairs are needed" in note
    line = comparison_summary(c)
    assert "cannot reach p < 0.05" in line and "0.25" in line
    assert c.prob_improvement == 1.0
    _json_ok(c)


def test_five_and_six_pairs_wilcoxon():
    base = [3.0, 3.1, 3.2, 3.3, 3.4, 3.5]
    shifts = [0.11, 0.12, 0.13, 0.14, 0.15, 0.16]  # distinct |d| -> exact test
    b = [x - s for x, s in zip(base, shifts)]
    c5 = _paired(base[:5], b[:5])
    assert c5.rank_p_value == pytest.approx(0.0625) and c5.rank_test_can_reach_alpha is False
    c6 = _paired(base, b)
    assert c6.rank_p_value == pytest.approx(0.03125) == pytest.approx(stats.wilcoxon(np.subtract(b, base)).pvalue)
    assert c6.rank_test_min_p == pytest.approx(0.03125)
    assert c6.rank_test_can_reach_alpha is True
    assert not any(lim.code == "rank cannot reach alpha" for lim in c6.limits)


def test_min_p_formulas():
    assert wilcoxon_min_p(3) == pytest.approx(0.25)
    assert wilcoxon_min_p(5) == pytest.approx(0.0625)
    assert wilcoxon_min_p(6) == pytest.approx(0.03125)
    assert wilcoxon_pairs_needed(0.05) == 6
    assert mannwhitney_min_p(3, 3) == pytest.approx(0.1)
    assert mannwhitney_min_p(4, 4) == pytest.approx(2 / 70)
    assert mannwhitney_n_per_arm_needed(0.05) == 4
    # the formulas are what scipy's exact tests actually produce at complete separation
    assert stats.wilcoxon([-1.0, -2.0, -3.0]).pvalue == pytest.approx(wilcoxon_min_p(3))
    assert stats.mannwhitneyu([1, 2, 3], [4, 5, 6]).pvalue == pytest.approx(mannwhitney_min_p(3, 3))
    assert stats.mannwhitneyu([1, 2, 3, 4], [5, 6, 7, 8]).pvalue == pytest.approx(mannwhitney_min_p(4, 4))


# ----------------------------------------------------------------------- unpaired


def test_unpaired_matches_scipy():
    c = compare_unpaired(A6, B7, "adam", "muon", n_resamples=R)
    ref = stats.ttest_ind(B7, A6, equal_var=False)
    assert c.p_value == pytest.approx(ref.pvalue)
    assert c.t_statistic == pytest.approx(ref.statistic)
    assert c.t_df == pytest.approx(ref.df)
    mw = stats.mannwhitneyu(A6, B7, alternative="two-sided")
    assert c.rank_p_value == pytest.approx(mw.pvalue)
    assert c.rank_statistic == pytest.approx(mw.statistic)
    assert c.diff == pytest.approx(np.mean(B7) - np.mean(A6))
    assert c.hedges_g == pytest.approx(hedges_g(A6, B7))
    assert c.hedges_g < 0
    ref_ci = stats.bootstrap(
        (np.array(B7), np.array(A6)),
        lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        n_resamples=R,
        rng=np.random.default_rng(0),
        method="BCa",
        paired=False,
    ).confidence_interval
    assert (c.diff_ci_low, c.diff_ci_high) == pytest.approx((ref_ci.low, ref_ci.high))
    _json_ok(c)


def test_prob_improvement_equals_u_over_n1n2():
    a = [3.0, 3.1, 3.1, 3.4, 3.2]
    b = [3.1, 2.9, 3.0, 3.3]  # ties with a
    c = compare_unpaired(a, b, n_resamples=R)
    u = stats.mannwhitneyu(a, b).statistic  # U for a: #(a > b) + 0.5 #ties = #(b < a) + ...
    assert c.prob_improvement == pytest.approx(u / (len(a) * len(b)))
    brute = np.mean([1.0 if y < x else 0.5 if y == x else 0.0 for x in a for y in b])
    assert c.prob_improvement == pytest.approx(brute)
    # tied data: exact permutation p from scipy
    ref = stats.mannwhitneyu(a, b, method=stats.PermutationMethod(n_resamples=np.inf))
    assert c.rank_p_value == pytest.approx(ref.pvalue)


def test_three_vs_three_mann_whitney_limits():
    c = compare_unpaired([3.0, 3.1, 3.2], [2.0, 2.1, 2.2], n_resamples=R)
    assert c.rank_p_value == pytest.approx(0.1)
    assert c.rank_test_min_p == pytest.approx(0.1)
    assert c.rank_test_can_reach_alpha is False
    assert any("Mann-Whitney U with 3 vs 3 runs cannot reach p < 0.05" in s and "4 runs per arm" in s
               for s in map(limit_text, c.limits))
    c4 = compare_unpaired([3.0, 3.1, 3.2, 3.3], [2.0, 2.1, 2.2, 2.3], n_resamples=R)
    assert c4.rank_test_min_p == pytest.approx(2 / 70) and c4.rank_test_can_reach_alpha is True
    assert c4.rank_p_value == pytest.approx(2 / 70)


# ------------------------------------------------------------------------ verdicts


def test_not_testable_n1():
    c = compare_paired({0: 3.0}, {0: 2.0}, n_resamples=R)
    assert c.verdict == "not testable (n too small)" and c.p_value is None
    assert c.prob_improvement == 1.0
    u = compare_unpaired([3.0], [2.0, 2.1, 2.2], n_resamples=R)
    assert u.verdict == "not testable (n too small)" and u.p_value is None
    none_common = compare_paired({0: 3.0, 1: 3.1}, {2: 2.0, 3: 2.1}, n_resamples=R)
    assert none_common.verdict == "not testable (n too small)" and none_common.n_pairs == 0
    for x in (c, u, none_common):
        _json_ok(x)
    # still not testable after correction
    assert apply_correction([c, u])[0].verdict == "not testable (n too small)"


def test_no_evidence_inside_noise_floor_even_if_p_small():
    a = [3.500, 3.510, 3.520, 3.530, 3.540, 3.550, 3.560, 3.570]
    jit = [0.0001, -0.0002, 0.0003, -0.0001, 0.0002, -0.0003, 0.0, 0.0001]
    b = [x - 0.003 + j for x, j in zip(a, jit)]
    raw = _paired(a, b)
    assert raw.p_value < 1e-4 and raw.verdict == "b better"
    small = _paired(a, b, min_effect=0.01)
    assert small.verdict == "no evidence of a difference"
    assert "noise threshold" in comparison_summary(small)
    # via apply_correction with a noise floor: config b is noisy (sd 0.01) -> threshold 0.02
    nf = noise_floor({"a": [3.50, 3.51], "b": [3.49, 3.49 + 0.01 * math.sqrt(2)]})
    out = apply_correction([raw], min_effect=nf)[0]
    assert out.min_effect == pytest.approx(0.02)
    assert out.verdict == "no evidence of a difference"
    out = apply_correction([raw], min_effect=nf.threshold)[0]
    assert out.verdict == "no evidence of a difference"


def test_verdict_requires_ci_to_exclude_zero():
    c = _paired(A8, B8)
    assert c.verdict == "b better"
    faked = c.model_copy(update={"diff_ci_high": 0.001})
    assert apply_correction([faked])[0].verdict == "no evidence of a difference"


def test_a_better_direction():
    c = _paired(B8, A8)  # now b is the worse one
    assert c.diff > 0 and c.verdict == "a better"
    assert c.hedges_g > 0 and c.prob_improvement == pytest.approx(0.0)


def test_no_evidence_when_p_large():
    c = compare_unpaired([1, 2, 3], [2, 3, 4], n_resamples=R)
    assert c.verdict == "no evidence of a difference"


# ---------------------------------------------------------- multiple comparisons


def test_holm_hand_example():
    assert adjust_pvalues([0.01, 0.04, 0.03], "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert adjust_pvalues([0.01, None, 0.04, 0.03], "holm") == [
        pytest.approx(0.03), None, pytest.approx(0.06), pytest.approx(0.06)
    ]
    assert adjust_pvalues([0.5, 0.9], "holm") == pytest.approx([1.0, 1.0])
    assert adjust_pvalues([None], "holm") == [None]
    assert adjust_pvalues([], "bh") == []


def test_bh_matches_scipy():
    ps = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    assert adjust_pvalues(ps, "bh") == pytest.approx(list(stats.false_discovery_control(ps, method="bh")))
    out = adjust_pvalues([0.01, None, 0.04], "bh")
    assert out[1] is None
    assert [out[0], out[2]] == pytest.approx(list(stats.false_discovery_control([0.01, 0.04])))


def test_apply_correction_family():
    rng = np.random.default_rng(3)
    # find a paired comparison whose raw p is between 0.01 and 0.05 (fixed rng, deterministic)
    for _ in range(200):
        a = 3.0 + rng.normal(0, 0.02, 6)
        b = a - 0.01 + rng.normal(0, 0.015, 6)
        c = _paired(a, b)
        if 0.01 < c.p_value < 0.05 and c.verdict == "b better":
            break
    else:  # pragma: no cover
        pytest.fail("no suitable example")
    fam = apply_correction([c] * 5 + [compare_paired({0: 1.0}, {0: 2.0})], method="holm")
    assert [x.p_adjusted for x in fam[:5]] == pytest.approx(adjust_pvalues([c.p_value] * 5, "holm"))
    assert all(x.p_adjusted == pytest.approx(min(1.0, 5 * c.p_value)) for x in fam[:5])
    assert all(x.verdict == "no evidence of a difference" for x in fam[:5])
    assert fam[0].family_size == 5 and fam[0].correction == "holm"
    assert "holm" in comparison_summary(fam[0])
    assert fam[5].p_adjusted is None and fam[5].verdict == "not testable (n too small)"
    bh = apply_correction([c, c], method="bh")
    assert bh[0].p_adjusted == pytest.approx(stats.false_discovery_control([c.p_value, c.p_value])[0])
    for x in fam:
        assert isinstance(x, Comparison)
        _json_ok(x)


# ------------------------------------------------------------------ LR sensitivity


def test_lr_sensitivity_hand_example():
    pts = [
        (1e-3, 3.00),
        (2e-3, 2.90),
        (4e-3, 2.86),
        (4e-3, 2.84),  # mean 2.85 (best)
        (8e-3, 2.88),
        (1.6e-2, 3.20),
        (1.6e-2, 3.00),  # mean 3.10
    ]
    r = lr_sensitivity(pts, margin=0.05)
    assert r.best_lr == 4e-3 and r.best_loss == pytest.approx(2.85)
    assert (r.lr_lo, r.lr_hi) == (2e-3, 8e-3)
    assert r.width_ratio == pytest.approx(4.0)
    assert r.n_lrs == 5 and r.n_in_range == 3
    assert r.mean_losses == pytest.approx([3.0, 2.9, 2.85, 2.88, 3.1])
    assert not r.lo_at_edge and not r.hi_at_edge
    _json_ok(r)


def test_lr_sensitivity_contiguous_relative_and_diverged():
    pts = [(0.001, 2.04), (0.002, 2.0), (0.004, 2.3), (0.008, 2.01), (0.016, float("nan"))]
    r = lr_sensitivity(pts, margin=0.05)
    # 0.008 is within the margin but not contiguous with the best (0.004 is bad)
    assert (r.lr_lo, r.lr_hi) == (0.001, 0.002) and r.width_ratio == pytest.approx(2.0)
    assert r.lo_at_edge and not r.hi_at_edge
    assert r.mean_losses[-1] is None
    rel = lr_sensitivity(pts, margin=0.01, relative=True)  # cutoff 2.02
    assert (rel.lr_lo, rel.lr_hi) == (0.002, 0.002) and rel.width_ratio == pytest.approx(1.0)
    assert rel.loss_cutoff == pytest.approx(2.02)
    none = lr_sensitivity([(0.1, float("inf"))])
    assert none.best_lr is None and none.width_ratio is None
    _json_ok(none)


# --------------------------------------------------------------- curves


def test_steps_to_target():
    steps = [0, 10, 20, 30, 40]
    losses = [5.0, float("nan"), 3.9, 3.5, 3.2]
    assert steps_to_target(steps, losses, 4.0) == 20
    assert steps_to_target(steps, losses, 3.5) == 30
    assert steps_to_target(steps, losses, 1.0) is None
    with pytest.raises(ValueError):
        steps_to_target([0, 1], [1.0], 1.0)


def test_stability():
    curve = [5.0, 4.8, 4.6, 4.4, 5.5, 4.2, 4.0, 3.9, 3.85, 3.8]
    s = stability(curve)
    d = np.diff(curve)
    med = np.median(np.abs(d))
    assert s["median_abs_change"] == pytest.approx(med)
    assert s["n_spikes"] == int(np.sum(d > 3 * med)) == 1
    assert s["tail_variance"] == pytest.approx(np.var([3.85, 3.8], ddof=1))
    assert s["diverged"] is False
    smooth = stability(np.linspace(5, 3, 50))
    assert smooth["n_spikes"] == 0
    assert smooth["tail_variance"] == pytest.approx(np.var(np.linspace(5, 3, 50)[-10:], ddof=1))
    bad = stability([5.0, 4.0, float("nan")])
    assert bad["diverged"] is True and bad["n_nonfinite"] == 1
    json.dumps(s, allow_nan=False)
