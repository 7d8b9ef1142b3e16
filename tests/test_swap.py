"""The swap research action: after confirmation each confirmed leader of a compared pair is re-run with
the other leader's shared settings on the seeds both were confirmed on; planned into the budget, chosen
by a planner hook (the LLM's reply vetted), answered by the replay executor, decomposed in the report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from research_agents import cli
from research_agents.actions import Swap, SwapOption
from research_agents.analysis.fairness import swap_pairs
from research_agents.config import load_study, make_plan
from research_agents.config.study import Study
from research_agents.execution.replay import ReplayExecutor
from research_agents.loop import ResearchLoop
from research_agents.planners import make_planner
from research_agents.planners.base import default_swaps
from research_agents.planners.llm import LLMPlanner
from research_agents.planners.llm_client import CallResult, LLMConfig
from research_agents.records import SwapOf, TrialRecord
from research_agents.store import OptunaStore

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUDY = ROOT / "experiments" / "muon_vs_adamw.toml"
HEADER = ["arm", "lr", "adamw_lr", "momentum", "momentum_schedule.kind", "momentum_schedule.start",
          "momentum_schedule.warmup_steps", "ns_steps", "seed", "status", "val_loss", "val_accuracy", "train_loss",
          "loss_25", "loss_50", "loss_75", "loss_100", "diverged_step", "wall_time_s"]


def _grid(lo: float, hi: float, n: int) -> list[float]:
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def planted_loss(arm: str, lr: float, leg: float, seed: int) -> float:
    """The synthetic table's loss: the hidden matrices' optimizer at its LR, plus the AdamW leg's LR
    (optimum 0.03 in both arms, Muon less sensitive to it: an interaction), plus a seed noise every
    configuration shares (paired)."""
    best = 0.003 if arm == "adamw" else 0.08
    base = (4.8 if arm == "adamw" else 4.4) + 0.4 * math.log10(lr / best) ** 2
    shared = 0.5 * math.log10(leg / 0.03) ** 2 * (1.0 if arm == "adamw" else 0.6)
    return base + shared + 0.01 * ((seed * 7) % 5)


def make_table(path: Path) -> Path:
    """A replay table over the default study's two LRs per arm (Muon's other knobs held at one value)."""
    rows = []
    for arm, lrs in (("adamw", _grid(0.0003, 0.03, 9)), ("muon", _grid(0.01, 1.0, 9))):
        for lr in lrs:
            for leg in _grid(0.003, 0.3, 9):
                for seed in range(4):
                    v = planted_loss(arm, float(f"{lr:.6g}"), float(f"{leg:.6g}"), seed)
                    m = ["0.95", "fixed", "", "", "5"] if arm == "muon" else ["", "", "", "", ""]
                    rows.append([arm, f"{lr:.6g}", f"{leg:.6g}", *m, seed, "completed", v, 0.1, v,
                                 v + 0.6, v + 0.3, v + 0.1, v, "", 1.0])
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


def tied_study() -> Study:
    """The default study with Muon's leg LR tied to its LR (0.1x) instead of searched."""
    study = load_study(DEFAULT_STUDY)
    data = study.model_dump(mode="json")
    muon = data["arms"]["muon"]
    muon["space"].pop("adamw_lr")
    muon["start"].pop("adamw_lr")
    muon["tie"] = {"adamw_lr": {"source": "lr", "factor": 0.1}}
    return Study.model_validate(data)


# ------------------------------------------------------------------------------ the spec's last layer


