"""Comparing two configurations: paired by seed (paired t, Wilcoxon) or unpaired (Welch, Mann-Whitney),
with a conservative verdict."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats

from research_agents.analysis.stats.bootstrap import bootstrap_ci, diff_of_means, mean_axis
from research_agents.analysis.stats.effect import hedges_g, hedges_g_paired
from research_agents.analysis.stats.rank import (
    mannwhitney_min_p,
    mannwhitney_n_per_arm_needed,
    wilcoxon_min_p,
    wilcoxon_pairs_needed,
)
from research_agents.analysis.stats.values import array1d, num

Verdict = Literal["b better", "a better", "no evidence of a difference", "not testable (n too small)"]
VERDICTS: tuple[str, ...] = ("b better", "a better", "no evidence of a difference", "not testable (n too small)")

# Largest number of distinct label permutations we enumerate exactly for a tied
# Mann-Whitney test (beyond that scipy's tie-corrected normal approximation is used).
_MW_EXACT_PERMUTATION_LIMIT = 50_000



SINGLE = "none (single comparison)"
TESTS = {"paired": ("paired t", "Wilcoxon signed-rank"), "unpaired": ("Welch t", "Mann-Whitney U")}  # primary, rank

LimitCode = Literal[
    "nonfinite seeds",  # paired: seeds with a non-finite loss, dropped from the pairing (seeds)
    "unpaired seeds",  # paired: seeds present in one arm only (seeds)
    "too few pairs",  # paired: fewer than 2 common seeds (n)
    "zero spread paired",  # paired: the differences have zero spread (t_undefined: the t-test too)
    "hedges g needs 3 pairs",  # paired: n = 2, the small-sample correction is 0
    "hedges g undefined paired",  # paired: zero spread of the differences
    "nonfinite losses",  # unpaired: count non-finite losses of arm `name` dropped
    "too few runs",  # unpaired: fewer than 2 runs in an arm (n_a, n_b)
    "degenerate welch",  # unpaired: both arms have zero spread
    "hedges g undefined pooled",  # unpaired: zero pooled sd
    "bootstrap undercover",  # 3-5 runs per side: the bootstrap CI is too narrow (n, or n_a vs n_b)
    "rank cannot reach alpha",  # the rank test's smallest p is not < alpha (test, min_p, alpha, needed, ...)
]

VerdictReason = Literal["diff undefined", "p undefined", "p not below alpha", "ci includes 0", "within noise"]


class Limit(BaseModel):
    """One limit of a comparison, as data: its code and the numbers and names it needs
    (research_agents.report.words.limit_text words it)."""

    model_config = ConfigDict(frozen=True)

    code: LimitCode
    seeds: list[int] | None = None
    n: int | None = None  # paired: pairs
    n_nonzero: int | None = None  # paired rank test: non-zero differences
    n_a: int | None = None  # unpaired: runs per arm
    n_b: int | None = None
    count: int | None = None
    name: str | None = None
    test: str | None = None
    min_p: float | None = None
    alpha: float | None = None
    needed: int | None = None  # paired: pairs, unpaired: runs per arm
    t_undefined: bool | None = None


class Comparison(BaseModel):
    """Result of comparing config b against config a (lower loss is better).

    ``diff`` = b - a; negative means b has the lower loss.  ``p_value`` is the
    primary test (paired t for paired, Welch t for unpaired); the rank test is
    reported beside it but never drives the verdict.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["paired", "unpaired"]
    name_a: str
    name_b: str
    n_a: int
    n_b: int
    n_pairs: int | None  # paired only: number of common seeds
    seeds_used: list[int] | None  # paired only
    seeds_dropped: list[int] | None  # paired only: seeds present on one side only
    mean_a: float | None
    mean_b: float | None
    diff: float | None  # mean(b) - mean(a); paired: mean(b_i - a_i). Negative: b lower loss
    confidence: float
    diff_ci_low: float | None
    diff_ci_high: float | None
    ci_method: str | None
    primary_test: str  # "paired t" | "Welch t"
    t_statistic: float | None  # sign follows diff (b - a)
    t_df: float | None
    p_value: float | None  # primary test, two-sided, unadjusted
    rank_test: str  # "Wilcoxon signed-rank" | "Mann-Whitney U"
    rank_statistic: float | None
    rank_p_value: float | None  # two-sided; reported only, never drives the verdict
    rank_test_method: str | None
    rank_test_min_p: float | None  # smallest two-sided p achievable at this n
    rank_test_can_reach_alpha: bool | None
    hedges_g: float | None  # sign follows diff: negative = b lower loss
    prob_improvement: float | None  # P(b < a), ties 0.5
    alpha: float = 0.05  # finalize sets alpha and min_effect
    min_effect: float | None = None  # |diff| must exceed this for a "better" verdict
    correction: str = SINGLE  # SINGLE | "holm" | "bh"; finalize sets it with the adjusted p
    family_size: int = 1
    p_adjusted: float | None = None
    verdict: Verdict = "no evidence of a difference"
    limits: list[Limit]
    verdict_reasons: list[VerdictReason] = []  # why not "better", first first (finalize sets it)


