"""The research loop end to end: budget, confirmation, resume after SIGKILL, bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from research_agents.actions import Proposal
from research_agents.cli import main
from research_agents.config import BadInput, Study, load_study, make_plan
from research_agents.execution import BaseExecutor, Outcome
from research_agents.loop import LoopHooks, ResearchLoop
from research_agents.planners import SamplerPlanner
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.records import COUNTED, TrialMetrics
from research_agents.store import OptunaStore
from tests.conftest import fast_study_toml

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- loop logic on a fake executor


class FakeExecutor(BaseExecutor):
    """Loss is a smooth function of lr plus seed noise: no training, same bookkeeping."""

    def __init__(self):
        self.calls = []

    def run(self, spec, run_dir, timeout_s, on_progress=None):
        self.calls.append((spec.optimizer, spec.lr, spec.seed))
        best = 0.03 if spec.optimizer == "muon" else 0.003
        loss = 4.0 + (0.0 if spec.optimizer == "muon" else 0.3) + 0.2 * math.log(spec.lr / best) ** 2
        loss += 0.01 * ((spec.seed * 7919) % 13 - 6) / 6
        metrics = {"final": {"val_loss": loss, "val_accuracy": 0.2, "val_perplexity": math.exp(loss),
                             "train_loss": loss}, "wall_time_s": 1.0, "optimizer_steps": spec.steps,
                   "tokens_seen": spec.steps * spec.tokens_per_step, "status": "completed", "history": [],
                   "spec": spec.model_dump(mode="json")}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        return Outcome(status="completed", metrics=TrialMetrics.model_validate(metrics), reason=None, log_path=None,
                       wall_time_s=1.0)


def _loop(tmp_path, study: Study, budget: int, planner=None, executor=None):
    plan = make_plan(study, budget)
    store = OptunaStore.for_study(tmp_path, study)
    planner = planner or SamplerPlanner("tpe", seed=0, startup_trials=2)
    return ResearchLoop(study, store, executor or FakeExecutor(), planner, tmp_path, plan)


def test_budget_split_and_paired_confirmation(tmp_path, fast_study):
    study = load_study(fast_study)
    loop = _loop(tmp_path, study, budget=10)
    loop.run()
    records = loop.records()
    counted = [r for r in records if r.status in COUNTED]
    assert len(counted) == 10
    search = [r for r in counted if r.phase == "search"]
    confirm = [r for r in counted if r.phase == "confirm"]
    assert len(confirm) == 2 * 2 and len(search) == 6
    assert {r.arm for r in search if r.arm == "muon"} and sum(r.arm == "muon" for r in search) == 3
    # confirmation seeds are fresh and the same for both arms (paired)
    assert {r.seed for r in confirm if r.arm == "muon"} == {r.seed for r in confirm if r.arm == "adamw"}
    assert not {r.seed for r in confirm} & set(study.seeds.search)
    # each arm confirms its best search config
    for arm in study.arms:
        best = min((r for r in search if r.arm == arm), key=lambda r: r.val_loss)
        assert {r.config for r in confirm if r.arm == arm} == {best.config}
    # the study's start point was the first trial of each arm, for every planner
    first = {arm: next(r for r in records if r.arm == arm) for arm in study.arms}
    assert first["muon"].origin == "default" and first["muon"].params == {"lr": 0.02}


def test_confirmation_seeds_never_overlap_search_seeds(fast_study):
    # search seeds sit inside the confirmation range: the plan must skip them, not reuse them
    study = load_study(fast_study)
    study = study.model_copy(update={"seeds": study.seeds.model_copy(
        update={"search": [1000, 1002], "confirm_start": 1000, "confirm": 3})})
    plan = make_plan(study, budget=20)
    assert plan.confirm_seeds == [1001, 1003, 1004]
    assert not set(plan.confirm_seeds) & set(study.seeds.search)


def test_make_plan_rejects_a_budget_that_cannot_hold_the_protocol(fast_study):
    study = load_study(fast_study)
    with pytest.raises(BadInput, match="too small"):
        make_plan(study, 5)
    plan = make_plan(study, 20)
    assert plan.budget - plan.search_budget == 2 * 2 and plan.search_share == {"muon": 8, "adamw": 8}


class DuplicatingPlanner(BasePlanner):
    name = "dup"

    def __init__(self):
        self.calls = 0

    def propose(self, ctx: PlanningContext):
        self.calls += 1
        out = []
        for arm in ctx.wanted:
            # always the start point (a duplicate after round 1) plus an out-of-range value
            start = ctx.study.arms[arm].start
            out.append(Proposal(arm=arm, params=start, origin="random"))
            out.append(Proposal(arm=arm, params={"lr": 99.0}, origin="random"))
        return out


def test_duplicates_and_out_of_range_are_rejected_with_reasons(tmp_path, fast_study):
    study = load_study(fast_study)
    planner = DuplicatingPlanner()
    loop = _loop(tmp_path, study, budget=8, planner=planner)
    loop.run()
    rejections = loop.store.get_meta("rejections")
    reasons = {r["reason"] for r in rejections}
    assert "duplicate of an earlier trial" in reasons
    assert any("lr: 99.0 is outside" in r for r in reasons)
    # the planner was asked again, a bounded number of times, then the search of each arm ended
    assert planner.calls <= 1 + 3 + 1 + 3
    search = [r for r in loop.records() if r.phase == "search"]
    assert len({(r.arm, r.config) for r in search}) == len(search)  # nothing ran twice


class QuestionReader(BasePlanner):
    """Records the open questions each planning context carries; proposes a new lr each time."""

    name = "reader"

    def __init__(self, wants: bool):
        self.wants_open_questions = wants
        self.seen: list = []

    def propose(self, ctx: PlanningContext) -> list[Proposal]:
        self.seen.append((ctx.round, ctx.open_questions))
        return [Proposal(arm=arm, params={"lr": 0.001 * (ctx.round + i + 1)}, origin="manual")
                for arm, n in ctx.wanted.items() for i in range(n)]


def test_open_questions_are_computed_once_per_snapshot_and_only_for_a_planner_that_reads_them(
        tmp_path, fast_study, monkeypatch):
    from research_agents import snapshot
    from research_agents.analysis.questions import round_questions

    calls = []

    def counted(study, records, plan):
        calls.append(len(records))
        return round_questions(study, records, plan)

    monkeypatch.setattr(snapshot, "round_questions", counted)
    study = load_study(fast_study)
    reader = QuestionReader(wants=True)
    loop = _loop(tmp_path / "a", study, budget=8, planner=reader)
    snap = loop.snapshot()
    assert loop.context(snap, reader).open_questions is None and calls == [0]  # no trial yet
    loop.context(snap, reader)
    assert calls == [0]  # once per snapshot
    loop.run()
    asked = [(rnd, qs) for rnd, qs in reader.seen if rnd > 1]
    assert asked and all(qs is not None for _, qs in asked)
    # the planner reads the questions of the records it plans on (those the round report shows)
    records = loop.records()
    rnd, qs = asked[-1]
    assert qs == round_questions(study, [r for r in records if r.round < rnd], loop.plan)

    calls.clear()
    blind = QuestionReader(wants=False)
    loop = _loop(tmp_path / "b", study, budget=8, planner=blind)
    loop.run()
    assert calls == [] and all(qs is None for _, qs in blind.seen)


def test_grid_planner_runs_each_point_once(tmp_path, fast_study):
    study = load_study(fast_study)
    from research_agents.planners import make_planner

    planner, line = make_planner("grid", study, grid="lr=0.005,0.01,0.02")
    assert "3 points" in line or "6 points" in line
    executor = FakeExecutor()
    loop = _loop(tmp_path, study, budget=12, planner=planner, executor=executor)
    loop.run()
    search = [r for r in loop.records() if r.phase == "search" and r.origin == "grid"]
    assert sorted((r.arm, r.params["lr"]) for r in search) == sorted(
        (a, lr) for a in ("muon", "adamw") for lr in (0.005, 0.01, 0.02))


def test_named_points_reach_the_store_as_the_point_field(tmp_path):
    """A named experiment's runs carry its name in TrialRecord.point (not inside the rationale),
    and the round report shows it as it always did ("point: NAME")."""
    from research_agents.config import runforms
    from research_agents.planners import point_planner

    path = tmp_path / "points.toml"
    path.write_text(fast_study_toml(extra='[[points]]\nname = "hot"\narm = "muon"\nparams = { lr = 0.05 }\n'
                                          '[[points]]\nname = "cool"\narm = "adamw"\nparams = { lr = 0.001 }\n'))
    study = load_study(path)
    planner, _ = point_planner(study, study.points)
    loop = ResearchLoop(study, OptunaStore.for_study(tmp_path / "run", study), FakeExecutor(), planner,
                        tmp_path / "run", runforms.point_plan(study, study.points, 2))
    loop.run()
    search = [r for r in loop.records() if r.phase == "search"]
    assert sorted((r.point, r.rationale, r.shown_rationale) for r in search) == [
        ("cool", "", "point: cool"), ("hot", "", "point: hot")]


def test_grid_values_outside_the_space_are_bad_input(fast_study):
    from research_agents.planners import make_planner

    with pytest.raises(ValueError, match="outside"):
        make_planner("grid", load_study(fast_study), grid="lr=5.0")


def test_recover_reruns_trials_left_running(tmp_path, fast_study):
    study = load_study(fast_study)
    loop = _loop(tmp_path, study, budget=8)
    stale = loop.store.start("muon", {"lr": 0.05}, 0, "llm", "search", 1, "why", "trials/x", expected="4.2")
    loop.run()
    records = loop.records()
    assert next(r for r in records if r.id == stale.id).status == "interrupted"
    rerun = [r for r in records if r.params == {"lr": 0.05} and r.status == "completed"]
    assert len(rerun) == 1 and rerun[0].seed == 0
    assert (rerun[0].origin, rerun[0].rationale, rerun[0].expected) == ("llm", "why", "4.2")  # the re-run keeps them
    assert sum(r.status in COUNTED for r in records) == 8


def test_loop_hooks_see_every_trial(tmp_path, fast_study):
    study = load_study(fast_study)
    seen = []
    loop = _loop(tmp_path, study, budget=8)
    loop.hooks = LoopHooks(on_trial_end=seen.append)
    loop.run()
    assert len(seen) == 8


# ----------------------------------------------------------------- the real thing, through the CLI


def _cli(*args: str, cwd: Path | None = None, **popen) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "research_agents", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, **popen)


REPORT_SECTIONS = ["## Question", "## Set-up", "## Ranking", "## Noise floor and spread", "## Comparisons",
                   "## Recommendation", "## LR sensitivity", "## Outcomes by origin", "## Budget", "## Plots",
                   "## Reproduce"]


def test_end_to_end_tiny_study(tmp_path, fast_study, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    code = main(["run", "--study", str(fast_study), "--budget", "8", "--out", str(out), "--planner", "tpe"])
    assert code == 0
    report = (out / "report.md").read_text()
    for section in REPORT_SECTIONS:
        assert section in report, section
    assert "Confidence:" in report and "precision" in report
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 8 and {r["status"] for r in rows} <= {"completed", "diverged"}
    summary = json.loads((out / "summary.json").read_text())
    # the confidence follows the paired verdict on the 2 confirmation seeds: a stated winner only
    # with a verdict that says so, "low" and no winner without one
    rec, [comp] = summary["recommendation"], summary["comparisons"]
    verdict = comp["comparison"]["verdict"]
    assert comp["comparison"]["n_pairs"] == 2 and rec["best_arm"] in ("muon", "adamw")
    if verdict in ("a better", "b better"):
        winner = comp["arm_b"] if verdict == "b better" else comp["arm_a"]
        assert rec["confidence"] in ("moderate", "high") and rec["winner_arm"] == winner == rec["best_arm"]
    else:
        assert rec["confidence"] == "low" and rec["winner_arm"] is None, (verdict, rec)
    assert sorted(p.name for p in (out / "rounds").glob("round-*.md"))[0] == "round-01.md"
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"
    for trial in (out / "trials").iterdir():
        metrics = json.loads((trial / "metrics.json").read_text())
        assert metrics["status"] == "completed" and (trial / "trainer.log").is_file()

    # a second run on the same --out has nothing left to do and changes nothing
    before = (out / "results.csv").read_text()
    assert main(["run", "--study", str(fast_study), "--budget", "8", "--out", str(out), "--planner", "tpe"]) == 0
    assert (out / "results.csv").read_text() == before

    # status and report read the store back
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").is_file()
    status = _cli("status", str(out))
    assert status.returncode == 0 and "completed" in status.stdout


def _children(pid: int) -> list[int]:
    """Every trial process under `pid`: the fork server and the trials it forked, or cold trials
    (not the trial-plot helper, which draws what it was handed and ends at EOF on its own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parents.items() if p in frontier]
        out += kids
        frontier = kids

    def is_plot_helper(child: int) -> bool:
        try:
            return b"trial_plot" in Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            return False

    return [c for c in out if not is_plot_helper(c)]


