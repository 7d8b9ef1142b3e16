"""One round's runs from a snapshot: ask the planner for research actions, validate and expand them
(actions.py), ask again for what was rejected (bounded), and cut the runs at each arm's allowance;
or, once the search is over, the confirmation runs; after them, the swap runs the planner chooses.

Planning here has no side effects of its own (the planner may keep its records): the stops and the
rejections come back in the result, so the loop records them and a prediction simply does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from research_agents import budget, rungs
from research_agents.actions import (
    Confirm,
    Ledger,
    Proposal,
    Run,
    StopArm,
    Swap,
    SwapOption,
    Work,
    expand,
    search_runs,
    seed_sets,
)
from research_agents.analysis.fairness import leader_differences
from research_agents.analysis.findings import analyze
from research_agents.config.space import config_id
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.snapshot import Snapshot

MAX_PLANNER_RETRIES = 3


@dataclass
class RoundPlan:
    round: int
    runs: list[Run]
    stops: list[StopArm]  # accepted stops, in order (their arms' search ends)
    empty: list[str]  # arms that wanted proposals and got none (the planner has nothing new)
    rejections: list[tuple[Proposal, str]] = field(default_factory=list)


def search_round(snap: Snapshot, planner: BasePlanner, wanted: dict[str, int], ctx: PlanningContext) -> RoundPlan:
    """The next search round for the arms in `wanted` (slots per arm), its runs fixed before any
    trains (so parallel workers give the same study as one), early-stop rules included (rungs.py).
    `ctx` is the planning context of the snapshot; each attempt gets it with the slots still needed
    and the rejections so far."""
    study = snap.study
    round_no = ctx.round
    work: list[Work] = []
    stopped: set[str] = set()
    stops: list[StopArm] = []
    rejections: list[tuple[Proposal, str]] = []
    seen = {r.config for r in snap.records if r.phase == "search"}
    if planner.starts_at_study_point:  # every adaptive planner starts an arm from the study's point
        for arm, n in wanted.items():
            start = study.arms[arm].start
            if n and start is not None and config_id(arm, start) not in seen:
                work.append(Work(arm, start, list(study.seeds.search), "default",
                                 "the study's starting point for this arm"))
                seen.add(config_id(arm, start))
    n_seeds = len(study.seeds.search)
    for _ in range(MAX_PLANNER_RETRIES + 1):
        runs = {a: sum(len(w.seeds) for w in work if w.arm == a) for a in wanted}
        need = {a: n - seed_sets(runs[a], n_seeds) for a, n in wanted.items() if a not in stopped}
        need = {a: n for a, n in need.items() if n > 0}
        if not need:
            break
        ledger = Ledger(study, snap.records, snap.evidence, snap.search_left, need, seen, runs, stopped,
                        plan=snap.plan, preset=ctx.preset, overrides=ctx.overrides)
        new_rejections = 0
        for action in planner.propose(replace(ctx, wanted=need, rejections=list(rejections),
                                              evidence=dict(snap.evidence))):
            for item, reason in expand(action, ledger):
                if reason:
                    rejections.append((item, reason))
                    new_rejections += 1
                    continue
                ledger.accept(item)
                if isinstance(item, StopArm):
                    stops.append(item)
                else:
                    work.append(item)
        # planners that validate and repair by themselves (LLM) hand over what they rejected
        rejections.extend(planner.drain_rejections())
        if not new_rejections:
            break
    empty = [a for a in wanted if wanted[a] and a not in stopped and not any(w.arm == a for w in work)]
    made = rungs.with_rules(search_runs(work, snap.search_left, round_no), study, snap.records, snap.evidence,
                            ctx.curve_of, snap.plan.rungs,
                            lambda run: study.trial_spec(run.arm, run.params, run.seed, preset=ctx.preset,
                                                         overrides=ctx.overrides), snap.arm_noise_sd,
                            late=snap.plan.rungs_late)
    return RoundPlan(round_no, made, stops, empty, rejections)


def confirm_round(snap: Snapshot) -> list[Run]:
    """Each arm's leaders on the confirmation seeds the measured noise needs, as far as the budget goes."""
    leaders = {arm: snap.leaders(arm) for arm in snap.study.arms}
    confirm = Confirm(leaders, snap.confirm_seeds, budget.confirmed(snap.records))
    return confirm.runs(snap.next_round, snap.budget_left)


def swap_options(snap: Snapshot, preset: str | None = None,
                 overrides: dict[str, Any] | None = None) -> list[SwapOption]:
    """The compared pairs that can be swapped now: both leaders confirmed, trained with different
    shared settings (fairness.leader_differences, the leg LR as trained), on at least 2 seeds both
    completed; each swapped spec valid. Empty for a point run (no confirmation)."""
    if not snap.plan.confirm_seeds:
        return []
    records = [r for r in snap.records if r.phase != "swap"]
    fnd = analyze(snap.study, records, snap.plan)
    out = []
    for c in fnd.comparisons:
        if c.config_a is None or c.config_b is None or c.params_a is None or c.params_b is None:
            continue
        diffs = leader_differences(snap.study, c.arm_a, c.params_a, c.arm_b, c.params_b, preset, overrides)
        if not diffs:
            continue  # the leaders share every setting: the gap is all optimizer, nothing to swap
        seeds = [{r.seed for r in records if r.phase == "confirm" and r.ok and r.config == cid}
                 for cid in (c.config_a, c.config_b)]
        both = sorted(seeds[0] & seeds[1])
        option = SwapOption(c.arm_a, c.arm_b, c.params_a, c.params_b, {d.knob: d.value_b for d in diffs},
                            {d.knob: d.value_a for d in diffs}, both)
        try:
            for arm, params, settings in ((c.arm_a, c.params_a, option.settings_a),
                                          (c.arm_b, c.params_b, option.settings_b)):
                snap.study.trial_spec(arm, params, seed=0, preset=preset, overrides=overrides, swapped=settings)
        except ValidationError:
            continue
        if len(both) >= 2:
            out.append(option)
    return out


@dataclass
class SwapPlan:
    runs: list[Run]
    chosen: list[Swap]  # the accepted swaps
    rejected: list[tuple[Swap, str]]


def swap_round(snap: Snapshot, planner: BasePlanner, options: list[SwapOption]) -> SwapPlan:
    """The swaps the planner chooses among `options`, each validated against them, the history and
    the budget left (Swap.expand)."""
    if not options:
        return SwapPlan([], [], [])
    left = snap.budget_left
    runs: list[Run] = []
    chosen: list[Swap] = []
    rejected: list[tuple[Swap, str]] = []
    for swap in planner.choose_swaps(options, snap.records, snap.next_round, left):
        if any({s.arm_a, s.arm_b} == {swap.arm_a, swap.arm_b} for s in chosen):
            rejected.append((swap, f"swap: {swap.arm_a}/{swap.arm_b} was chosen twice"))
            continue
        got, why = swap.expand(options, snap.records, snap.next_round, left)
        if why is not None:
            rejected.append((swap, why))
            continue
        runs += got
        chosen.append(swap)
        left -= len(got)
    return SwapPlan(runs, chosen, rejected)


__all__ = ["MAX_PLANNER_RETRIES", "RoundPlan", "SwapPlan", "search_round", "confirm_round", "swap_options",
           "swap_round"]
