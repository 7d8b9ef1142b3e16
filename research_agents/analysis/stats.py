"""Statistics for comparing optimizer configurations across seeds.

Pure functions over numbers: no I/O, no knowledge of trials or stores.  Every
test statistic comes from scipy (``ttest_rel``, ``ttest_ind(equal_var=False)``,
``wilcoxon``, ``mannwhitneyu``, ``bootstrap``, ``false_discovery_control``);
only Holm's step-down adjustment, effect sizes and a few descriptive helpers are
written out here.

Conventions (read these before building a report on the results):

* **Lower loss is better everywhere.**
* Every difference is **b minus a**: ``diff = mean(b) - mean(a)`` (unpaired) or
  ``diff = mean(b_i - a_i)`` over seeds (paired).  A **negative** diff means *b*
  has the lower loss, i.e. *b is better*.  Effect sizes (``cohens_d``,
  ``hedges_g``) and t statistics carry the same sign.
* ``prob_improvement`` is ``P(b < a)``: the probability that *b*'s loss is lower
  than *a*'s (ties count 0.5).  0.5 means no tendency, 1.0 means b always wins.
* Values that do not exist (too few runs, zero variance, ...) are ``None``, never
  NaN or inf, so every result dumps to strict JSON via ``.model_dump()``.

The verdict rule (``apply_correction`` / ``_verdict``) is deliberately
conservative; see its docstring.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats

__all__ = [
    "Summary",
    "NoiseFloor",
    "Comparison",
    "LRRange",
    "Verdict",
    "VERDICTS",
    "summarize",
    "noise_floor",
    "compare_paired",
    "compare_unpaired",
    "adjust_pvalues",
    "apply_correction",
    "lr_sensitivity",
    "steps_to_target",
    "stability",
    "cohens_d",
    "hedges_g",
    "hedges_correction",
    "wilcoxon_min_p",
    "mannwhitney_min_p",
    "wilcoxon_pairs_needed",
    "mannwhitney_n_per_arm_needed",
]

Verdict = Literal["b better", "a better", "no evidence of a difference", "not testable (n too small)"]
VERDICTS: tuple[str, ...] = ("b better", "a better", "no evidence of a difference", "not testable (n too small)")

# Largest number of distinct label permutations we enumerate exactly for a tied
# Mann-Whitney test (beyond that scipy's tie-corrected normal approximation is used).
_MW_EXACT_PERMUTATION_LIMIT = 50_000


# --------------------------------------------------------------------------- helpers


def _f(x: Any) -> float | None:
    """Float, or None when the value does not exist (None, NaN, +-inf)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _arr(values: Sequence[float]) -> np.ndarray:
    return np.asarray(list(values), dtype=float).reshape(-1)


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    if p == 0:
        return "0"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.4f}".rstrip("0").rstrip(".") if p < 1 else "1"


def _bootstrap_ci(
    data: tuple[np.ndarray, ...],
    statistic,
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
    paired: bool = False,
) -> tuple[float | None, float | None, str]:
    """BCa bootstrap CI via scipy.stats.bootstrap; percentile fallback if BCa degenerates.

    Returns (low, high, method).  Zero-spread data give the point estimate as a
    degenerate interval (there is nothing to resample).
    """
    point = statistic(*data, axis=-1)
    if all(np.ptp(d) == 0 for d in data):
        p = _f(point)
        return p, p, "degenerate (no spread)"
    for method in ("BCa", "percentile"):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                res = stats.bootstrap(
                    data,
                    statistic,
                    n_resamples=n_resamples,
                    confidence_level=confidence,
                    method=method,
                    paired=paired,
                    vectorized=True,
                    rng=np.random.default_rng(seed),
                )
        except Exception:  # pragma: no cover - scipy raises on pathological input
            continue
        lo, hi = _f(res.confidence_interval.low), _f(res.confidence_interval.high)
        if lo is not None and hi is not None:
            return lo, hi, f"bootstrap {method} ({n_resamples} resamples)"
    return None, None, "bootstrap failed"


def _mean_axis(x, axis=-1):
    return np.mean(x, axis=axis)


def _diff_of_means(b, a, axis=-1):
    return np.mean(b, axis=axis) - np.mean(a, axis=axis)


# ------------------------------------------------------------------ min achievable p