def _verdict(c: Comparison, p_adj: float | None, alpha: float,
             min_effect: float | None) -> tuple[str, list[VerdictReason]]:
    """Conservative verdict.  Returns (verdict, reasons-not-better).

    "b better"/"a better" only when ALL hold:
      (i)   n >= 2 on each side (paired: >= 2 pairs),
      (ii)  the adjusted primary p (paired t / Welch t) < alpha,
      (iii) the CI of the difference excludes 0 (when a CI exists),
      (iv)  |diff| > min_effect (when a noise threshold is given).
    "not testable (n too small)" when n < 2 on a side (or < 2 pairs);
    otherwise "no evidence of a difference".  The rank test never decides.
    """
    n_eff = c.n_pairs if c.kind == "paired" else min(c.n_a, c.n_b)
    if n_eff is None or n_eff < 2:
        return "not testable (n too small)", []
    reasons: list[VerdictReason] = []
    if c.diff is None:
        reasons.append("diff undefined")
    if p_adj is None:
        reasons.append("p undefined")
    elif not p_adj < alpha:
        reasons.append("p not below alpha")
    if c.diff_ci_low is not None and c.diff_ci_high is not None:
        if c.diff_ci_low <= 0.0 <= c.diff_ci_high:
            reasons.append("ci includes 0")
    if min_effect is not None and c.diff is not None and not abs(c.diff) > min_effect:
        reasons.append("within noise")
    if reasons or c.diff is None:
        return "no evidence of a difference", reasons
    return ("b better" if c.diff < 0 else "a better"), []


def finalize(
    c: Comparison,
    p_adj: float | None,
    alpha: float,
    min_effect: float | None,
    correction: str,
    family_size: int,
) -> Comparison:
    c = c.model_copy(
        update=dict(
            p_adjusted=num(p_adj),
            alpha=alpha,
            min_effect=num(min_effect),
            correction=correction,
            family_size=family_size,
        )
    )
    verdict, reasons = _verdict(c, c.p_adjusted, alpha, c.min_effect)
    return c.model_copy(update=dict(verdict=verdict, verdict_reasons=reasons))


def _difference_ci(tt, samples, statistic, n: int, undercover: Limit, t_label: str, confidence: float,
                   n_resamples: int, seed: int, limits: list[Limit]) -> tuple[float | None, float | None, str]:
    """Bootstrap CI of the difference from 3 runs per side (flagged as optimistic below 6);
    with 2 the t-interval of the test `tt`; none when the t-test is degenerate."""
    if n >= 3:
        lo, hi, method = bootstrap_ci(samples, statistic, confidence=confidence, n_resamples=n_resamples, seed=seed)
        if n < 6:
            limits.append(undercover)
        return lo, hi, method
    if num(tt.statistic) is not None:
        ci = tt.confidence_interval(confidence_level=confidence)
        return num(ci.low), num(ci.high), t_label
    return None, None, "none (degenerate)"


