"""Parallel trials: --workers N gives the serial run's numbers; the warm fork server trains
exactly as a fresh interpreter does; a killed trial loses only itself; Ray trials match local ones.

(Ctrl-C and SIGKILL during a parallel batch: tests/test_loop.py, whose runs use 2 workers.)
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from research_agents.cli import main
from research_agents.config import load_study
from research_agents.execution import LocalExecutor
from research_agents.loop import ResearchLoop
from research_agents.planners.base import BasePlanner
from research_agents.store import OptunaStore

ROOT = Path(__file__).resolve().parents[1]
REPLAY = ROOT / "benchmarks" / "data" / "replay_fair.csv"


def _numbers(out: Path) -> list[dict]:
    """results.csv without its wall-clock column: what must not depend on how trials were run."""
    with (out / "results.csv").open() as fh:
        return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(fh)]


def _spec(fast_study: Path, seed: int = 0, steps: int = 20, lr: float = 0.02):
    study = load_study(fast_study)
    return study.trial_spec("muon", {"lr": lr, "ns_steps": 5}, seed, overrides={"steps": steps})


def _replay_numbers(tmp_path: Path, workers: int) -> list[dict]:
    """The default study at budget 20 on the replay table with `workers`; its results.csv numbers."""
    out = tmp_path / f"w{workers}"
    assert main(["run", "--budget", "20", "--executor", f"replay:{REPLAY}", "--workers", str(workers),
                 "--out", str(out)]) == 0
    return _numbers(out)


def test_replay_study_with_three_workers_equals_one_worker(tmp_path):
    one = _replay_numbers(tmp_path, 1)
    assert len(one) == 20 and _replay_numbers(tmp_path, 3) == one


def test_more_workers_than_a_round_holds_change_nothing_and_are_named(tmp_path, capsys):
    """A round is the study's trials_per_round whatever the workers (results never depend on the
    machine); the console says how many workers can be busy and how to use more."""
    assert _replay_numbers(tmp_path, 8) == _replay_numbers(tmp_path, 1)
    assert "raise planner.trials_per_round" in capsys.readouterr().out


def _paced_study(tmp_path: Path, name: str, workers: int, speculate: bool = True, planner=None, budget: int = 20):
    """The default study on the replay table, each trial taking 1/50 of its recorded time."""
    from research_agents.config import make_plan
    from research_agents.execution.replay import ReplayExecutor
    from research_agents.loop import LoopHooks
    from research_agents.planners.policy import PolicyPlanner

    study = load_study(ROOT / "experiments" / "muon_vs_adamw.toml")
    out = tmp_path / name
    messages: list[str] = []
    loop = ResearchLoop(study, OptunaStore.for_study(out, study), ReplayExecutor(REPLAY, seed=0, pace=0.02),
                        planner or PolicyPlanner(seed=0), out, make_plan(study, budget, adaptive=True),
                        hooks=LoopHooks(on_message=messages.append), workers=workers, speculate=speculate)
    loop.run()
    assert not [m for m in messages if "predicting" in m], messages  # every guess could be made
    return loop


def _study_numbers(loop) -> list[tuple]:
    return [(r.order, r.round, r.phase, r.arm, r.config, r.seed, r.status, r.val_loss, r.run_dir)
            for r in loop.records()]


def test_runs_trained_ahead_on_idle_workers_are_adopted_and_change_nothing(tmp_path):
    """Rounds of 3 leave one of 2 workers idle; the loop trains the next round's likely runs there.
    The study is the serial one, trial for trial, each adopted run's files are in its trial's
    directory, and nothing trained ahead is left over."""
    serial = _paced_study(tmp_path, "serial", workers=1)
    ahead = _paced_study(tmp_path, "ahead", workers=2)
    assert _study_numbers(ahead) == _study_numbers(serial) and len(serial.records()) == 20
    used = ahead.store.get_meta("speculation")
    assert used["started"] >= 2 and used["used"] >= 2, used
    assert used["started"] == used["used"] + used["discarded"]
    assert serial.store.get_meta("speculation") is None  # one worker is never idle
    for r in ahead.records():
        assert (ahead.out / r.run_dir / "metrics.json").is_file()
    assert not (ahead.out / ".speculative").exists()


class _Drifting(BasePlanner):
    """A pure-looking planner whose next point depends on how many trials have ended: asked while a
    trial runs, it predicts a run the round will not make."""

    name = "drifting"
    pure = True

    def propose(self, ctx):
        from research_agents.actions import Proposal

        done = sum(1 for r in ctx.history if r.status != "running")
        # (LRs a factor of 2 apart take different times in the table: the round's runs end apart)
        return [Proposal(arm=arm, params={**ctx.study.arms[arm].start, "lr": ctx.study.arms[arm].start["lr"]
                                          * 2.0 ** ((done + i) % 5 - 2) * (1 + 0.001 * done + 0.0001 * i)},
                         origin="random", rationale="drift")
                for arm, n in ctx.wanted.items() for i in range(n)]



def test_runs_trained_ahead_that_no_round_makes_are_thrown_away_and_never_counted(tmp_path):
    serial = _paced_study(tmp_path, "serial", workers=1, planner=_Drifting(), budget=24)
    ahead = _paced_study(tmp_path, "ahead", workers=2, planner=_Drifting(), budget=24)
    used = ahead.store.get_meta("speculation")
    assert used["discarded"] >= 1, used
    assert _study_numbers(ahead) == _study_numbers(serial)
    assert len(ahead.records()) == 24 == ahead.spent()
    assert not (ahead.out / ".speculative").exists()


def test_a_run_trained_ahead_answers_only_its_exact_spec(tmp_path):
    """Adopted means the same trial spec (seed included), the same outcome as training it then, and
    its files in the trial's directory; a run nobody asks for is stopped to make room."""
    from concurrent.futures import ThreadPoolExecutor

    from research_agents.execution.replay import ReplayExecutor
    from research_agents.execution.speculation import SCRATCH, Speculation

    study = load_study(ROOT / "experiments" / "muon_vs_adamw.toml")
    spec = study.trial_spec("muon", {"lr": 0.08}, 0, overrides={})
    other_seed, other_lr = spec.model_copy(update={"seed": 1}), spec.model_copy(update={"lr": 0.16})
    executor = ReplayExecutor(REPLAY, seed=0, pace=0.01)
    ahead = Speculation(executor, tmp_path, timeout_s=60)
    with ThreadPoolExecutor(2) as pool:
        ahead.start(spec, pool)
        assert ahead.has(spec) and not ahead.has(other_seed) and not ahead.has(other_lr)
        assert ahead.take(other_seed, print) is None
        taken = ahead.take(spec, print)
        outcome = ahead.land(taken, tmp_path / "trials" / "0001")
        direct = ReplayExecutor(REPLAY, seed=0).run(spec, tmp_path / "direct", 60)
        assert outcome.status == "completed" and outcome.metrics.final == direct.metrics.final
        assert (tmp_path / "trials" / "0001" / "metrics.json").is_file()
        executor.pace = 100.0  # (minutes, unless stopped)
        ahead.start(other_lr, pool)
        try:
            ahead.make_room(needed=1, keep=set(), workers=2, running=0)  # a worker is free: nothing stops
            assert ahead.has(other_lr)
            ahead.make_room(needed=1, keep={ahead.key(other_lr)}, workers=2, running=1)  # wanted: kept
            assert ahead.has(other_lr)
            ahead.make_room(needed=1, keep=set(), workers=2, running=1)  # its worker is needed: stopped
            assert not ahead.has(other_lr)
        finally:
            ahead.close()
    assert ahead.summary() == {"started": 2, "used": 1, "discarded": 1}
    assert not (tmp_path / SCRATCH).exists()


