"""The noise floor: seed sd per configuration, pooled, and the threshold a difference must exceed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from research_agents.analysis.stats.values import array1d


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
        x = array1d(vals)
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
