"""Research actions, one class each: what a planner may ask for, how it is validated against the
space, the budget and the history, how many of a round's slots it fills, and the runs it expands into.

  try        (`Proposal`)  a new point on the search seeds; one slot
  replicate  (`Replicate`) a measured configuration on more replicate seeds; one slot per search-seed set
  bracket    (`Bracket`)   the leader's missing one-knob neighbours (tuning evidence); one slot each
  stop       (`StopArm`)   no more search runs for an arm; ends the arm's slots
  confirm    (`Confirm`)   the loop's own action: each arm's leaders on fresh paired seeds
  swap       (`Swap`)      after confirmation: each confirmed leader of a compared pair re-run with the
                           other leader's shared settings, on the seeds both were confirmed on (paired)

The loop expands what a planner proposes through `expand` (on a `Ledger`: what this round has
accepted so far); the LLM's vetting and the hybrid's slot count use the same checks and costs.
A new action is one class here (a pydantic model with `slots` and `expand`, in the `Action`
union), its entry in the LLM's schema (planners/llm_actions.py) and a row in the README.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from research_agents import budget
from research_agents.config.plan import Plan
from research_agents.config.space import config_id
from research_agents.config.study import Study, validate_params
from research_agents.evidence import ArmEvidence, KnobEvidence
from research_agents.records import COUNTED, Origin, SwapOf, TrialRecord, clip_expected

Item = Any  # an accepted Work or StopArm, or the Proposal a rejection is recorded as


@dataclass
class Work:
    """Runs an accepted action asks for: one configuration on these search seeds."""

    arm: str
    params: dict
    seeds: list[int]
    origin: str
    rationale: str = ""
    kind: str = "try"
    point: str | None = None  # the named experiment (TrialRecord.point)
    expected: str | None = None  # the proposer's forecast (TrialRecord.expected)
    short: bool | None = None  # may stop at a rung (rungs.py): True asked, False never, None the plan's choice


@dataclass
class Run:
    """One trial to make."""

    arm: str
    params: dict
    seed: int
    origin: str
    phase: str
    round: int
    rationale: str = ""
    point: str | None = None
    expected: str | None = None
    swap: SwapOf | None = None  # a swap run: the other leader's settings, its trial spec's last layer
    stop_above: dict[int, float] = field(default_factory=dict)  # its early-stop rule (rungs.py; empty: none)
    short: bool | None = None  # the Work's: may the round give it a rung rule


@dataclass
class Ledger:
    """One planning round's accounting, shared by the loop's validation and the LLM's vetting: the
    study, what is known (history, tuning evidence), each arm's search runs left before this round,
    and what the round has accepted so far (slots still needed, configurations seen, runs, arms
    stopped). `plan` is needed only to pick replicate seeds; `preset`/`overrides` make the trial
    spec a new point is checked as."""

    study: Study
    history: list[TrialRecord]
    evidence: dict[str, ArmEvidence]
    search_left: dict[str, int]
    need: dict[str, int]
    seen: set[str]
    runs: dict[str, int] = field(default_factory=dict)  # search runs accepted this round, per arm
    stopped: set[str] = field(default_factory=set)
    again: set[str] = field(default_factory=set)  # configs this round re-runs at full length (only_stopped)
    plan: Plan | None = None
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def n_seeds(self) -> int:
        return len(self.study.seeds.search)

    def runs_left(self, arm: str) -> int:
        """Search runs the arm may still spend once this round's accepted runs are made."""
        return self.search_left.get(arm, 0) - self.runs.get(arm, 0)

    def accept(self, item: Work | StopArm) -> None:
        """Count an accepted item: its runs, its slots, its configuration (a try), its arm (a stop)."""
        if isinstance(item, StopArm):
            self.stopped.add(item.arm)
        elif item.kind == "try":
            cid = config_id(item.arm, item.params)
            if cid in self.seen:
                self.again.add(cid)
            self.seen.add(cid)
            self.count(item.arm, len(item.seeds), 1)
        else:
            self.count(item.arm, len(item.seeds), seed_sets(len(item.seeds), self.n_seeds))

    def count(self, arm: str, runs: int, slots: int) -> None:
        self.runs[arm] = self.runs.get(arm, 0) + runs
        self.need[arm] -= slots


