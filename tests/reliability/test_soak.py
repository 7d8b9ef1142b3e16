"""A 200-trial soak on the replay executor with faults injected on a seeded schedule: trials that
time out, diverge (NaN), crash, are Ctrl-C'd, and the loop killed at four points of a trial (before
it runs, during it, after it, at its round's end). Every fault is resumed from the store alone, and
the store's counts by status reconcile exactly with the faults injected."""

from __future__ import annotations

import math
import random
from collections import Counter

from research_agents.config import load_study, make_plan
from research_agents.execution import Outcome, TrialInterrupted
from research_agents.execution.replay import ReplayExecutor
from research_agents.loop import LoopHooks, ResearchLoop
from research_agents.planners import SamplerPlanner
from research_agents.records import COUNTED, TrialMetrics
from research_agents.report.round import round_path
from research_agents.store import OptunaStore
from tests.reliability.helpers import write_study

BUDGET = 200
SEED = 7
# chance per trial of each fault ("kill-*": the process dies there, nothing after it runs)
FAULTS = {"timeout": 0.04, "nan": 0.04, "crash": 0.04, "ctrl-c": 0.03,
          "kill-before": 0.02, "kill-during": 0.02, "kill-after": 0.02, "kill-round-end": 0.02}


class Killed(BaseException):
    """SIGKILL as seen from inside the loop: no except or finally that writes runs after it."""


class FaultyExecutor(ReplayExecutor):
    """The replay executor with faults drawn from a seeded schedule; it counts what it injects."""

    def __init__(self, table, rng: random.Random, injected: Counter, study=None):
        super().__init__(table, study=study)
        self.rng, self.injected = rng, injected
        self.pending: str | None = None  # the fault drawn for the trial about to run

    def draw(self) -> str | None:
        x, edge = self.rng.random(), 0.0
        for fault, p in FAULTS.items():
            edge += p
            if x < edge:
                return fault
        return None

    def run(self, spec, run_dir, timeout_s, on_progress=None):
        fault, self.pending = self.pending, None
        if fault in ("timeout", "nan", "crash", "ctrl-c", "kill-during"):
            self.injected[fault] += 1
        if fault == "kill-during":
            raise Killed
        if fault == "ctrl-c":
            raise KeyboardInterrupt
        if fault == "timeout":
            return Outcome(status="timeout", metrics=None, reason=f"no result after {timeout_s:.0f} s",
                           log_path=None, wall_time_s=timeout_s)
        if fault == "crash":
            return Outcome(status="failed", metrics=None, reason="RuntimeError: injected crash", log_path=None,
                           wall_time_s=0.1)
        outcome = super().run(spec, run_dir, timeout_s, on_progress)
        if fault == "nan":
            nan = TrialMetrics.model_validate({**outcome.metrics.model_dump(), "status": "diverged",
                                               "reason": "train loss nan at step 3",
                                               "final": {"val_loss": math.nan, "train_loss": math.nan}})
            return Outcome(status="diverged", metrics=nan, reason=nan.reason, log_path=None, wall_time_s=0.1)
        return outcome


def test_a_200_trial_soak_with_faults_loses_nothing(tmp_path, table):
    rng, injected = random.Random(SEED), Counter()
    study = load_study(write_study(tmp_path / "rel.toml"))
    out = tmp_path / "run"
    executor = FaultyExecutor(table, rng, injected, study)

    def trial_start(record):
        executor.pending = executor.draw()
        if executor.pending == "kill-before":  # the trial is in the store as running, never ran
            injected["kill-before"] += 1
            raise Killed

    def trial_end(record):
        if rng.random() < FAULTS["kill-after"]:  # its result is in the store, nothing else happened
            injected["kill-after"] += 1
            raise Killed

    def round_end(round_no, records):  # a stand-in for the round report: one line, written whole
        if rng.random() < FAULTS["kill-round-end"]:
            injected["kill-round-end"] += 1
            raise Killed
        round_path(out, round_no).parent.mkdir(parents=True, exist_ok=True)
        round_path(out, round_no).write_text(f"round {round_no}: {len(records)} trial(s)\n")
        return ""

    finished: dict[int, object] = {}  # every trial seen finished, as it was then
    resumes = 0
    while True:
        store = OptunaStore.for_study(out, study)  # each resume starts from the store alone
        hooks = LoopHooks(on_trial_start=trial_start, on_trial_end=trial_end, on_round_end=round_end)
        loop = ResearchLoop(study, store, executor, SamplerPlanner("tpe", seed=0), out, make_plan(study, BUDGET),
                            hooks=hooks)
        try:
            loop.run()
            break
        except (Killed, TrialInterrupted):
            resumes += 1
        for r in OptunaStore.for_study(out, study, readonly=True).records():
            if r.id in finished:
                assert r == finished[r.id], "a finished trial changed"
            elif r.status != "running":
                finished[r.id] = r
        assert resumes < 200, "the soak does not converge"

    records = OptunaStore.for_study(out, study, readonly=True).records()
    status = Counter(r.status for r in records)
    lost = [i for i, r in finished.items() if next((x for x in records if x.id == i), None) != r]
    print(f"\nreliability: soak of {BUDGET} trials, {sum(injected.values())} faults injected {dict(injected)}, "
          f"{resumes} resumes, statuses {dict(status)}, trials lost: {len(lost)}")
    assert lost == []
    # every count reconciles with the faults injected
    assert status["timeout"] == injected["timeout"]
    assert status["diverged"] == injected["nan"]  # (the table has no diverged rows)
    assert status["failed"] == injected["crash"]
    assert status["interrupted"] == injected["ctrl-c"] + injected["kill-before"] + injected["kill-during"]
    assert status["running"] == 0
    counted = [(r.config, r.seed, r.phase) for r in records if r.status in COUNTED]
    assert len(counted) == len(set(counted)) == BUDGET  # nothing twice, the budget exactly
    assert status["completed"] == BUDGET - status["timeout"] - status["diverged"] - status["failed"]
    cut = {(r.config, r.seed, r.phase) for r in records if r.status == "interrupted"}
    assert cut <= set(counted)  # every interrupted trial was re-run
    assert all(f in injected for f in FAULTS), f"a fault kind never fired: {dict(injected)}"
    rounds = {r.round for r in records}  # every round reported, each with its own trials
    assert all(round_path(out, n).read_text() == f"round {n}: {sum(r.round == n for r in records)} trial(s)\n"
               for n in rounds)
