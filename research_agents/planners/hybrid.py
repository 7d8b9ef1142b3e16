"""The hybrid planner ("Centaur", FACTS section 3): TPE owns the state, the LLM proposes a share.

Optuna TPE is rebuilt from the store's full history every round (SamplerPlanner), so every
result, whoever proposed it, is told to the sampler. Until an arm has `llm_warmup_trials`
search configs, all of its points come from TPE. After that a share `llm_share` (default 0.3;
a higher share did worse in the published comparison) of the arm's points goes to the LLM,
allocated deterministically: the k-th point after the warm-up is the LLM's when that brings the
LLM's count to round(k * share). The LLM sees the optimizer state and TPE's own suggestions for
the round (full precision); its actions (try, replicate, bracket, stop) fill its slots and no
more, and a try within a small distance of a suggestion (or of a past trial) is rejected as not
new, so TPE's ideas are never credited to the LLM. A slot the LLM does not fill validly after its
repairs goes back to TPE's suggestion.
"""

from __future__ import annotations

import math
from typing import Callable

from research_agents.planners.base import BasePlanner, PlanningContext, action_slots
from research_agents.planners.llm import LLMPlanner
from research_agents.planners.llm_client import LLMUnavailable
from research_agents.records import Proposal, StopArm


def llm_slots(ctx: PlanningContext, share: float, warmup: int) -> dict[str, int]:
    """How many of each arm's wanted points the LLM proposes this round."""
    out = {}
    for arm, n in ctx.wanted.items():
        configs: dict[str, str] = {}
        for r in ctx.search_trials(arm):
            configs.setdefault(r.config, r.origin)
        done = len(configs)
        llm_done = sum(o == "llm" for o in configs.values())
        k = 0
        for slot in range(max(0, n)):
            post = done + slot - warmup  # index of this point after the warm-up
            if post < 0:
                continue
            if llm_done + k < math.floor((post + 1) * share + 0.5):
                k += 1
        out[arm] = k
    return out


class HybridPlanner(BasePlanner):
    name = "hybrid"

    def __init__(self, llm: LLMPlanner, share: float = 0.3, warmup: int = 4):
        self.llm = llm
        self.sampler = llm.sampler
        self.share = share
        self.warmup = warmup

    @property
    def cfg(self):
        return self.llm.cfg

    def public(self) -> dict:
        return self.llm.public()

    def attach(self, store, out, message: Callable[[str], None] | None = None) -> None:
        self.llm.attach(store, out, message)

    def drain_rejections(self) -> list[tuple[Proposal, str]]:
        return self.llm.drain_rejections()

    def propose(self, ctx: PlanningContext) -> list:
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
            used = sum(action_slots(a, ctx) for a in mine)
            if used < slots.get(arm, 0):
                self.llm.note_fill(ctx.round, arm, slots[arm] - used)
            out += mine + [p for p in tpe if p.arm == arm][: max(0, n - used)]
        return out


__all__ = ["HybridPlanner", "llm_slots"]
