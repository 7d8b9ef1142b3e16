"""SIGKILL the driver at random points (a fixed seed), resume each time: nothing lost, nothing run
twice, the budget spent exactly, every round reported, the lock never left behind."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from research_agents.config import load_study
from research_agents.records import COUNTED
from research_agents.report.round import round_path
from research_agents.session import lock_holder
from research_agents.store import OptunaStore
from tests.reliability.helpers import ROOT, cli, cli_env, write_study

KILLS = 20
BUDGET = 40
SEED = 20240612


class Driver:
    """`python -m research_agents ARGS` in its own process, and what its console says as it goes:
    `started` once it has opened its store (the "budget ..." line), `trials` each trial start,
    `ended` once its output closed (it exited: no trial will start, so nothing waits for one)."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "research_agents", *args], cwd=ROOT, env=cli_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.started = threading.Event()
        self.trials = threading.Semaphore(0)
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("budget "):
                self.started.set()
            elif line.startswith("trial ") and (": search " in line or ": confirm " in line):
                self.trials.release()
        self.ended.set()
        self.trials.release(3)  # wake a waiter at once (it used to sit out its whole timeout)

    def wait_for_trial(self, n: int, timeout_s: float = 60) -> bool:
        deadline = time.time() + timeout_s
        for _ in range(n):
            if not self.trials.acquire(timeout=max(0.0, deadline - time.time())):
                return False
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL and flock semantics of Linux")
def test_sigkill_at_random_points_loses_nothing(tmp_path, table):
    rng = random.Random(SEED)
    study_file = write_study(tmp_path / "rel.toml", trials_per_round=2)
    study = load_study(study_file)
    out = tmp_path / "out"
    budget = BUDGET

    def args() -> list[str]:  # tpe: a planner that always has a new point, so the budget is spent exactly
        return ["run", "--study", str(study_file), "--budget", str(budget), "--planner", "tpe",
                "--executor", f"replay:{table}", "--out", str(out)]

    finished: dict[int, object] = {}  # every trial seen finished, as it was then
    where: Counter = Counter()
    kills = 0
    while kills < KILLS:
        driver = Driver(args())
        proc, started = driver.proc, driver.started
        if kills % 4 == 3:  # a quarter during start-up (imports, checks, the store opening)
            time.sleep(rng.uniform(0.0, 2.0))
        elif kills % 2:  # a quarter anywhere once the run is under way (planning, plots, reports...)
            started.wait(60)
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # half just after the 1st to 3rd trial of this process starts (its run and its records)
            driver.wait_for_trial(rng.randint(1, 3))
            time.sleep(rng.uniform(0.0, 0.05))
        if driver.ended.is_set():  # its output closed: let it exit (not killed on its way out)
            proc.wait(60)
        if proc.poll() is not None:  # it finished first (a fast machine): resume with a larger budget
            assert proc.returncode == 0
            budget += 10
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        assert lock_holder(out) is None, "a killed run left its lock held"
        if not started.is_set():
            where["during start-up"] += 1
        if not (out / "run.json").exists():
            continue
        records = OptunaStore.for_study(out, study, readonly=True).records()  # never damaged by a kill
        if started.is_set():
            where["with a trial running" if any(r.status == "running" for r in records) else "between trials"] += 1
        for r in records:
            if r.id in finished:
                assert r == finished[r.id], "a finished trial changed after a kill"
            elif r.status != "running":
                finished[r.id] = r
        counted = [(r.config, r.seed, r.phase) for r in records if r.status in COUNTED]
        assert len(counted) == len(set(counted)) and len(counted) <= budget

    done = cli(*args())
    assert done.returncode == 0, done.stderr
    records = OptunaStore.for_study(out, study, readonly=True).records()
    lost = [i for i, r in finished.items() if next((x for x in records if x.id == i), None) != r]
    counted = [(r.config, r.seed, r.phase) for r in records if r.status in COUNTED]
    interrupted = [r for r in records if r.status == "interrupted"]
    print(f"\nreliability: {kills} SIGKILLs ({dict(where)}), {len(interrupted)} trial(s) cut short and re-run, "
          f"{len(counted)} counted trials of budget {budget}, trials lost: {len(lost)}")
    assert lost == []
    assert len(counted) == len(set(counted)) == budget  # each (config, seed, phase) once, the budget exactly
    assert not [r for r in records if r.status == "running"]  # every killed trial recovered...
    assert all((r.config, r.seed, r.phase) in set(counted) for r in interrupted)  # ...and re-run
    assert len({r.run_dir for r in records}) == len(records)  # no trial directory shared
    assert all(round_path(out, n).exists() for n in {r.round for r in records})
