"""What one planning step reads, computed once and passed explicitly: the trial records, the
trials still running, the tuning evidence, the seed noise, the budget spent and left, the open
questions (on first use).

A prediction (what the next round would make, to fill an idle worker) is planning on a
`projected` snapshot: the running trials count as spent, as they will once they end; planning on
it writes nothing (see rounds.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from research_agents import budget
from research_agents.analysis.fairness import leader_differences
from research_agents.analysis.questions import round_questions
from research_agents.analysis.stats import noise_floor
from research_agents.analysis.tuning import tuning_evidence
from research_agents.config.plan import Plan
from research_agents.config.study import Study
from research_agents.evidence import ArmEvidence, OpenQuestion
from research_agents.records import COUNTED, TrialRecord, by_config, spent, whole, without_swaps


@dataclass
class Snapshot:
    study: Study
    plan: Plan
    records: list[TrialRecord]
    projected: bool = False  # running trials count as spent (a prediction)

    def spent(self, phase: str | None = None, arm: str | None = None) -> int | float:
        """The budget spent, in full-length runs (a run stopped at a rung: its share)."""
        statuses = (*COUNTED, "running") if self.projected else COUNTED
        return spent(self.records, phase, arm, statuses=statuses)

    @property
    def running(self) -> list[TrialRecord]:
        return [r for r in self.records if r.status == "running"]

    @property
    def next_round(self) -> int:
        return max((r.round for r in self.records), default=0) + 1

    @cached_property
    def evidence(self) -> dict[str, ArmEvidence]:
        return tuning_evidence(self.study, without_swaps(self.records))

    @cached_property
    def noise_sd(self) -> float | None:
        groups = {cid: [r.val_loss for r in rs if r.val_loss is not None]  # (ok: it has one)
                  for cid, rs in by_config(r for r in without_swaps(self.records) if r.ok).items()}
        return noise_floor(groups).pooled_sd

    @cached_property
    def open_questions(self) -> list[OpenQuestion] | None:
        """What the search has not settled (None before any trial): a full analysis, so computed once
        per snapshot and only when a planner reads it (BasePlanner.wants_open_questions)."""
        return round_questions(self.study, self.records, self.plan)

    @cached_property
    def arm_noise_sd(self) -> dict[str, float | None]:
        """Each arm's seed noise: the pooled sd over its repeated configurations (None: none repeated)."""
        out: dict[str, float | None] = {}
        for arm in self.study.arms:
            ok = (r for r in without_swaps(self.records) if r.ok and r.arm == arm)
            groups = {cid: [r.val_loss for r in rs if r.val_loss is not None] for cid, rs in by_config(ok).items()}
            out[arm] = noise_floor(groups).pooled_sd
        return out

    @cached_property
    def allowance(self) -> dict[str, int]:
        """Search runs each arm may spend in all (budget.search_allowance)."""
        return budget.search_allowance(self.study, self.plan, self.records, self.evidence, self.swaps_needed)

    @cached_property
    def swaps_needed(self) -> list[tuple[str, str]]:
        """The plan's swap pairs whose current leaders differ in shared settings, or lack a leader
        (their swap runs stay reserved); a pair whose leaders share every setting needs none."""
        out = []
        for a, b in self.plan.swap_pairs:
            la, lb = budget.leaders(self.study, self.records, a), budget.leaders(self.study, self.records, b)
            if not la or not lb or leader_differences(self.study, a, la[0], b, lb[0]):
                out.append((a, b))
        return out

    @cached_property
    def search_left(self) -> dict[str, int]:
        """Search runs each arm may still spend."""
        return {a: whole(self.allowance[a] - self.spent("search", a)) for a in self.study.arms}

    @property
    def budget_left(self) -> int:
        return whole(self.plan.budget - self.spent())

    @property
    def round_slots(self) -> dict[str, int]:
        """Proposals each arm gets in the next search round."""
        return budget.round_slots(self.study, self.search_left)

    @property
    def confirm_seeds(self) -> list[int]:
        return budget.confirm_seeds(self.plan, self.evidence)

    def leaders(self, arm: str) -> list[dict]:
        return budget.leaders(self.study, self.records, arm)


__all__ = ["Snapshot"]
