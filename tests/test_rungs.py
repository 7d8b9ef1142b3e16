"""Rungs (research_agents/rungs.py): a search run behind its arm's leader by more than the margin at
an eval point is stopped there (status "stopped", costing its share of the steps); one within it
runs on; the trainer and the replay executor decide alike; stopped runs are never evidence."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest

from research_agents import rungs
from research_agents.actions import Run
from research_agents.analysis.findings import analyze
from research_agents.analysis.tuning import tuning_evidence
from research_agents.cli import main
from research_agents.config import load_study
from research_agents.config.plan import make_plan
from research_agents.config.space import config_id
from research_agents.evidence import ArmEvidence
from research_agents.execution.replay import RESULT_COLUMNS, ReplayExecutor
from research_agents.records import CurveSummary, TrialRecord, curve_summary, ranked_configs, spent, whole
from research_agents.snapshot import Snapshot
from research_agents.store.optuna import OptunaStore
from trainer.spec import TrialSpec
from trainer.train import train

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "data" / "replay_tiny.csv"
# the default study before both arms searched adamw_lr (what replay_tiny.csv holds)
TINY_STUDY = textwrap.dedent("""\
    name = "rungs_tiny"
    question = "Is tuned Muon better than tuned AdamW?"
    preset = "tiny"
    comparisons = [["adamw", "muon"]]
    [seeds]
    search = [0]
    confirm = 5
    confirm_start = 1000
    [planner]
    trials_per_round = 4
    tpe_startup_trials = 3
    [arms.muon]
    base = { optimizer = "muon", weight_decay = 0.1 }
    start = { lr = 0.02, momentum = 0.95, ns_steps = 5 }
    tie = { adamw_lr = { source = "lr", factor = 0.1 } }
    [arms.muon.space]
    lr = { type = "float", low = 0.003, high = 1.2, log = true }
    momentum = { type = "float", low = 0.8, high = 0.98 }
    ns_steps = { type = "int", low = 2, high = 8 }
    [arms.adamw]
    base = { optimizer = "adamw", adamw_betas = [0.9, 0.95], weight_decay = 0.1 }
    start = { lr = 0.003 }
    [arms.adamw.space]
    lr = { type = "float", low = 0.0001, high = 0.03, log = true }
    """)


# ------------------------------------------------------------------ the rule, in the trial spec


def test_a_rule_is_checked_at_eval_steps_only():
    assert TrialSpec(steps=100, eval_every=25, stop_above={25: 5.0, 50: 4.0}).stop_above == {25: 5.0, 50: 4.0}
    for bad in ({30: 5.0}, {100: 5.0}, {0: 5.0}, {25: float("nan")}):
        with pytest.raises(ValueError):
            TrialSpec(steps=100, eval_every=25, stop_above=bad)
    spec = TrialSpec(steps=100, eval_every=25, stop_above={25: 5.0})
    assert spec.stop_reason(25, 5.01) is not None and spec.stop_reason(25, 5.0) is None
    assert spec.stop_reason(50, 9.0) is None  # no limit at that step
    assert spec.stop_reason(25, float("nan")) is not None
    assert TrialSpec().stop_above == {} and "stop_above.25" not in spec.flat()
    assert [TrialSpec(steps=12, eval_every=6).eval_step_by(q) for q in (25, 50, 75, 100)] == [None, 6, 6, 12]


def test_the_rule_is_the_leaders_rung_loss_plus_the_noise_margin_plus_its_late_allowance():
    leader = TrialRecord(id=1, order=1, arm="muon", params={"lr": 0.1}, seed=0, origin="policy", phase="search",
                         round=1, status="completed", val_loss=4.0)
    other = leader.model_copy(update={"id": 2, "order": 2, "params": {"lr": 0.4}, "val_loss": 4.5})
    curves = {1: CurveSummary(val_loss={25: 5.0, 50: 4.5, 75: 4.2, 100: 4.0}),
              2: CurveSummary(val_loss={25: 4.9, 50: 4.7, 75: 4.6, 100: 4.5})}
    assert rungs.leader_curve([other, leader], "muon", lambda r: curves[r.id]) == {25: 5.0, 50: 4.5, 75: 4.2,
                                                                                    100: 4.0}
    ev = {"muon": ArmEvidence(arm="muon", threshold=0.1)}  # noise sd 0.05
    spec_of = lambda run: TrialSpec(steps=100, eval_every=25)  # noqa: E731
    runs = [Run("muon", {"lr": 1.0}, 0, "policy", "search", 2),
            Run("muon", {"lr": 0.9}, 0, "policy", "search", 2, short=False),
            Run("muon", {"lr": 0.1}, 1000, "confirm", "confirm", 2)]
    out = rungs.with_rules(runs, None, [leader, other], ev, lambda r: curves[r.id], 2.0, spec_of, late=0.0)
    assert out[0].stop_above == pytest.approx({25: 5.1, 50: 4.6, 75: 4.3})  # + 2 x 0.05
    assert out[1].stop_above == {} and out[2].stop_above == {}  # full length asked; confirmation never
    # the late allowance: + LATE x the leader's drop from the rung to its end (1.0, 0.5, 0.2 here)
    late = rungs.with_rules(runs[:1], None, [leader, other], ev, lambda r: curves[r.id], 2.0, spec_of, late=1.5)
    assert late[0].stop_above == pytest.approx({25: 5.1 + 1.5, 50: 4.6 + 0.75, 75: 4.3 + 0.3})
    default = rungs.with_rules(runs[:1], None, [leader, other], ev, lambda r: curves[r.id], 2.0, spec_of)
    assert default[0].stop_above == pytest.approx({q: 4.0 + 0.1 + (1 + rungs.LATE) * (loss - 4.0)
                                                   for q, loss in ((25, 5.0), (50, 4.5), (75, 4.2))})
    # without the leader's end there is no allowance to size: no rule
    assert rungs.rule(spec_of(runs[0]), {25: 5.0, 50: 4.5}, 0.1) == {}
    # the plan's option off: only a run that asks for it is short
    off = rungs.with_rules([runs[0], Run("muon", {"lr": 2.0}, 0, "llm", "search", 2, short=True)], None,
                           [leader, other], ev, lambda r: curves[r.id], None, spec_of, late=0.0)
    slack = rungs.FACTOR * 0.05  # asked for without the plan's option: the default factor
    assert off[0].stop_above == {} and off[1].stop_above == pytest.approx({25: 5 + slack, 50: 4.5 + slack,
                                                                           75: 4.2 + slack})
    # no noise measured yet: no rule (the margin could not hold the noise)
    none = rungs.with_rules(runs[:1], None, [leader], {"muon": ArmEvidence(arm="muon")}, lambda r: curves[r.id],
                            2.0, spec_of, late=0.0)
    assert none[0].stop_above == {}
    # the pooled noise, when larger, widens the margin (an arm's early estimate may be too small)
    wide = rungs.with_rules(runs[:1], None, [leader, other], ev, lambda r: curves[r.id], 2.0, spec_of,
                            {"muon": 0.1}, late=0.0)
    assert wide[0].stop_above == pytest.approx({25: 5.2, 50: 4.7, 75: 4.4})


def _fair_curves() -> dict[tuple, list[dict]]:
    """benchmarks/data/replay_fair.csv's AdamW runs: {config: [{25, 50, 75, 100: val loss}]}."""
    out: dict[tuple, list[dict]] = {}
    with (ROOT / "benchmarks" / "data" / "replay_fair.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["arm"] == "adamw" and row["status"] == "completed" and row["loss_25"]:
                out.setdefault((row["lr"], row["adamw_lr"]), []).append(
                    {q: float(row[f"loss_{q}"] if q < 100 else row["val_loss"]) for q in (25, 50, 75, 100)})
    return out


def test_the_late_allowance_keeps_a_near_best_run_that_starts_slowly():
    """On the fair table a near-best AdamW config (lr 0.003, AdamW leg 0.25: within 2 sd of the
    arm's best) is far behind, at every rung, a leader that ends behind it (lr 0.006, leg 0.04).
    The noise margin alone stops every one of its runs; with the late allowance (LATE x the
    leader's drop from the rung to its end) none of them, against any leader that ends behind
    it. The allowance grows with the loss still to come: it is the largest at 25%."""
    from statistics import fmean, stdev

    curves = _fair_curves()
    mean = {c: {q: fmean(r[q] for r in runs) for q in (25, 50, 75, 100)} for c, runs in curves.items()}
    best = min(mean, key=lambda c: mean[c][100])
    sd = stdev(r[100] for r in curves[best])
    near = [c for c in mean if mean[c][100] <= mean[best][100] + 2 * sd]
    slow, leader = ("0.003", "0.25"), ("0.006", "0.04")
    assert slow in near and mean[leader][100] > mean[slow][100]
    spec = TrialSpec(steps=100, eval_every=25)

    def stops(run: dict, lead: tuple, late: float) -> bool:
        limits = rungs.rule(spec, mean[lead], rungs.FACTOR * sd, late)
        return any(run[q] > limits[q] for q in limits)

    assert all(stops(run, leader, 0.0) for run in curves[slow])  # the noise margin alone: all stopped
    judged = [(run, lead) for c in near for run in curves[c] for lead in mean if mean[lead][100] > mean[c][100]]
    assert len(judged) > 100 and not any(stops(run, lead, rungs.LATE) for run, lead in judged)
    limits = rungs.rule(spec, mean[leader], 0.0, rungs.LATE)
    extra = {q: limits[q] - mean[leader][q] for q in limits}
    assert extra[25] > extra[50] > extra[75] > 0
    # and it still stops a hopeless run: lr 0.024 with the leg at 0.015 against the best as leader
    assert all(stops(run, best, rungs.LATE) for run in curves[("0.024", "0.015")])


# ------------------------------------------------------------------ trained and replayed alike


def test_the_trainer_stops_above_the_limit_and_replay_decides_alike(tmp_path, fast_study):
    study = load_study(fast_study, tmp_path)
    full_spec = study.trial_spec("muon", {"lr": 0.02}, 0, overrides={"device": "cpu"})
    full = train(full_spec, tmp_path / "full")
    at6 = curve_summary(full).val_loss[50]
    assert full.status == "completed" and at6 is not None and full_spec.eval_step_by(50) == 6
    # the replay table's row: this very run's curve
    table = tmp_path / "table.csv"
    with table.open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["arm", "lr", "ns_steps", *[c for c in RESULT_COLUMNS if c != "arm"]])
        w.writeheader()
        c = curve_summary(full).val_loss
        w.writerow({"arm": "muon", "lr": 0.02, "ns_steps": 5, "seed": 0, "status": "completed",
                    "val_loss": full.final.val_loss, "val_accuracy": full.final.val_accuracy,
                    "train_loss": full.final.train_loss, "loss_25": "", "loss_50": c[50], "loss_75": c[75],
                    "loss_100": c[100], "diverged_step": "", "wall_time_s": full.wall_time_s})
    replay = ReplayExecutor(table, study=study)
    for limit, kind in ((at6 - 0.01, "stopped"), (at6 + 0.01, "completed")):
        spec = TrialSpec.model_validate({**full_spec.model_dump(), "stop_above": {6: limit}})
        trained = train(spec, tmp_path / kind)
        replayed = replay.run(spec, tmp_path / f"{kind}-replay", 60)
        assert trained.status == replayed.status == kind
        assert trained.optimizer_steps == replayed.metrics.optimizer_steps == (6 if kind == "stopped" else 12)
        if kind == "stopped":  # the loss it stopped with; never a failure or divergence
            assert trained.final.val_loss == pytest.approx(at6) and "above the limit" in trained.reason
        else:  # within the limit: it trains bit for bit as without a rule
            assert trained.final.val_loss == full.final.val_loss


