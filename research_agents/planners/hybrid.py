"""The hybrid planner ("Centaur", FACTS section 3): TPE owns the state, the LLM chooses a share.

Optuna TPE is rebuilt from the store's full history every round (SamplerPlanner), so every
result, whoever proposed it, is told to the sampler. An arm's search points are its search runs
per set of search seeds (a new config or a replicate, credited to whoever asked for it). Until an
arm has its warm-up of points, all of them come from TPE; the warm-up is the study's
`llm_warmup_trials` but at most a third of the arm's points at this budget (at least 1), so a
small budget still mixes. After that a share `llm_share` (default 0.3; a higher share did worse
in the published comparison) of the arm's slots goes to the LLM, allocated deterministically:
the k-th point after the warm-up is the LLM's when that brings the LLM's count to
round(k * share). The first round says (console and report) how many points that gives the LLM
at this budget, or that it will never be asked.

The LLM sees the optimizer state and TPE's own suggestions for the round (full precision); its
actions (try, replicate, bracket, stop) fill its slots, and a try within a small distance of a
suggestion (or of a past trial) is rejected as not new, so TPE's ideas are never credited to the
LLM. A slot the LLM does not fill validly after its repairs goes back to TPE's suggestion.
"""

from __future__ import annotations

import math
from typing import Callable

from research_agents.actions import Proposal, StopArm
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.planners.llm import LLMPlanner
from research_agents.planners.llm_client import LLMUnavailable
from research_agents.report.words import hybrid_plan_text


def warmup_for(setting: int, points: int) -> int:
    """The warm-up of an arm with `points` search points at this budget: the study's setting, but
    at most a third of them (at least 1)."""
    return min(setting, max(1, points // 3))


def llm_points(points: int, warmup: int, share: float) -> int:
    """How many of an arm's `points` search points the LLM gets after the warm-up."""
    return math.floor(max(0, points - warmup) * share + 0.5)


def points_done(ctx: PlanningContext, arm: str) -> tuple[int, int]:
    """(the arm's search points so far, those the LLM asked for): runs per search-seed set, so a
    replicate counts for whoever asked for it, like a new point."""
    n_seeds = len(ctx.study.seeds.search)
    runs = [r for r in ctx.search_trials(arm) if r.status not in ("interrupted", "rejected")]
    return -(-len(runs) // n_seeds), -(-sum(r.origin == "llm" for r in runs) // n_seeds)


def arm_points(ctx: PlanningContext, arm: str) -> int | None:
    """The search points the arm will have in all at this budget (None: the budget is not known)."""
    if arm not in ctx.search_left:
        return None
    return points_done(ctx, arm)[0] + max(0, ctx.search_left[arm]) // len(ctx.study.seeds.search)


def llm_slots(ctx: PlanningContext, share: float, warmup: int) -> dict[str, int]:
    """How many of each arm's wanted slots the LLM fills this round."""
    out = {}
    for arm, n in ctx.wanted.items():
        done, llm_done = points_done(ctx, arm)
        total = arm_points(ctx, arm)
        w = warmup if total is None else warmup_for(warmup, total)
        k = 0
        for slot in range(max(0, n)):
            post = done + slot - w  # index of this point after the warm-up
            if post < 0:
                continue
            if llm_done + k < math.floor((post + 1) * share + 0.5):
                k += 1
        out[arm] = k
    return out


class HybridPlanner(BasePlanner):
    name = "hybrid"
    wants_open_questions = True  # the prompt quotes them

    def __init__(self, llm: LLMPlanner, share: float = 0.3, warmup: int = 4):
        self.llm = llm
        self.sampler = llm.sampler
        self.share = share
        self.warmup = warmup
        self._announced = False

    @property
    def cfg(self):
        return self.llm.cfg

    def public(self) -> dict:
        return self.llm.public()

    def unmet(self) -> str | None:
        return self.llm.unmet()

    def attach(self, store, out, message: Callable[[str], None] | None = None) -> None:
        self.llm.attach(store, out, message)

    def drain_rejections(self) -> list[tuple[Proposal, str]]:
        return self.llm.drain_rejections()

    def announce(self, ctx: PlanningContext) -> None:
        """Say once per run how many points the LLM will propose at this budget (or that it never will)."""
        if self._announced:
            return
        self._announced = True
        arms = {}
        for arm in ctx.study.arms:
            if not ctx.study.arms[arm].space:
                continue
            total = arm_points(ctx, arm)
            if total is None:
                continue
            w = warmup_for(self.warmup, total)
            arms[arm] = {"points": total, "warmup": w, "llm": llm_points(total, w, self.share)}
        if not arms:
            return
        self.llm.message(hybrid_plan_text(self.share, arms))
        if self.llm.store is not None:
            self.llm.store.set_meta("llm_plan", {"share": self.share, "arms": arms})

    def propose(self, ctx: PlanningContext) -> list:
        self.announce(ctx)
        tpe = self.sampler.propose(ctx)
        slots = {a: n for a, n in llm_slots(ctx, self.share, self.warmup).items() if n > 0}
        if not slots or self.llm.fallen_back:
            return tpe
        try:
            got = self.llm.ask(ctx, slots, suggestions=tpe, strict_slots=True)
        except LLMUnavailable as err:
            self.llm.fail(ctx.round, err)
            return tpe
        out: list = []
        for arm, n in ctx.wanted.items():
            mine = [a for a in got if a.arm == arm]
            if any(isinstance(a, StopArm) for a in mine):
                out += mine
                continue
            used = sum(a.slots(ctx.evidence, len(ctx.study.seeds.search)) for a in mine)
            if used < slots.get(arm, 0):
                self.llm.note_fill(ctx.round, arm, slots[arm] - used)
            out += mine + [p for p in tpe if p.arm == arm][: max(0, n - used)]
        return out


__all__ = ["HybridPlanner", "llm_slots", "warmup_for", "llm_points"]
