"""The research loop: plan -> execute -> analyse -> report, until the budget is spent.

1. Plan: a snapshot of the store (snapshot.py) and the planner give the next round's runs
   (rounds.py; each research action validated and expanded by actions.py, the budget by budget.py).
2. Execute: the trial scheduler (execution/scheduler.py) trains them, `workers` at a time.
3. Analyse and 4. report: after each round the hooks write the round report (what the next
   planning reads); the CLI writes the final report.

Budget: every training run counts (search and confirmation alike; interrupted runs are re-run and
not counted twice). Part of it re-runs each arm's leaders on fresh seeds, paired across arms; the
noise floor and the final recommendation come from those.

Resuming loses nothing: a trial interrupted by Ctrl-C or left running by a killed process is
re-run once, the round reports a kill cut short are written from the store, and a trial never
trains into a directory that already exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from research_agents.actions import Proposal, Run
from research_agents.config.plan import Plan
from research_agents.config.space import config_id
from research_agents.config.study import Study
from research_agents.execution.base import BaseExecutor, TrialInterrupted
from research_agents.execution.scheduler import TrialScheduler, trial_dir
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.records import COUNTED, CurveSummary, TrialRecord, curve_summary, without_swaps
from research_agents.report.round import round_path
from research_agents.rounds import RoundPlan, confirm_round, search_round, swap_options, swap_round
from research_agents.snapshot import Snapshot
from research_agents.signals import deferred_stop
from research_agents.store.base import BaseStore


@dataclass
class LoopHooks:
    """What the loop tells the outside world (console display, reports)."""

    on_trial_start: Callable[[TrialRecord], None] = lambda r: None
    on_progress: Callable[[TrialRecord, dict], None] = lambda r, e: None  # a running trial's step
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
    workers: int = 1  # trials that train at once
    speculate: bool = True  # fill idle workers with runs the next round will likely make (see execution/speculation)
    _curves: dict[int, CurveSummary | None] = field(default_factory=dict, init=False, repr=False)
    _stop: bool = field(default=False, init=False, repr=False)  # Ctrl-C seen, acted on at a safe point
    _exhausted: set[str] = field(default_factory=set, init=False, repr=False)  # arms whose planner ran dry
    _trials: TrialScheduler | None = field(default=None, init=False, repr=False)
    _resuming: dict[tuple, Path] = field(default_factory=dict, init=False, repr=False)  # interrupted trials' dirs

    def records(self) -> list[TrialRecord]:
        return self.store.records()

    def spent(self, phase: str | None = None, arm: str | None = None) -> int | float:
        return self.store.spent(phase, arm)

    def snapshot(self, projected: bool = False) -> Snapshot:
        return Snapshot(self.study, self.plan, self.store.records(), projected)

    # -- the four steps
    def run(self) -> None:
        with deferred_stop(self):  # Ctrl-C, SIGTERM, SIGHUP: stop at the next safe point (signals.py)
            try:
                self.resume_interrupted()
                self.write_missing_round_reports()
                self.search()
                self.check_stop()
                self.confirm()
                self.check_stop()
                self.swap()
            finally:
                self.close()

    def search(self) -> None:
        while True:
            self.check_stop()
            rnd = self.plan_search(self.snapshot())
            if rnd is None:
                return
            self._record_plan(rnd)
            self.execute(rnd.round, rnd.runs)

    def confirm(self) -> None:
        """Re-run each arm's leaders on the fresh confirmation seeds, interleaved so pairs line up."""
        runs = confirm_round(self.snapshot())
        self.execute(runs[0].round if runs else 0, runs)

    def swap(self) -> None:
        """After confirmation: the swaps the planner chooses (each confirmed leader of a compared pair
        with the other's shared settings, paired on the confirmation seeds); choices and rejections
        recorded among the actions."""
        snap = self.snapshot()
        rnd = swap_round(snap, self.planner, swap_options(snap, self.preset, self.overrides))
        entries = [{"round": snap.next_round, "kind": "swap", "arm": f"{s.arm_a}/{s.arm_b}", "origin": s.origin,
                    "reason": s.rationale} for s in rnd.chosen]
        entries += [{"round": snap.next_round, "kind": "swap", "arm": f"{s.arm_a}/{s.arm_b}", "origin": s.origin,
                     "reason": s.rationale, "rejected": why} for s, why in rnd.rejected]
        if entries:
            self.store.append_meta("actions", entries)
        for s, why in rnd.rejected:
            self.hooks.on_message(f"rejected {s.origin} swap of {s.arm_a}/{s.arm_b}: {why}")
        self.execute(snap.next_round, rnd.runs)

    def execute(self, round_no: int, runs: list[Run]) -> list[TrialRecord]:
        """Train the round's runs, then analyse and report it (the round-end hook)."""
        ran = self.trials.run(runs)
        if ran:
            self.hooks.on_round_end(round_no, ran)
        return ran

    # -- plan
    def plan_search(self, snap: Snapshot, planner: BasePlanner | None = None) -> RoundPlan | None:
        """The next search round (None: the search is over); it records nothing (see _record_plan),
        so a prediction is this on a projected snapshot with a dry copy of the planner."""
        wanted = {a: n for a, n in snap.round_slots.items() if a not in self._exhausted}
        if not any(wanted.values()):
            return None
        planner = planner or self.planner
        return search_round(snap, planner, wanted, self.context(snap, planner))

    def _record_plan(self, rnd: RoundPlan) -> None:
        """The round's stops and rejections into the store; arms stopped or left without a proposal
        end their search."""
        for item in rnd.stops:
            self.store.append_meta("actions", [{"round": rnd.round, "kind": "stop", "arm": item.arm,
                                                "origin": item.origin, "reason": item.rationale}])
            self.hooks.on_message(f"{item.origin}: stop searching {item.arm}: {item.rationale}")
        self._record_rejections(rnd.round, rnd.rejections)
        self._exhausted |= {item.arm for item in rnd.stops}
        for arm in rnd.empty:
            self._exhausted.add(arm)
            self.hooks.on_message(f"planner {self.planner.name} has nothing new for arm {arm}: "
                                  "its search ends here")

    def predicted(self) -> list[Run]:
        """The runs the next batch would make if the trials running now changed nothing, for the
        arms that have none running (a running trial's result steers its own arm's next runs):
        what a copy of the planner says now (this changes neither it nor the store), or the
        confirmation runs once the search would end. Empty where the planner cannot be asked ahead
        (an LLM)."""
        snap = self.snapshot(projected=True)
        if any(n for a, n in snap.round_slots.items() if a not in self._exhausted):
            planner = self.planner.dry_copy()
            rnd = self.plan_search(snap, planner) if planner is not None else None
            runs = rnd.runs if rnd is not None else []
        else:
            runs = confirm_round(snap)
        busy = {r.arm for r in snap.running}
        return [r for r in runs if r.arm not in busy]

    def context(self, snap: Snapshot, planner: BasePlanner) -> PlanningContext:
        """What the planner reads (its wanted slots and rejections are set per attempt)."""
        return PlanningContext(study=self.study, wanted={}, history=without_swaps(snap.records), round=snap.next_round,
                               open_questions=snap.open_questions if planner.wants_open_questions else None,
                               budget_left=snap.budget_left,
                               noise_sd=snap.noise_sd, evidence=dict(snap.evidence),
                               search_left=dict(snap.search_left), preset=self.preset, overrides=self.overrides,
                               curve_of=self.curve)

    def curve(self, record: TrialRecord) -> CurveSummary | None:
        """A finished trial's curve summary from its metrics.json (read once, on demand)."""
        if record.status not in COUNTED:
            return None
        if record.id not in self._curves:
            metrics = record.metrics(self.out)
            self._curves[record.id] = curve_summary(metrics) if metrics is not None else None
        return self._curves[record.id]

    def _record_rejections(self, round_no: int, rejections: list[tuple[Proposal, str]]) -> None:
        if not rejections:
            return
        self.store.append_meta("rejections", [{"round": round_no, "arm": p.arm, "params": p.params,
                                               "origin": p.origin, "reason": why} for p, why in rejections])
        for p, why in rejections:
            self.hooks.on_message(f"rejected {p.origin} proposal for {p.arm} {json.dumps(p.params)}: {why}")

    # -- execute
    @property
    def trials(self) -> TrialScheduler:
        if self._trials is None:
            self._trials = TrialScheduler(self.executor, self.store, self.out, self.study.trial_timeout_s,
                                          spec=self.spec, predict=self.predicted, stopping=lambda: self._stop,
                                          hooks=self.hooks, workers=self.workers, speculate=self.speculate,
                                          before_start=self._resume_checkpoint)
        return self._trials

    def spec(self, run: Run):
        spec = self.study.trial_spec(run.arm, run.params, run.seed, preset=self.preset, overrides=self.overrides,
                                     swapped=run.swap.settings if run.swap is not None else None)
        if run.stop_above:  # its early-stop rule, fixed when its round was planned (rungs.py)
            spec = type(spec).model_validate({**spec.model_dump(), "stop_above": run.stop_above})
        return spec

    def run_dir(self, arm: str, params: dict, seed: int) -> str:
        return trial_dir(self.out, len(self.records()) + 1, arm, params, seed)

    def close(self) -> None:
        if self._trials is not None:
            self._trials.close()
        self._trials = None

    # -- resuming
    def unfinished(self) -> list[TrialRecord]:
        """Trials to run again: each (config, seed, phase) whose last trial was interrupted (Ctrl-C,
        or left running by a killed process) and that has no run spending budget. Re-running it
        makes a new trial, so each interruption costs one re-run and the budget counts it once."""
        last: dict[tuple, TrialRecord] = {}
        counted: set[tuple] = set()
        for r in self.records():
            key = (r.config, r.seed, r.phase, r.swap.key if r.swap is not None else None)
            last[key] = r
            if r.status in COUNTED:
                counted.add(key)
        return [r for key, r in last.items() if r.status == "interrupted" and key not in counted]

    def resume_interrupted(self) -> None:
        self.store.recover()  # trials a killed process left "running" become interrupted
        again = self.unfinished()[: max(0, self.snapshot().budget_left)]
        for r in again:
            self.hooks.on_message(f"re-running trial {r.order} ({r.arm}, seed {r.seed}) left unfinished: "
                                  f"{r.reason or 'interrupted'}")
        self._resuming = {(r.config, r.seed, r.phase): self.out / r.run_dir for r in again}
        try:
            self.trials.run([Run(r.arm, r.params, r.seed, r.origin, r.phase, r.round, r.rationale, r.point,
                                 r.expected, r.swap, stop_above=r.stop_above) for r in again])
        finally:
            self._resuming = {}

    def _resume_checkpoint(self, run: Run, spec, run_dir: Path) -> None:
        """A re-run of an interrupted trial whose spec saves checkpoints starts from the interrupted
        trial's last one: moved into the re-run's own (new) directory, where the trainer resumes
        from it when the spec is the same (trainer/checkpoint.py)."""
        old = self._resuming.pop((config_id(run.arm, run.params), run.seed, run.phase), None)
        if old is None or spec.save_checkpoint_every is None:
            return
        from trainer.checkpoint import carry_checkpoint  # (torch: only where trials save checkpoints)

        try:
            if carry_checkpoint(old, run_dir):
                self.hooks.on_message(f"{run_dir.name} resumes from the checkpoint of {old.name}")
        except OSError as err:
            self.hooks.on_message(f"{run_dir.name} starts from step 0: the checkpoint of {old.name} could not "
                                  f"be moved: {err.strerror or err}")

    def write_missing_round_reports(self) -> None:
        """The report of every round in the store that has none (a kill cut its round short)."""
        records = self.records()
        for round_no in sorted({r.round for r in records}):
            if not round_path(self.out, round_no).exists():
                self.hooks.on_round_end(round_no, [r for r in records if r.round == round_no])

    # -- Ctrl-C: stop at a safe point, never inside a store write, a report or an import
    def check_stop(self) -> None:
        if self._stop:
            raise TrialInterrupted()
