"""Tuned means tuned: tuning evidence, research actions, the default policy and the confidence cap,
on small synthetic replay tables (real loop, store and analysis; trials answered from the table)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from research_agents.analysis.findings import analyze
from research_agents.analysis.tuning import tuning_evidence
from research_agents.cli import main
from research_agents.config import Study, make_plan
from research_agents.execution.replay import ReplayExecutor
from research_agents.loop import ResearchLoop
from research_agents.planners.policy import PolicyPlanner
from research_agents.records import COUNTED, TrialRecord
from research_agents.report.recommendation import recommendation_text
from research_agents.report.words import knob_text
from research_agents.store import OptunaStore

COLUMNS = ["arm", "lr", "adamw_lr", "momentum", "momentum_schedule.kind", "momentum_schedule.start",
           "momentum_schedule.warmup_steps", "ns_steps", "seed", "status", "val_loss", "val_accuracy",
           "train_loss", "loss_25", "loss_50", "loss_75", "loss_100", "diverged_step", "wall_time_s"]
NOISE = [0.004, -0.003, 0.001, -0.002, 0.003, -0.001]  # per table seed: small and the same for every config


def loss(arm: str, lr: float, best: dict[str, float], base: dict[str, float]) -> float:
    return base[arm] + 0.25 * math.log2(lr / best[arm]) ** 2


def write_table(path: Path, best: dict[str, float], base: dict[str, float]) -> Path:
    """AdamW and Muon (momentum 0.95, fixed, 5 NS steps) on a factor-sqrt(2) LR grid, 6 seeds each."""
    grids = {"adamw": [1e-4 * 2 ** (k / 2) for k in range(18)], "muon": [3e-3 * 2 ** (k / 2) for k in range(16)]}
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for arm, lrs in grids.items():
            for lr in lrs:
                for seed, e in enumerate(NOISE):
                    v = loss(arm, lr, best, base) + e
                    row = {c: "" for c in COLUMNS}
                    row.update(arm=arm, lr=f"{lr:.6g}", seed=seed, status="completed", val_loss=v, val_accuracy=0.2,
                               train_loss=v, loss_25=v + 1, loss_50=v + 0.5, loss_75=v + 0.2, loss_100=v,
                               wall_time_s=1.0)
                    if arm == "muon":
                        row.update(momentum=0.95, ns_steps=5, **{"momentum_schedule.kind": "fixed"})
                    w.writerow(row)
    return path


def study() -> Study:
    return Study.model_validate({
        "name": "tuning-test", "question": "Is tuned Muon better than tuned AdamW?", "preset": "tiny",
        "comparisons": [["adamw", "muon"]],
        "seeds": {"search": [0], "confirm": 5, "confirm_start": 1000},
        "planner": {"trials_per_round": 4},
        "arms": {
            "muon": {"base": {"optimizer": "muon", "momentum": 0.95, "ns_steps": 5}, "start": {"lr": 0.02},
                     "space": {"lr": {"type": "float", "low": 0.003, "high": 0.6, "log": True}}},
            "adamw": {"base": {"optimizer": "adamw"}, "start": {"lr": 0.003},
                      "space": {"lr": {"type": "float", "low": 0.0001, "high": 0.05, "log": True}}},
        },
    })


def run_loop(tmp_path: Path, table: Path, budget: int, out: Path | None = None) -> ResearchLoop:
    s = study()
    out = out or tmp_path / "run"
    store = OptunaStore.for_study(out, s)
    loop = ResearchLoop(s, store, ReplayExecutor(table, seed=0, study=s), PolicyPlanner(seed=0), out,
                        make_plan(s, budget, adaptive=True))
    loop.run()
    return loop


@pytest.fixture
def far_optimum(tmp_path) -> Path:
    # AdamW's optimum sits 6x above its start point (0.003 -> 0.018), Muon's 8x (0.02 -> 0.16)
    return write_table(tmp_path / "far.csv", best={"adamw": 0.018, "muon": 0.16}, base={"adamw": 5.0, "muon": 4.6})


def test_an_optimum_away_from_the_start_point_gets_bracketed(tmp_path, far_optimum):
    loop = run_loop(tmp_path, far_optimum, budget=30)
    ev = tuning_evidence(loop.study, loop.records())
    for arm, best in (("adamw", 0.018), ("muon", 0.16)):
        lr = ev[arm].knob("lr")
        assert lr.status == "bracketed", knob_text(lr)
        assert abs(math.log2(ev[arm].leader_params["lr"] / best)) <= 1.0, ev[arm].leader_params
        assert lr.below.steps <= 1.5 and lr.above.steps <= 1.5
    fnd = analyze(loop.study, loop.records(), loop.plan)
    assert fnd.recommendation.confidence in ("moderate", "high") and fnd.recommendation.winner_arm == "muon"


def test_an_unbracketed_arm_caps_confidence_at_low_and_is_named(tmp_path, far_optimum):
    loop = run_loop(tmp_path, far_optimum, budget=12)  # too few runs to reach AdamW's optimum
    fnd = analyze(loop.study, loop.records(), loop.plan)
    [comp] = fnd.comparisons
    assert comp.comparison.verdict in ("a better", "b better")  # the paired test alone says muon
    assert fnd.tuning["adamw"].lr_bracketed is False
    rec = fnd.recommendation
    assert rec.confidence == "low" and rec.winner_arm is None
    text = recommendation_text(rec)
    assert "not tuned" in text and "adamw's LR is open" in text
    assert "--budget" in text and "What would settle it" in text
    report = (loop.out / "report.md")
    assert not report.exists()  # (the loop alone writes no final report; the CLI test below does)


def test_the_cli_report_shows_tuning_evidence_and_the_cap(tmp_path, far_optimum, monkeypatch):
    toml = tmp_path / "s.toml"
    toml.write_text(STUDY_TOML)
    out = tmp_path / "cli-run"
    assert main(["run", "--study", str(toml), "--budget", "12", "--executor", f"replay:{far_optimum}",
                 "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "## Tuning evidence" in report and "NOT tuned (LR not bracketed)" in report
    assert "Confidence: low" in report
    rounds = sorted((out / "rounds").glob("round-*.md"))
    assert rounds and all("## Tuning evidence" in p.read_text() for p in rounds)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tuning"]["adamw"]["knobs"][0]["knob"] == "lr"


STUDY_TOML = """
name = "tuning-cli"
question = "Is tuned Muon better than tuned AdamW?"
preset = "tiny"
comparisons = [["adamw", "muon"]]
[seeds]
search = [0]
[arms.muon]
base = { optimizer = "muon", momentum = 0.95, ns_steps = 5 }
start = { lr = 0.02 }
[arms.muon.space]
lr = { type = "float", low = 0.003, high = 0.6, log = true }
[arms.adamw]
base = { optimizer = "adamw" }
start = { lr = 0.003 }
[arms.adamw.space]
lr = { type = "float", low = 0.0001, high = 0.05, log = true }
"""


def test_replicate_and_confirm_seeds_stay_paired(tmp_path, far_optimum):
    loop = run_loop(tmp_path, far_optimum, budget=30)
    records = [r for r in loop.records() if r.status in COUNTED]
    replicated = [r for r in records if r.phase == "search" and r.seed != 0]
    assert replicated, "the policy replicated nothing"
    pool = sorted({r.seed for r in replicated})
    assert pool == list(range(1, len(pool) + 1))  # one shared pool, first seeds first: pairs line up
    assert not set(pool) & set(loop.plan.confirm_seeds)
    by_config: dict[str, set[int]] = {}
    for r in replicated:
        by_config.setdefault(r.config, set()).add(r.seed)
    for seeds in by_config.values():  # every replicated config took the pool's first seeds
        assert seeds == set(range(1, len(seeds) + 1))
    confirm = [r for r in records if r.phase == "confirm"]
    assert {r.seed for r in confirm if r.arm == "muon"} == {r.seed for r in confirm if r.arm == "adamw"}
    assert 3 <= len({r.seed for r in confirm}) <= 5  # sized by the measured noise


def test_resume_with_a_larger_budget_continues_without_repeating_a_run(tmp_path, far_optimum):
    first = run_loop(tmp_path, far_optimum, budget=14)
    before = {(r.config, r.seed, r.phase) for r in first.records() if r.status in COUNTED}
    assert len(before) == 14
    second = run_loop(tmp_path, far_optimum, budget=30, out=first.out)
    after = [(r.config, r.seed, r.phase) for r in second.records() if r.status in COUNTED]
    assert len(after) == len(set(after)) == 30  # nothing ran twice, the budget is spent exactly
    assert before <= set(after)


# ------------------------------------------------------------------------------ the evidence itself


def _rec(i: int, arm: str, lr: float, loss_: float, seed: int = 0) -> TrialRecord:
    return TrialRecord(id=i, order=i, arm=arm, params={"lr": lr}, seed=seed, origin="tpe", phase="search",
                       round=1, status="completed", val_loss=loss_)


@pytest.mark.parametrize("lrs, status, to_try", [
    ([(0.003, 5.0)], "open both", [0.0015, 0.006]),
    # the case: nothing between 0.003 and 0.0196 (6.5x away) was tried: not a bracket
    ([(0.003, 5.0), (0.0196, 5.3), (0.0015, 5.2)], "open above", [0.006]),
    ([(0.003, 5.0), (0.006, 5.1), (0.0015, 5.2)], "bracketed", []),
    ([(0.05, 5.0), (0.025, 5.1)], "edge high", []),  # the leader sits at the space's upper bound
    ([(0.0001, 5.0), (0.0002, 5.1)], "edge low", []),
])
def test_lr_evidence_statuses(lrs, status, to_try):
    s = study()
    records = [_rec(i, "adamw", lr, v) for i, (lr, v) in enumerate(lrs)]
    k = tuning_evidence(s, records)["adamw"].knob("lr")
    assert k.status == status, knob_text(k)
    assert k.to_try == to_try


def test_a_neighbour_better_beyond_the_noise_moves_the_leader_and_reopens_the_bracket():
    s = study()
    records = [_rec(0, "adamw", 0.003, 5.0), _rec(1, "adamw", 0.006, 5.1), _rec(2, "adamw", 0.0015, 5.2),
               _rec(3, "adamw", 0.006, 4.7, seed=1), _rec(4, "adamw", 0.006, 4.72, seed=2)]
    ev = tuning_evidence(s, records)["adamw"]
    assert ev.leader_params == {"lr": 0.006} and ev.knob("lr").status == "open above"


def _lr_proposals(records: list[TrialRecord]) -> list[float]:
    from research_agents.actions import Proposal
    from research_agents.planners.base import PlanningContext

    s = study()
    ctx = PlanningContext(study=s, wanted={"adamw": 2}, history=records, round=3,
                          evidence=tuning_evidence(s, records), search_left={"adamw": 10, "muon": 10})
    return [a.params["lr"] for a in PolicyPlanner(seed=0).propose(ctx) if isinstance(a, Proposal)]


def test_a_leader_barely_ahead_of_its_coarse_neighbour_is_bracketed_between_them_first():
    # 0.008 (one run) is a hair better than 0.002 (two runs), a factor 4 below it: a parabola through
    # the three points puts the optimum between them, so the point between comes first and alone,
    # not the coarse move away from both (0.032), which waits for its result
    records = [_rec(0, "adamw", 0.0005, 6.0), _rec(1, "adamw", 0.002, 5.10), _rec(2, "adamw", 0.002, 5.11, seed=1),
               _rec(3, "adamw", 0.008, 5.09)]
    assert tuning_evidence(study(), records)["adamw"].knob("lr").status == "open both"
    assert _lr_proposals(records) == [0.004]
    # still falling steeply towards the leader: the optimum lies beyond it, the sweep goes on up first
    records = [_rec(0, "adamw", 0.0005, 6.0), _rec(1, "adamw", 0.002, 5.50), _rec(2, "adamw", 0.002, 5.51, seed=1),
               _rec(3, "adamw", 0.008, 5.09)]
    assert _lr_proposals(records)[0] == 0.032


def _two_lr_study() -> Study:
    data = study().model_dump()
    leg = {"type": "float", "low": 0.003, "high": 0.3, "log": True}
    data["arms"]["adamw"]["space"].update(adamw_lr=leg, weight_decay={"type": "float", "low": 0.0, "high": 0.2})
    data["arms"]["adamw"]["start"] = {"lr": 0.003, "adamw_lr": 0.01, "weight_decay": 0.1}
    return Study.model_validate(data)


def _proposed(s: Study, records: list[TrialRecord]) -> list[dict]:
    from research_agents.actions import Proposal
    from research_agents.planners.base import PlanningContext

    ctx = PlanningContext(study=s, wanted={"adamw": 2}, history=records, round=3,
                          evidence=tuning_evidence(s, records), search_left={"adamw": 10, "muon": 10})
    return [a.params for a in PolicyPlanner(seed=0).propose(ctx) if isinstance(a, Proposal)]


def test_the_policy_sweeps_every_lr_like_knob_before_the_others():
    """An arm that searches two LRs (its matrices' and the AdamW leg's) gets a step of each LR's sweep
    per round, interleaved, and no other knob is explored while either is open."""
    s = _two_lr_study()
    point = {"lr": 0.003, "adamw_lr": 0.01, "weight_decay": 0.1}

    def rec(i: int, loss_: float, seed: int = 0, **change) -> TrialRecord:
        return TrialRecord(id=i, order=i, arm="adamw", params={**point, **change}, seed=seed, origin="tpe",
                           phase="search", round=1, status="completed", val_loss=loss_)

    # both LRs open around the start (the noise measured: no replicate first): one sweep step of
    # each, the matrices' LR first
    got = _proposed(s, [rec(0, 5.0), rec(9, 5.01, seed=1), rec(1, 5.3, lr=0.012)])
    assert [sorted(k for k in p if p[k] != point[k]) for p in got] == [["lr"], ["adamw_lr"]]
    assert got[0]["lr"] < 0.003 and got[1]["adamw_lr"] != 0.01
    # the matrices' LR bracketed, the leg's still open: the leg's sweep, never weight decay
    records = [rec(0, 5.0), rec(9, 5.01, seed=1), rec(1, 5.1, lr=0.006), rec(2, 5.2, lr=0.0015),
               rec(3, 5.4, adamw_lr=0.04)]
    got = _proposed(s, records)
    assert got and all(set(k for k in p if p[k] != point[k]) <= {"adamw_lr", "lr"} for p in got)
    assert any(p["adamw_lr"] < 0.01 for p in got)
    assert not any(p["weight_decay"] != 0.1 for p in got)


def test_each_arm_measures_its_own_noise_once():
    """The confirmation is sized from each arm's seed noise (3x the measured noise is assumed for an
    arm with none): every arm with two configs and no repeat replicates its leader once, the first
    thing it does; an arm that has a repeat does not."""
    from research_agents.actions import Replicate
    from research_agents.planners.base import PlanningContext

    s = study()

    def replicated(records: list[TrialRecord]) -> dict[str, dict]:
        ctx = PlanningContext(study=s, wanted={"adamw": 2, "muon": 2}, history=records, round=2,
                              evidence=tuning_evidence(s, records), search_left={"adamw": 10, "muon": 10})
        return {a.arm: a.params for a in PolicyPlanner(seed=0).propose(ctx) if isinstance(a, Replicate)}

    two_each = [_rec(0, "muon", 0.02, 4.5), _rec(1, "muon", 0.08, 4.3), _rec(2, "adamw", 0.003, 4.9),
                _rec(3, "adamw", 0.012, 4.8)]
    assert replicated(two_each) == {"muon": {"lr": 0.08}, "adamw": {"lr": 0.012}}
    # muon's noise measured already: only adamw buys its repeat
    assert replicated([*two_each, _rec(4, "muon", 0.08, 4.31, seed=1)]) == {"adamw": {"lr": 0.012}}


def test_a_run_stopped_at_a_rung_is_a_look_never_run_again():
    """A coarse LR step stopped early (hopeless at a rung) is never proposed again: the sweep goes on
    past it to the factor-2 point between, and the stopped run brackets nothing."""
    stopped = TrialRecord(id=2, order=2, arm="adamw", params={"lr": 0.012}, seed=0, origin="policy",
                          phase="search", round=2, status="stopped", val_loss=5.9, fraction=0.25)
    records = [_rec(0, "adamw", 0.003, 5.0), _rec(1, "adamw", 0.003, 5.01, seed=1), stopped]
    assert tuning_evidence(study(), records)["adamw"].knob("lr").status == "open both"
    got = _lr_proposals(records)
    assert 0.012 not in got and 0.006 in got


def test_a_stopped_look_enters_the_sweeps_parabola_at_its_projected_end():
    """A run stopped at a rung has no end, but the sweep's parabola may guess one: its rung loss less
    what the leader gained from that rung to its end. Leader at leg 0.04 (4.50), a full run at 0.01
    (4.55), one stopped at 0.003 at 75% (5.0, projected 4.85): the fit puts the minimum below the
    leader, so the leg's sweep brackets there (0.02) and makes no coarse move up (0.16), as it
    would had the 0.003 run ended. Without the guess, two points fit no parabola and both sides
    get a move."""
    from research_agents.actions import Proposal
    from research_agents.planners.base import PlanningContext
    from research_agents.records import CurveSummary

    s = _two_lr_study()
    point = {"lr": 0.003, "adamw_lr": 0.04, "weight_decay": 0.1}

    def rec(i: int, loss_: float, seed: int = 0, status: str = "completed", **change) -> TrialRecord:
        return TrialRecord(id=i, order=i, arm="adamw", params={**point, **change}, seed=seed, origin="policy",
                           phase="search", round=1, status=status, val_loss=loss_,
                           fraction=0.75 if status == "stopped" else None)

    records = [rec(0, 4.50), rec(1, 4.50, seed=1), rec(2, 4.55, adamw_lr=0.01),
               rec(3, 5.0, status="stopped", adamw_lr=0.003)]
    leader = CurveSummary(val_loss={25: 5.5, 50: 4.9, 75: 4.65, 100: 4.5})

    def legs(history: list[TrialRecord]) -> set:
        ctx = PlanningContext(study=s, wanted={"adamw": 4}, history=history, round=3,
                              evidence=tuning_evidence(s, history), search_left={"adamw": 10, "muon": 10},
                              curve_of=lambda r: leader if r.id in (0, 1) else None)
        return {a.params["adamw_lr"] for a in PolicyPlanner(seed=0).propose(ctx)
                if isinstance(a, Proposal) and a.params["adamw_lr"] != point["adamw_lr"]}

    assert PolicyPlanner._projected(
        PlanningContext(study=s, wanted={}, history=records, round=3,
                        curve_of=lambda r: leader if r.id in (0, 1) else None), "adamw", records[3:]) == [
        (records[3].params, pytest.approx(5.0 - (4.65 - 4.5)))]
    assert legs(records) == {0.02}
    ended = [*records[:3], rec(3, 4.85, adamw_lr=0.003)]  # the same, had it ended where projected
    assert legs(ended) == {0.02}
    # no leader curve to project with: no guess, no parabola, both sides
    assert PolicyPlanner._projected(PlanningContext(study=s, wanted={}, history=records, round=3),
                                    "adamw", records[3:]) == []


def test_with_few_runs_left_other_knobs_get_a_first_look_before_lr_refinement():
    """Once an arm's search runs left are no more than its knobs never looked at, a first look at
    each comes after the LRs' coarse (factor-4) moves and before their factor-2 refinement; with
    runs to spare the LRs are settled first."""
    from research_agents.actions import Proposal
    from research_agents.planners.base import PlanningContext

    s = _two_lr_study()
    point = {"lr": 0.003, "adamw_lr": 0.01, "weight_decay": 0.1}

    def rec(i: int, loss_: float, seed: int = 0, **change) -> TrialRecord:
        return TrialRecord(id=i, order=i, arm="adamw", params={**point, **change}, seed=seed, origin="tpe",
                           phase="search", round=1, status="completed", val_loss=loss_)

    def changed(records: list[TrialRecord], left: int) -> list[str]:
        ctx = PlanningContext(study=s, wanted={"adamw": min(2, left)}, history=records, round=3,
                              evidence=tuning_evidence(s, records), search_left={"adamw": left, "muon": 10})
        got = [a for a in PolicyPlanner(seed=0).propose(ctx) if isinstance(a, Proposal)]
        return [next(k for k in a.params if a.params[k] != point[k]) for a in got]

    # the matrices' LR coarse-explored both ways (a factor 4 each side: only refinement left), the
    # leg's LR never moved (its coarse move is due)
    records = [rec(0, 5.0), rec(1, 5.01, seed=1), rec(2, 5.3, lr=0.012), rec(3, 5.4, lr=0.00075)]
    assert changed(records, left=10) == ["lr", "adamw_lr"]  # runs to spare: the LRs first
    assert changed(records, left=1) == ["adamw_lr"]  # one run left (one knob unlooked): the coarse move first
    # the leg's LR coarse-explored too: the look comes before any refinement
    records += [rec(4, 5.2, adamw_lr=0.04), rec(5, 5.25, adamw_lr=0.003)]
    assert changed(records, left=1) == ["weight_decay"]
    assert "weight_decay" not in changed(records, left=10)