def wilcoxon_min_p(n_pairs: int) -> float:
    """Smallest two-sided p the exact Wilcoxon signed-rank test can give with n non-zero pairs.

    All signs agreeing is the most extreme outcome; under H0 each of the 2**n sign
    patterns is equally likely, and two-sided counts both extremes: ``2 / 2**n``
    (capped at 1).  n=3 -> 0.25, n=5 -> 0.0625, n=6 -> 0.03125.
    """
    if n_pairs < 1:
        return 1.0
    return min(1.0, 2.0 / 2.0**n_pairs)


def mannwhitney_min_p(n1: int, n2: int) -> float:
    """Smallest two-sided p the exact Mann-Whitney U test can give with n1 and n2 runs.

    Complete separation is 1 of ``comb(n1+n2, n1)`` equally likely rankings under
    H0; two-sided: ``2 / comb(n1+n2, n1)`` (capped at 1).  3 vs 3 -> 0.1, 4 vs 4 -> 0.0286.
    """
    if n1 < 1 or n2 < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def wilcoxon_pairs_needed(alpha: float = 0.05) -> int:
    """Fewest pairs for which the exact two-sided Wilcoxon test can give p < alpha."""
    n = 1
    while wilcoxon_min_p(n) >= alpha:
        n += 1
    return n


def mannwhitney_n_per_arm_needed(alpha: float = 0.05) -> int:
    """Fewest runs per arm (equal arms) for which the exact two-sided Mann-Whitney can give p < alpha."""
    n = 1
    while mannwhitney_min_p(n, n) >= alpha:
        n += 1
    return n


# ------------------------------------------------------------------------ summarize


class Summary(BaseModel):
    """Descriptive statistics of one config's final losses across runs."""

    model_config = ConfigDict(frozen=True)

    n: int
    mean: float | None
    sd: float | None  # ddof=1; None if n < 2
    sem: float | None  # sd / sqrt(n); None if n < 2
    median: float | None
    min: float | None
    max: float | None
    confidence: float
    ci_low: float | None  # CI of the mean (bootstrap if n >= 3, t-interval if n == 2, None if n < 2)
    ci_high: float | None
    ci_method: str | None
    iqm: float | None  # interquartile mean, scipy.stats.trim_mean(x, 0.25); None if n < 4