def _comparison(kind: Literal["paired", "unpaired"], names: tuple[Any, Any], sizes: tuple[int, int],
                means: tuple[float | None, float | None], diff: float | None,
                ci: tuple[float | None, float | None, str | None], t: tuple[float | None, float | None, float | None],
                rank: tuple[float | None, float | None, str | None, float | None, bool | None], g: float | None,
                poi: float | None,
                limits: list[Limit], confidence: float, alpha: float, min_effect: float | None,
                pairs: tuple[int | None, list[int] | None, list[int] | None] = (None, None, None)) -> Comparison:
    """The one place a comparison is built from its numbers (ci: low, high, method; t: statistic, df, p;
    rank: statistic, p, method, smallest reachable p, whether it can reach alpha; pairs: paired only) and
    its verdict set as a single comparison."""
    (ci_lo, ci_hi, ci_method), (t_stat, t_df, p) = ci, t
    rank_stat, rank_p, rank_method, min_p, can_reach = rank
    (n_pairs, seeds_used, seeds_dropped), (primary, rank_test) = pairs, TESTS[kind]
    c = Comparison(kind=kind, name_a=str(names[0]), name_b=str(names[1]), n_a=sizes[0], n_b=sizes[1], n_pairs=n_pairs,
                   seeds_used=seeds_used, seeds_dropped=seeds_dropped, mean_a=means[0], mean_b=means[1], diff=diff,
                   confidence=confidence, diff_ci_low=ci_lo, diff_ci_high=ci_hi, ci_method=ci_method,
                   primary_test=primary, t_statistic=t_stat, t_df=t_df, p_value=p, rank_test=rank_test,
                   rank_statistic=rank_stat, rank_p_value=rank_p, rank_test_method=rank_method,
                   rank_test_min_p=num(min_p), rank_test_can_reach_alpha=can_reach, hedges_g=g, prob_improvement=poi,
                   limits=limits)
    return finalize(c, p, alpha, min_effect, SINGLE, 1)


