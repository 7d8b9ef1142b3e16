"""Replay for any study: the knobs come from the table's header and the study's space (log scale where
the space is log, linear elsewhere, a match for choices), so a study that searches a knob outside the
default study's four (here adamw_lr in the AdamW arm, weight_decay in the Muon arm) replays."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest

from research_agents.cli import main
from research_agents.config import Study, validate_params
from research_agents.config.study import load_study
from research_agents.execution.replay import RESULT_COLUMNS, ReplayExecutor
from trainer.models import build_model
from trainer.optim import build_optimizers

ADAMW_LRS, LEG_LRS = (0.001, 0.004), (0.001, 0.004, 0.016)
MUON_LRS, DECAYS = (0.01, 0.04), (0.0, 0.1, 0.3)
KNOBS = ["lr", "adamw_lr", "weight_decay", "momentum"]


def fair_study(**arm_spaces) -> Study:
    adamw = {"lr": {"type": "float", "low": 1e-4, "high": 0.03, "log": True},
             "adamw_lr": {"type": "float", "low": 1e-4, "high": 0.03, "log": True}}
    muon = {"lr": {"type": "float", "low": 0.003, "high": 0.3, "log": True},
            "weight_decay": {"type": "float", "low": 0.0, "high": 0.4}}
    return Study.model_validate({
        "name": "fair_knobs", "question": "q", "preset": "tiny", "comparisons": [["adamw", "muon"]],
        "seeds": {"search": [0], "confirm": 2}, "planner": {"trials_per_round": 4},
        "arms": {"adamw": {"base": {"optimizer": "adamw"}, "space": arm_spaces.get("adamw", adamw),
                           "start": {"lr": 0.004, "adamw_lr": 0.004} if "adamw" not in arm_spaces else None},
                 "muon": {"base": {"optimizer": "muon", "adamw_lr": 0.002}, "space": arm_spaces.get("muon", muon),
                          "start": {"lr": 0.04, "weight_decay": 0.1} if "muon" not in arm_spaces else None}}})


def loss_of(arm: str, i: int, j: int, seed: int) -> float:
    """A loss that names its configuration: 4 + i/10 + j/100 + seed/1000."""
    return round(4 + i / 10 + j / 100 + seed / 1000 + (0.5 if arm == "adamw" else 0), 6)


def write_table(path: Path) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["arm", *KNOBS, *[c for c in RESULT_COLUMNS if c != "arm"]])
        w.writeheader()
        for arm, (a, b), name in (("adamw", (ADAMW_LRS, LEG_LRS), "adamw_lr"),
                                  ("muon", (MUON_LRS, DECAYS), "weight_decay")):
            for (i, lr), (j, other), seed in itertools.product(enumerate(a), enumerate(b), range(3)):
                v = loss_of(arm, i, j, seed)
                row = dict.fromkeys(w.fieldnames, "")
                row.update(arm=arm, lr=lr, seed=seed, status="completed", val_loss=v, val_accuracy=0.2, train_loss=v,
                           loss_25=v + 1, loss_50=v + 0.5, loss_75=v + 0.2, loss_100=v, wall_time_s=1.0)
                row[name] = other
                if arm == "muon":
                    row.update(momentum=0.95, adamw_lr=0.002)
                w.writerow(row)
    return path


@pytest.fixture
def table(tmp_path) -> Path:
    return write_table(tmp_path / "fair.csv")


@pytest.mark.parametrize("arm,params,expected", [
    # adamw_lr on a log scale: 0.009 is nearer 0.016 than 0.004 by ratio (linearly it would be 0.004)
    ("adamw", {"lr": 0.001, "adamw_lr": 0.009}, (0, 2)),
    ("adamw", {"lr": 0.0035, "adamw_lr": 0.0011}, (1, 0)),
    ("adamw", {"lr": 0.0012, "adamw_lr": 0.0045}, (0, 1)),
    # weight_decay on a linear scale: 0.18 is nearer 0.1 than 0.3
    ("muon", {"lr": 0.035, "weight_decay": 0.18}, (1, 1)),
    ("muon", {"lr": 0.012, "weight_decay": 0.25}, (0, 2)),
    ("muon", {"lr": 0.012, "weight_decay": 0.02}, (0, 0)),
])
def test_a_knob_outside_the_default_four_picks_the_nearest_row(table, arm, params, expected):
    study = fair_study()
    assert validate_params(study, arm, params) == []
    executor = ReplayExecutor(table, seed=0, study=study)
    for seed in (0, 1, 2, 1000):
        row = executor.row(study.trial_spec(arm, params, seed=seed))
        assert row.val_loss == loss_of(arm, *expected, row.seed)
    assert {r.seed for r in (executor.row(study.trial_spec(arm, params, seed=s)) for s in range(3))} == {0, 1, 2}


def test_adamw_lr_is_a_searched_knob_of_the_adamw_arm(table, tmp_path):
    """The AdamW arm may search adamw_lr: a valid point, its spec trains the leg at that LR, and a whole
    study replays (every trial answered from the row with its adamw_lr)."""
    study = fair_study()
    assert validate_params(study, "adamw", {"lr": 0.002, "adamw_lr": 0.009}) == []
    spec = study.trial_spec("adamw", {"lr": 0.002, "adamw_lr": 0.009}, seed=0)
    opt = build_optimizers(build_model(spec.model, 300), spec)
    assert [(g["name"], g["lr"]) for g in opt.describe()] == [
        ("adamw_hidden", 0.002), ("adamw_leg", 0.009), ("adamw_leg_no_decay", 0.009)]

    toml = tmp_path / "fair_knobs.toml"
    toml.write_text(_to_toml(study))
    out = tmp_path / "out"
    assert main(["run", "--study", str(toml), "--budget", "8", "--planner", "random",
                 "--executor", f"replay:{table}", "--out", str(out)]) == 0
    answered = 0
    for metrics in out.glob("trials/*/metrics.json"):
        m = json.loads(metrics.read_text())
        replay, spec = m["env"]["replay"], m["spec"]
        if spec["optimizer"] == "adamw":
            leg = min(LEG_LRS, key=lambda v: abs(math.log(v / spec["adamw_lr"])))
            assert float(replay["adamw_lr"]) == leg
            answered += 1
    assert answered >= 3


def test_a_study_knob_the_table_lacks_is_a_one_line_error(table, tmp_path, capsys):
    study = fair_study(muon={"lr": {"type": "float", "low": 0.003, "high": 0.3, "log": True},
                             "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2}})
    with pytest.raises(ValueError) as err:
        ReplayExecutor(table, study=study)
    text = str(err.value)
    assert "\n" not in text and "'warmup_ratio'" in text and "muon" in text and "fair_knobs" in text
    toml = tmp_path / "lacks.toml"
    toml.write_text(_to_toml(study))
    assert main(["run", "--study", str(toml), "--budget", "8", "--executor", f"replay:{table}",
                 "--out", str(tmp_path / "out")]) == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err_lines) == 1 and "warmup_ratio" in err_lines[0]


def test_the_old_table_keys_on_the_wen_study_knobs():
    """replay_tiny.csv: one configuration per (arm, lr, adamw_lr, momentum, schedule, ns_steps); the
    wen study's Muon arm counts lr, momentum, the schedule's kind and ns_steps (the schedule's start
    and warmup are held at one value there, so they choose nothing)."""
    root = Path(__file__).resolve().parents[1]
    executor = ReplayExecutor(root / "benchmarks/data/replay_tiny.csv",
                              study=load_study(root / "experiments" / "muon_vs_adamw_wen.toml"))
    assert sorted(executor.distances["muon"].knobs) == ["lr", "momentum", "momentum_schedule.kind", "ns_steps"]
    assert sorted(executor.distances["adamw"].knobs) == ["lr"]
    assert len([k for k in executor.table if k[0] == "muon"]) == 180


def test_the_fair_table_keys_on_both_lrs_of_both_arms():
    """replay_fair.csv answers the default study: both arms' two LRs (the leg's too) choose rows,
    and every config of the grid is there for both arms' leg LRs (the 2x2 swaps find their cells)."""
    executor = ReplayExecutor(Path(__file__).resolve().parents[1] / "benchmarks/data/replay_fair.csv")
    assert sorted(executor.distances["muon"].knobs) == ["adamw_lr", "lr", "momentum", "momentum_schedule.kind",
                                                        "ns_steps"]
    assert sorted(executor.distances["adamw"].knobs) == ["adamw_lr", "lr"]
    assert len([k for k in executor.table if k[0] == "muon"]) == 200
    assert len([k for k in executor.table if k[0] == "adamw"]) == 30
    legs = {arm: {dict(rows[0].config)["adamw_lr"] for k, rows in executor.table.items() if k[0] == arm}
            for arm in ("muon", "adamw")}
    assert legs["muon"] == legs["adamw"] and len(legs["muon"]) == 5
    assert min(len(rows) for rows in executor.table.values()) >= 3  # 3 base seeds, 6 near each optimum


