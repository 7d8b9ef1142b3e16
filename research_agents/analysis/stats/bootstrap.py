"""Bootstrap confidence intervals (scipy.stats.bootstrap, BCa with a percentile fallback)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from research_agents.analysis.stats.values import num


def bootstrap_ci(
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
        p = num(point)
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
        lo, hi = num(res.confidence_interval.low), num(res.confidence_interval.high)
        if lo is not None and hi is not None:
            return lo, hi, f"bootstrap {method} ({n_resamples} resamples)"
    return None, None, "bootstrap failed"


def mean_axis(x, axis=-1):
    return np.mean(x, axis=axis)


def diff_of_means(b, a, axis=-1):
    return np.mean(b, axis=axis) - np.mean(a, axis=axis)