def compare_paired(
    a: Mapping[int, float],
    b: Mapping[int, float],
    name_a: str = "a",
    name_b: str = "b",
    confidence: float = 0.95,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    min_effect: float | None = None,
    n_resamples: int = 10000,
) -> Comparison:
    """Compare b against a paired by seed: ``{seed: final_loss}`` for each arm.

    Only seeds present in both arms are used (``seeds_dropped`` lists the rest).
    d_i = b_i - a_i; diff = mean(d) (negative: b has lower loss = b better).

    * primary: paired t, ``scipy.stats.ttest_rel(b, a)``;
    * rank: Wilcoxon signed-rank, ``scipy.stats.wilcoxon(d)`` (method "auto":
      exact for n <= 50 without ties/zeros, exhaustive sign-flip permutations
      for n <= 13 with ties/zeros); zero differences are dropped (zero_method
      "wilcox"), so its min p uses the number of non-zero differences;
    * CI of mean(d): bootstrap (BCa) when n >= 3, paired-t interval when n == 2;
    * Hedges' g for paired data: g_z = J * mean(d) / sd(d), J = 1 - 3/(4(n-1)-1);
    * P(b < a): fraction of pairs where b's loss is lower, ties 0.5.

    The returned comparison has a single-comparison verdict (family of one);
    pass several to ``apply_correction`` to adjust for multiplicity.
    Non-finite losses (diverged runs) make the seed unusable; such seeds are
    dropped and listed in ``limits``.
    """
    seeds_a = {int(k): float(v) for k, v in a.items()}
    seeds_b = {int(k): float(v) for k, v in b.items()}
    common = sorted(set(seeds_a) & set(seeds_b))
    dropped = sorted(set(seeds_a) ^ set(seeds_b))
    limits: list[Limit] = []
    nonfinite = [s for s in common if not (math.isfinite(seeds_a[s]) and math.isfinite(seeds_b[s]))]
    if nonfinite:
        limits.append(Limit(code="nonfinite seeds", seeds=nonfinite))
        common = [s for s in common if s not in nonfinite]
        dropped = sorted(set(dropped) | set(nonfinite))
    if dropped:
        limits.append(Limit(code="unpaired seeds", seeds=dropped))
    xa = np.array([seeds_a[s] for s in common], dtype=float)
    xb = np.array([seeds_b[s] for s in common], dtype=float)
    d = xb - xa
    n = int(d.size)

    mean_a = num(np.mean(xa)) if n else None
    mean_b = num(np.mean(xb)) if n else None
    diff = num(np.mean(d)) if n else None

    t_stat = t_df = p = None
    ci_lo = ci_hi = None
    ci_method = None
    w_stat = w_p = None
    w_method = None
    min_p = None
    can_reach = None
    g = None
    poi = None
    if n >= 1:
        poi = num((np.sum(d < 0) + 0.5 * np.sum(d == 0)) / n)
    if n >= 2:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            tt = stats.ttest_rel(xb, xa)
        t_stat, t_df, p = num(tt.statistic), num(tt.df), num(tt.pvalue)
        if np.std(d, ddof=1) == 0:
            limits.append(Limit(code="zero spread paired", t_undefined=p is None))
        g = hedges_g_paired(d)
        if g is None:
            limits.append(Limit(code="hedges g needs 3 pairs" if n < 3 else "hedges g undefined paired", n=n))
        ci_lo, ci_hi, ci_method = _difference_ci(
            tt, (d,), mean_axis, n, Limit(code="bootstrap undercover", n=n), "paired t-interval (n=2)", confidence,
            n_resamples, seed, limits,
        )
        n_nonzero = int(np.sum(d != 0))
        if n_nonzero == 0:
            w_method = "undefined (all differences are zero)"
            min_p = 1.0
            can_reach = False
        else:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                wr = stats.wilcoxon(d, zero_method="wilcox", method="auto")
            w_stat, w_p = num(wr.statistic), num(wr.pvalue)
            has_ties = np.unique(np.abs(d[d != 0])).size < n_nonzero or n_nonzero < n
            if n_nonzero > 50:
                w_method = "asymptotic"
            elif has_ties:
                w_method = "exact permutation (ties/zeros)" if n_nonzero <= 13 else "asymptotic (ties/zeros)"
            else:
                w_method = "exact"
            min_p = wilcoxon_min_p(n_nonzero)
            can_reach = min_p < alpha
        if not can_reach:
            limits.append(Limit(code="rank cannot reach alpha", test=TESTS["paired"][1], min_p=min_p, alpha=alpha,
                                n=n, n_nonzero=n_nonzero, needed=wilcoxon_pairs_needed(alpha)))
    else:
        limits.append(Limit(code="too few pairs", n=n))

    return _comparison("paired", (name_a, name_b), (len(seeds_a), len(seeds_b)), (mean_a, mean_b), diff,
                       (ci_lo, ci_hi, ci_method), (t_stat, t_df, p), (w_stat, w_p, w_method, min_p, can_reach), g, poi,
                       limits, confidence, alpha, min_effect, pairs=(n, common, dropped))