def seed_sets(runs: int, n_seeds: int) -> int:
    """Slots `runs` search runs fill: one per set of search seeds, rounded up."""
    return -(-runs // n_seeds)


# ------------------------------------------------------------------------------ the actions


class Proposal(BaseModel):
    """Research action "try": train a new point on the search seeds (who proposed it and why;
    `point`: the study's named experiment it runs; `expected`: the proposer's forecast)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["try"] = "try"
    arm: str
    params: dict[str, Any]
    origin: Origin
    rationale: str = ""
    point: str | None = None
    expected: str | None = None
    # a short exploratory run: True, it may be stopped at a rung when behind the arm's leader there
    # (rungs.py); False, a full-length run (a bracket's neighbours); None, the plan's choice
    # (`--rungs`). A point that only ever stopped early, asked for again, is re-run at full length.
    short: bool | None = None

    @field_validator("expected", mode="before")
    @classmethod
    def _clip(cls, value: Any) -> str | None:
        return clip_expected(value)

    ends_arm: ClassVar[bool] = False

    def slots(self, evidence: dict[str, ArmEvidence], n_seeds: int) -> int:
        return 1

    def problems(self, ledger: Ledger) -> list[str]:
        """Why the point is not a valid trial of the arm (grid points were checked when the grid was built)."""
        if self.origin == "grid":
            return []
        return validate_params(ledger.study, self.arm, self.params, preset=ledger.preset,
                               overrides=ledger.overrides)

    def expand(self, ledger: Ledger) -> list[tuple[Item, str | None]]:
        problems = self.problems(ledger)
        if problems:
            return [(self, "; ".join(problems))]
        cid = config_id(self.arm, self.params)
        short = self.short
        if cid in ledger.seen:  # a point that only ever stopped early is asked for again: at full length
            if cid in ledger.again or short is True or not only_stopped(ledger.history, cid):
                return [(self, DUPLICATE)]
            short = False
        return [(Work(self.arm, self.params, list(ledger.study.seeds.search), self.origin, self.rationale,
                      point=self.point, expected=self.expected, short=short), None)]


def only_stopped(history: Iterable[TrialRecord], cid: str) -> bool:
    """Every search run of the configuration that spent budget stopped early at a rung: it has no
    full-length result yet, so a full-length run of it is new evidence, not a duplicate."""
    runs = [r for r in history if r.config == cid and r.phase == "search" and r.status in COUNTED]
    return bool(runs) and all(r.status == "stopped" for r in runs)


DUPLICATE = "duplicate of an earlier trial"


class Replicate(BaseModel):
    """Research action: re-run a measured configuration on `seeds` more search seeds (the same
    replicate seeds for every configuration, so replicates stay paired across configs and arms)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["replicate"] = "replicate"
    arm: str
    params: dict[str, Any]
    seeds: int = Field(1, ge=1, le=10)
    origin: Origin
    rationale: str = ""

    ends_arm: ClassVar[bool] = False

    def slots(self, evidence: dict[str, ArmEvidence], n_seeds: int) -> int:
        return seed_sets(self.seeds, n_seeds)

    @staticmethod
    def measured(history: Iterable[TrialRecord], cid: str) -> bool:
        """The configuration has a completed run to repeat."""
        return any(r.config == cid and r.ok for r in history)

    @staticmethod
    def no_runs_left(ledger: Ledger, arm: str) -> str | None:
        return f"replicate: arm {arm!r} has no search runs left" if ledger.runs_left(arm) < 1 else None

    def expand(self, ledger: Ledger) -> list[tuple[Item, str | None]]:
        if not self.measured(ledger.history, config_id(self.arm, self.params)):
            return [(as_proposal(self), "replicate: no completed run of this configuration to repeat")]
        if why := self.no_runs_left(ledger, self.arm):
            return [(as_proposal(self), why)]
        seeds = budget.replicate_seeds(ledger.study, ledger.plan, ledger.history, self.arm, self.params,
                                       min(self.seeds, ledger.runs_left(self.arm)))
        return [(Work(self.arm, self.params, seeds, self.origin, self.rationale or "replicate", kind="replicate",
                      short=False), None)]


class Bracket(BaseModel):
    """Research action: measure the leader's grid neighbours on one knob (for an LR about a factor
    of 2 either side) where they are missing; expanded from the tuning evidence."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["bracket"] = "bracket"
    arm: str
    knob: str
    origin: Origin
    rationale: str = ""

    ends_arm: ClassVar[bool] = False

    def knob_evidence(self, evidence: dict[str, ArmEvidence]) -> KnobEvidence | None:
        ev = evidence.get(self.arm)
        return ev.knob(self.knob) if ev is not None else None

    def slots(self, evidence: dict[str, ArmEvidence], n_seeds: int) -> int:
        knob = self.knob_evidence(evidence)
        return max(1, len(knob.to_try)) if knob is not None else 1

    def points(self, evidence: dict[str, ArmEvidence]) -> list[dict[str, Any]]:
        """The leader's params with each missing neighbour's value of the knob."""
        ev = evidence[self.arm]
        return [{**ev.leader_params, self.knob: value} for value in ev.knob(self.knob).to_try]

    @staticmethod
    def settled(knob: KnobEvidence) -> str | None:
        return None if knob.to_try else f"{knob.knob} is already {knob.status}: nothing to bracket"

    def expand(self, ledger: Ledger) -> list[tuple[Item, str | None]]:
        knob = self.knob_evidence(ledger.evidence)
        if knob is None:
            return [(as_proposal(self), f"{self.knob!r} is not a searched knob of arm {self.arm!r}")]
        if why := self.settled(knob):
            return [(as_proposal(self), why)]
        out: list[tuple[Item, str | None]] = []
        rationale = f"bracket {self.knob} ({knob.status}): {self.rationale}".strip(": ")
        for params in self.points(ledger.evidence):
            # a neighbour is the verdict's evidence: a full-length run (re-run if it only stopped early)
            out += expand(Proposal(arm=self.arm, params=params, origin=self.origin, rationale=rationale,
                                   short=False), ledger)
        return out


class StopArm(BaseModel):
    """Research action: spend no more search runs on this arm (its budget goes unspent)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["stop"] = "stop"
    arm: str
    origin: Origin
    rationale: str = ""

    ends_arm: ClassVar[bool] = True

    def slots(self, evidence: dict[str, ArmEvidence], n_seeds: int) -> int:
        return 0

    def expand(self, ledger: Ledger) -> list[tuple[Item, str | None]]:
        return [(self, None)]


Action = Annotated[Proposal | Replicate | Bracket | StopArm, Field(discriminator="kind")]


@dataclass
class Confirm:
    """The loop's last action: each arm's leaders re-run on the confirmation seeds, interleaved by
    seed so pairs line up, skipping what is confirmed already, as far as the budget goes."""

    leaders: dict[str, list[dict]]
    seeds: list[int]
    done: set[tuple[str, int]]

    def runs(self, round_no: int, budget_left: int) -> list[Run]:
        todo = [(arm, params, seed) for seed in self.seeds for arm, configs in self.leaders.items()
                for params in configs if (config_id(arm, params), seed) not in self.done]
        return [Run(arm, params, seed, "confirm", "confirm", round_no, "leader re-run on a fresh seed")
                for arm, params, seed in todo[: max(0, budget_left)]]


@dataclass
class SwapOption:
    """A compared pair whose confirmed leaders were trained with different shared settings: what a
    swap of it would run. `settings_a` is what arm_a's leader trains with in its swap runs (arm_b's
    leader's values of the differing settings) and `settings_b` the reverse; `seeds`: the
    confirmation seeds both leaders completed (the swap runs pair on them)."""

    arm_a: str
    arm_b: str
    params_a: dict[str, Any]
    params_b: dict[str, Any]
    settings_a: dict[str, Any]
    settings_b: dict[str, Any]
    seeds: list[int]

    @property
    def pair(self) -> tuple[str, str]:
        return (self.arm_a, self.arm_b)

    def runs(self, records: Iterable[TrialRecord], round_no: int, origin: str, rationale: str) -> list[Run]:
        """Both swapped leaders on each seed, interleaved by seed, skipping what was run already
        (a swap run that spent budget: a resume repeats nothing)."""
        out = []
        done = swapped(records)
        for seed in self.seeds:
            for arm, params, settings in ((self.arm_a, self.params_a, self.settings_a),
                                          (self.arm_b, self.params_b, self.settings_b)):
                swap = SwapOf(pair=self.pair, settings=settings)
                if (config_id(arm, params), seed, swap.key) not in done:
                    out.append(Run(arm, params, seed, origin, "swap", round_no, rationale, swap=swap))
        return out


def swapped(records: Iterable[TrialRecord]) -> set[tuple[str, int, str]]:
    """(config, seed, swap key) of every swap run that spent budget."""
    return {(r.config, r.seed, r.swap.key) for r in records
            if r.phase == "swap" and r.swap is not None and r.status in COUNTED}


class Swap(BaseModel):
    """Research action (after confirmation): run the swaps of one compared pair, i.e. each confirmed
    leader with the other leader's shared settings on the seeds both were confirmed on; valid when the
    pair has a `SwapOption` and the budget left holds all of its runs still to make."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["swap"] = "swap"
    arm_a: str
    arm_b: str
    origin: Origin
    rationale: str = ""

    def expand(self, options: list[SwapOption], records: list[TrialRecord], round_no: int,
               budget_left: int) -> tuple[list[Run], str | None]:
        """The runs of this swap, or none and why it is rejected."""
        option = next((o for o in options if {o.arm_a, o.arm_b} == {self.arm_a, self.arm_b}), None)
        if option is None:
            known = ", ".join(f"{o.arm_a}/{o.arm_b}" for o in options) or "none"
            return [], (f"swap: {self.arm_a}/{self.arm_b} is not a compared pair whose confirmed leaders differ in "
                        f"shared settings (swappable: {known})")
        runs = option.runs(records, round_no, self.origin, self.rationale or "swap: the other leader's shared settings")
        if not runs:
            return [], f"swap: {self.arm_a}/{self.arm_b} is swapped already"
        if len(runs) > budget_left:
            return [], (f"swap: {self.arm_a}/{self.arm_b} needs {len(runs)} runs, the budget has "
                        f"{max(0, budget_left)} left")
        return runs, None


# ------------------------------------------------------------------------------ one home for the rules


def as_proposal(action: Proposal | Replicate | Bracket | StopArm) -> Proposal:
    """What a rejected action is recorded as (its arm, params when it has any, origin, why)."""
    params = getattr(action, "params", None)
    if params is None:
        params = {"knob": action.knob} if isinstance(action, Bracket) else {}
    return Proposal(arm=action.arm, params=params, origin=action.origin, rationale=action.rationale)


def expand(action, ledger: Ledger) -> list[tuple[Item, str | None]]:
    """An action as the items it asks for, each with None or why it is rejected: a stop as itself,
    a try or replicate as one Work, a bracket as one try per missing neighbour (each checked)."""
    if action.arm not in ledger.study.arms:
        return [(as_proposal(action), f"unknown arm {action.arm!r}")]
    if not action.ends_arm and ledger.need.get(action.arm, 0) <= 0:
        return [(as_proposal(action), f"arm {action.arm!r} needs no more proposals this round")]
    return action.expand(ledger)


def slots_left(evidence: dict[str, ArmEvidence], n_seeds: int, wanted: dict[str, int],
               actions: list) -> dict[str, int]:
    """The wanted slots these actions leave open, per arm (an arm they stop has none)."""
    left = dict(wanted)
    for a in actions:
        if a.arm in left:
            left[a.arm] = 0 if a.ends_arm else left[a.arm] - a.slots(evidence, n_seeds)
    return {a: n for a, n in left.items() if n > 0}


def search_runs(work: list[Work], search_left: dict[str, int], round_no: int) -> list[Run]:
    """Accepted work as the round's search runs, each arm cut at the search runs it has left."""
    left = dict(search_left)
    runs = []
    for w in work:
        for seed in w.seeds[: max(0, left[w.arm])]:
            runs.append(Run(w.arm, w.params, seed, w.origin, "search", round_no, w.rationale, w.point, w.expected,
                            short=w.short))
            left[w.arm] -= 1
    return runs


__all__ = ["Work", "Run", "Ledger", "Proposal", "Replicate", "Bracket", "StopArm", "Action", "Confirm", "DUPLICATE",
           "Swap", "SwapOption", "swapped",
           "as_proposal", "expand", "only_stopped", "seed_sets", "slots_left", "search_runs"]