# ------------------------------------------------------------------ the loop: cost, evidence, resume


def _run(tmp_path: Path, out: Path, budget: int, *extra: str) -> int:
    study = tmp_path / "rungs_tiny.toml"
    study.write_text(TINY_STUDY)
    return main(["run", "--study", str(study), "--budget", str(budget), "--executor", f"replay:{TABLE}",
                 "--out", str(out), "--rungs", *extra])


def _records(tmp_path: Path, out: Path) -> list[TrialRecord]:
    study = load_study(tmp_path / "rungs_tiny.toml", tmp_path)
    return OptunaStore.for_study(out, study, readonly=True).records()


# a budget whose stopped runs save more than a whole run per arm (34: 2 stopped at 25%, 35 runs;
# at 30 the policy now stops one run, whose 0.75 saved is not a whole run)
BUDGET = 34
# the noise margin alone (no late-ranking allowance): on the tiny table the default allowance
# stops no run at this budget, and these tests are about what a stop does
RUNGS = ("3", "--rungs-late", "0")


@pytest.fixture(scope="module")
def stopped_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rungs")
    out = tmp / "out"
    assert _run(tmp, out, BUDGET, *RUNGS) == 0
    return tmp, out


def test_a_run_behind_at_a_rung_stops_and_costs_its_share(stopped_study):
    tmp, out = stopped_study
    records = _records(tmp, out)
    stopped = [r for r in records if r.status == "stopped"]
    assert stopped, "the study stops no run: the rung rule is not applied"
    for r in stopped:
        assert r.phase == "search" and r.stop_above and r.fraction in (0.25, 0.5, 0.75) and r.cost == r.fraction
        assert r.val_loss is not None and "above the limit" in r.reason
        curve = curve_summary(r.metrics(out)).val_loss
        step = max(s for s in r.stop_above if s <= round(100 * r.fraction))
        assert curve[r.rung] > r.stop_above[step]  # behind by more than the margin where it stopped
    ran_on = [r for r in records if r.status == "completed" and r.stop_above]
    assert ran_on, "no run under a rule ran on"
    for r in ran_on:  # within the margin at every rung
        curve = curve_summary(r.metrics(out)).val_loss
        assert all(curve[q] <= r.stop_above[q] for q in (25, 50, 75) if q in r.stop_above)
    assert spent(records) == sum(1 for r in records if r.status != "stopped") + sum(r.fraction for r in stopped)
    assert whole(spent(records)) <= BUDGET  # the budget is counted in run equivalents
    assert len(records) > BUDGET  # stopped runs bought more runs than BUDGET full ones
    assert all(not r.stop_above for r in records if r.phase == "confirm")
    # the report's set-up states the rule the run used
    assert "than 3 x the seed-noise sd + 0 x the leader's drop" in (out / "report.md").read_text()
    # Optuna shows the rungs: a stopped trial's intermediate values, through the store
    import optuna
    trials = {t._trial_id: t for t in optuna.load_study(study_name="rungs_tiny:muon",
                                                         storage=f"sqlite:///{out}/study.db").get_trials()}
    for r in stopped:
        if r.arm == "muon":
            assert trials[r.id].intermediate_values and max(trials[r.id].intermediate_values) == r.rung