def test_no_speculation_when_switched_off(tmp_path):
    loop = _paced_study(tmp_path, "off", workers=2, speculate=False)
    assert loop.store.get_meta("speculation") is None and len(loop.records()) == 20


def test_parallel_real_training_gives_the_serial_numbers(tmp_path, fast_study):
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["run", "--study", str(fast_study), "--budget", "8", "--planner", "random",
                     "--workers", str(workers), "--out", str(out)]) == 0
        runs[workers] = _numbers(out)
    assert len(runs[1]) == 8 and runs[2] == runs[1]
    assert len({row["val_loss"] for row in runs[1]}) > 1  # real, distinct results


def test_warm_fork_server_trains_exactly_as_a_fresh_interpreter(tmp_path, fast_study):
    spec = _spec(fast_study)
    warm = LocalExecutor(warm=True).run(spec, tmp_path / "warm", 300)
    cold = LocalExecutor(warm=False).run(spec, tmp_path / "cold", 300)
    assert warm.status == cold.status == "completed", (warm.reason, cold.reason)
    assert warm.metrics.final == cold.metrics.final
    assert [h.train_loss for h in warm.metrics.history] == [h.train_loss for h in cold.metrics.history]
    assert (tmp_path / "warm" / "trainer.log").read_text().count('"event": "step"') > 0  # progress is logged


def test_a_killed_trial_loses_only_itself(tmp_path, fast_study):
    """Two trials at once from the fork server; SIGKILL one: it fails with the signal named, the
    other completes, and the server goes on serving trials."""
    executor = LocalExecutor(warm=True)
    outcomes = {}

    def run(name, spec):
        outcomes[name] = executor.run(spec, tmp_path / name, 300)

    threads = {name: threading.Thread(target=run, args=(name, _spec(fast_study, seed=i, steps=400)))
               for i, name in enumerate(("a", "b"))}
    for t in threads.values():
        t.start()
    deadline = time.time() + 120
    while len(executor._live) < 2 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # both training
    os.kill(next(iter(executor._live)).pid, signal.SIGKILL)
    for t in threads.values():
        t.join(300)
    statuses = sorted((o.status, o.reason or "") for o in outcomes.values())
    assert [s for s, _ in statuses] == ["completed", "failed"], statuses
    assert "SIGKILL" in statuses[1][1]
    again = executor.run(_spec(fast_study, steps=10), tmp_path / "after", 300)
    assert again.status == "completed", again.reason