def test_swapped_setting_is_the_last_spec_layer_even_over_a_tie():
    study = tied_study()
    params = {"lr": 0.2, "momentum": 0.95, "momentum_schedule.kind": "fixed", "ns_steps": 5}
    assert study.trial_spec("muon", params, seed=1).leg_lr == pytest.approx(0.02)  # the tie
    spec = study.trial_spec("muon", params, seed=1, swapped={"adamw_lr": 0.0042, "weight_decay": 0.0})
    assert spec.leg_lr == pytest.approx(0.0042) and spec.weight_decay == 0.0
    # the loop trains that spec for a swap run (its record keeps what was swapped)
    from research_agents.actions import Run

    loop = ResearchLoop(study, None, None, None, Path("."), make_plan(study, 40))  # type: ignore[arg-type]
    run = Run("muon", params, 1000, "swap", "swap", 9, swap=SwapOf(pair=("adamw", "muon"),
                                                                     settings={"adamw_lr": 0.0042}))
    assert loop.spec(run).leg_lr == pytest.approx(0.0042)


def test_replay_looks_up_the_swapped_leg_lr(tmp_path):
    study = load_study(DEFAULT_STUDY)
    ex = ReplayExecutor(make_table(tmp_path / "t.csv"), study=study)
    own = study.trial_spec("adamw", {"lr": 0.003, "adamw_lr": 0.0095}, seed=1000)
    swapped = study.trial_spec("adamw", {"lr": 0.003, "adamw_lr": 0.0095}, seed=1000, swapped={"adamw_lr": 0.17})
    col = HEADER.index("adamw_lr")  # key: (arm, *knob columns), knob columns in header order from "lr"
    assert float(ex.nearest(own)[col]) == pytest.approx(0.00948683, rel=1e-4)
    assert float(ex.nearest(swapped)[col]) == pytest.approx(0.168702, rel=1e-4)


# ------------------------------------------------------------------------------ budget


def test_plan_reserves_swaps_only_where_shared_settings_can_differ():
    study = load_study(DEFAULT_STUDY)
    assert swap_pairs(study) == [("adamw", "muon")]  # adamw_lr searched in both arms
    plan = make_plan(study, 24, adaptive=True, swap_pairs=swap_pairs(study))
    assert plan.swap_pairs == [("adamw", "muon")] and len(plan.confirm_seeds) == 3
    assert plan.search_budget == 24 - 3 * (2 + 2) and plan.swap_reserve() == 6
    # a budget too small for swaps beside the search plans none (the plan it always had)
    small = make_plan(study, 10, swap_pairs=swap_pairs(study))
    assert small.swap_pairs == [] and small == make_plan(study, 10)
    # a study whose shared settings are fixed alike in both arms: no swap pair, the plan as before
    data = study.model_dump(mode="json")
    for arm in data["arms"].values():
        arm["space"].pop("adamw_lr")
        arm["start"].pop("adamw_lr")
        arm["base"]["adamw_lr"] = 0.01
        arm["base"]["adamw_betas"] = [0.9, 0.95]
    fixed = Study.model_validate(data)
    assert swap_pairs(fixed) == []
    for budget in (12, 20, 40):
        assert make_plan(fixed, budget, adaptive=True, swap_pairs=swap_pairs(fixed)) == \
            make_plan(fixed, budget, adaptive=True)


# ------------------------------------------------------------------------------ who chooses


def _option() -> SwapOption:
    return SwapOption("adamw", "muon", {"lr": 0.003}, {"lr": 0.08}, {"adamw_lr": 0.03}, {"adamw_lr": 0.01},
                      [1000, 1001, 1002])


def test_default_hook_swaps_what_the_budget_holds():
    o = _option()
    assert [(s.arm_a, s.arm_b) for s in default_swaps([o], [], 5, 6)] == [("adamw", "muon")]
    assert default_swaps([o], [], 5, 5) == []  # 6 runs do not fit in 5
    runs, why = Swap(arm_a="muon", arm_b="adamw", origin="llm").expand([o], [], 5, 6)
    assert why is None and [(r.arm, r.seed, r.phase) for r in runs][:2] == [
        ("adamw", 1000, "swap"),
        ("muon", 1000, "swap"),
    ]
    assert runs[0].swap == SwapOf(pair=("adamw", "muon"), settings={"adamw_lr": 0.03})
    _, why = Swap(arm_a="adamw", arm_b="nope", origin="llm").expand([o], [], 5, 6)
    assert "not a compared pair" in why
    _, why = Swap(arm_a="adamw", arm_b="muon", origin="llm").expand([o], [], 5, 4)
    assert "needs 6 runs" in why
    done = [TrialRecord(id=i, order=i, arm=r.arm, params=r.params, seed=r.seed, origin="swap", phase="swap",
                        round=5, status="completed", val_loss=4.0, swap=r.swap) for i, r in enumerate(runs[:4], 1)]
    assert len(o.runs(done, 6, "swap", "")) == 2  # a resume repeats nothing


