"""Effect sizes: Cohen's d and Hedges' g (unpaired and paired)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from research_agents.analysis.stats.values import array1d, num


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
    x, y = array1d(a), array1d(b)
    if x.size < 2 or y.size < 2:
        return None
    df = x.size + y.size - 2
    sp2 = ((x.size - 1) * np.var(x, ddof=1) + (y.size - 1) * np.var(y, ddof=1)) / df
    if not np.isfinite(sp2) or sp2 <= 0:
        return None
    return num((np.mean(y) - np.mean(x)) / math.sqrt(sp2))


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Unpaired Hedges' g = J * cohens_d(a, b), J = 1 - 3 / (4 (n_a + n_b - 2) - 1).

    Same direction as ``cohens_d``: negative g means b has the lower loss.
    """
    d = cohens_d(a, b)
    if d is None:
        return None
    j = hedges_correction(len(array1d(a)) + len(array1d(b)) - 2)
    return None if j is None else num(j * d)


def hedges_g_paired(d: np.ndarray) -> float | None:
    """Paired Hedges' g: g_z = J * d_z, d_z = mean(d) / sd(d) (ddof=1), J = 1 - 3 / (4 (n-1) - 1)."""
    n = d.size
    if n < 2:
        return None
    sd = float(np.std(d, ddof=1))
    j = hedges_correction(n - 1)
    if j is None or not np.isfinite(sd) or sd <= 0:
        return None
    return num(j * float(np.mean(d)) / sd)
