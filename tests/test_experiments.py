"""The seed studies in experiments/: they validate at every scale, list, run (exp9 --quick at cpu
scale with short steps) into the seeds' artifacts, and record the momentum schedules as defined."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from research_agents.analysis.claims import Run, evaluate
from research_agents.analysis.findings import analyze
from research_agents.cli import main
from research_agents.config import Plan, Study, load_study
from research_agents.config.runforms import point_plan, selected_points
from research_agents.records import TrialRecord
from research_agents.report.claims import claim_details, claim_statistics

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
STUDIES = sorted(EXPERIMENTS.glob("*.toml"))
SEVEN = ["muon_baseline", "adam_baseline", "adam_higher_lr", "adam_lower_lr", "muon_only", "muon_constant_lr",
         "adam_constant_lr"]
# the same tiny shapes as conftest.FAST_BASE, so the token cache is shared with the loop tests
FAST_SET = ["steps=12", "eval_every=6", "eval_batches=2", "batch_size=8", "seq_len=32", "model.d_model=32",
            "model.n_heads=2", "model.n_layers=1", "model.d_ff=64", "data.max_docs=40", "data.bpe_vocab_size=300"]
PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------ definitions


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_validates_at_every_scale(path):
    study = load_study(path)
    assert {"cpu", "seed"} <= set(study.scales), "every study has a seed and a cpu scale"
    for name in study.scales:
        scaled = study.for_scale(name)
        assert scaled.scale == name
        runs = [(p.arm, p.params) for p in scaled.points] or [(a, {}) for a in scaled.arms]
        for arm, params in runs:  # every run of every scale makes a valid trial spec
            scaled.trial_spec(arm, params, seed=scaled.seeds.search[0])
        if study.points:
            assert len(scaled.seeds.search) >= 2, "named experiments run on several seeds"


def test_list_shows_every_study(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for path in STUDIES:
        assert load_study(path).name in out
    for name in ("exp9_muon_vs_adam", "muon_ablation_18", "block_muon", "momentum_warmup", "muon_vs_adamw"):
        assert name in out


def test_study_contents_follow_the_seeds():
    exp9 = load_study(EXPERIMENTS / "exp9_muon_vs_adam.toml")
    names = {p.name for p in exp9.points}
    assert set(SEVEN) <= names and exp9.quick == ["muon_baseline", "adam_baseline"]
    lrs = sorted(p.params["lr"] for p in exp9.select_points(["muon_lr_sweep"]))
    assert lrs == [0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08]
    adam = sorted(p.params["lr"] for p in exp9.select_points(["adam_lr_sweep"]))
    assert adam[0] == 1e-4 and adam[-1] == 1e-2 and len(adam) == 11
    moms = sorted(p.params.get("momentum", 0.95) for p in exp9.select_points(["momentum_sweep"]))
    assert moms == [0.85, 0.9, 0.92, 0.95, 0.97, 0.99]
    assert exp9.select_points(["adam_lr_0.001"])[0].name == "adam_baseline"  # an alias
    assert exp9.for_scale("seed").preset == "seed-moe" and exp9.for_scale("cpu").preset == "tiny"

    grid = load_study(EXPERIMENTS / "muon_ablation_18.toml")
    cells = {(p.params["lr"], p.params["momentum"], p.params["ns_steps"]) for p in grid.points}
    assert cells == {(lr, m, ns) for lr in (1 / 32, 1 / 16, 1 / 8) for m in (7 / 8, 15 / 16) for ns in (4, 8, 16)}

    block = load_study(EXPERIMENTS / "block_muon.toml")
    sizes = {s: sorted(p.params.get("block_size") or 0 for p in block.for_scale(s).points) for s in ("seed", "cpu")}
    assert sizes == {"seed": [0, 192, 256, 512, 1024], "cpu": [0, 24, 32, 64, 128]}
    spec = block.for_scale("seed").trial_spec("muon", {"block_size": 192}, seed=0)
    assert spec.diagnostics.update_rms and spec.diagnostics.svd_entropy and spec.model.d_model == 1024

    mom = load_study(EXPERIMENTS / "momentum_warmup.toml")
    assert {"quick", "full", "t4", "cpu", "seed"} <= set(mom.scales)
    assert mom.for_scale("quick").seeds.search == [0, 1] and len(mom.for_scale("full").seeds.search) == 3
    delayed = mom.for_scale("seed").select_points(["delayed_warmup"])[0]
    assert delayed.params["momentum_schedule.delay_steps"] == 100  # seed 004: from step 100


def test_point_selection_and_plan():
    study = load_study(EXPERIMENTS / "exp9_muon_vs_adam.toml").for_scale("cpu")
    points = selected_points(study, quick=True)
    assert [p.name for p in points] == ["muon_baseline", "adam_baseline"]
    plan = point_plan(study, points, 6)
    assert plan.confirm_seeds == [] and plan.search_share == {"muon": 3, "adam": 3}
    assert point_plan(study, points, 4).search_share == {"muon": 3, "adam": 0}  # whole points only
    assert len(selected_points(study, run_all=True)) == len(study.points)
    assert selected_points(load_study(EXPERIMENTS / "muon_vs_adamw.toml")) is None  # a search study
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        study.select_points(["nope"])
    twin = {"name": "t", "question": "q", "arms": {"a": {"base": {"optimizer": "adamw"}}},
            "points": [{"name": "x", "arm": "a", "params": {"lr": 0.01}},
                       {"name": "y", "arm": "a", "params": {"lr": 0.01}}]}
    with pytest.raises(ValueError, match="same configuration"):
        Study.model_validate(twin)
    with pytest.raises(ValueError, match="unknown 'nope'"):
        Study.model_validate({**twin, "points": twin["points"][:1], "claims": ["nope"]})


def test_run_list_and_bad_input(capsys):
    assert main(["run", "--study", "exp9_muon_vs_adam", "--list"]) == 0
    out = capsys.readouterr().out
    for name in SEVEN:
        assert name in out
    assert main(["run", "--study", "exp9_muon_vs_adam", "-e", "muon_baseline", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown experiment 'nope'" in err and "muon_baseline" in err and "\n" not in err
    assert main(["run", "--study", "exp9_muon_vs_adam", "--quick", "--all"]) == 2
    assert main(["run", "--study", "exp9_muon_vs_adam", "--quick", "--scale", "huge"]) == 2
    assert main(["run", "--study", "exp9_muon_vs_adam", "--quick", "--set", "stepz=3"]) == 2
    capsys.readouterr()
    assert main(["run", "--study", "exp9_muon_vs_adam", "--quick", "--rungs"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--rungs and --rungs-late do not apply" in err and "\n" not in err


# ------------------------------------------------------------------------------ a real run


def test_exp9_quick_cpu_produces_the_seeds_artifacts(tmp_path, token_cache):
    out = tmp_path / "exp9"
    code = main(["run", "--study", "exp9_muon_vs_adam", "--quick", "--scale", "cpu", "--save-model",
                 "--out", str(out), "--set", *FAST_SET])
    assert code == 0
    trials = sorted((out / "trials").iterdir())
    assert len(trials) == 6  # 2 experiments x 3 seeds
    for trial in trials:
        metrics = json.loads((trial / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["spec"]["steps"] == 12
        assert {"step", "time_s", "lr", "train_loss"} <= set(metrics["history"][0])
        assert (trial / "metrics_plot.png").read_bytes()[:8] == PNG
        assert (trial / "model.safetensors").is_file()
    assert (out / "comparison_plot.png").read_bytes()[:8] == PNG

    summary = json.loads((out / "comparison_summary.json").read_text())
    assert {"study", "scale", "metric", "keys", "configs", "best", "claims"} <= set(summary)
    assert summary["scale"] == "cpu" and {c["name"] for c in summary["configs"]} == {"muon_baseline", "adam_baseline"}
    for c in summary["configs"]:
        assert {"rank", "name", "params", "n", "seeds", "val_loss", "val_perplexity", "val_accuracy", "time_s"} <= set(
            c
        )
        assert c["n"] == 3 and c["seeds"] == [0, 1, 2]
        assert {"mean", "ci_low", "ci_high"} <= set(c["val_loss"]) and c["val_loss"]["ci_low"] is not None
    assert summary["best"]["rank"] == 1
    claims = {c["claim"]: c for c in summary["claims"]}
    assert claims["muon_beats_adam"]["verdict"] in ("agrees", "disagrees", "inconclusive")
    assert "paired" in claims["muon_beats_adam"]["statistics"]
    assert claims["muon_wider_lr_range"]["verdict"] == "inconclusive"  # no LR sweep in --quick

    report = (out / "report.md").read_text()
    assert "| rank | configuration | val loss | 95% CI | val perplexity | val accuracy | time (s) | seeds n (seeds) |" \
        in report
    assert "muon_baseline" in report and "3 (0, 1, 2)" in report
    assert "## Seed claims" in report and "## Seed artifacts" in report
    assert "--scale cpu -e muon_baseline adam_baseline" in report  # the reproduce line
    assert main(["report", str(out)]) == 0  # rebuilt from the store, same run form
    # the same command again: nothing left to run, nothing re-trained
    assert main(["run", "--study", "exp9_muon_vs_adam", "--quick", "--scale", "cpu", "--save-model",
                 "--out", str(out), "--set", *FAST_SET]) == 0
    assert len(list((out / "trials").iterdir())) == 6
    # another scale or other overrides may not continue this run
    assert main(["run", "--study", "exp9_muon_vs_adam", "--quick", "--scale", "cpu", "--out", str(out)]) == 2


# ------------------------------------------------------------------------------ momentum schedules


def _expected(kind: str, p: dict, target: float, t: int, norms: list[float]) -> float:
    """Seed 004's schedules, written out from their definitions; t = 0-based optimizer step."""
    def ramp(start, frac):
        return start + (target - start) * min(1.0, max(0.0, frac))

    if kind == "fixed":
        return target
    if kind == "linear":
        return ramp(p["start"], t / p["warmup_steps"])
    if kind == "cosine":
        return p["start"] + (target - p["start"]) * (1 - math.cos(math.pi * min(1.0, t / p["warmup_steps"]))) / 2
    if kind == "exponential":
        w = p["warmup_steps"]
        return target if t >= w else target - (target - p["start"]) * math.exp(-5 * t / w)
    if kind == "step":
        return next((v for v, b in zip(p["values"], p["boundaries"]) if t < b), target)
    if kind == "sigmoid":
        w = p["warmup_steps"]
        return target if t >= w else \
            p["start"] + (target - p["start"]) / (1 + math.exp(-p["steepness"] * (t / w - 0.5)))
    if kind == "delayed":
        return ramp(p["start"], (t - p["delay_steps"]) / p["warmup_steps"])
    if kind == "adaptive":
        window = norms[max(0, t - p["window"]):t]
        if len(window) < p["window"]:
            return p["start"]
        mean = sum(window) / len(window)
        sd = math.sqrt(sum((x - mean) ** 2 for x in window) / (len(window) - 1))
        return p["start"] + (target - p["start"]) / (1 + (sd / mean) / p["cv_scale"])
    raise AssertionError(kind)


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: a second thread only contends
    yield
    torch.set_num_threads(before)


