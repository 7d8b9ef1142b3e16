"""Curves: steps to a target loss, and stability (spikes, tail variance)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from research_agents.analysis.stats.values import array1d


def steps_to_target(
    history_steps: Sequence[int], history_losses: Sequence[float], target: float
) -> int | None:
    """First step at which the loss is <= target (NaN never qualifies); None if never."""
    steps = list(history_steps)
    losses = array1d(history_losses)
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
    x = array1d(losses)
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
