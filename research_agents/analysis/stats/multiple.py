"""Multiple comparisons: Holm and Benjamini-Hochberg adjustment, and the verdicts after it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

from research_agents.analysis.stats.compare import Comparison, finalize
from research_agents.analysis.stats.noise import NoiseFloor
from research_agents.analysis.stats.values import num


def adjust_pvalues(
    pvalues: Sequence[float | None], method: Literal["holm", "bh"] = "holm"
) -> list[float | None]:
    """Adjust p-values for multiple comparisons; None (and NaN) pass through as None.

    The family is the non-None p-values.  "bh": Benjamini-Hochberg via
    ``scipy.stats.false_discovery_control``.  "holm": Holm step-down,
    p_(i) * (m - i + 1) for sorted p, made monotone with a running max, capped at 1.
    """
    idx = [i for i, p in enumerate(pvalues) if num(p) is not None]
    out: list[float | None] = [None] * len(pvalues)
    if not idx:
        return out
    ps = np.array([num(pvalues[i]) for i in idx], dtype=float)
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
        out.append(finalize(c, pa, alpha, me, method, family))
    return out