def test_every_config_answers_a_loop_seed_from_the_same_table_seed():
    """A loop seed is one initialisation and data order for every config, as a table seed is for the
    table's runs: for every executor seed, a config with the 3 common seeds and one with 6 (near an
    optimum) answer seeds 0, 1 and 2 from the same table seed, and the 6-seed config's confirmation
    seeds (indices 3-5) take its extra seeds, each once."""
    path = Path(__file__).resolve().parents[1] / "benchmarks/data/replay_fair.csv"
    study = load_study(Path(__file__).resolve().parents[1] / "experiments" / "muon_vs_adamw.toml")
    three = study.trial_spec("adamw", {"lr": 0.003, "adamw_lr": 0.04}, seed=0)
    six = study.trial_spec("adamw", {"lr": 0.006, "adamw_lr": 0.04}, seed=0)
    for s in range(30):
        executor = ReplayExecutor(path, seed=s, study=study)
        assert len(executor.table[executor.nearest(three)]) == 3 and len(executor.table[executor.nearest(six)]) == 6
        for seed in (0, 1, 2):
            assert (executor.row(three.model_copy(update={"seed": seed})).seed
                    == executor.row(six.model_copy(update={"seed": seed})).seed)
        confirmation = [executor.row(six.model_copy(update={"seed": seed})).seed for seed in (1000, 1001, 1002)]
        assert sorted(confirmation) == [3, 4, 5]
        assert {executor.row(three.model_copy(update={"seed": seed})).seed for seed in (0, 1, 2)} == {0, 1, 2}