def summarize(
    values: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = 10000,
    seed: int = 0,
) -> Summary:
    """Summarize one config's losses.

    CI of the mean: ``scipy.stats.bootstrap`` (BCa, percentile fallback) when
    n >= 3; Student t-interval when n == 2 (a bootstrap of 2 values is
    meaningless); None when n <= 1.  Note that bootstrap intervals undercover
    at very small n (3-5 runs): treat them as optimistic.
    Non-finite values (diverged runs) are kept, so they poison mean/sd to None;
    filter them explicitly upstream if that is what you want.
    """
    x = _arr(values)
    n = int(x.size)
    if n == 0:
        return Summary(
            n=0, mean=None, sd=None, sem=None, median=None, min=None, max=None,
            confidence=confidence, ci_low=None, ci_high=None, ci_method=None, iqm=None,
        )
    finite = bool(np.all(np.isfinite(x)))
    mean = _f(np.mean(x))
    sd = _f(np.std(x, ddof=1)) if n >= 2 else None
    sem = _f(sd / math.sqrt(n)) if sd is not None else None
    ci_low = ci_high = None
    ci_method = None
    if finite and n >= 3:
        ci_low, ci_high, ci_method = _bootstrap_ci(
            (x,), _mean_axis, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    elif finite and n == 2 and sem is not None:
        half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * sem
        ci_low, ci_high, ci_method = _f(mean - half), _f(mean + half), "t-interval (n=2)"
    iqm = _f(stats.trim_mean(x, 0.25)) if n >= 4 else None
    return Summary(
        n=n,
        mean=mean,
        sd=sd,
        sem=sem,
        median=_f(np.median(x)),
        min=_f(np.min(x)),
        max=_f(np.max(x)),
        confidence=confidence,
        ci_low=ci_low,
        ci_high=ci_high,
        ci_method=ci_method,
        iqm=iqm,
    )


# ---------------------------------------------------------------------- noise floor


class NoiseFloor(BaseModel):
    """Seed-to-seed noise estimated from configs that were repeated.

    Noise is NOT uniform across configs (stable configs vary ~0.005, configs near
    the edge of their stable LR range ~0.1), so prefer ``threshold_for(a, b)``
    (per-config) over the single pooled ``threshold`` when both configs have repeats.
    """

    model_config = ConfigDict(frozen=True)

    sd_by_config: dict[str, float]  # sd (ddof=1) of each config with >= 2 finite runs
    n_by_config: dict[str, int]  # number of finite runs of each config with >= 2 runs
    pooled_sd: float | None  # sqrt(sum((n_i-1) s_i^2) / sum(n_i-1))
    median_sd: float | None
    df: int  # sum(n_i - 1) over configs with repeats
    n_configs: int  # configs passed in (with or without repeats)
    n_configs_with_repeats: int
    n_runs: int  # finite runs over all configs
    threshold: float | None  # 2 * pooled_sd: differences below this are no evidence

    def threshold_for(self, *names: str, k: float = 2.0) -> float | None:
        """k x the largest per-config sd among ``names`` that have repeats.

        Falls back to the pooled threshold (k * pooled_sd) when none of them was
        repeated, and None when nothing was.  Using the larger sd is the
        conservative choice for a comparison of two configs with unequal noise.
        """
        sds = [self.sd_by_config[n] for n in names if n in self.sd_by_config]
        if sds:
            return k * max(sds)
        return None if self.pooled_sd is None else k * self.pooled_sd


def noise_floor(groups: Mapping[str, Sequence[float]]) -> NoiseFloor:
    """Estimate seed noise from repeated configs: ``{config_name: [loss per seed, ...]}``.

    Non-finite losses (diverged runs) are ignored.  Configs with fewer than two
    finite runs contribute nothing to the variance estimate.
    """
    sd_by: dict[str, float] = {}
    n_by: dict[str, int] = {}
    n_runs = 0
    ss = 0.0
    df = 0
    for name, vals in groups.items():
        x = _arr(vals)
        x = x[np.isfinite(x)]
        n_runs += int(x.size)
        if x.size >= 2:
            var = float(np.var(x, ddof=1))
            sd_by[str(name)] = math.sqrt(var)
            n_by[str(name)] = int(x.size)
            ss += (x.size - 1) * var
            df += int(x.size) - 1
    pooled = math.sqrt(ss / df) if df > 0 else None
    median_sd = float(np.median(list(sd_by.values()))) if sd_by else None
    return NoiseFloor(
        sd_by_config=sd_by,
        n_by_config=n_by,
        pooled_sd=pooled,
        median_sd=median_sd,
        df=df,
        n_configs=len(groups),
        n_configs_with_repeats=len(sd_by),
        n_runs=n_runs,
        threshold=None if pooled is None else 2.0 * pooled,
    )


# ----------------------------------------------------------------------- effect size


def hedges_correction(df: float) -> float | None:
    """Small-sample correction J = 1 - 3 / (4 df - 1) (Hedges 1981 approximation).

    df = n1 + n2 - 2 (unpaired) or n - 1 (paired).  Undefined (None) for df < 2:
    at df = 1 the correction is 0 and the effect size carries no information.
    """
    if df < 2:
        return None
    return 1.0 - 3.0 / (4.0 * df - 1.0)


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Unpaired Cohen's d = (mean(b) - mean(a)) / s_pooled.

    Direction: b minus a, so NEGATIVE d means b has the LOWER loss (b better).
    s_pooled = sqrt(((n_a-1) s_a^2 + (n_b-1) s_b^2) / (n_a + n_b - 2)), ddof=1.
    None when either side has < 2 runs or the pooled sd is zero.
    """
    x, y = _arr(a), _arr(b)
    if x.size < 2 or y.size < 2:
        return None
    df = x.size + y.size - 2
    sp2 = ((x.size - 1) * np.var(x, ddof=1) + (y.size - 1) * np.var(y, ddof=1)) / df
    if not np.isfinite(sp2) or sp2 <= 0:
        return None
    return _f((np.mean(y) - np.mean(x)) / math.sqrt(sp2))


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Unpaired Hedges' g = J * cohens_d(a, b), J = 1 - 3 / (4 (n_a + n_b - 2) - 1).

    Same direction as ``cohens_d``: negative g means b has the lower loss.
    """
    d = cohens_d(a, b)
    if d is None:
        return None
    j = hedges_correction(len(_arr(a)) + len(_arr(b)) - 2)
    return None if j is None else _f(j * d)


def _hedges_g_paired(d: np.ndarray) -> float | None:
    """Paired Hedges' g: g_z = J * d_z, d_z = mean(d) / sd(d) (ddof=1), J = 1 - 3 / (4 (n-1) - 1)."""
    n = d.size
    if n < 2:
        return None
    sd = float(np.std(d, ddof=1))
    j = hedges_correction(n - 1)
    if j is None or not np.isfinite(sd) or sd <= 0:
        return None
    return _f(j * float(np.mean(d)) / sd)


# ------------------------------------------------------------------------ comparison


SINGLE = "none (single comparison)"


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
    alpha: float = 0.05  # _finalize sets alpha and min_effect
    min_effect: float | None = None  # |diff| must exceed this for a "better" verdict
    correction: str = SINGLE  # SINGLE | "holm" | "bh"; _finalize sets it with the adjusted p
    family_size: int = 1
    p_adjusted: float | None = None
    verdict: Verdict = "no evidence of a difference"
    limits: list[str]
    summary: str = ""


def _verdict(c: Comparison, p_adj: float | None, alpha: float, min_effect: float | None) -> tuple[str, list[str]]:
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
    reasons: list[str] = []
    if c.diff is None:
        reasons.append("difference undefined")
    if p_adj is None:
        reasons.append(f"{c.primary_test} p-value undefined")
    elif not p_adj < alpha:
        reasons.append(f"adjusted p = {_fmt_p(p_adj)} is not < alpha = {alpha:g}")
    if c.diff_ci_low is not None and c.diff_ci_high is not None:
        if c.diff_ci_low <= 0.0 <= c.diff_ci_high:
            reasons.append("CI of the difference includes 0")
    if min_effect is not None and c.diff is not None and not abs(c.diff) > min_effect:
        reasons.append(
            f"|diff| = {_fmt(abs(c.diff))} is within the noise threshold {_fmt(min_effect)}"
        )
    if reasons:
        return "no evidence of a difference", reasons
    return ("b better" if c.diff < 0 else "a better"), []


def _summary_line(c: Comparison, reasons: list[str]) -> str:
    n_txt = f"n={c.n_pairs} pairs" if c.kind == "paired" else f"n={c.n_a} vs {c.n_b}"
    conf = f"{round(c.confidence * 100):d}%"
    ci = (
        f"[{conf} CI {_fmt(c.diff_ci_low)}, {_fmt(c.diff_ci_high)}]"
        if c.diff_ci_low is not None
        else "[no CI]"
    )
    adj = "" if c.correction.startswith("none") else f" {c.correction}, m={c.family_size}"
    g = _fmt(c.hedges_g, 3)
    poi = "n/a" if c.prob_improvement is None else f"{c.prob_improvement:.2f}"
    if c.verdict == "b better":
        v = f"{c.name_b} better than {c.name_a} (lower loss)"
    elif c.verdict == "a better":
        v = f"{c.name_a} better than {c.name_b} (lower loss)"
    elif c.verdict == "not testable (n too small)":
        v = "not testable (n too small)"
    else:
        v = "no evidence of a difference" + (f" ({reasons[0]})" if reasons else "")
    line = (
        f"{c.name_b} vs {c.name_a} ({c.kind}, {n_txt}): diff (b - a) = {_fmt(c.diff)} {ci}, "
        f"p_adj = {_fmt_p(c.p_adjusted)} ({c.primary_test}{adj}), g = {g}, "
        f"P({c.name_b} < {c.name_a}) = {poi} -> {v}."
    )
    if c.rank_test_can_reach_alpha is False:
        line += (
            f" {c.rank_test} cannot reach p < {c.alpha:g} at this n "
            f"(min p = {_fmt_p(c.rank_test_min_p)})."
        )
    return line


def _finalize(
    c: Comparison,
    p_adj: float | None,
    alpha: float,
    min_effect: float | None,
    correction: str,
    family_size: int,
) -> Comparison:
    c = c.model_copy(
        update=dict(
            p_adjusted=_f(p_adj),
            alpha=alpha,
            min_effect=_f(min_effect),
            correction=correction,
            family_size=family_size,
        )
    )
    verdict, reasons = _verdict(c, c.p_adjusted, alpha, c.min_effect)
    c = c.model_copy(update=dict(verdict=verdict))
    return c.model_copy(update=dict(summary=_summary_line(c, reasons)))


def _rank_limit_note(test: str, min_p: float, alpha: float, n_txt: str, needed: str) -> str:
    return (
        f"{test} with {n_txt} cannot reach p < {alpha:g} (smallest possible two-sided "
        f"p = {_fmt_p(min_p)}); {needed} are needed. Its p-value is reported but not used."
    )


def _difference_ci(tt, samples, statistic, n: int, n_text: str, t_label: str, confidence: float,
                   n_resamples: int, seed: int, limits: list[str]) -> tuple[float | None, float | None, str]:
    """Bootstrap CI of the difference from 3 runs per side (flagged as optimistic below 6);
    with 2 the t-interval of the test `tt`; none when the t-test is degenerate."""
    if n >= 3:
        lo, hi, method = _bootstrap_ci(samples, statistic, confidence=confidence, n_resamples=n_resamples, seed=seed)
        if n < 6:
            limits.append(f"bootstrap CIs from {n_text} undercover (too narrow); read them as optimistic")
        return lo, hi, method
    if _f(tt.statistic) is not None:
        ci = tt.confidence_interval(confidence_level=confidence)
        return _f(ci.low), _f(ci.high), t_label
    return None, None, "none (degenerate)"


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
    limits: list[str] = []
    nonfinite = [s for s in common if not (math.isfinite(seeds_a[s]) and math.isfinite(seeds_b[s]))]
    if nonfinite:
        limits.append(f"seeds {nonfinite} have a non-finite loss (diverged?) and were dropped from the pairing")
        common = [s for s in common if s not in nonfinite]
        dropped = sorted(set(dropped) | set(nonfinite))
    if dropped:
        limits.append(f"seeds {dropped} are not in both arms and were not used")
    xa = np.array([seeds_a[s] for s in common], dtype=float)
    xb = np.array([seeds_b[s] for s in common], dtype=float)
    d = xb - xa
    n = int(d.size)

    mean_a = _f(np.mean(xa)) if n else None
    mean_b = _f(np.mean(xb)) if n else None
    diff = _f(np.mean(d)) if n else None

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
        poi = _f((np.sum(d < 0) + 0.5 * np.sum(d == 0)) / n)
    if n >= 2:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            tt = stats.ttest_rel(xb, xa)
        t_stat, t_df, p = _f(tt.statistic), _f(tt.df), _f(tt.pvalue)
        if np.std(d, ddof=1) == 0:
            limits.append(
                "the paired differences have zero spread; the t statistic is degenerate"
                + (" and the t-test is undefined" if p is None else "")
            )
        g = _hedges_g_paired(d)
        if g is None:
            limits.append(
                "Hedges' g needs >= 3 pairs (the small-sample correction is 0 at n=2)"
                if n < 3
                else "Hedges' g is undefined (zero spread of the paired differences)"
            )
        ci_lo, ci_hi, ci_method = _difference_ci(
            tt, (d,), _mean_axis, n, f"{n} pairs", "paired t-interval (n=2)", confidence, n_resamples, seed, limits
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
            w_stat, w_p = _f(wr.statistic), _f(wr.pvalue)
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
            need = wilcoxon_pairs_needed(alpha)
            n_txt = f"n={n_nonzero} pairs" + ("" if n_nonzero == n else f" (non-zero of {n})")
            limits.append(_rank_limit_note("Wilcoxon signed-rank", min_p, alpha, n_txt, f"{need} pairs"))
    else:
        limits.append(f"only {n} common seed(s): paired tests need >= 2 pairs")

    c = Comparison(
        kind="paired",
        name_a=str(name_a),
        name_b=str(name_b),
        n_a=len(seeds_a),
        n_b=len(seeds_b),
        n_pairs=n,
        seeds_used=common,
        seeds_dropped=dropped,
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        confidence=confidence,
        diff_ci_low=ci_lo,
        diff_ci_high=ci_hi,
        ci_method=ci_method,
        primary_test="paired t",
        t_statistic=t_stat,
        t_df=t_df,
        p_value=p,
        rank_test="Wilcoxon signed-rank",
        rank_statistic=w_stat,
        rank_p_value=w_p,
        rank_test_method=w_method,
        rank_test_min_p=_f(min_p),
        rank_test_can_reach_alpha=can_reach,
        hedges_g=g,
        prob_improvement=poi,
        limits=limits,
    )
    return _finalize(c, p, alpha, min_effect, SINGLE, 1)


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
    xa_all, xb_all = _arr(a), _arr(b)
    xa, xb = xa_all[np.isfinite(xa_all)], xb_all[np.isfinite(xb_all)]
    limits: list[str] = []
    for nm, full, kept in ((name_a, xa_all, xa), (name_b, xb_all, xb)):
        if kept.size < full.size:
            limits.append(f"{full.size - kept.size} non-finite loss(es) of {nm} (diverged?) were dropped")
    na, nb = int(xa.size), int(xb.size)
    mean_a = _f(np.mean(xa)) if na else None
    mean_b = _f(np.mean(xb)) if nb else None
    diff = _f(mean_b - mean_a) if (na and nb) else None

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
        poi = _f((np.sum(cmp > 0) + 0.5 * np.sum(cmp == 0)) / (na * nb))
    if na >= 2 and nb >= 2:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            tt = stats.ttest_ind(xb, xa, equal_var=False)
        t_stat, t_df, p = _f(tt.statistic), _f(tt.df), _f(tt.pvalue)
        if np.var(xa) == 0 and np.var(xb) == 0:
            limits.append("both arms have zero spread; the Welch t-test is degenerate")
        g = hedges_g(xa, xb)
        if g is None:
            limits.append("Hedges' g is undefined (zero pooled sd)")
        ci_lo, ci_hi, ci_method = _difference_ci(
            tt, (xb, xa), _diff_of_means, min(na, nb), f"{na} vs {nb} runs", "Welch t-interval (n=2)",
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
        u_stat, u_p = _f(mw.statistic), _f(mw.pvalue)
        min_p = mannwhitney_min_p(na, nb)
        can_reach = min_p < alpha
        if not can_reach:
            need = mannwhitney_n_per_arm_needed(alpha)
            limits.append(
                _rank_limit_note("Mann-Whitney U", min_p, alpha, f"{na} vs {nb} runs", f"{need} runs per arm")
            )
    else:
        limits.append(f"{na} vs {nb} runs: unpaired tests need >= 2 runs per arm")

    c = Comparison(
        kind="unpaired",
        name_a=str(name_a),
        name_b=str(name_b),
        n_a=na,
        n_b=nb,
        n_pairs=None,
        seeds_used=None,
        seeds_dropped=None,
        mean_a=mean_a,
        mean_b=mean_b,
        diff=diff,
        confidence=confidence,
        diff_ci_low=ci_lo,
        diff_ci_high=ci_hi,
        ci_method=ci_method,
        primary_test="Welch t",
        t_statistic=t_stat,
        t_df=t_df,
        p_value=p,
        rank_test="Mann-Whitney U",
        rank_statistic=u_stat,
        rank_p_value=u_p,
        rank_test_method=u_method,
        rank_test_min_p=_f(min_p),
        rank_test_can_reach_alpha=can_reach,
        hedges_g=g,
        prob_improvement=poi,
        limits=limits,
    )
    return _finalize(c, p, alpha, min_effect, SINGLE, 1)


# ------------------------------------------------------------ multiple comparisons


def adjust_pvalues(
    pvalues: Sequence[float | None], method: Literal["holm", "bh"] = "holm"
) -> list[float | None]:
    """Adjust p-values for multiple comparisons; None (and NaN) pass through as None.

    The family is the non-None p-values.  "bh": Benjamini-Hochberg via
    ``scipy.stats.false_discovery_control``.  "holm": Holm step-down,
    p_(i) * (m - i + 1) for sorted p, made monotone with a running max, capped at 1.
    """
    idx = [i for i, p in enumerate(pvalues) if _f(p) is not None]
    out: list[float | None] = [None] * len(pvalues)
    if not idx:
        return out
    ps = np.array([float(pvalues[i]) for i in idx])
    if np.any((ps < 0) | (ps > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    if method == "bh":
        adj = np.asarray(stats.false_discovery_control(ps, method="bh"), dtype=float)
    elif method == "holm":
        m = ps.size
        order = np.argsort(ps, kind="stable")
        stepped = ps[order] * (m - np.arange(m))
        stepped = np.minimum(1.0, np.maximum.accumulate(stepped))
        adj = np.empty(m)
        adj[order] = stepped
    else:
        raise ValueError(f"unknown method {method!r}; use 'holm' or 'bh'")
    for i, v in zip(idx, adj):
        out[i] = float(v)
    return out


def apply_correction(
    comparisons: Sequence[Comparison],
    method: Literal["holm", "bh"] = "holm",
    alpha: float = 0.05,
    min_effect: float | NoiseFloor | None = None,
) -> list[Comparison]:
    """Adjust the primary p-values of a family of comparisons and set each verdict.

    The primary test is the paired t-test for paired comparisons and Welch's
    t-test for unpaired ones; the rank tests are reported only.  Comparisons
    with no p-value (n < 2) are not counted in the family.

    ``min_effect``: a float threshold (e.g. ``noise_floor(...).threshold``), or
    a ``NoiseFloor``, in which case each comparison uses
    ``noise.threshold_for(name_a, name_b)`` (2 x the larger per-config sd,
    pooled fallback), since seed noise is not uniform across configs.  If None,
    each comparison keeps the min_effect it was built with.

    Verdict: "b better"/"a better" only when n >= 2 per side (>= 2 pairs), the
    adjusted primary p < alpha, the CI of the difference excludes 0 (when a CI
    exists) and |diff| > min_effect (when given); "not testable (n too small)"
    when n < 2; else "no evidence of a difference".  Returns new objects.
    """
    comps = list(comparisons)
    adj = adjust_pvalues([c.p_value for c in comps], method)
    family = sum(1 for c in comps if c.p_value is not None)
    out = []
    for c, pa in zip(comps, adj):
        if isinstance(min_effect, NoiseFloor):
            me = min_effect.threshold_for(c.name_a, c.name_b)
        elif min_effect is None:
            me = c.min_effect
        else:
            me = float(min_effect)
        out.append(_finalize(c, pa, alpha, me, method, family))
    return out


# ------------------------------------------------------------------ LR sensitivity


class LRRange(BaseModel):
    """The contiguous LR range whose mean loss is within a margin of the best."""

    model_config = ConfigDict(frozen=True)

    best_lr: float | None
    best_loss: float | None
    lr_lo: float | None
    lr_hi: float | None
    width_ratio: float | None  # lr_hi / lr_lo (1.0 when only the best LR qualifies)
    n_lrs: int  # distinct LRs tried
    n_in_range: int  # distinct LRs inside [lr_lo, lr_hi]
    margin: float
    relative: bool
    loss_cutoff: float | None  # best_loss + margin (absolute) or best_loss + margin*|best_loss|
    lo_at_edge: bool  # range reaches the smallest LR tried: true range may extend further
    hi_at_edge: bool  # range reaches the largest LR tried
    lrs: list[float]  # sorted distinct LRs
    mean_losses: list[float | None]  # per-LR mean loss (None if any run was non-finite)


def lr_sensitivity(
    points: Sequence[tuple[float, float]], margin: float = 0.05, relative: bool = False
) -> LRRange:
    """How wide a range of learning rates is near-optimal.

    ``points``: (lr, final_loss) pairs, possibly several per LR (averaged per LR
    first; an LR with any non-finite loss counts as failed, mean None).  The
    range grows outward from the best LR over the sorted LRs while each mean
    loss is <= cutoff (inclusive, 1e-9 relative float tolerance), and stops at the first LR that is not (contiguous).
    cutoff = best + margin (absolute nats), or best + margin*|best| if relative.
    ``width_ratio`` = lr_hi / lr_lo makes widths comparable across optimizers
    whose LRs differ by orders of magnitude.  ``lo_at_edge``/``hi_at_edge`` flag
    a range that hits the end of the sweep (the true range may be wider).
    """
    by_lr: dict[float, list[float]] = {}
    for lr, loss in points:
        by_lr.setdefault(float(lr), []).append(float(loss))
    lrs = sorted(by_lr)
    means: list[float | None] = []
    for lr in lrs:
        vals = by_lr[lr]
        if len(vals) == 1:  # (most LRs, in a long search: numpy's mean of one value is that value)
            means.append(vals[0] if math.isfinite(vals[0]) else None)
            continue
        v = np.array(vals)
        means.append(float(np.mean(v)) if np.all(np.isfinite(v)) else None)
    empty = dict(
        best_lr=None, best_loss=None, lr_lo=None, lr_hi=None, width_ratio=None, n_lrs=len(lrs),
        n_in_range=0, margin=margin, relative=relative, loss_cutoff=None, lo_at_edge=False,
        hi_at_edge=False, lrs=lrs, mean_losses=means,
    )
    finite = [i for i, m in enumerate(means) if m is not None]
    if not finite:
        return LRRange(**empty)
    ib = min(finite, key=lambda i: means[i])
    best = means[ib]
    cutoff = best + (margin * abs(best) if relative else margin)

    tol = 1e-9 * max(1.0, abs(cutoff))  # inclusive boundary, robust to float rounding

    def ok(i: int) -> bool:
        return means[i] is not None and means[i] <= cutoff + tol

    lo = ib
    while lo - 1 >= 0 and ok(lo - 1):
        lo -= 1
    hi = ib
    while hi + 1 < len(lrs) and ok(hi + 1):
        hi += 1
    lr_lo, lr_hi = lrs[lo], lrs[hi]
    ratio = _f(lr_hi / lr_lo) if lr_lo > 0 else None
    return LRRange(
        **{
            **empty,
            "best_lr": lrs[ib],
            "best_loss": best,
            "lr_lo": lr_lo,
            "lr_hi": lr_hi,
            "width_ratio": ratio,
            "n_in_range": hi - lo + 1,
            "loss_cutoff": cutoff,
            "lo_at_edge": lo == 0,
            "hi_at_edge": hi == len(lrs) - 1,
        }
    )


# ------------------------------------------------------------ curves: speed, stability


def steps_to_target(
    history_steps: Sequence[int], history_losses: Sequence[float], target: float
) -> int | None:
    """First step at which the loss is <= target (NaN never qualifies); None if never."""
    steps = list(history_steps)
    losses = _arr(history_losses)
    if len(steps) != losses.size:
        raise ValueError("history_steps and history_losses must have the same length")
    hit = np.flatnonzero(np.isfinite(losses) & (losses <= target))
    return int(steps[hit[0]]) if hit.size else None


def stability(losses: Sequence[float]) -> dict[str, float | int | bool | None]:
    """Spikes and end-of-training jitter of one loss curve.

    Returns a JSON-ready dict:
      n_points, n_nonfinite, diverged (any NaN/inf),
      median_abs_change: median |loss[t+1] - loss[t]| over finite consecutive pairs,
      spike_threshold: 3 x median_abs_change,
      n_spikes: number of increases loss[t+1] - loss[t] > spike_threshold
        (if the median change is 0, any increase counts as a spike),
      tail_variance: sample variance (ddof=1) of the finite values in the last 20%
        of the curve (at least 2 points), None if fewer than 2 finite points there.
    """
    x = _arr(losses)
    n = int(x.size)
    nonfinite = int(np.sum(~np.isfinite(x)))
    res: dict[str, float | int | bool | None] = {
        "n_points": n,
        "n_nonfinite": nonfinite,
        "diverged": nonfinite > 0,
        "median_abs_change": None,
        "spike_threshold": None,
        "n_spikes": 0,
        "tail_variance": None,
    }
    if n >= 2:
        steps = np.diff(x)
        steps = steps[np.isfinite(steps)]
        if steps.size:
            med = float(np.median(np.abs(steps)))
            thr = 3.0 * med
            res["median_abs_change"] = med
            res["spike_threshold"] = thr
            res["n_spikes"] = int(np.sum(steps > thr))
    k = max(2, int(math.ceil(0.2 * n)))
    tail = x[-k:] if n else x
    tail = tail[np.isfinite(tail)]
    if tail.size >= 2:
        res["tail_variance"] = float(np.var(tail, ddof=1))
    return res
