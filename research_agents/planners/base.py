"""The planner interface: (study, history, findings so far) -> proposals.

Every planner, classical or LLM, subclasses `BasePlanner` and implements `propose`; the other
hooks have defaults. The loop validates what comes back, rejects duplicates of past trials and
records each rejection with its reason, so a planner never has to be trusted.
tests/test_conformance.py holds the suite every planner passes.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from research_agents.actions import Proposal, Swap, SwapOption
from research_agents.config.space import Param
from research_agents.config.study import Study
from research_agents.evidence import ArmEvidence, OpenQuestion
from research_agents.records import CurveSummary, TrialRecord
from trainer.spec import TrialSpec


def _no_curve(record: TrialRecord) -> CurveSummary | None:
    return None


@dataclass
class PlanningContext:
    study: Study
    wanted: dict[str, int]  # arm -> how many proposals this round
    history: list[TrialRecord]  # every trial so far, all arms, in order
    round: int
    # what the search has not settled (None: no round yet); the loop computes them only for a
    # planner that reads them (BasePlanner.wants_open_questions), else None
    open_questions: list[OpenQuestion] | None = None
    budget_left: int = 0  # runs left in the whole budget, confirmation included
    noise_sd: float | None = None
    rejections: list[tuple[Proposal, str]] = field(default_factory=list)  # earlier this round
    evidence: dict[str, ArmEvidence] = field(default_factory=dict)  # per arm: is each knob bracketed?
    search_left: dict[str, int] = field(default_factory=dict)  # per arm: search runs it may still spend
    preset: str | None = None  # the run's preset and spec overrides: what a trial spec is made from
    overrides: dict[str, Any] = field(default_factory=dict)
    curve_of: Callable[[TrialRecord], CurveSummary | None] = _no_curve  # a finished trial's curve (the loop reads it)

    def search_trials(self, arm: str) -> list[TrialRecord]:
        return [r for r in self.history if r.arm == arm and r.phase == "search"]

    def spec(self, arm: str, params: dict[str, Any] | None = None) -> TrialSpec:
        """The trial spec this run would train for `params` of `arm` (the training set-up)."""
        return self.study.trial_spec(arm, params or {}, seed=0, preset=self.preset, overrides=self.overrides)


class BasePlanner(abc.ABC):
    name: str = "base"
    pure: bool = False  # propose() is a function of its context alone (see dry_copy)
    # what the loop does differently per planner (never by its name):
    starts_at_study_point: bool = True  # the loop runs each arm's study start point first
    sizes_confirmation: bool = False  # its plan is adaptive: the confirmation sized by the measured noise
    wants_open_questions: bool = False  # it reads ctx.open_questions (a full analysis: computed only if so)

    @abc.abstractmethod
    def propose(self, ctx: PlanningContext) -> list[Proposal]:
        """Up to ctx.wanted[arm] proposals per arm (the loop validates them)."""

    # -- default hooks
    def attach(self, store, out: Path, message: Callable[[str], None] | None = None) -> None:
        """Where the planner may record its own state (calls, transcripts): the run's store and directory."""

    def drain_rejections(self) -> list[tuple[Proposal, str]]:
        """Proposals the planner rejected itself since the last call (a planner that validates and
        repairs on its own, like the LLM, hands them over so the loop records them)."""
        return []

    def dry_copy(self) -> BasePlanner | None:
        """A planner the loop may ask what this one would propose next, while a round still runs,
        without touching this one (to fill an idle worker with a likely run of the next round): a
        copy where `pure`, else None (asking an LLM costs, and its answer is not a function of the
        context)."""
        return copy.copy(self) if self.pure else None

    def choose_swaps(self, options: list[SwapOption], history: list[TrialRecord], round_no: int,
                     budget_left: int) -> list[Swap]:
        """After confirmation: which compared pairs to swap (each confirmed leader re-run with the
        other's shared settings; `options`: the pairs whose confirmed leaders differ in them). The
        loop validates each choice (Swap.expand). Default: every option whose runs the budget left
        still holds, in study order."""
        return default_swaps(options, history, round_no, budget_left)

    def unmet(self) -> str | None:
        """Why this planner never did what it was chosen for in this run (the run then ends with
        exit 1 and this line), or None. An LLM planner that never gave one valid action says so
        even when its "bad rounds" rule could not fire (too few rounds)."""
        return None

    def public(self) -> dict | None:
        """Settings worth writing into run.json and the report (never a secret); None: nothing."""
        return None


Planner = BasePlanner  # the name the loop and the CLI use


def default_swaps(options: list[SwapOption], history: list[TrialRecord], round_no: int,
                  budget_left: int) -> list[Swap]:
    """The default choice of swaps: each option (in order) whose runs still to make fit in the budget left."""
    out = []
    for o in options:
        need = len(o.runs(history, round_no, "swap", ""))
        if 0 < need <= budget_left:
            out.append(Swap(arm_a=o.arm_a, arm_b=o.arm_b, origin="swap",
                            rationale=f"the confirmed leaders differ in {', '.join(o.settings_a)}: separate the "
                                      "optimizer from the shared settings"))
            budget_left -= need
    return out


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
