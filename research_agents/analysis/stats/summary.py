"""Descriptive summary of one configuration's losses: mean, sd, CI of the mean."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats

from research_agents.analysis.stats.bootstrap import bootstrap_ci, mean_axis
from research_agents.analysis.stats.values import array1d, num


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
    x = array1d(values)
    n = int(x.size)
    if n == 0:
        return Summary(
            n=0, mean=None, sd=None, sem=None, median=None, min=None, max=None,
            confidence=confidence, ci_low=None, ci_high=None, ci_method=None, iqm=None,
        )
    finite = bool(np.all(np.isfinite(x)))
    mean = num(np.mean(x))
    sd = num(np.std(x, ddof=1)) if n >= 2 else None
    sem = num(sd / math.sqrt(n)) if sd is not None else None
    ci_low = ci_high = None
    ci_method = None
    if finite and n >= 3:
        ci_low, ci_high, ci_method = bootstrap_ci(
            (x,), mean_axis, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    elif finite and n == 2 and sem is not None:
        half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * sem
        ci_low, ci_high, ci_method = num(mean - half), num(mean + half), "t-interval (n=2)"
    iqm = num(stats.trim_mean(x, 0.25)) if n >= 4 else None
    return Summary(
        n=n,
        mean=mean,
        sd=sd,
        sem=sem,
        median=num(np.median(x)),
        min=num(np.min(x)),
        max=num(np.max(x)),
        confidence=confidence,
        ci_low=ci_low,
        ci_high=ci_high,
        ci_method=ci_method,
        iqm=iqm,
    )
