"""The per-study analyses the seeds asked for, computed (research_agents.report renders them).

* "momentum" (seed 004): each momentum schedule against fixed 0.95 (Welch and paired t, Holm,
  Cohen's d, Hedges' g), stability of the train-loss curves, steps to a target val loss, memory;
* "diagnostics" (seed 003): loss, memory, time, grad norms, update RMS and SVD entropy per
  configuration.

`ANALYSES` maps each name of config.catalog.ANALYSES to its function (runs, findings) -> result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import fmean
from typing import Any

from pydantic import BaseModel

from research_agents.analysis import stats as analyzer
from research_agents.analysis.claims import Run, final_svd_entropy, schedule_comparisons
from research_agents.analysis.models import Findings
from research_agents.config import catalog


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _mean(xs) -> float | None:
    xs = [float(x) for x in xs if _finite(x)]
    return fmean(xs) if xs else None


def by_label(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.label, []).append(r)
    return out


def mean_curve(runs: list[Run], key: str = "val_loss") -> tuple[list[int], list[float]]:
    """The mean over runs of a history column, per optimizer step."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for h in run.history:
            if _finite(value := getattr(h, key, None)):
                by_step.setdefault(h.step, []).append(float(value))
    steps = sorted(by_step)
    return steps, [fmean(by_step[s]) for s in steps]


# ------------------------------------------------------------------------------ momentum (seed 004)


class MomentumAnalysis(BaseModel):
    """Seed 004's statistics (written as statistical_analysis.json) and the recorded schedules."""

    baseline: str | None
    target_rule: str = "baseline's mean final val loss + 5%"
    target_val_loss: float | None
    method: str
    schedules: dict[str, dict[str, Any]]
    curves: dict[str, list[tuple[int, float]]]  # momentum as recorded by each schedule's first run


METHOD = ("each schedule vs the baseline: Welch t-test (the seed's t-test, unpaired) and the paired t "
          "(same seeds), Holm-adjusted across schedules; Cohen's d and Hedges' g (negative: the "
          "schedule has the lower loss); stability = analyzer.stability over train-loss curves "
          "(spikes > 3x the median step change, variance of the last 20%); convergence = first "
          "eval step with val loss <= target")


def momentum_analysis(runs: list[Run], fnd: Findings) -> MomentumAnalysis:
    groups = by_label([r for r in runs if r.record.status in ("completed", "diverged")])
    curves = {label: [(h.step, h.momentum) for h in rs[0].history if _finite(h.momentum)]
              for label, rs in groups.items()}
    base, comps = schedule_comparisons(runs, min_effect=fnd.noise.threshold)
    target = None
    if base is not None:
        base_mean = _mean(r.loss for r in groups[base])
        target = None if base_mean is None else base_mean * 1.05
    per: dict[str, dict] = {}
    for label, rs in groups.items():
        ok = [r for r in rs if r.loss is not None]
        stab = [analyzer.stability([h.train_loss for h in r.history if "train_loss" in h.model_fields_set]) for r in rs]
        reach = []
        for r in ok:
            ev = [h for h in r.history if _finite(h.val_loss)]
            reach.append(None if target is None or not ev else
                         analyzer.steps_to_target([h.step for h in ev], [h.val_loss for h in ev], target))
        entry: dict[str, Any] = {
            "n": len(ok), "seeds": [r.record.seed for r in ok],
            "final_val_loss": analyzer.summarize([r.loss for r in ok]).model_dump(mode="json"),
            "stability": {"n_spikes_mean": _mean(s["n_spikes"] for s in stab),
                          "tail_variance_mean": _mean(s["tail_variance"] for s in stab),
                          "n_diverged": sum(r.record.status == "diverged" for r in rs)},
            "convergence": {"target_val_loss": target, "steps_to_target": reach,
                            "steps_to_target_mean": _mean(reach), "reached": sum(x is not None for x in reach)},
            "peak_memory_mb_mean": _mean(r.peak_memory_mb for r in ok),
            "wall_time_s_mean": _mean(r.record.wall_time_s for r in ok),
        }
        if label in comps:
            w, p = comps[label]
            xa = [r.loss for r in groups[base] if r.loss is not None]
            entry["vs_baseline"] = {
                "diff": w.diff, "ci_low": w.diff_ci_low, "ci_high": w.diff_ci_high,
                "welch_t": w.t_statistic, "welch_df": w.t_df, "p": w.p_value, "p_holm": w.p_adjusted,
                "cohens_d": analyzer.cohens_d(xa, [r.loss for r in ok]), "hedges_g": w.hedges_g,
                "verdict": w.verdict, "paired_t_p": p.p_value, "paired_t_p_holm": p.p_adjusted,
                "paired_verdict": p.verdict, "n_pairs": p.n_pairs}
        per[label] = entry
    return MomentumAnalysis(baseline=base, target_val_loss=target, method=METHOD, schedules=per, curves=curves)


# ------------------------------------------------------------------------------ diagnostics (seed 003)


class DiagnosticsRow(BaseModel):
    label: str
    train_loss: float | None
    val_loss: float | None
    peak_memory_mb: float | None
    wall_time_s: float | None
    grad_norm: float | None  # mean pre-clip norm over the last 20% of logged steps
    update_rms_muon: float | None
    update_rms_adamw: float | None
    svd_entropy: float | None
    n: int


def _tail_grad(r: Run) -> float | None:
    g = [h.grad_norm for h in r.history if _finite(h.grad_norm)]
    return _mean(g[-max(1, len(g) // 5):]) if g else None


def _mean_update(r: Run, group: str) -> float | None:
    return _mean((d.get("update_rms") or {}).get(group) for d in r.diagnostics)


def diagnostics_analysis(runs: list[Run], fnd: Findings) -> list[DiagnosticsRow]:
    """Seed 003's measurements per configuration (means over seeds), in ranking order."""
    groups = by_label([r for r in runs if r.loss is not None])
    rows = []
    for c in fnd.configs:
        rs = groups.get(c.label)
        if not rs:
            continue
        rows.append(DiagnosticsRow(
            label=c.label, train_loss=_mean(r.record.train_loss for r in rs), val_loss=c.summary.mean,
            peak_memory_mb=_mean(r.peak_memory_mb for r in rs), wall_time_s=c.wall_time_s,
            grad_norm=_mean(_tail_grad(r) for r in rs), update_rms_muon=_mean(_mean_update(r, "muon") for r in rs),
            update_rms_adamw=_mean(_mean_update(r, "adamw_decay") for r in rs),
            svd_entropy=_mean(final_svd_entropy(r) for r in rs), n=c.n))
    return rows


ANALYSES: dict[str, Callable[[list[Run], Findings], Any]] = {
    "momentum": momentum_analysis,
    "diagnostics": diagnostics_analysis,
}
assert set(ANALYSES) == set(catalog.ANALYSES), "config.catalog.ANALYSES and analysis.seed_analyses disagree"

__all__ = ["ANALYSES", "MomentumAnalysis", "DiagnosticsRow", "momentum_analysis", "diagnostics_analysis",
           "by_label", "mean_curve"]