def test_momentum_schedules_record_their_definitions(token_cache, one_thread):
    from trainer.schedules import MomentumSchedule
    from trainer.train import train

    # recorded: every schedule of the cpu scale trains 12 steps; metrics.json's momentum per step
    # is the definition's value
    study = load_study(EXPERIMENTS / "momentum_warmup.toml").for_scale("cpu")
    tiny = {k: json.loads(v) for k, v in (s.split("=") for s in FAST_SET)}
    tiny.update(eval_every=12, eval_batches=1, batch_size=4, seq_len=16)
    seen = {}
    for point in study.points:
        spec = study.trial_spec(point.arm, point.params, seed=0, overrides=tiny)
        hist = train(spec).history
        assert [h.step for h in hist] == list(range(1, 13))
        sched = spec.momentum_schedule.model_dump()
        norms = [h.grad_norm for h in hist]
        for t, h in enumerate(hist):
            want = _expected(sched["kind"], sched, spec.momentum, t, norms)
            assert h.momentum == pytest.approx(want, abs=1e-9), (point.name, t)
        seen[point.name] = [h.momentum for h in hist]
    assert {seen["fixed_095"][0], seen["fixed_090"][0], seen["fixed_099"][0]} == {0.95, 0.90, 0.99}
    assert seen["step_warmup"][:10] == [0.5] * 10 and seen["step_warmup"][10] == 0.7
    assert seen["delayed_warmup"][:11] == [0.0] * 11 and seen["delayed_warmup"][11] > 0  # cpu: delay 10
    assert seen["adaptive_warmup"][:10] == [0.5] * 10 and seen["adaptive_warmup"][10] > 0.5  # window 10

    # the seed's own values (1000 steps): the schedules as the trainer computes them, step by step
    seed = load_study(EXPERIMENTS / "momentum_warmup.toml").for_scale("seed")
    curves = {}
    for point in seed.points:
        if point.name == "adaptive_warmup":
            continue  # depends on the gradient norms: checked on the recorded runs above
        spec = seed.trial_spec(point.arm, point.params, seed=0)
        sched, fn = spec.momentum_schedule.model_dump(), MomentumSchedule(spec)
        curves[point.name] = [fn(t) for t in range(1000)]
        for t in range(1000):
            assert curves[point.name][t] == pytest.approx(_expected(sched["kind"], sched, spec.momentum, t, []),
                                                          abs=1e-12), (point.name, t)
    for name, first in (("linear_warmup", 0.0), ("cosine_warmup", 0.0), ("exponential_warmup", 0.1),
                        ("sigmoid_warmup", 0.0), ("delayed_warmup", 0.0)):
        assert curves[name][0] == pytest.approx(first, abs=0.01) and curves[name][-1] == pytest.approx(0.95)
    assert sorted(set(curves["step_warmup"])) == [0.5, 0.7, 0.85, 0.95]
    assert set(curves["delayed_warmup"][:101]) == {0.0} and curves["delayed_warmup"][101] > 0  # from step 100