def _alive(pid: int) -> bool:
    try:  # a zombie (state Z) is dead, just not yet reaped
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


BUDGET = 8  # of the runs the kill and interrupt tests start


def _start_run(study_file: Path, out: Path, stdout) -> tuple[list[str], subprocess.Popen]:
    """A budget-8 run of the fast study in its own process (to kill or interrupt it)."""
    args = ["run", "--study", str(study_file), "--budget", str(BUDGET), "--out", str(out), "--planner", "random"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "research_agents", *args], cwd=ROOT, env=env,
                            stdout=stdout, stderr=subprocess.PIPE, text=True)
    return args, proc


def _wait_for_running_trial(proc: subprocess.Popen, out: Path, study: Study, finished: int,
                            timeout_s: float = 480) -> None:
    """Until `finished` trials have completed and the next one is training (the run must not end)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        time.sleep(0.3)
        assert proc.poll() is None, f"the run ended early: {proc.stderr.read()}"
        if (out / "run.json").exists():  # written once the run has created its database
            records = OptunaStore.for_study(out, study).records()
            # not the run's last trial: a loaded machine can poll late, and a run that ends before the
            # signal is sent cannot be interrupted (it happened once: exit 0 after "SIGINT")
            if (sum(r.status == "completed" for r in records) >= finished and records[-1].status == "running"
                    and len(records) < BUDGET):
                return
    pytest.fail(f"the run did not reach trial {finished + 1} in time")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and SIGKILL")
def test_sigkill_mid_run_then_resume(tmp_path, fast_study):
    out = tmp_path / "run"
    args, proc = _start_run(fast_study, out, stdout=subprocess.DEVNULL)
    study = load_study(fast_study)
    try:
        _wait_for_running_trial(proc, out, study, finished=2)
        trainer = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(1.0)
    assert trainer and not any(_alive(pid) for pid in trainer), "the trial outlived its loop"
    before = OptunaStore.for_study(out, study).records()
    finished = {r.id: r for r in before if r.status == "completed"}
    killed = [r for r in before if r.status == "running"]
    assert killed  # (one per worker that was training)

    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    after = OptunaStore.for_study(out, study).records()
    for r in after:  # nothing finished before the kill was lost or changed
        if r.id in finished:
            assert r == finished[r.id]
    for k in killed:
        assert next(r for r in after if r.id == k.id).status == "interrupted"
        rerun = [r for r in after if r.params == k.params and r.seed == k.seed and r.phase == k.phase
                 and r.status == "completed"]
        assert len(rerun) == 1  # each killed one ran again, once
    counted = [r for r in after if r.status in COUNTED]
    assert len(counted) == 8
    assert len({(r.phase, r.config, r.seed) for r in counted}) == 8  # nothing repeated
    assert not (out / ".speculative").exists()  # runs trained ahead by the killed driver: thrown away


# ----------------------------------------------------------------- bad input: exit 2, one line, nothing written


BAD_STUDIES = {
    "missing question": ("question", lambda t: t.replace('question = "Does Muon beat AdamW on a toy model?"\n', "")),
    "unknown field": ("colour", lambda t: t.replace('preset = "tiny"', 'preset = "tiny"\ncolour = "red"')),
    "low above high": ("low", lambda t: t.replace("low = 0.005, high = 0.1", "low = 0.5, high = 0.1")),
    "unknown arm": ("unknown arm", lambda t: t.replace('[["adamw", "muon"]]', '[["adamw", "lion"]]')),
    "bad preset": ("preset", lambda t: t.replace('preset = "tiny"', 'preset = "huge"')),
    "bad spec value": ("momentum", lambda t: t.replace('base = { optimizer = "muon" }',
                                                       'base = { optimizer = "muon", momentum = 3.0 }')),
    "not toml": ("TOML", lambda t: t + "\n[[[ nonsense"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDIES))
def test_invalid_study_files_exit_2_naming_the_field(tmp_path, case, capsys):
    needle, mutate = BAD_STUDIES[case]
    path = tmp_path / "bad.toml"
    path.write_text(mutate(fast_study_toml()))
    out = tmp_path / "out"
    assert main(["run", "--study", str(path), "--budget", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err, err
    assert not out.exists()


BAD_ARGS = {
    "budget zero": (["--budget", "0"], "budget"),
    "budget text": (["--budget", "many"], "budget"),
    "budget too small": (["--budget", "3"], "budget"),
    "planner": (["--planner", "genius"], "planner"),
    "device": (["--device", "tpu"], "device"),
    "preset": (["--preset", "huge"], "preset"),
    "grid syntax": (["--grid", "lr"], "--grid"),
    "grid range": (["--grid", "lr=7"], "outside"),
    "grid unknown": (["--grid", "beta3=1"], "--grid"),
    "seeds one": (["--seeds", "1"], "seeds"),
    "study missing": (["--study", "no_such_study"], "no_such_study"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_invalid_cli_values_exit_2_naming_the_value(tmp_path, fast_study, case, capsys):
    extra, needle = BAD_ARGS[case]
    out = tmp_path / "out"
    args = ["run", "--study", str(fast_study), "--budget", "8", "--out", str(out)]
    # later flags win in argparse, so the bad value overrides the good default above
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err, err
    assert not out.exists()


def test_resume_with_another_study_definition_is_refused(tmp_path, fast_study, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"study": {"name": "fast", "arms": {}}, "preset": "tiny"}))
    assert main(["run", "--study", str(fast_study), "--budget", "8", "--out", str(out)]) == 2
    assert "different study" in capsys.readouterr().err


def test_report_and_status_on_a_non_run_directory_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert main(["status", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_list_shows_the_default_study(capsys):
    assert main(["list"]) == 0
    assert "muon_vs_adamw" in capsys.readouterr().out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses signals and /proc")
def test_ctrl_c_marks_the_trial_interrupted_writes_the_report_and_resumes(tmp_path, fast_study):
    out = tmp_path / "run"
    args, proc = _start_run(fast_study, out, stdout=subprocess.PIPE)
    study = load_study(fast_study)
    _wait_for_running_trial(proc, out, study, finished=1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert "interrupted" in stdout and (out / "report.md").is_file(), f"stdout:\n{stdout}\nstderr:\n{stderr}"
    records = OptunaStore.for_study(out, study).records()
    assert [r.status for r in records][-1] == "interrupted"
    assert not (out / ".speculative").exists()  # runs trained ahead: stopped and thrown away, never trials
    resumed = _cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    records = OptunaStore.for_study(out, study).records()
    assert sum(r.status in COUNTED for r in records) == 8


def test_storage_url_puts_the_trials_in_that_database(tmp_path, fast_study, monkeypatch):
    fake = FakeExecutor()
    monkeypatch.setattr("research_agents.execution.local.LocalExecutor.run",
                        lambda self, spec, run_dir, timeout_s, on_progress=None: fake.run(spec, run_dir, timeout_s))
    out, db = tmp_path / "run", tmp_path / "shared" / "trials.db"
    db.parent.mkdir()
    url = f"sqlite:///{db}"
    args = ["run", "--study", str(fast_study), "--budget", "8", "--out", str(out), "--storage", url]
    assert main(args) == 0
    assert db.is_file() and not (out / "study.db").exists()
    assert json.loads((out / "run.json").read_text())["storage"] == url
    study = load_study(fast_study)
    assert sum(r.status == "completed" for r in OptunaStore.for_study(out, study, url=url).records()) == 8
    # report and status find the database through run.json; resuming without --storage keeps it
    assert main(["report", str(out)]) == 0
    assert main(args[:-2]) == 0 and len(fake.calls) == 8