def test_stopped_runs_are_never_evidence(stopped_study):
    """A stopped run's loss (its rung's) enters no mean, seed count, noise, ranking or bracket: a
    config re-run at full length after it stopped (a bracket's neighbour) is judged on its full runs
    only, and a config that only ever stopped has no result at all."""
    from statistics import fmean

    tmp, out = stopped_study
    study = load_study(tmp / "rungs_tiny.toml", tmp)
    records = _records(tmp, out)
    stopped = [r for r in records if r.status == "stopped"]
    assert stopped
    # one more: a config that only ever stopped (far behind at 25%), as the loop records it
    ghost = stopped[0].model_copy(update={"id": 10_000, "order": 10_000, "val_loss": 3.0,
                                          "params": {**stopped[0].params, "ns_steps": 8}})
    records = [*records, ghost]
    full = {r.config for r in records if r.ok}
    rerun = {r.config for r in stopped} & full  # stopped once, then run at full length
    only_stopped = {r.config for r in records if r.status == "stopped"} - full
    assert ghost.config in only_stopped
    assert all(r.ok for rs in ranked_configs(records) for r in rs)  # rankings: full runs only
    for ev in tuning_evidence(study, records).values():
        assert ev.leader_config not in only_stopped  # (the ghost's 3.0 would lead by far)
        for k in ev.knobs:
            for side in (k.below, k.above):
                assert side is None or side.n >= 1
    findings = analyze(study, records)
    rows = {c.config: c for c in findings.configs}
    for cid in only_stopped:  # listed (as stopped) with no result: no mean, no seed, no noise
        assert rows[cid].n == 0 and rows[cid].summary.mean is None and rows[cid].status == "stopped"
        assert cid not in findings.noise.sd_by_config
    for cid in full:  # every mean is over the config's full runs alone
        losses = [r.val_loss for r in records if r.config == cid and r.ok and r.phase != "swap"]
        if losses:
            assert rows[cid].n == len(losses) and rows[cid].summary.mean == pytest.approx(fmean(losses))
    assert rerun and all(rows[cid].n >= 1 for cid in rerun)  # (this study re-runs its stopped neighbours)
    snap = Snapshot(study, make_plan(study, BUDGET), records)
    for a in study.arms:
        assert not {config_id(a, p) for p in snap.leaders(a)} & only_stopped


