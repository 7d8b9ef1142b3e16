"""Findings, round and final reports, CSV/JSON outputs and plots, on synthetic trial records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from research_agents.analysis.findings import analyze
from research_agents.config import Plan, Study
from research_agents.records import TrialRecord, read_metrics
from research_agents.report.final import CSV_COLUMNS, setup_from_metrics, write_final_report
from research_agents.report.recommendation import recommendation_text
from research_agents.report.round import write_round_report
from research_agents.report.sections import comparison_note
from research_agents.report.words import limit_text

SECTIONS = ["## Question", "## Set-up", "## Ranking", "## Noise floor and spread", "## Comparisons",
            "## Recommendation", "## LR sensitivity", "## Outcomes by origin", "## Budget", "## Plots",
            "## Reproduce"]
CONFIRM_SEEDS = [1000, 1001, 1002, 1003, 1004]
# small deterministic seed-to-seed wiggle, different per arm
WIGGLE_A = [0.004, -0.006, 0.002, 0.007, -0.003]
WIGGLE_B = [-0.002, 0.005, -0.004, 0.001, 0.006]


def make_study() -> Study:
    return Study.model_validate({
        "name": "muon-vs-adamw-test",
        "question": "Does Muon reach a lower val loss than AdamW at equal tokens?",
        "arms": {
            "muon": {"base": {"optimizer": "muon"},
                     "space": {"lr": {"type": "float", "low": 0.005, "high": 0.2, "log": True},
                               "momentum": {"type": "choice", "choices": [0.9, 0.95]}}},
            "adamw": {"base": {"optimizer": "adamw"},
                      "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}},
        },
    })


def make_plan() -> Plan:
    return Plan(budget=40, confirm_seeds=CONFIRM_SEEDS, search_budget=30, search_share={"muon": 15, "adamw": 15})


class Builder:
    """Trial records plus a fake metrics.json for each, under tmp_path."""

    def __init__(self, out: Path):
        self.out = out
        self.records: list[TrialRecord] = []

    def add(self, arm, params, seed, origin, phase, round, status="completed", loss=None, reason=None,
            rationale="") -> TrialRecord:
        n = len(self.records) + 1
        run_dir = f"trials/{n:04d}-{arm}-s{seed}"
        ok = status == "completed"
        rec = TrialRecord(id=n, order=n, arm=arm, params=params, seed=seed, origin=origin, phase=phase,
                          round=round, rationale=rationale, status=status, reason=reason,
                          val_loss=loss if ok or status == "diverged" else None,
                          val_accuracy=0.3 - (loss - 4) * 0.1 if ok else None,
                          val_perplexity=2.718 ** loss if ok else None, train_loss=loss, wall_time_s=5.0 + n % 3,
                          optimizer_steps=100, tokens_seen=102400, run_dir=run_dir)
        self.records.append(rec)
        if status != "failed":
            hist = [{"step": s, "tokens": s * 1024, "lr": params.get("lr"), "train_loss": 7.0 - s / 40,
                     "grad_norm": 1.0} for s in range(1, 101)]
            for h in hist:
                if h["step"] % 25 == 0 and loss is not None:
                    h["val_loss"] = loss + (100 - h["step"]) / 40
                    h["val_accuracy"] = 0.2
            metrics = {"spec": {"optimizer": arm, "lr": params.get("lr"), "steps": 100, "batch_size": 16,
                                "grad_accum": 1, "seq_len": 64, "model": {"kind": "moe", "d_model": 64},
                                "data": {"source": "sotu", "tokenizer": "bpe"}},
                       "status": status, "reason": reason,
                       "final": {"val_loss": loss, "val_accuracy": 0.2, "val_perplexity": 50.0, "train_loss": loss},
                       "history": hist, "optimizer_steps": 100, "tokens_seen": 102400, "wall_time_s": 5.0,
                       "device": "cpu", "precision": "fp32",
                       "env": {"python": "3.12", "torch": "2.13.0", "numpy": "2.0", "platform": "linux",
                               "cuda": None, "threads": 2, "data": {"tokenizer": "bpe:abc"}, "n_params": 123456}}
            d = self.out / run_dir
            d.mkdir(parents=True, exist_ok=True)
            (d / "metrics.json").write_text(json.dumps(metrics))
        return rec


MUON_LEADER = {"lr": 0.04, "momentum": 0.95}
ADAMW_LEADER = {"lr": 0.002}


def build(out: Path, muon_confirm: float | None, adamw_confirm: float | None) -> Builder:
    """Search on seed 0 (one diverged, one failed run, one named grid point), then confirmation."""
    b = Builder(out)
    rnd = 1
    for lr, base in ((0.01, 4.30), (0.02, 4.15), (0.04, 4.05), (0.08, 4.20)):
        for mom, extra in ((0.9, 0.03), (0.95, 0.0)):
            b.add("muon", {"lr": lr, "momentum": mom}, 0, "random" if lr != 0.04 else "tpe", "search", rnd,
                  loss=base + extra, rationale="explore")
        rnd += 1
    b.add("muon", {"lr": 0.16, "momentum": 0.9}, 0, "llm", "search", rnd, status="failed",
          reason="RuntimeError: out of memory", rationale="try a high lr")
    for lr, loss in ((0.0005, 4.60), (0.001, 4.45), (0.002, 4.40), (0.004, 4.48)):
        b.add("adamw", {"lr": lr}, 0, "grid" if lr == 0.001 else "random", "search", rnd, loss=loss,
              rationale="point: adam_baseline" if lr == 0.001 else "random draw")
    b.add("adamw", {"lr": 0.008}, 0, "random", "search", rnd, status="diverged", loss=None,
          reason="train loss 16.2 at step 40 (threshold 15.0)")
    # repeat two configs on a second search seed so the noise floor exists
    b.add("muon", MUON_LEADER, 1, "tpe", "search", rnd + 1, loss=4.06)
    b.add("adamw", ADAMW_LEADER, 1, "random", "search", rnd + 1, loss=4.395)
    if muon_confirm is not None:
        for i, seed in enumerate(CONFIRM_SEEDS):
            b.add("muon", MUON_LEADER, seed, "confirm", "confirm", rnd + 2, loss=muon_confirm + WIGGLE_A[i],
                  rationale="leader re-run on a fresh seed")
            b.add("adamw", ADAMW_LEADER, seed, "confirm", "confirm", rnd + 2, loss=adamw_confirm + WIGGLE_B[i],
                  rationale="leader re-run on a fresh seed")
    return b


def final(tmp_path: Path, b: Builder):
    study = make_study()
    setup = setup_from_metrics(read_metrics(tmp_path / b.records[0].run_dir), study, planner="hybrid")
    fnd = write_final_report(tmp_path, study, make_plan(), b.records, setup,
                             ["python -m research_agents run muon-vs-adamw-test --budget 40"])
    return fnd, (tmp_path / "report.md").read_text()


def test_large_consistent_difference(tmp_path):
    b = build(tmp_path, muon_confirm=4.05, adamw_confirm=4.40)
    study = make_study()
    round_text = write_round_report(tmp_path, study, 3, b.records[-10:], b.records, make_plan())
    assert (tmp_path / "rounds" / "round-03.md").read_text() == round_text
    for heading in ("## Tried this round", "## Results so far", "## Noise floor", "## Budget", "## Failures",
                    "## Open questions"):
        assert heading in round_text
    assert "out of memory" in round_text and "Used 26 of 40" in round_text

    fnd, report = final(tmp_path, b)
    assert report.startswith("# muon-vs-adamw-test\n")
    positions = [report.index(s + "\n") for s in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    # the set-up renders every key
    for key in ("preset", "data", "tokens_per_trial", "device", "precision", "torch", "planner"):
        assert f"**{key}**" in report
    # one comparison, muon (a) vs adamw (b): adamw's loss is higher, so "a better"
    (res,) = fnd.comparisons
    c = res.comparison
    assert c.verdict == "a better" and c.n_pairs == 5
    assert "0.0625" in report  # the Wilcoxon min-p note for 5 pairs
    assert any("Wilcoxon" in lim and "0.0625" in lim for lim in map(limit_text, c.limits))
    rec = fnd.recommendation
    assert rec.confidence in ("high", "moderate") and rec.winner_arm == "muon"
    assert rec.confidence == "high"  # p_adj tiny, muon lower on every seed
    assert "lr=0.04" in recommendation_text(rec) and "Confidence: high" in report
    # ranking: every config, best first; unfinished ones last and marked
    assert len(fnd.configs) == 14
    means = [c.summary.mean for c in fnd.configs if c.summary.mean is not None]
    assert means == sorted(means)
    assert fnd.configs[-1].summary.mean is None and "adam_baseline" in report
    assert fnd.lr_sensitivity["muon"].best_lr == 0.04 and "adamw" in fnd.lr_sensitivity
    assert fnd.budget.used == 26 and fnd.budget.total == 40
    assert fnd.spread.separated is True

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == len(b.records) and list(rows[0]) == CSV_COLUMNS
    assert {r["status"] for r in rows} == {"completed", "diverged", "failed"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["recommendation"]["confidence"] == "high"
    assert summary["setup"]["device"] == "cpu"

    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert {p.name for p in pngs} == {"loss_curves.png", "lr_sensitivity.png", "heatmap.png", "best_so_far.png"}
    for p in pngs:
        assert p.read_bytes()[:4] == b"\x89PNG"
        assert f"](plots/{p.name})" in report


def test_identical_distributions_are_not_called_different(tmp_path):
    b = build(tmp_path, muon_confirm=4.20, adamw_confirm=4.20)
    fnd, report = final(tmp_path, b)
    c = fnd.comparisons[0].comparison
    assert c.verdict == "no evidence of a difference"
    rec = fnd.recommendation
    assert rec.confidence == "low" and rec.winner_arm is None
    lowered = recommendation_text(rec).lower()
    assert "better" not in lowered and "outperform" not in lowered and "use " not in lowered
    assert "cannot tell them apart" in lowered and "more confirmation seeds" in lowered
    assert "Confidence: low" in report
    assert json.loads((tmp_path / "summary.json").read_text())["recommendation"]["confidence"] == "low"


def test_nothing_confirmed(tmp_path):
    b = build(tmp_path, muon_confirm=None, adamw_confirm=None)
    fnd, report = final(tmp_path, b)
    assert fnd.recommendation.confidence == "none"
    assert all(c.comparison is None and "no confirmed" in comparison_note(c) for c in fnd.comparisons)
    assert "Confidence: none" in report
    for s in SECTIONS:
        assert s in report
    assert json.loads((tmp_path / "summary.json").read_text())["recommendation"]["confidence"] == "none"


def test_round_report_before_any_repeat(tmp_path):
    study = make_study()
    b = Builder(tmp_path)
    r1 = b.add("muon", {"lr": 0.02, "momentum": 0.95}, 0, "default", "search", 1, loss=4.1)
    r2 = b.add("adamw", {"lr": 0.001}, 0, "default", "search", 1, status="diverged", reason="nan loss")
    text = write_round_report(tmp_path, study, 1, [r1, r2], [r1, r2], None)
    assert (tmp_path / "rounds" / "round-01.md").exists()
    assert "not yet measured: no config has repeats" in text.lower()
    assert "nan loss" in text and "adamw: no completed run yet" in text
    fnd = analyze(study, [r1, r2], None)
    assert fnd.noise.pooled_sd is None and fnd.recommendation.confidence == "none"
    json.dumps(fnd.model_dump(mode="json"), allow_nan=False)


def test_empty_study_plots_skip(tmp_path):
    study = make_study()
    fnd = write_final_report(tmp_path, study, None, [], {}, [])
    assert fnd.recommendation.confidence == "none"
    assert "Nothing to plot." in (tmp_path / "report.md").read_text()
    assert not list(tmp_path.glob("plots/*.png"))


def test_diverged_confirmation_run_is_reported(tmp_path):
    b = build(tmp_path, muon_confirm=4.05, adamw_confirm=4.40)
    i = next(i for i, r in enumerate(b.records) if r.phase == "confirm" and r.arm == "adamw")
    b.records[i] = b.records[i].model_copy(update={"status": "diverged", "val_loss": None})
    fnd = analyze(make_study(), b.records, make_plan())
    c = fnd.comparisons[0].comparison
    assert c.n_pairs == 4 and any("non-finite" in lim for lim in map(limit_text, c.limits))
    assert "1 diverged" in recommendation_text(fnd.recommendation)


def test_confirmed_leader_is_ranked_on_its_confirmation_runs_only(tmp_path):
    # a config that looked best in the search (one lucky seed) but confirms worse must not lead:
    # pooled over search + confirm runs it would (3.0 pulls its mean down), on confirm runs alone not
    lucky, steady = {"lr": 0.05, "momentum": 0.9}, {"lr": 0.02, "momentum": 0.95}
    b = Builder(tmp_path)
    b.add("muon", lucky, 0, "tpe", "search", 1, loss=3.0)
    b.add("muon", steady, 0, "tpe", "search", 1, loss=4.5)
    b.add("adamw", ADAMW_LEADER, 0, "random", "search", 1, loss=4.6)
    for i, seed in enumerate(CONFIRM_SEEDS):
        b.add("muon", lucky, seed, "confirm", "confirm", 2, loss=4.20 + WIGGLE_A[i])
        b.add("muon", steady, seed, "confirm", "confirm", 2, loss=4.10 + WIGGLE_B[i])
        b.add("adamw", ADAMW_LEADER, seed, "confirm", "confirm", 2, loss=4.40 + WIGGLE_A[i])
    fnd = analyze(make_study(), b.records, make_plan())
    [res] = fnd.comparisons
    muon_config = res.config_b if res.arm_b == "muon" else res.config_a
    assert fnd.config(muon_config).params == steady
    assert fnd.recommendation.best_params == steady
    assert fnd.leaders()["muon"].params == steady


PNG = b"\x89PNG\r\n\x1a\n"


def test_trial_plots_are_drawn_by_a_helper_and_all_there_after_close(tmp_path):
    from research_agents.report.plots import TrialPlots

    b = Builder(tmp_path)
    runs = [tmp_path / b.add("muon", {"lr": 0.02}, s, "tpe", "search", 1, loss=4.5 + s / 100).run_dir
            for s in range(3)]
    plots = TrialPlots()
    for run in runs:
        plots.submit(run)
    helper = plots._helper or plots._feeder  # (the helper starts with the first plot)
    assert helper is not None
    plots.close()
    assert all((run / "metrics_plot.png").read_bytes()[:8] == PNG for run in runs)
    assert not list(tmp_path.rglob(".*.tmp"))  # drawn through a temporary file, replaced whole


def test_trial_plots_without_a_helper_are_drawn_here(tmp_path):
    from research_agents.report.plots import TrialPlots

    b = Builder(tmp_path)
    first, second = (tmp_path / b.add("adamw", {"lr": 0.003}, s, "tpe", "search", 1, loss=5.0).run_dir
                     for s in range(2))
    plots = TrialPlots()
    plots.submit(first)
    plots._feeder.join(0.5)
    while plots._helper is None:  # the feeder starts the helper: then it dies
        plots._feeder.join(0.1)
    plots._helper.kill()
    plots._helper.wait()
    plots.submit(second)
    plots.close()  # what the dead helper did not draw is drawn here
    assert (second / "metrics_plot.png").read_bytes()[:8] == PNG
    inline = TrialPlots(background=False)
    (first / "metrics_plot.png").unlink(missing_ok=True)
    inline.submit(first)
    assert (first / "metrics_plot.png").read_bytes()[:8] == PNG


def test_one_registry_serves_both_reports(tmp_path):
    """Every registered section is shown by some report, every layout names registered sections, and
    a section added to the registry and a layout appears in that report (break: drop one from a layout)."""
    from research_agents.report import registry

    used = set(registry.FINAL_LAYOUT) | set(registry.ROUND_LAYOUT)
    assert used == set(registry.SECTIONS), set(registry.SECTIONS) ^ used
    from research_agents.analysis.fairness import fairness_audit

    study = make_study()
    b = build(tmp_path, 3.9, 4.0)
    fnd = analyze(study, b.records, make_plan())
    audit = fairness_audit(study, fnd)
    ctx = registry.ReportContext(study=study, fnd=fnd, records=b.records, audit=audit)
    headings = [line[3:] for line in registry.render(registry.FINAL_LAYOUT, ctx) if line.startswith("## ")]
    assert headings == [registry.SECTIONS[n].heading for n in registry.FINAL_LAYOUT if registry.SECTIONS[n].heading]
    probe = registry.Section("Probe", lambda c: ["probe body"])
    registry.SECTIONS["probe"] = probe
    try:
        lines = registry.render(("ranking", "probe"), ctx)
        assert lines[-3:] == ["## Probe", "", "probe body"]
    finally:
        del registry.SECTIONS["probe"]
