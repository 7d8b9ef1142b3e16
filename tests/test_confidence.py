"""Confidence that follows the logic (issue 19): an untuned loser caps the confidence at low, an
untuned winner does not (its advantage is a lower bound), every LR-like knob counts for "tuned", and
the words never contradict the confidence. On synthetic trial records (tests/test_reports.build):
Muon's leader lr 0.04 (4.05) beats AdamW's lr 0.002 (4.40); dropping a neighbour leaves an LR open."""

from __future__ import annotations

from pathlib import Path

import pytest

from research_agents.analysis.findings import analyze
from research_agents.config import Param, Study
from research_agents.report.final import summary_json
from research_agents.report.recommendation import recommendation_text
from research_agents.report.sections import tuning_section
from tests.test_reports import ADAMW_LEADER, CONFIRM_SEEDS, MUON_LEADER, build, make_plan, make_study

DROP = {"loser": {("adamw", 0.001)},  # AdamW (behind) open below
        "winner": {("muon", 0.08)},  # Muon (ahead) open above
        "both": {("adamw", 0.001), ("muon", 0.08)}}
SPREAD = {"high": [0.0] * 5, "moderate": [0.3, -0.25, 0.1, -0.2, 0.05]}  # AdamW's confirm noise per seed


def findings(tmp_path: Path, untuned: str | None, paired: str = "high", study: Study | None = None,
             extra: dict | None = None):
    """Search as in test_reports, the given LRs left open, then 5 confirmation seeds per leader with
    AdamW behind by 0.40 nats (paired test alone: `paired`). `extra`: params added to AdamW's runs."""
    b = build(tmp_path, None, None)
    drop = DROP.get(untuned, set())
    b.records = [r for r in b.records if (r.arm, r.params.get("lr")) not in drop]
    for r in b.records:
        if r.arm == "adamw" and extra:
            r.params = {**r.params, **extra}
    for i, seed in enumerate(CONFIRM_SEEDS):
        b.add("muon", MUON_LEADER, seed, "confirm", "confirm", 9, loss=4.05)
        b.add("adamw", {**ADAMW_LEADER, **(extra or {})}, seed, "confirm", "confirm", 9, loss=4.45 + SPREAD[paired][i])
    fnd = analyze(study or make_study(), b.records, make_plan())
    assert fnd.recommendation.paired_confidence == paired  # the set-up is what the test means it to be
    return fnd


def test_tuned_arms_keep_the_paired_confidence(tmp_path):
    rec = findings(tmp_path, None).recommendation
    assert rec.confidence == "high" and rec.winner_arm == "muon" and not rec.untuned
    assert "not tuned" not in recommendation_text(rec)


def test_an_untuned_loser_caps_at_low_and_names_the_runs_that_would_settle_it(tmp_path):
    fnd = findings(tmp_path, "loser")
    rec = fnd.recommendation
    assert fnd.tuning["adamw"].tuned is False and fnd.tuning["muon"].tuned is True
    assert rec.confidence == "low" and rec.capped and not rec.lower_bound and rec.winner_arm is None
    assert [(u.arm, u.role) for u in rec.untuned] == [("adamw", "loser")]
    text = recommendation_text(rec)
    assert text.startswith("Confidence capped at low: adamw is not tuned, adamw's LR is open below")
    assert "What would settle it: adamw at lr 0.001" in text and "lower bound" not in text


@pytest.mark.parametrize("paired", ["high", "moderate"])
def test_an_untuned_winner_does_not_cap_its_advantage_is_a_lower_bound(tmp_path, paired):
    fnd = findings(tmp_path, "winner", paired)
    rec = fnd.recommendation
    assert fnd.tuning["muon"].tuned is False and fnd.tuning["adamw"].tuned is True
    assert rec.confidence == paired and not rec.capped and rec.lower_bound and rec.winner_arm == "muon"
    assert [(u.arm, u.role) for u in rec.untuned] == [("muon", "winner")]
    text = recommendation_text(rec)
    assert "capped" not in text and "is a lower bound" in text and "nats over adamw" in text
    assert "muon's LR is open above" in text and "What would measure the full advantage: muon at lr 0.08" in text
    summary = summary_json(fnd)["recommendation"]
    assert summary["confidence"] == paired and summary["lower_bound"] is True and summary["capped"] is False
    assert summary["untuned"] == [{"arm": "muon", "role": "winner", "knobs": {"lr": "open above"}}]


def test_both_untuned_the_loser_rule_applies(tmp_path):
    rec = findings(tmp_path, "both").recommendation
    assert rec.confidence == "low" and rec.capped and not rec.lower_bound and rec.winner_arm is None
    assert sorted((u.arm, u.role) for u in rec.untuned) == [("adamw", "loser"), ("muon", "winner")]
    assert recommendation_text(rec).startswith("Confidence capped at low: muon and adamw are not tuned")


def test_an_open_adamw_lr_counts_as_untuned(tmp_path):
    study = make_study()
    study.arms["adamw"].space["adamw_lr"] = Param(type="float", low=1e-4, high=1e-1, log=True)
    # AdamW's lr is bracketed, but its AdamW-leg LR was only ever tried at one value
    fnd = findings(tmp_path, None, study=study, extra={"adamw_lr": 0.004})
    ev = fnd.tuning["adamw"]
    assert ev.lr_bracketed is True and ev.knob("adamw_lr").status == "open both" and ev.tuned is False
    rec = fnd.recommendation
    assert rec.confidence == "low" and rec.capped
    assert [(u.arm, u.role, [k.knob for k in u.knobs]) for u in rec.untuned] == [("adamw", "loser", ["adamw_lr"])]
    text = recommendation_text(rec)
    assert "adamw's adamw_lr is open both" in text and "What would settle it: adamw at adamw_lr " in text
    assert rec.settle_runs == 2  # one run (one search seed) on each side of 0.004
    assert "- adamw: NOT tuned (adamw_lr not bracketed)" in "\n".join(tuning_section(fnd.tuning))


@pytest.mark.parametrize("untuned", [None, "loser", "winner", "both"])
@pytest.mark.parametrize("paired", ["high", "moderate"])
def test_the_words_never_contradict_the_confidence(tmp_path, untuned, paired):
    rec = findings(tmp_path, untuned, paired).recommendation
    text = recommendation_text(rec)
    assert ("Confidence capped at low" in text) == (rec.confidence == "low")
    assert ("The evidence is moderate" in text) == (rec.confidence == "moderate")
    if rec.capped:  # what the paired test alone said is stated inside the cap, once
        assert f"The paired test alone would have said {paired}" in text
