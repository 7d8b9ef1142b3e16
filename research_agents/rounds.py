"""One round's runs from a snapshot: ask the planner for research actions, validate and expand them
(actions.py), ask again for what was rejected (bounded), and cut the runs at each arm's allowance;
or, once the search is over, the confirmation runs.

Planning here has no side effects of its own (the planner may keep its records): the stops and the
rejections come back in the result, so the loop records them and a prediction simply does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from research_agents import budget, rungs
from research_agents.actions import Confirm, Ledger, Proposal, Run, StopArm, Work, expand, search_runs, seed_sets
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
                                                         overrides=ctx.overrides), snap.arm_noise_sd)
    return RoundPlan(round_no, made, stops, empty, rejections)


def confirm_round(snap: Snapshot) -> list[Run]:
    """Each arm's leaders on the confirmation seeds the measured noise needs, as far as the budget goes."""
    leaders = {arm: snap.leaders(arm) for arm in snap.study.arms}
    confirm = Confirm(leaders, snap.confirm_seeds, budget.confirmed(snap.records))
    return confirm.runs(snap.next_round, snap.budget_left)


__all__ = ["MAX_PLANNER_RETRIES", "RoundPlan", "search_round", "confirm_round"]