def test_executors_with_one_seed_assignment_answer_alike_and_30_seeds_give_20():
    """The order of the table's seeds is drawn from the executor's seed (3 common seeds, then 3 extra
    ones: 36 orders); 30 executor seeds give 20 distinct ones, and two executors with the same order
    answer every trial with the same row (planner_efficiency's repetitions are not all independent:
    it counts the assignments an arm missed in)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks/data/replay_fair.csv"
    executors = [ReplayExecutor(path, seed=s) for s in range(30)]
    groups: dict[tuple, list[ReplayExecutor]] = {}
    for e in executors:
        groups.setdefault(e.seed_assignment(), []).append(e)
    assert len(groups) == 20
    assert all(sorted(order[:3]) == [0, 1, 2] and sorted(order[3:]) == [3, 4, 5] for order in groups)
    study = load_study(Path(__file__).resolve().parents[1] / "experiments" / "muon_vs_adamw.toml")
    specs = [study.trial_spec(arm, {**study.arms[arm].start, "lr": lr}, seed=seed)
             for arm in ("muon", "adamw") for lr in (0.003, 0.02, 0.2) for seed in (0, 1, 2, 1000, 1001)]
    for same in groups.values():
        assert all([a.row(spec) for spec in specs] == [same[0].row(spec) for spec in specs] for a in same)
    a, b = (same[0] for same in list(groups.values())[:2])
    assert [a.row(spec) for spec in specs] != [b.row(spec) for spec in specs]


def _to_toml(study: Study) -> str:
    """The few TOML shapes fair_study uses (inline tables of numbers, strings and nested tables)."""
    def val(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {val(x)}' for k, x in v.items()) + " }"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v)
    data = study.model_dump(mode="json", exclude_defaults=True)
    lines = [f"{k} = {val(v)}" for k, v in data.items() if not isinstance(v, dict)]
    lines += [f"{k} = {val(v)}" for k, v in data.items() if isinstance(v, dict)]
    return "\n".join(lines) + "\n"