class _Client:
    def __init__(self, text: str | None = None, error: Exception | None = None):
        self.text, self.error, self.failures, self.calls = text, error, [], []

    def complete(self, messages, schema):
        self.calls.append((messages, schema))
        if self.error is not None:
            raise self.error
        return CallResult(text=self.text, mode="json_schema", prompt_tokens=10, completion_tokens=5, latency_s=0.1,
                          failures=[])

    def scrub(self, text: str) -> str:
        return text


@pytest.mark.parametrize("reply,chosen,fallback", [
    ('{"actions": [{"kind": "swap", "pair": "muon/adamw", "rationale": "split the gap"}]}', ["adamw/muon"], False),
    ('{"actions": []}', [], False),
    ('{"actions": [{"kind": "swap", "pair": "adamw/sgd", "rationale": "x"}]}', ["adamw/muon"], True),
    ("I would rather not.", ["adamw/muon"], True),
    ('{"actions": [{"kind": "swap"}]}', ["adamw/muon"], True),
])
def test_llm_chooses_swaps_and_a_bad_reply_falls_back(reply, chosen, fallback):
    from research_agents.planners.llm_client import LLMUnavailable

    planner = LLMPlanner(LLMConfig(base_url="http://127.0.0.1:9", configured=True), client=_Client(reply))
    got = planner.choose_swaps([_option()], [], 7, 10)
    assert [f"{s.arm_a}/{s.arm_b}" for s in got] == chosen
    assert all(s.origin == ("swap" if fallback else "llm") for s in got)
    schema = planner.client.calls[0][1]
    assert schema["properties"]["actions"]["items"]["properties"]["pair"]["enum"] == ["adamw/muon"]
    down = LLMPlanner(LLMConfig(base_url="http://127.0.0.1:9", configured=True),
                      client=_Client(error=LLMUnavailable("refused")))
    assert [s.origin for s in down.choose_swaps([_option()], [], 7, 10)] == ["swap"]


# ------------------------------------------------------------------------------ end to end (replay)


@pytest.fixture(scope="module")
def swapped_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("swap")
    table = make_table(tmp / "table.csv")
    out = tmp / "run"
    code = cli.main(["run", "--study", str(DEFAULT_STUDY), "--budget", "24", "--planner", "random",
                     "--executor", f"replay:{table}", "--out", str(out)])
    assert code == 0
    study = load_study(DEFAULT_STUDY)
    return out, table, study, OptunaStore.for_study(out, study, readonly=True).records()


def test_swap_runs_are_paired_on_the_confirmation_seeds(swapped_run):
    out, _, study, records = swapped_run
    confirm = [r for r in records if r.phase == "confirm"]
    swaps = [r for r in records if r.phase == "swap"]
    assert len(records) == 24 and len(swaps) == 6
    leaders = {r.arm: r for r in confirm}
    assert {r.seed for r in swaps} == {r.seed for r in confirm} == {1000, 1001, 1002}
    for r in swaps:
        other = leaders["muon" if r.arm == "adamw" else "adamw"]
        assert r.params == leaders[r.arm].params and r.swap.pair == ("adamw", "muon")
        other_leg = study.trial_spec(other.arm, other.params, seed=0).leg_lr
        assert r.swap.settings["adamw_lr"] == pytest.approx(other_leg)
        trained = json.loads((out / r.run_dir / "metrics.json").read_text())["spec"]
        assert trained["adamw_lr"] == pytest.approx(other_leg)  # the trained spec has the other leader's leg LR
    assert leaders["adamw"].params["adamw_lr"] != pytest.approx(leaders["muon"].params["adamw_lr"])


