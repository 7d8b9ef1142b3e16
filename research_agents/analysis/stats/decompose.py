"""Where a gap between two leaders comes from: a paired 2x2 of optimizer x shared settings.

Cells, per seed (losses; lower is better):
  A  = arm a's leader with its own shared settings     B  = arm b's leader with its own
  A' = a's leader with b's shared settings             B' = b's leader with a's shared settings
So A and B' share a's settings, A' and B share b's, A and A' share a's optimizer (and its own
knobs), B' and B share b's. Per seed:
  optimizer effect       = ((A - B') + (A' - B)) / 2   (a's optimizer vs b's, shared settings held fixed)
  shared-settings effect = ((A - A') + (B' - B)) / 2   (a's settings vs b's, optimizer held fixed)
  interaction            = ((A - B') - (A' - B)) / 2   (how much the optimizer effect depends on the settings)
and optimizer + shared = A - B, the raw gap, exactly. Positive means arm a has the higher loss.
Each effect: its mean over the seeds present in all four cells, n, a 95% t interval and the
one-sample t test's p (scipy.stats.t); None where n is too small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import fmean

from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

CELLS = ("A", "B", "A'", "B'")


class Effect(BaseModel):
    """One effect's mean over seeds, n, 95% t CI and p (H0: mean 0); None when not defined."""

    model_config = ConfigDict(frozen=True)

    mean: float | None = None
    n: int = 0
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None


class Decomposition(BaseModel):
    """The 2x2 of one pair on the seeds present in all four cells (`seeds`); `cells`: each cell's mean."""

    model_config = ConfigDict(frozen=True)

    seeds: list[int] = Field(default_factory=list)
    cells: dict[str, float | None] = Field(default_factory=dict)
    gap: Effect = Effect()  # A - B
    optimizer: Effect = Effect()
    shared: Effect = Effect()
    interaction: Effect = Effect()


def effect(values: list[float], confidence: float = 0.95) -> Effect:
    """Mean, n, two-sided t interval and one-sample t p-value of per-seed values."""
    n = len(values)
    if n == 0:
        return Effect()
    mean = fmean(values)
    if n < 2:
        return Effect(mean=mean, n=n)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if sd == 0.0:
        return Effect(mean=mean, n=n, ci_low=mean, ci_high=mean, p=None if mean == 0 else 0.0)
    sem = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sem
    p = float(2 * stats.t.sf(abs(mean / sem), n - 1))
    return Effect(mean=mean, n=n, ci_low=mean - half, ci_high=mean + half, p=p)


def decompose(cells: Mapping[str, Mapping[int, float]]) -> Decomposition:
    """The decomposition from each cell's loss per seed (`cells` keyed "A", "B", "A'", "B'"); only
    the seeds with a finite loss in all four cells count (paired)."""
    cell = {k: {s: float(v) for s, v in cells.get(k, {}).items() if v is not None and math.isfinite(v)}
            for k in CELLS}
    seeds = sorted(set.intersection(*(set(cell[k]) for k in CELLS)))
    a, b, a2, b2 = ([cell[k][s] for s in seeds] for k in CELLS)
    return Decomposition(
        seeds=seeds,
        cells={k: fmean(cell[k][s] for s in seeds) if seeds else None for k in CELLS},
        gap=effect([x - y for x, y in zip(a, b)]),
        optimizer=effect([((x - y2) + (x2 - y)) / 2 for x, y, x2, y2 in zip(a, b, a2, b2)]),
        shared=effect([((x - x2) + (y2 - y)) / 2 for x, y, x2, y2 in zip(a, b, a2, b2)]),
        interaction=effect([((x - y2) - (x2 - y)) / 2 for x, y, x2, y2 in zip(a, b, a2, b2)]),
    )


__all__ = ["CELLS", "Decomposition", "Effect", "decompose", "effect"]