# ------------------------------------------------------------------------------ claims and heatmap


def _run(label, seed, loss, **spec) -> Run:
    rec = TrialRecord(id=seed, order=seed, arm="muon", params={"name": label}, seed=seed, origin="grid",
                      phase="search", round=1, status="completed", val_loss=loss, run_dir="")
    return Run(rec, label, {"optimizer": "muon", "lr": 0.02, "adamw_lr": 0.002, "momentum": 0.95,
                            "momentum_schedule.kind": "fixed", "ns_steps": 5, "warmup_ratio": 0.05, **spec}, [], [])


def test_claims_judge_synthetic_runs():
    study = Study.model_validate({"name": "c", "question": "q", "arms": {"muon": {}},
                                  "claims": ["ns_3_4_as_good_as_5_plus", "lower_muon_momentum_better",
                                             "warmup_helps_muon"]})
    wiggle = [0.001, -0.002, 0.0015, -0.001, 0.0005, 0.0]

    def runs_of(label, loss, k, **spec):  # seed-to-seed noise of about 0.001, different per config
        return [_run(label, s, loss + w, **spec) for s, w in enumerate(wiggle[k:] + wiggle[:k])]

    base = runs_of("ns5", 4.0, 0) + runs_of("m90", 3.9, 2, momentum=0.9) + runs_of("m99", 4.2, 3, momentum=0.99) \
        + runs_of("nowarm", 4.3, 4, warmup_ratio=0.0)
    runs = base + runs_of("ns3", 4.001, 1, ns_steps=3)
    fnd = analyze(study, [r.record for r in runs], Plan(30, [], 30, {"muon": 30}))
    verdicts = {c.claim: c.verdict for c in evaluate(study, runs, fnd)}
    assert verdicts == {"ns_3_4_as_good_as_5_plus": "agrees", "lower_muon_momentum_better": "agrees",
                        "warmup_helps_muon": "agrees"}
    worse = base + runs_of("ns3", 4.3, 1, ns_steps=3)
    assert evaluate(study, worse, fnd)[0].verdict == "disagrees"
    reversed_momentum = runs_of("ns5", 4.0, 0) + runs_of("m90", 4.2, 2, momentum=0.9) \
        + runs_of("m99", 3.9, 3, momentum=0.99)
    assert evaluate(study, reversed_momentum, fnd)[1].verdict == "disagrees"


