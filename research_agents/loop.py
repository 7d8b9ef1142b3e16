"""The research loop: plan -> execute -> analyse -> report, until the budget is spent.

Budget (config.plan): every training run counts (search and confirmation alike; interrupted runs
are re-run and not counted twice). A slice is reserved up front to re-run each arm's leaders on
fresh seeds, paired across arms; the noise floor and the final recommendation come from those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from research_agents.analysis.stats import noise_floor
from research_agents.config.plan import Plan
from research_agents.config.space import config_id
from research_agents.config.study import Study, validate_params
from research_agents.execution.base import BaseExecutor, TrialInterrupted
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.records import COUNTED, Proposal, TrialRecord, by_config, ranked_configs
from research_agents.report.round import latest_round_report
from research_agents.store.base import BaseStore

MAX_PLANNER_RETRIES = 3


@dataclass
class LoopHooks:
    """What the loop tells the outside world (console display, reports)."""

    on_trial_start: Callable[[TrialRecord], None] = lambda r: None
    on_progress: Callable[[dict], None] = lambda e: None
    on_trial_end: Callable[[TrialRecord], None] = lambda r: None
    on_round_end: Callable[[int, list[TrialRecord]], str] = lambda n, rs: ""  # returns round report
    on_message: Callable[[str], None] = lambda m: None


@dataclass
class ResearchLoop:
    study: Study
    store: BaseStore
    executor: BaseExecutor
    planner: BasePlanner
    out: Path
    plan: Plan
    overrides: dict[str, Any] = field(default_factory=dict)  # spec overrides (device, ...)
    preset: str | None = None
    hooks: LoopHooks = field(default_factory=LoopHooks)

    # -- bookkeeping
    def records(self) -> list[TrialRecord]:
        return self.store.records()

    def spent(self, phase: str | None = None, arm: str | None = None) -> int:
        return self.store.spent(phase, arm)

    def next_round(self) -> int:
        return max((r.round for r in self.records()), default=0) + 1

    # -- one trial
    def run_trial(self, arm: str, params: dict, seed: int, origin: str, phase: str, round: int,
                  rationale: str = "") -> TrialRecord:
        spec = self.study.trial_spec(arm, params, seed, preset=self.preset, overrides=self.overrides)
        run_dir = f"trials/{len(self.records()) + 1:04d}-{arm}-{config_id(arm, params)}-s{seed}"
        record = self.store.start(arm, params, seed, origin, phase, round, rationale, run_dir)
        self.hooks.on_trial_start(record)
        try:
            outcome = self.executor.run(spec, self.out / run_dir, self.study.trial_timeout_s,
                                        self.hooks.on_progress)
        except (TrialInterrupted, KeyboardInterrupt):  # Ctrl-C in the executor or around it
            self.store.finish(record, "interrupted", None, "interrupted by the user (Ctrl-C)")
            raise TrialInterrupted() from None
        record = self.store.finish(record, outcome.status, outcome.metrics, outcome.reason)
        self.hooks.on_trial_end(record)
        return record

    # -- phases
    def resume_interrupted(self) -> None:
        for r in self.store.recover():
            if self.spent() >= self.plan.budget:
                break
            self.hooks.on_message(f"re-running trial {r.id} ({r.arm}, seed {r.seed}) left unfinished")
            self.run_trial(r.arm, r.params, r.seed, r.origin, r.phase, r.round, r.rationale)

    def run(self) -> None:
        self.resume_interrupted()
        self.search()
        self.confirm()

    def _wanted(self) -> dict[str, int]:
        per_round = self.study.planner.trials_per_round
        n_seeds = len(self.study.seeds.search)
        left = {a: max(0, (self.plan.search_share[a] - self.spent("search", a)) // n_seeds)
                for a in self.study.arms}
        wanted = {a: 0 for a in left}
        slots = max(1, per_round // n_seeds)
        while slots > 0 and any(wanted[a] < left[a] for a in left):  # round-robin across arms
            for a in left:
                if slots > 0 and wanted[a] < left[a]:
                    wanted[a] += 1
                    slots -= 1
        return wanted

    def search(self) -> None:
        exhausted: set[str] = set()
        while True:
            wanted = {a: n for a, n in self._wanted().items() if a not in exhausted}
            if not any(wanted.values()):
                return
            round_no = self.next_round()
            accepted = self._plan_round(round_no, wanted)
            for arm in wanted:
                if wanted[arm] and not any(p.arm == arm for p in accepted):
                    exhausted.add(arm)
                    self.hooks.on_message(f"planner {self.planner.name} has nothing new for arm {arm}: "
                                          "its search ends here")
            ran = []
            for p in accepted:
                for seed in self.study.seeds.search:
                    if self.spent("search", p.arm) >= self.plan.search_share[p.arm]:
                        break
                    ran.append(self.run_trial(p.arm, p.params, seed, p.origin, "search", round_no, p.rationale))
            if ran:
                self.hooks.on_round_end(round_no, ran)

    def _plan_round(self, round_no: int, wanted: dict[str, int]) -> list[Proposal]:
        """Ask the planner, validate, drop duplicates; ask again for what was rejected (bounded)."""
        accepted: list[Proposal] = []
        rejections: list[tuple[Proposal, str]] = []
        seen = {r.config for r in self.records() if r.phase == "search"}
        # every adaptive planner starts an arm from the same point, when the study names one
        # (a manual grid runs exactly its points)
        for arm, n in wanted.items():
            start = self.study.arms[arm].start
            if n and start is not None and self.planner.name != "grid" and config_id(arm, start) not in seen:
                accepted.append(Proposal(arm=arm, params=start, origin="default",
                                         rationale="the study's starting point for this arm"))
                seen.add(config_id(arm, start))
        for attempt in range(MAX_PLANNER_RETRIES + 1):
            need = {a: n - sum(p.arm == a for p in accepted) for a, n in wanted.items()}
            need = {a: n for a, n in need.items() if n > 0}
            if not need:
                break
            ctx = PlanningContext(study=self.study, wanted=need, history=self.records(), round=round_no,
                                  round_report=self.latest_round_report(), budget_left=self.plan.budget - self.spent(),
                                  noise_sd=self.noise_sd(), rejections=list(rejections))
            new_rejections = 0
            for p in self.planner.propose(ctx):
                reason = self._rejection(p, need, seen)
                if reason:
                    rejections.append((p, reason))
                    new_rejections += 1
                    continue
                accepted.append(p)
                seen.add(config_id(p.arm, p.params))
                need[p.arm] -= 1
            # planners that validate and repair by themselves (LLM) hand over what they rejected
            rejections.extend(self.planner.drain_rejections())
            if not new_rejections:
                break
        self._record_rejections(round_no, rejections)
        return accepted

    def _rejection(self, p: Proposal, need: dict[str, int], seen: set[str]) -> str | None:
        if p.arm not in self.study.arms:
            return f"unknown arm {p.arm!r}"
        if need.get(p.arm, 0) <= 0:
            return f"arm {p.arm!r} needs no more proposals this round"
        if p.origin != "grid":  # grid points were checked when the grid was built
            problems = validate_params(self.study, p.arm, p.params)
            if problems:
                return "; ".join(problems)
        if config_id(p.arm, p.params) in seen:
            return "duplicate of an earlier trial"
        return None

    def _record_rejections(self, round_no: int, rejections: list[tuple[Proposal, str]]) -> None:
        if not rejections:
            return
        self.store.append_meta("rejections", [{"round": round_no, "arm": p.arm, "params": p.params,
                                               "origin": p.origin, "reason": why} for p, why in rejections])
        for p, why in rejections:
            self.hooks.on_message(f"rejected {p.origin} proposal for {p.arm} {json.dumps(p.params)}: {why}")

    def leaders(self, arm: str) -> list[dict]:
        """The arm's best search configs by mean val loss (completed runs only)."""
        ranked = ranked_configs(r for r in self.records() if r.arm == arm and r.phase == "search")
        return [rs[0].params for rs in ranked[: self.study.budget.leaders_per_arm]]

    def confirm(self) -> None:
        """Re-run each arm's leaders on the fresh confirmation seeds, interleaved so pairs line up."""
        round_no = None
        ran = []
        leaders = {arm: self.leaders(arm) for arm in self.study.arms}
        done = {(r.config, r.seed) for r in self.records() if r.phase == "confirm" and r.status in COUNTED}
        for seed in self.plan.confirm_seeds:
            for arm, configs in leaders.items():
                for params in configs:
                    if (config_id(arm, params), seed) in done or self.spent() >= self.plan.budget:
                        continue
                    round_no = round_no or self.next_round()
                    ran.append(self.run_trial(arm, params, seed, "confirm", "confirm", round_no,
                                              "leader re-run on a fresh seed"))
        if ran:
            self.hooks.on_round_end(round_no, ran)

    # -- what the planner reads
    def latest_round_report(self) -> str:
        return latest_round_report(self.out)

    def noise_sd(self) -> float | None:
        groups = {cid: [r.val_loss for r in rs] for cid, rs in by_config(r for r in self.records() if r.ok).items()}
        return noise_floor(groups).pooled_sd
