"""Rungs: stop a hopeless search run early, by a rule fixed when its round is planned.

A search run that may stop early (a short exploratory run: the plan's `--rungs`, or a try that asks
for it) gets a rule in its trial spec, `stop_above` (step -> the most val loss allowed there), at
the trainer's eval points by 25/50/75% of its steps (RUNGS): the arm's leader's val loss at that
rung plus a margin. The trainer stops after that eval when the run's loss is above it (status
"stopped", costing the share of the steps it trained); the replay executor decides the same from
the table's curves (TrialSpec.stop_reason is the one rule).

The leader is the arm's best configuration by mean final val loss over completed full-length search
runs (budget.leaders), its rung loss the mean of those runs' curve summaries at the rung (and its
final loss the mean of their ends). The margin has two parts:
* the noise: FACTOR x the measured seed-noise sd. The noise is the larger of the arm's two
  estimates, the sd its tuning evidence judges the leader with (threshold / 2) and the pooled sd
  over all its repeated configurations: early in a search each rests on a couple of repeats and
  can be several times too small;
* late ranking changes: LATE x what the leader itself still gained from the rung to its end.
  Under a decaying schedule rankings change late, and by how much scales with the loss still to
  come: on benchmarks/data/replay_fair.csv an AdamW configuration within 2 sd of the arm's best
  (lr 0.003 with the AdamW leg at 0.25) is 0.68 nats behind a leader that ends behind it (lr
  0.006, leg 0.04) at 25% of the steps, 0.28 at 50% and 0.08 at 75%: 0.99, 0.99 and 0.84 of that
  leader's own drop from there. `python -m benchmarks.rung_margin` (README, "Benchmarks"): of the
  657 runs of AdamW's near-best configurations judged against every leader that ends behind them,
  the noise margin alone (factor 3) stops 210, LATE 0.5 74, LATE 1 3, LATE 1.5 none (Muon: 312,
  0, 0, 0 of 14,853), saving 10% (AdamW) and 13% (Muon) of the steps with the best leading. The
  noise margin alone stopped a near-best configuration in 30 of 30 repetitions of the default
  study at budget 40 (benchmarks/planner_efficiency.py --rungs-late 0 / 1 / default, policy-rungs,
  "good stopped"), LATE 1 in 8, LATE 1.5 in none. LATE was chosen and is checked on the same table:
  no other table with the fair study's curves exists yet.
Without a leader with a curve and a final loss, or without the arm's noise estimate, a run gets
no rule.

Why not Optuna's pruners (SuccessiveHalving, Hyperband, Median): each decides from the trials of
the study that have reported by the time it asks, so with parallel workers the same specs and seeds
would stop different runs depending on which trials finished first. Here the rule is computed from
the snapshot the round is planned on, before any of its runs trains, and travels in the spec: the
same study gives the same stops with 1 worker or N, on every executor, and a speculative run is
adopted only when its spec (rule included) is identical. A rule of an arm's own leader, with a
noise-aware margin per arm, is also what no pruner offers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from research_agents.actions import Run
from research_agents.config.study import Study
from research_agents.evidence import ArmEvidence
from research_agents.records import CurveSummary, TrialRecord, ranked_configs

RUNGS = (25, 50, 75)  # % of the steps: the eval points a run may be stopped at
FACTOR = 3.0  # margin = FACTOR x the seed-noise sd (benchmarks/rung_margin.py: README, "Benchmarks")
LATE = 1.5  # + LATE x the leader's own loss drop from the rung to its end (late ranking changes; see above)

CurveOf = Callable[[TrialRecord], "CurveSummary | None"]


def leader_curve(records: Iterable[TrialRecord], arm: str, curve_of: CurveOf) -> dict[int, float]:
    """{rung % (and 100, its end): the arm's leader's mean val loss there} over its completed
    full-length search runs; a rung any of them lacks is left out (empty: no leader yet)."""
    ranked = ranked_configs(r for r in records if r.arm == arm and r.phase == "search")
    if not ranked:
        return {}
    curves = [curve_of(r) for r in ranked[0]]
    out: dict[int, float] = {}
    for q in (*RUNGS, 100):
        values = [c.val_loss.get(q) for c in curves if c is not None]
        if len(values) == len(curves) and all(v is not None for v in values):
            out[q] = sum(values) / len(values)  # type: ignore[arg-type]
    return out


def margin(evidence: ArmEvidence | None, factor: float, pooled_sd: float | None = None) -> float | None:
    """How far behind its leader a run may be at a rung: factor x the larger of the arm's noise sd
    and its pooled one (None: the arm's is not measured)."""
    if evidence is None or evidence.threshold is None:
        return None
    return factor * max(evidence.threshold / 2, pooled_sd or 0.0)


def late_allowance(late: float | None) -> float:
    """The late-ranking allowance a plan's `rungs_late` stands for (None: LATE)."""
    return LATE if late is None else late


def rule(spec: Any, leader: dict[int, float], slack: float, late: float = LATE) -> dict[int, float]:
    """The early-stop rule of a trial spec: at each rung's eval step before its last, the leader's
    loss there plus `slack` plus `late` x what the leader still gained from that rung to its end
    (two rungs on one eval step: the stricter). No rule without the leader's final loss."""
    final = leader.get(100)
    if final is None:
        return {}
    out: dict[int, float] = {}
    for q, loss in sorted(leader.items()):
        step = spec.eval_step_by(q)
        if q in RUNGS and step is not None and step < spec.steps:
            limit = loss + slack + late * max(0.0, loss - final)
            out[step] = min(out.get(step, float("inf")), limit)
    return out


def with_rules(runs: list[Run], study: Study, records: list[TrialRecord], evidence: dict[str, ArmEvidence],
               curve_of: CurveOf, factor: float | None, spec_of: Callable[[Run], Any],
               pooled_sd: dict[str, float | None] | None = None, late: float | None = None) -> list[Run]:
    """The round's search runs, each short one with its rule: a run asked short (short=True) or,
    when the plan stops runs at rungs (`factor` not None), one that did not ask for full length."""
    out = []
    leaders: dict[str, dict[int, float]] = {}
    for run in runs:
        wants = run.short is True or (run.short is None and factor is not None)
        slack = (margin(evidence.get(run.arm), factor if factor is not None else FACTOR,
                        (pooled_sd or {}).get(run.arm)) if wants else None)
        if run.phase != "search" or slack is None:
            out.append(run)
            continue
        if run.arm not in leaders:
            leaders[run.arm] = leader_curve(records, run.arm, curve_of)
        stop = rule(spec_of(run), leaders[run.arm], slack, late_allowance(late))
        out.append(replace(run, stop_above=stop) if stop else run)
    return out


__all__ = ["RUNGS", "FACTOR", "LATE", "late_allowance", "leader_curve", "margin", "rule", "with_rules"]
