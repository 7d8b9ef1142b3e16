"""The research loop: plan -> execute -> analyse -> report, until the budget is spent.

Budget (config.plan): every training run counts (search and confirmation alike; interrupted runs
are re-run and not counted twice). A slice is reserved up front to re-run each arm's leaders on
fresh seeds, paired across arms; the noise floor and the final recommendation come from those.

Resuming loses nothing: a trial interrupted by Ctrl-C or left running by a killed process is
re-run once, the round reports a kill cut short are written from the store, and a trial never
trains into a directory that already exists.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from research_agents.analysis.stats import noise_floor
from research_agents.config.plan import Plan
from research_agents.config.space import config_id
from research_agents.config.study import Study, validate_params
from research_agents.execution.base import BaseExecutor, TrialInterrupted
from research_agents.execution.speculation import Ahead, Speculation
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.analysis.tuning import tuning_evidence
from research_agents.records import COUNTED, Bracket, CurveSummary, Proposal, Replicate, StopArm, TrialRecord, \
    by_config, curve_summary, ranked_configs
from research_agents.records import as_proposal as _as_proposal
from research_agents.records import spent as _spent
from research_agents.report.round import latest_round_report, round_path
from research_agents.signals import deferred_stop
from research_agents.store.base import BaseStore

MAX_PLANNER_RETRIES = 3


MIN_CONFIRM = 3  # fewest confirmation seeds an adaptive plan sizes down to (paired t needs df >= 2)


@dataclass
class Work:
    """Runs an accepted action asks for: one configuration on these search seeds."""

    arm: str
    params: dict
    seeds: list[int]
    origin: str
    rationale: str = ""
    kind: str = "try"


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
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _ahead: Speculation | None = field(default=None, init=False, repr=False)
    _predicted: tuple[int, list] = field(default=(-1, []), init=False, repr=False)  # (trials ended, specs)

    # -- bookkeeping
    def records(self) -> list[TrialRecord]:
        return self.store.records()

    def spent(self, phase: str | None = None, arm: str | None = None) -> int:
        return self.store.spent(phase, arm)

    def next_round(self) -> int:
        return max((r.round for r in self.records()), default=0) + 1

    # -- one trial
    def run_dir(self, arm: str, params: dict, seed: int) -> str:
        """trials/NNNN-ARM-CONFIG-sSEED, NNNN the trial's number; never a directory that exists (a
        trial of a lost store, or one killed before its record was written): that gets a suffix."""
        base = f"trials/{len(self.records()) + 1:04d}-{arm}-{config_id(arm, params)}-s{seed}"
        name, n = base, 1
        while (self.out / name).exists():
            n += 1
            name = f"{base}-{n}"
        return name

    def run_trials(self, runs: list[Run]) -> list[TrialRecord]:
        """Train `runs`, up to `workers` at once, started in the given order (so trial numbers and
        directories do not depend on timing); returns their records in that order. A run already
        trained ahead on an idle worker (speculation) is adopted instead of trained again. This
        thread is the only writer of the store. Ctrl-C: every running trial is stopped and recorded
        as interrupted (a resume re-runs it), and TrialInterrupted is raised."""
        done: dict[int, TrialRecord] = {}
        todo = [(i, run, self.spec(run)) for i, run in enumerate(runs)]
        running: dict[Future, tuple[int, TrialRecord, Ahead | None]] = {}
        pool, ahead = self._workers()
        if ahead is not None:  # this round's runs first: stop runs trained ahead that it does not make
            keep = {ahead.key(spec) for _, _, spec in todo}
            ahead.make_room(sum(1 for _, _, spec in todo if not ahead.has(spec)), keep, self.workers, 0)
        try:
            while todo or running:
                while todo and not self._stop:
                    i, run, spec = todo[0]
                    record = None
                    if ahead is not None and ahead.has(spec):
                        record, future, taken = self._adopt_trial(run, spec, ahead)
                    elif len(running) + (ahead.busy() if ahead else 0) < self.workers:
                        record, future, taken = self._start_trial(run, spec, pool)
                    if record is None:
                        break
                    todo.pop(0)
                    running[future] = (i, record, taken)
                if ahead is not None and not todo and not self._stop:
                    self._fill_idle(pool, ahead, len(running))
                self.check_stop()
                pending = list(running) + ([a.future for a in ahead.runs.values() if not a.future.done()]
                                           if ahead else [])
                finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                if ahead is not None:
                    ahead.reap()
                for future in sorted((f for f in finished if f in running), key=lambda f: running[f][0]):
                    i, record, taken = running.pop(future)
                    done[i] = self._finish_trial(record, future, taken)
        except (TrialInterrupted, KeyboardInterrupt):  # Ctrl-C here, or an executor that saw it
            self.executor.cancel()
            for future, (i, record, taken) in running.items():
                wait([future])
                self.store.finish(record, "interrupted", None, "interrupted by the user (Ctrl-C)")
            self.close()
            raise TrialInterrupted() from None
        return [done[i] for i in sorted(done)]

    def spec(self, run: Run):
        return self.study.trial_spec(run.arm, run.params, run.seed, preset=self.preset, overrides=self.overrides)

    def _workers(self) -> tuple[ThreadPoolExecutor, Speculation | None]:
        """The threads that wait on running trials (one per worker), and the runs trained ahead
        (with several workers, when the executor's trials take long enough to be worth it)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix="trial")
            if self.speculate and self.workers > 1 and self.executor.worth_speculating:
                self._ahead = Speculation(self.executor, self.out, self.study.trial_timeout_s)
        return self._pool, self._ahead

    def close(self) -> None:
        """Stop what was trained ahead and never adopted, and the worker threads."""
        if self._ahead is not None:
            self._ahead.close()
            if self._ahead.started:  # (added to a resumed run's earlier counts)
                before = self.store.get_meta("speculation") or {}
                self.store.set_meta("speculation", {k: before.get(k, 0) + v for k, v in self._ahead.summary().items()})
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._ahead = None

    def _start_trial(self, run: Run, spec, pool: ThreadPoolExecutor) -> tuple[TrialRecord, Future, None]:
        record = self._record_start(run)
        future = pool.submit(self.executor.run, spec, self.out / record.run_dir, self.study.trial_timeout_s,
                             functools.partial(self.hooks.on_progress, record))
        return record, future, None

    def _adopt_trial(self, run: Run, spec, ahead: Speculation) -> tuple[TrialRecord, Future, Ahead]:
        record = self._record_start(run)
        taken = ahead.take(spec, functools.partial(self.hooks.on_progress, record))
        return record, taken.future, taken

    def _record_start(self, run: Run) -> TrialRecord:
        run_dir = self.run_dir(run.arm, run.params, run.seed)
        record = self.store.start(run.arm, run.params, run.seed, run.origin, run.phase, run.round, run.rationale,
                                  run_dir)
        self.hooks.on_trial_start(record)
        return record

    def _finish_trial(self, record: TrialRecord, future: Future, taken: Ahead | None = None) -> TrialRecord:
        try:
            outcome = future.result() if taken is None else self._ahead.land(taken, self.out / record.run_dir)
        except (TrialInterrupted, KeyboardInterrupt):
            self.store.finish(record, "interrupted", None, "interrupted by the user (Ctrl-C)")
            raise TrialInterrupted() from None
        except Exception as err:  # an executor's own failure is this trial's recorded failure
            record = self.store.finish(record, "failed", None, f"executor error: {type(err).__name__}: {err}")
        else:
            record = self.store.finish(record, outcome.status, outcome.metrics, outcome.reason)
        self.hooks.on_trial_end(record)
        return record

    # -- speculation: idle workers train what the next round will likely make
    def _fill_idle(self, pool: ThreadPoolExecutor, ahead: Speculation, running: int) -> None:
        free = self.workers - running - ahead.busy()
        if free <= 0 or not self.speculate:
            return
        ended = sum(1 for r in self.records() if r.status != "running")
        if ended != self._predicted[0]:  # predicted again only once another trial has ended
            try:
                self._predicted = (ended, [self.spec(run) for run in self.predicted()])
            except Exception as err:  # a guess must never stop the study: no more guessing
                self.speculate = False
                self.hooks.on_message(f"no more runs trained ahead: predicting the next round failed: "
                                      f"{type(err).__name__}: {err}")
                return
        later = []  # each predicted run is started once
        for spec in self._predicted[1]:
            if ahead.key(spec) in ahead.runs:
                continue
            if free > 0:
                ahead.start(spec, pool)
                free -= 1
            else:
                later.append(spec)
        self._predicted = (ended, later)

    def predicted(self) -> list[Run]:
        """The runs the next batch would make if the trials running now changed nothing, for the
        arms that have none running (a running trial's result steers its own arm's next runs):
        what the planner (a copy: this never changes it, nor the store) says now, or the
        confirmation runs once the search would end. Empty where the planner cannot be asked ahead
        (an LLM)."""
        with self._counting_running():
            if any(n for a, n in self._wanted().items() if a not in self._exhausted):
                planner = self.planner.dry_copy()
                runs = self._search_runs(planner)[1] if planner is not None else []
            else:
                runs = self._confirm_runs()
        busy = {r.arm for r in self.records() if r.status == "running"}
        return [r for r in runs if r.arm not in busy]

    @contextlib.contextmanager
    def _counting_running(self):
        """The store as it will be once the running trials end: they count as spent; nothing may
        be written."""
        real = self.store
        self.store = _Projected(real)
        try:
            yield
        finally:
            self.store = real

    # -- phases
    def unfinished(self) -> list[TrialRecord]:
        """Trials to run again: each (config, seed, phase) whose last trial was interrupted (Ctrl-C,
        or left running by a killed process) and that has no run spending budget. Re-running it
        makes a new trial, so each interruption costs one re-run and the budget counts it once."""
        last: dict[tuple, TrialRecord] = {}
        counted: set[tuple] = set()
        for r in self.records():
            key = (r.config, r.seed, r.phase)
            last[key] = r
            if r.status in COUNTED:
                counted.add(key)
        return [r for key, r in last.items() if r.status == "interrupted" and key not in counted]

    def resume_interrupted(self) -> None:
        self.store.recover()  # trials a killed process left "running" become interrupted
        again = self.unfinished()[: max(0, self.plan.budget - self.spent())]
        for r in again:
            self.hooks.on_message(f"re-running trial {r.order} ({r.arm}, seed {r.seed}) left unfinished: "
                                  f"{r.reason or 'interrupted'}")
        self.run_trials([Run(r.arm, r.params, r.seed, r.origin, r.phase, r.round, r.rationale) for r in again])

    def write_missing_round_reports(self) -> None:
        """The report of every round in the store that has none (a kill cut its round short)."""
        records = self.records()
        for round_no in sorted({r.round for r in records}):
            if not round_path(self.out, round_no).exists():
                self.hooks.on_round_end(round_no, [r for r in records if r.round == round_no])

    def run(self) -> None:
        with deferred_stop(self):  # Ctrl-C, SIGTERM, SIGHUP: stop at the next safe point (signals.py)
            try:
                self.resume_interrupted()
                self.write_missing_round_reports()
                self.search()
                self.check_stop()
                self.confirm()
            finally:
                self.close()

    # -- Ctrl-C: stop at a safe point, never inside a store write, a report or an import
    def check_stop(self) -> None:
        if self._stop:
            raise TrialInterrupted()

    @contextlib.contextmanager
    def _deferred_ctrl_c(self):
        """While the loop runs, a first Ctrl-C asks it to stop at its next safe point (the running
        trials are stopped and recorded as interrupted); a second one stops it at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    # -- the budget: equal search allowance per arm, confirmation sized by the measured noise
    def confirm_count(self, records: list[TrialRecord] | None = None) -> int:
        """Confirmation seeds per leader: the plan's, or (adaptive plans) as many as the measured noise
        needs to tell the arm leaders apart, between MIN_CONFIRM and the plan's maximum."""
        most = len(self.plan.confirm_seeds)
        if not self.plan.adaptive or most <= MIN_CONFIRM:
            return most
        records = self.records() if records is None else records
        ev = [e for e in tuning_evidence(self.study, records).values() if e.leader_mean is not None]
        known = [e.threshold / 2 for e in ev if e.threshold is not None]
        if len(ev) < 2 or not known:
            return most  # the noise is not measured yet: keep the full reserve
        means = sorted(e.leader_mean for e in ev)
        gap = min(b - a for a, b in zip(means, means[1:]))
        # an arm not measured yet is assumed 3x noisier than the noisiest measured one
        sd = max(known) * (3 if len(known) < len(ev) else 1)
        if gap <= 0:
            return most
        # paired t at alpha 0.05 with 80% power: n ~ ((1.96 + 0.84) * sd_diff / gap)^2, sd_diff ~ sqrt(2) sd
        need = math.ceil((2.8 * math.sqrt(2) * sd / gap) ** 2)
        return max(MIN_CONFIRM, min(most, need))

    def confirm_seeds(self, records: list[TrialRecord] | None = None) -> list[int]:
        return self.plan.confirm_seeds[: self.confirm_count(records)]

    def search_allowance(self, arm: str) -> int:
        """Search runs the arm may spend (fairness: each arm its share of the search budget)."""
        if not self.plan.adaptive:
            return self.plan.search_share[arm]
        arms = self.study.arms
        records = self.records()
        seeds = self.confirm_seeds(records)
        confirmed = [r for r in records if r.phase == "confirm" and r.status in COUNTED]
        done = {(r.config, r.seed) for r in confirmed}
        # what confirming the current leaders still costs (a resumed study may have confirmed
        # others), plus a full confirmation for each leader an arm does not have yet
        reserve = 0
        for a in arms:
            leaders = self.leaders(a, records)
            reserve += (self.study.budget.leaders_per_arm - len(leaders)) * len(seeds)
            reserve += sum(1 for params in leaders for seed in seeds if (config_id(a, params), seed) not in done)
        search = max(0, self.plan.budget - len(confirmed) - reserve)
        total = sum(a.share for a in arms.values())
        share = {a: int(search * arms[a].share / total) for a in arms}
        for a in list(arms)[: search - sum(share.values())]:
            share[a] += 1
        return share[arm]

    def _wanted(self) -> dict[str, int]:
        per_round = self.study.planner.trials_per_round  # (never the workers: results must not depend on them)
        n_seeds = len(self.study.seeds.search)
        left = {a: max(0, (self.search_allowance(a) - self.spent("search", a)) // n_seeds)
                for a in self.study.arms}
        wanted = {a: 0 for a in left}
        slots = max(1, per_round // n_seeds)
        while slots > 0 and any(wanted[a] < left[a] for a in left):  # round-robin across arms
            for a in left:
                if slots > 0 and wanted[a] < left[a]:
                    wanted[a] += 1
                    slots -= 1
        return wanted

    def replicate_seeds(self, arm: str, params: dict, n: int) -> list[int]:
        """The next `n` replicate seeds of a configuration: the same pool for every configuration
        (so replicates pair across configs and arms), never a confirmation seed."""
        cid = config_id(arm, params)
        have = {r.seed for r in self.records() if r.config == cid and r.phase == "search" and r.status in COUNTED}
        banned = set(self.plan.confirm_seeds) | set(self.study.seeds.search)
        pool = (s for s in itertools.count(max(self.study.seeds.search) + 1) if s not in banned and s not in have)
        return list(itertools.islice(pool, n))

    def search(self) -> None:
        while True:
            self.check_stop()
            round_no, runs = self._search_runs()
            if round_no is None:
                return
            ran = self.run_trials(runs)
            if ran:
                self.hooks.on_round_end(round_no, ran)

    def _search_runs(self, planner: BasePlanner | None = None) -> tuple[int | None, list[Run]]:
        """The next search round and its runs (None: the search is over). The round is one batch:
        its runs are fixed before any of them trains, so parallel workers give the same study as
        one. With `planner` (a dry copy) nothing is recorded and no arm is marked exhausted."""
        dry = planner is not None
        wanted = {a: n for a, n in self._wanted().items() if a not in self._exhausted}
        if not any(wanted.values()):
            return None, []
        round_no = self.next_round()
        work, stopped = self._plan_round(round_no, wanted, planner or self.planner, dry)
        if not dry:
            self._exhausted |= stopped
            for arm in wanted:
                if wanted[arm] and arm not in stopped and not any(w.arm == arm for w in work):
                    self._exhausted.add(arm)
                    self.hooks.on_message(f"planner {self.planner.name} has nothing new for arm {arm}: "
                                          "its search ends here")
        left = {a: self.search_allowance(a) - self.spent("search", a) for a in wanted}
        runs = []
        for w in work:
            for seed in w.seeds[: max(0, left[w.arm])]:
                runs.append(Run(w.arm, w.params, seed, w.origin, "search", round_no, w.rationale))
                left[w.arm] -= 1
        return round_no, runs

    def _plan_round(self, round_no: int, wanted: dict[str, int], planner: BasePlanner,
                    dry: bool = False) -> tuple[list[Work], set[str]]:
        """Ask the planner for research actions, validate them against the space, the budget and the
        history; ask again for what was rejected (bounded). Returns the runs to make and the arms
        the planner stopped. `dry`: record nothing, say nothing (a prediction)."""
        work: list[Work] = []
        stopped: set[str] = set()
        rejections: list[tuple[Proposal, str]] = []
        seen = {r.config for r in self.records() if r.phase == "search"}
        # every adaptive planner starts an arm from the same point, when the study names one
        # (a manual grid runs exactly its points)
        for arm, n in wanted.items():
            start = self.study.arms[arm].start
            if n and start is not None and planner.name != "grid" and config_id(arm, start) not in seen:
                work.append(Work(arm, start, list(self.study.seeds.search), "default",
                                 "the study's starting point for this arm"))
                seen.add(config_id(arm, start))
        n_seeds = len(self.study.seeds.search)
        for attempt in range(MAX_PLANNER_RETRIES + 1):
            runs = {a: sum(len(w.seeds) for w in work if w.arm == a) for a in wanted}
            need = {a: n - -(-runs[a] // n_seeds) for a, n in wanted.items() if a not in stopped}
            need = {a: n for a, n in need.items() if n > 0}
            if not need:
                break
            records = self.records()
            ctx = PlanningContext(study=self.study, wanted=need, history=records, round=round_no,
                                  round_report=self.latest_round_report(), budget_left=self.plan.budget - self.spent(),
                                  noise_sd=self.noise_sd(), rejections=list(rejections),
                                  evidence=tuning_evidence(self.study, records),
                                  search_left={a: self.search_allowance(a) - self.spent("search", a)
                                               for a in self.study.arms},
                                  preset=self.preset, overrides=self.overrides, curve_of=self.curve)
            new_rejections = 0
            for action in planner.propose(ctx):
                for item, reason in self._expand(action, ctx, need, seen, runs):
                    if reason:
                        rejections.append((item, reason))
                        new_rejections += 1
                        continue
                    if isinstance(item, StopArm):
                        stopped.add(item.arm)
                        if dry:
                            continue
                        self.store.append_meta("actions", [{"round": round_no, "kind": "stop", "arm": item.arm,
                                                            "origin": item.origin, "reason": item.rationale}])
                        self.hooks.on_message(f"{item.origin}: stop searching {item.arm}: {item.rationale}")
                        continue
                    work.append(item)
                    runs[item.arm] = runs.get(item.arm, 0) + len(item.seeds)
                    if item.kind == "try":
                        seen.add(config_id(item.arm, item.params))
                        need[item.arm] -= 1
                    else:
                        need[item.arm] -= -(-len(item.seeds) // n_seeds)
            # planners that validate and repair by themselves (LLM) hand over what they rejected
            rejections.extend(planner.drain_rejections())
            if not new_rejections:
                break
        if not dry:
            self._record_rejections(round_no, rejections)
        return work, stopped

    def _expand(self, action, ctx: PlanningContext, need: dict[str, int], seen: set[str],
                runs: dict[str, int]) -> list[tuple[Any, str | None]]:
        """An action as the runs it asks for (or why not): a bracket becomes the missing neighbours."""
        if action.arm not in self.study.arms:
            return [(_as_proposal(action), f"unknown arm {action.arm!r}")]
        if isinstance(action, StopArm):
            return [(action, None)]
        if need.get(action.arm, 0) <= 0:
            return [(_as_proposal(action), f"arm {action.arm!r} needs no more proposals this round")]
        if isinstance(action, Bracket):
            ev = ctx.evidence.get(action.arm)
            knob = ev.knob(action.knob) if ev is not None else None
            if knob is None:
                return [(_as_proposal(action), f"{action.knob!r} is not a searched knob of arm {action.arm!r}")]
            if not knob.to_try:
                return [(_as_proposal(action), f"{action.knob} is already {knob.status}: nothing to bracket")]
            out = []
            for value in knob.to_try:
                p = Proposal(arm=action.arm, params={**ev.leader_params, action.knob: value}, origin=action.origin,
                             rationale=f"bracket {action.knob} ({knob.status}): {action.rationale}".strip(": "))
                out += self._expand(p, ctx, need, seen, runs)
            return out
        if isinstance(action, Replicate):
            cid = config_id(action.arm, action.params)
            if not any(r.config == cid and r.ok for r in ctx.history):
                return [(_as_proposal(action), "replicate: no completed run of this configuration to repeat")]
            left = self.search_allowance(action.arm) - self.spent("search", action.arm) - runs.get(action.arm, 0)
            if left < 1:
                return [(_as_proposal(action), f"replicate: arm {action.arm!r} has no search runs left")]
            seeds = self.replicate_seeds(action.arm, action.params, min(action.seeds, left))
            return [(Work(action.arm, action.params, seeds, action.origin, action.rationale or "replicate",
                          kind="replicate"), None)]
        # a new point
        if action.origin != "grid":  # grid points were checked when the grid was built
            problems = validate_params(self.study, action.arm, action.params, preset=self.preset,
                                       overrides=self.overrides)
            if problems:
                return [(action, "; ".join(problems))]
        if config_id(action.arm, action.params) in seen:
            return [(action, "duplicate of an earlier trial")]
        return [(Work(action.arm, action.params, list(self.study.seeds.search), action.origin, action.rationale),
                 None)]

    def _record_rejections(self, round_no: int, rejections: list[tuple[Proposal, str]]) -> None:
        if not rejections:
            return
        self.store.append_meta("rejections", [{"round": round_no, "arm": p.arm, "params": p.params,
                                               "origin": p.origin, "reason": why} for p, why in rejections])
        for p, why in rejections:
            self.hooks.on_message(f"rejected {p.origin} proposal for {p.arm} {json.dumps(p.params)}: {why}")

    def leaders(self, arm: str, records: list[TrialRecord] | None = None) -> list[dict]:
        """The arm's best search configs by mean val loss (completed runs only)."""
        records = self.records() if records is None else records
        ranked = ranked_configs(r for r in records if r.arm == arm and r.phase == "search")
        return [rs[0].params for rs in ranked[: self.study.budget.leaders_per_arm]]

    def confirm(self) -> None:
        """Re-run each arm's leaders on the fresh confirmation seeds, interleaved so pairs line up."""
        runs = self._confirm_runs()
        ran = self.run_trials(runs)
        if ran:
            self.hooks.on_round_end(runs[0].round, ran)

    def _confirm_runs(self) -> list[Run]:
        leaders = {arm: self.leaders(arm) for arm in self.study.arms}
        done = {(r.config, r.seed) for r in self.records() if r.phase == "confirm" and r.status in COUNTED}
        todo = [(arm, params, seed) for seed in self.confirm_seeds() for arm, configs in leaders.items()
                for params in configs if (config_id(arm, params), seed) not in done]
        todo = todo[: max(0, self.plan.budget - self.spent())]
        round_no = self.next_round()
        return [Run(arm, params, seed, "confirm", "confirm", round_no, "leader re-run on a fresh seed")
                for arm, params, seed in todo]

    # -- what the planner reads
    def latest_round_report(self) -> str:
        return latest_round_report(self.out)

    def curve(self, record: TrialRecord) -> CurveSummary | None:
        """A finished trial's curve summary from its metrics.json (read once, on demand)."""
        if record.status not in COUNTED:
            return None
        if record.id not in self._curves:
            metrics = record.metrics(self.out)
            self._curves[record.id] = curve_summary(metrics) if metrics is not None else None
        return self._curves[record.id]

    def noise_sd(self) -> float | None:
        groups = {cid: [r.val_loss for r in rs] for cid, rs in by_config(r for r in self.records() if r.ok).items()}
        return noise_floor(groups).pooled_sd


class _Projected:
    """A store as it will be once its running trials end (they count as spent), for a prediction;
    it refuses every write."""

    def __init__(self, store: BaseStore):
        self._store = store

    def records(self) -> list[TrialRecord]:
        return self._store.records()

    def spent(self, phase: str | None = None, arm: str | None = None) -> int:
        return _spent(self.records(), phase, arm, statuses=(*COUNTED, "running"))

    def get_meta(self, key: str, default: Any = None) -> Any:
        return self._store.get_meta(key, default)

    def __getattr__(self, name: str):
        raise RuntimeError(f"a prediction must not use the store's {name}")