def compare_unpaired(
    a: Sequence[float],
    b: Sequence[float],
    name_a: str = "a",
    name_b: str = "b",
    confidence: float = 0.95,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    min_effect: float | None = None,
    n_resamples: int = 10000,
) -> Comparison:
    """Compare b against a without pairing (independent runs).

    diff = mean(b) - mean(a) (negative: b has lower loss = b better).

    * primary: Welch t, ``scipy.stats.ttest_ind(b, a, equal_var=False)``;
    * rank: Mann-Whitney U, ``scipy.stats.mannwhitneyu(a, b)`` two-sided (exact
      when no ties and a sample has <= 8 runs; with ties, exact enumeration of
      all label permutations when there are <= 50,000 of them, else scipy's
      tie-corrected normal approximation);
    * CI of diff: two-sample bootstrap (``paired=False``, BCa) when both n >= 3,
      Welch t-interval when the smaller side has 2 runs;
    * Hedges' g: ``hedges_g(a, b)`` (pooled sd, J = 1 - 3/(4(n_a+n_b-2)-1));
    * P(b < a) over all n_a*n_b cross pairs, ties 0.5.  This equals
      U_a / (n_a n_b), where U_a is scipy's U statistic for ``mannwhitneyu(a, b)``.

    Non-finite losses (diverged runs) are dropped and listed in ``limits``.
    """
    xa_all, xb_all = array1d(a), array1d(b)
    xa, xb = xa_all[np.isfinite(xa_all)], xb_all[np.isfinite(xb_all)]
    limits: list[Limit] = []
    for nm, full, kept in ((name_a, xa_all, xa), (name_b, xb_all, xb)):
        if kept.size < full.size:
            limits.append(Limit(code="nonfinite losses", count=int(full.size - kept.size), name=str(nm)))
    na, nb = int(xa.size), int(xb.size)
    mean_a = num(np.mean(xa)) if na else None
    mean_b = num(np.mean(xb)) if nb else None
    diff = num(mean_b - mean_a) if mean_a is not None and mean_b is not None else None

    t_stat = t_df = p = None
    ci_lo = ci_hi = None
    ci_method = None
    u_stat = u_p = None
    u_method = None
    min_p = None
    can_reach = None
    g = None
    poi = None
    if na and nb:
        # P(b < a) over all cross pairs, ties 0.5
        cmp = xa[:, None] - xb[None, :]
        poi = num((np.sum(cmp > 0) + 0.5 * np.sum(cmp == 0)) / (na * nb))
    if na >= 2 and nb >= 2:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            tt = stats.ttest_ind(xb, xa, equal_var=False)
        t_stat, t_df, p = num(tt.statistic), num(tt.df), num(tt.pvalue)
        if np.var(xa) == 0 and np.var(xb) == 0:
            limits.append(Limit(code="degenerate welch"))
        g = hedges_g(xa, xb)
        if g is None:
            limits.append(Limit(code="hedges g undefined pooled"))
        ci_lo, ci_hi, ci_method = _difference_ci(
            tt, (xb, xa), diff_of_means, min(na, nb), Limit(code="bootstrap undercover", n_a=na, n_b=nb),
            "Welch t-interval (n=2)",
            confidence, n_resamples, seed, limits,
        )
        pooled = np.concatenate([xa, xb])
        has_ties = np.unique(pooled).size < pooled.size
        n_perm = math.comb(na + nb, na)
        if not has_ties:
            method: Any = "auto"
            u_method = "exact" if min(na, nb) <= 8 else "asymptotic"
        elif n_perm <= _MW_EXACT_PERMUTATION_LIMIT:
            method = stats.PermutationMethod(n_resamples=np.inf)
            u_method = "exact permutation (ties)"
        else:
            method = "asymptotic"
            u_method = "asymptotic (tie-corrected)"
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            mw = stats.mannwhitneyu(xa, xb, alternative="two-sided", method=method)
        u_stat, u_p = num(mw.statistic), num(mw.pvalue)
        min_p = mannwhitney_min_p(na, nb)
        can_reach = min_p < alpha
        if not can_reach:
            limits.append(Limit(code="rank cannot reach alpha", test=TESTS["unpaired"][1], min_p=min_p, alpha=alpha,
                                n_a=na, n_b=nb, needed=mannwhitney_n_per_arm_needed(alpha)))
    else:
        limits.append(Limit(code="too few runs", n_a=na, n_b=nb))

    return _comparison("unpaired", (name_a, name_b), (na, nb), (mean_a, mean_b), diff, (ci_lo, ci_hi, ci_method),
                       (t_stat, t_df, p), (u_stat, u_p, u_method, min_p, can_reach), g, poi, limits, confidence, alpha,
                       min_effect)