def test_resume_repeats_nothing(stopped_study, tmp_path):
    tmp, out = stopped_study
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (tmp_path / "rungs_tiny.toml").write_text(TINY_STUDY)
    before = _records(tmp, copy)
    assert _run(tmp_path, copy, BUDGET, *RUNGS) == 0
    assert [(r.id, r.status) for r in _records(tmp, copy)] == [(r.id, r.status) for r in before]


def test_a_resume_keeps_the_runs_early_stop_rule(stopped_study, tmp_path, capsys):
    """run.json keeps the rule: a resume without --rungs goes on under it (the report's set-up and
    reproduce command state it), one with another rule is refused in one line, and so is --rungs on a
    run that trained every search run in full."""
    tmp, out = stopped_study
    import json
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    study = tmp_path / "rungs_tiny.toml"
    study.write_text(TINY_STUDY)
    saved = json.loads((copy / "run.json").read_text())
    assert (saved["rungs"], saved["rungs_late"]) == (3, 0)
    (copy / "report.md").unlink()
    base = ["run", "--study", str(study), "--executor", f"replay:{TABLE}", "--out", str(copy)]
    capsys.readouterr()
    assert main([*base, "--budget", str(BUDGET + 2)]) == 0
    report = (copy / "report.md").read_text()
    assert "than 3 x the seed-noise sd + 0 x the leader's drop" in report
    assert f"--budget {BUDGET + 2} --rungs 3 --rungs-late 0 --out" in report
    assert json.loads((copy / "run.json").read_text())["rungs_late"] == 0
    capsys.readouterr()
    assert main([*base, "--budget", str(BUDGET + 2), "--rungs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stops search runs at rungs (--rungs 3 --rungs-late 0)" in err
    full = tmp_path / "full"
    assert (
        main(["run", "--study", str(study), "--executor", f"replay:{TABLE}", "--out", str(full), "--budget", "8"]) == 0
    )
    assert json.loads((full / "run.json").read_text())["rungs"] is None
    capsys.readouterr()
    assert main(["run", "--study", str(study), "--executor", f"replay:{TABLE}", "--out", str(full), "--budget", "10",
                 "--rungs"]) == 2
    assert "trains every search run in full: resume it without --rungs" in capsys.readouterr().err


def test_a_run_killed_during_its_rung_decision_is_rerun_once_under_its_rule(stopped_study, tmp_path):
    tmp, out = stopped_study
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (tmp_path / "rungs_tiny.toml").write_text(TINY_STUDY)
    study = load_study(tmp_path / "rungs_tiny.toml", tmp_path)
    victim = next(r for r in _records(tmp, copy) if r.status == "stopped")
    store = OptunaStore.for_study(copy, study)
    # SIGKILL while the trial decided its rung: started, never finished (the driver is gone)
    store.start(victim.arm, victim.params, 7, victim.origin, "search", victim.round, victim.rationale,
                "trials/killed", stop_above=victim.stop_above)
    store.finish(store.records()[-1], "interrupted", None, "process ended while the trial was running")
    n = len(store.records())
    assert _run(tmp_path, copy, BUDGET + 2, *RUNGS) == 0
    after = _records(tmp, copy)
    again = [r for r in after[n:] if r.config == victim.config and r.seed == 7]
    assert len(again) == 1 and again[0].stop_above == victim.stop_above  # once, under the same rule
    assert sum(1 for r in after if r.config == victim.config and r.seed == 7 and r.status != "interrupted") == 1


# ------------------------------------------------------------------ the LLM sees rungs and may ask for a short run


def test_the_llm_may_ask_for_a_short_run_and_sees_runs_stopped_early():
    from research_agents.planners.base import PlanningContext
    from research_agents.planners.llm_actions import LLMTry, action_schema, parse_actions
    from research_agents.planners.llm_prompt import curve_lines

    actions, _ = parse_actions('{"actions": [{"kind": "try", "arm": "muon", "params": {"lr": 0.1}, "short": true}]}')
    assert isinstance(actions[0], LLMTry) and actions[0].short is True
    study = load_study(_tiny_study_file(), Path("."))
    schema = action_schema(study, ["muon"], 2, {}, {})
    assert "short" in schema["properties"]["actions"]["items"]["anyOf"][0]["properties"]
    stopped = TrialRecord(id=1, order=1, arm="muon", params={"lr": 0.4}, seed=0, origin="llm", phase="search",
                          round=1, status="stopped", val_loss=5.3, fraction=0.25, stop_above={25: 5.2})
    ctx = PlanningContext(study=study, wanted={}, history=[stopped], round=2,
                          curve_of=lambda r: CurveSummary(val_loss={25: 5.3, 50: None, 75: None, 100: None}))
    line = curve_lines(ctx, {})[0]
    assert "stopped early at 25%" in line and "5.300" in line


def _tiny_study_file() -> Path:
    import tempfile
    path = Path(tempfile.mkdtemp()) / "rungs_tiny.toml"
    path.write_text(TINY_STUDY)
    return path


# ------------------------------------------------------------------ parallel workers and speculation


def _paced(tmp_path: Path, name: str, workers: int):
    from research_agents.loop import LoopHooks, ResearchLoop
    from research_agents.planners.policy import PolicyPlanner

    study = load_study(_tiny_study_file(), Path("."))
    out = tmp_path / name
    plan = make_plan(study, 24, adaptive=True)
    plan.rungs, plan.rungs_late = rungs.FACTOR, 0.0  # (with the late allowance the tiny table stops nothing)
    messages: list[str] = []
    loop = ResearchLoop(study, OptunaStore.for_study(out, study), ReplayExecutor(TABLE, seed=0, pace=0.01, study=study),
                        PolicyPlanner(seed=0), out, plan, hooks=LoopHooks(on_message=messages.append),
                        workers=workers)
    loop.run()
    assert not [m for m in messages if "predicting" in m], messages
    return loop


def test_two_workers_with_runs_trained_ahead_stop_the_same_runs_as_one(tmp_path):
    """The rule is fixed when the round is planned and travels in the spec: 2 workers (speculation
    on) give the serial study trial for trial, stops included; a run trained ahead is adopted only
    with the same rule."""
    serial, ahead = _paced(tmp_path, "serial", 1), _paced(tmp_path, "ahead", 2)
    one, two = ([(r.order, r.phase, r.arm, r.config, r.seed, r.status, r.val_loss, r.stop_above, r.fraction)
                 for r in loop.records()] for loop in (serial, ahead))
    assert one == two and any(r[5] == "stopped" for r in one)
    used = ahead.store.get_meta("speculation")
    assert used is not None and used["used"] >= 1, used
