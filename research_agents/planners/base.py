"""The planner interface: (study, history, latest round report) -> proposals.

Every planner, classical or LLM, implements `propose`. The loop validates what comes back,
rejects duplicates of past trials and records each rejection with its reason, so a planner
never has to be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna

from research_agents.specs import Param, Proposal, Study
from research_agents.store import TrialRecord


@dataclass
class PlanningContext:
    study: Study
    wanted: dict[str, int]  # arm -> how many proposals this round
    history: list[TrialRecord]  # every trial so far, all arms, in order
    round: int
    round_report: str = ""  # markdown of the latest round, what an LLM planner reads
    budget_left: int = 0
    noise_sd: float | None = None
    rejections: list[tuple[Proposal, str]] = field(default_factory=list)  # earlier this round

    def search_trials(self, arm: str) -> list[TrialRecord]:
        return [r for r in self.history if r.arm == arm and r.phase == "search"]


class Planner(Protocol):
    name: str

    def propose(self, ctx: PlanningContext) -> list[Proposal]: ...


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
    """Define-by-run walk of a space: a conditional parameter exists only when its `when` holds."""
    values: dict[str, Any] = {}
    for key, p in space.items():
        if not all(values.get(dep) in allowed for dep, allowed in p.when.items()):
            continue
        if p.type == "choice":
            values[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, log=p.log)
    return values