def test_cancel_stops_every_running_trial(tmp_path, fast_study):
    executor = LocalExecutor(warm=True)
    outcomes = []
    threads = [threading.Thread(target=lambda i=i: outcomes.append(
        executor.run(_spec(fast_study, seed=i, steps=5000), tmp_path / f"t{i}", 300))) for i in range(2)]
    for t in threads:
        t.start()
    deadline = time.time() + 120
    while len(executor._live) < 2 and time.time() < deadline:
        time.sleep(0.05)
    started = time.time()
    executor.cancel()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 2 and all(o.status == "failed" for o in outcomes)
    assert time.time() - started < 30  # stopped, not trained to the end (5000 steps)


def test_a_trial_timeout_kills_only_that_trial(tmp_path, fast_study):
    out = LocalExecutor(warm=True).run(_spec(fast_study, steps=5000), tmp_path / "slow", timeout_s=3)
    assert out.status == "timeout" and "3 s" in out.reason


# ----------------------------------------------------------------- Ray: a real local cluster, no mock


def test_unreachable_ray_address_is_one_line(tmp_path, fast_study):
    """In a fresh process (this one may hold a Ray session): exit 2, one line, nothing written."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'research-agents[ray]'")
    out = tmp_path / "r"
    done = subprocess.run([sys.executable, "-m", "research_agents", "run", "--study", str(fast_study), "--budget", "8",
                           "--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          timeout=120)
    assert done.returncode == 2 and "cannot start or reach Ray" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout and not out.exists()


def test_ray_trial_equals_the_local_trial(tmp_path, fast_study, local_ray):
    from research_agents.execution.ray import RayExecutor

    spec = _spec(fast_study, seed=3)
    executor = RayExecutor()
    assert executor.default_workers() == 2
    remote = executor.run(spec, tmp_path / "ray", 300)
    local = LocalExecutor(warm=False).run(spec, tmp_path / "local", 300)
    assert remote.status == local.status == "completed", (remote.reason, local.reason)
    assert remote.metrics.final == local.metrics.final
    for name in ("metrics.json", "spec.json", "trainer.log"):  # (a local Ray trains in the driver's directory)
        assert (tmp_path / "ray" / name).is_file()
    assert not list((tmp_path / "ray").glob(".ray-shared*"))


def test_ray_executor_runs_a_study_with_the_local_numbers(tmp_path, fast_study, local_ray):
    args = ["run", "--study", str(fast_study), "--budget", "8", "--planner", "random"]
    assert main([*args, "--executor", "ray", "--out", str(tmp_path / "ray")]) == 0
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert _numbers(tmp_path / "ray") == _numbers(tmp_path / "local")
    assert "ray" in (tmp_path / "ray" / "report.md").read_text()


def test_a_failing_ray_trial_is_a_recorded_failure(tmp_path, fast_study, local_ray):
    from research_agents.execution.ray import RayExecutor

    spec = _spec(fast_study).model_copy(update={"steps": 10})
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"source": "/nonexistent/corpus.txt"})})
    out = RayExecutor().run(spec, tmp_path / "bad", 300)
    assert out.status == "failed" and out.reason


def test_each_concurrent_trial_gets_a_gpu_of_its_own(tmp_path, fast_study, monkeypatch):
    """On CUDA each running trial is pinned to one free device (CUDA_VISIBLE_DEVICES), one trial per
    device; the default worker count is the device count. (The child's env is captured: no GPU here.)"""
    executor = LocalExecutor(gpus=["3", "5"], warm=False)
    assert executor.default_workers() == 2
    seen, both_running = [], threading.Barrier(2, timeout=60)

    def fake_start(argv, log_path, env):
        seen.append(env["CUDA_VISIBLE_DEVICES"])
        if len(seen) <= 2:
            both_running.wait()  # the two trials hold their devices at the same time
        return subprocess.Popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(executor, "_spawn", fake_start)
    threads = [threading.Thread(target=executor.run, args=(_spec(fast_study, seed=i), tmp_path / f"t{i}", 60))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(seen) == ["3", "5"]
    executor.run(_spec(fast_study), tmp_path / "again", 60)  # both devices were given back
    assert seen[-1] in ("3", "5") and len(seen) == 3


def test_cpu_workers_default_to_cores_over_threads_per_trial(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert LocalExecutor(warm=False).default_workers() == 4
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert LocalExecutor(warm=False).default_workers() == 16