def test_lr_range_claim_on_synthetic_sweeps():
    study = Study.model_validate({"name": "c", "question": "q", "arms": {"muon": {}},
                                  "claims": ["muon_wider_lr_range", "muon_beats_adam"]})
    wiggle = [0.003, -0.002, 0.0]
    runs = []
    for lr in (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08):  # Muon: flat over its whole sweep
        runs += [_run(f"muon_{lr}", s, 4.0 + w + 0.01 * (lr != 0.05), lr=lr, adamw_lr=lr / 10)
                 for s, w in enumerate(wiggle)]
    for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2):  # Adam: a narrow valley around 1e-3
        runs += [_run(f"adam_{lr}", s, 4.3 + w + 0.5 * abs(math.log10(lr / 1e-3)), optimizer="adamw", lr=lr)
                 for s, w in enumerate(wiggle)]
    lr_range, beats = evaluate(study, runs, analyze(study, [r.record for r in runs]))
    assert lr_range.verdict == "agrees" and lr_range.lr_ranges.width_ratio == pytest.approx(4.0)
    assert claim_details(lr_range)["width_ratio_muon_over_adam"] == pytest.approx(4.0)
    assert "reaches the end of its sweep" in claim_statistics(lr_range)
    assert beats.verdict == "agrees" and beats.configs == {"muon": 7, "adamw": 5}
    assert "best of 7 (Muon) and 5 (Adam)" in claim_statistics(beats)


def test_ablation_heatmap_shows_all_18_cells(tmp_path):
    from research_agents.report import plots

    study = load_study(EXPERIMENTS / "muon_ablation_18.toml")
    records = [TrialRecord(id=i, order=i, arm="muon", params=p.params, seed=0, origin="grid", phase="search",
                           round=1, status="completed", val_loss=4.0 + p.params["lr"] + p.params["ns_steps"] / 100,
                           run_dir="") for i, p in enumerate(study.points)]
    px, pys, xs, ys, cells, others = plots._grid_for_arm(records, "muon")
    assert len(xs) * len(ys) == 18 and len(cells) == 18 and "adamw_lr" not in (px, *pys, *others)
    path = plots.heatmap(tmp_path, records, analyze(study, records))
    assert path is not None and path.read_bytes()[:8] == PNG