def test_the_report_decomposes_the_planted_gap(swapped_run):
    out, table, study, records = swapped_run
    ex = ReplayExecutor(table, study=study)
    lead = {r.arm: r for r in records if r.phase == "confirm"}
    legs = {a: study.trial_spec(a, r.params, seed=0).leg_lr for a, r in lead.items()}

    def cell(arm: str, leg: float) -> float:  # the planted loss of the table row the replay answers with
        key = ex.nearest(study.trial_spec(arm, lead[arm].params, seed=0, swapped={"adamw_lr": leg}))
        return planted_loss(arm, float(key[1]), float(key[2]), 0)

    A, B = cell("adamw", legs["adamw"]), cell("muon", legs["muon"])
    A2, B2 = cell("adamw", legs["muon"]), cell("muon", legs["adamw"])
    summary = json.loads((out / "summary.json").read_text())
    (d,) = summary["decomposition"]
    assert d["optimizer"]["mean"] == pytest.approx(((A - B2) + (A2 - B)) / 2, abs=1e-9)
    assert d["shared"]["mean"] == pytest.approx(((A - A2) + (B2 - B)) / 2, abs=1e-9)
    assert d["interaction"]["mean"] == pytest.approx(((A - B2) - (A2 - B)) / 2, abs=1e-9)
    assert d["optimizer"]["mean"] + d["shared"]["mean"] == pytest.approx(d["gap"]["mean"], abs=1e-12)
    assert d["optimizer"]["n"] == 3 and len(d["optimizer"]["ci"]) == 2
    report = (out / "report.md").read_text()
    section = report.split("## Where the gap comes from")[1].split("\n## ")[0]
    assert report.index("## Recommendation") < report.index("## Where the gap comes from") < \
        report.index("## Fairness audit")
    assert "| adamw's leader |" in section and "optimizer effect" in section and "interaction" in section
    assert "By how much: the optimizer effect" in summary["recommendation"]["text"]
    assert summary["budget"]["by_phase"]["swap"] == 6


def test_resume_after_a_stop_mid_swap_repeats_nothing(tmp_path):
    study = load_study(DEFAULT_STUDY)
    table = make_table(tmp_path / "table.csv")
    plan = make_plan(study, 24, swap_pairs=swap_pairs(study))

    def loop(stop_after_swaps: int | None) -> ResearchLoop:
        planner, _ = make_planner("random", study, None)
        lp = ResearchLoop(study, OptunaStore.for_study(tmp_path / "run", study), ReplayExecutor(table, study=study),
                          planner, tmp_path / "run", plan)

        def ended(r: TrialRecord) -> None:
            if stop_after_swaps is not None and r.phase == "swap" and \
                    sum(x.phase == "swap" for x in lp.records() if x.status == "completed") >= stop_after_swaps:
                lp._stop = True

        lp.hooks.on_trial_end = ended
        return lp

    from research_agents.execution.base import TrialInterrupted

    with pytest.raises(TrialInterrupted):
        loop(stop_after_swaps=2).run()
    first = loop(None)
    assert 2 <= sum(r.phase == "swap" and r.status == "completed" for r in first.records()) < 6
    first.run()
    records = first.records()
    swaps = [r for r in records if r.phase == "swap" and r.status == "completed"]
    assert len(swaps) == 6 and len({(r.config, r.seed, r.swap.key) for r in swaps}) == 6
    assert first.spent() == 24
    # a resumed search (a larger --budget) plans from everything but the swap runs
    assert all(r.phase != "swap" for r in first.context(first.snapshot(), first.planner).history)
    again = loop(None)
    again.run()
    assert len(again.records()) == len(records)  # a second resume makes nothing
