"""The fairness audit: which knobs each arm searches, ties or fixes; the shared settings and parameter-group
LRs over which compared arms have different freedom; the shared settings in which their leaders differ; and
where the reports say so (next to the verdict)."""

from __future__ import annotations

import json
from pathlib import Path

from research_agents.analysis.fairness import fairness_audit
from research_agents.analysis.findings import analyze
from research_agents.config.study import load_study
from research_agents.report.fairness import fairness_section, verdict_lines
from research_agents.report.final import write_final_report
from research_agents.report.round import write_round_report
from tests.test_reports import CONFIRM_SEEDS, Builder, make_plan

ROOT = Path(__file__).resolve().parents[1]
ARMS = """
comparisons = [["adamw", "muon"]]
[arms.muon]
base = {{ optimizer = "muon" {muon_base} }}
[arms.muon.space]
lr = {{ type = "float", low = 0.003, high = 0.3, log = true }}
{muon_space}
[arms.adamw]
base = {{ optimizer = "adamw" {adamw_base} }}
[arms.adamw.space]
lr = {{ type = "float", low = 0.0001, high = 0.03, log = true }}
{adamw_space}
"""


def write_study(tmp_path: Path, muon_space: str = "", adamw_space: str = "", muon_base: str = "",
                adamw_base: str = ""):
    path = tmp_path / "planted.toml"
    path.write_text('name = "planted"\nquestion = "fair?"\n'
                    + ARMS.format(muon_space=muon_space, adamw_space=adamw_space, muon_base=muon_base,
                                  adamw_base=adamw_base))
    return load_study(path)


def confirmed(tmp_path: Path, muon: dict, adamw: dict) -> Builder:
    """Two search runs per arm, then each leader on the confirmation seeds (muon lower)."""
    b = Builder(tmp_path)
    b.add("muon", muon, 0, "tpe", "search", 1, loss=4.1)
    b.add("adamw", adamw, 0, "tpe", "search", 1, loss=4.4)
    for i, seed in enumerate(CONFIRM_SEEDS):
        b.add("muon", muon, seed, "confirm", "confirm", 2, loss=4.10 + 0.003 * i)
        b.add("adamw", adamw, seed, "confirm", "confirm", 2, loss=4.40 - 0.002 * i)
    return b


WEN = ROOT / "experiments" / "muon_vs_adamw_wen.toml"  # the old default: Muon's leg tied at 0.1x, AdamW one LR


def test_default_study_is_fair_and_follows_its_convention():
    """The default study: both arms search the AdamW leg's LR over the same range (convention
    leg_searched_in_both), so no shared knob or parameter group is free in one arm only."""
    study = load_study(ROOT / "experiments" / "muon_vs_adamw.toml")
    audit = fairness_audit(study)
    assert audit.convention == "leg_searched_in_both" and audit.misses == []
    (pair,) = audit.pairs
    assert pair.asymmetries == [] and audit.equal
    for arm in audit.arms:
        leg = arm.knob("adamw_lr")
        assert (leg.freedom, leg.low, leg.high, leg.log, leg.own) == ("searched", 0.003, 0.3, True, False)
    assert study.arms["muon"].start["adamw_lr"] == study.arms["adamw"].start["adamw_lr"]
    text = "\n".join(verdict_lines(audit))
    assert "Convention for the AdamW leg: `leg_searched_in_both`" in text and "does not follow" not in text
    assert "the arms had equal freedom over shared settings" in text


def test_convention_misses_are_found_and_stated(tmp_path):
    """A study that names a convention it does not follow gets each miss listed next to the verdict."""
    leg = 'adamw_lr = { type = "float", low = 0.0001, high = 0.1, log = true }'
    cases = [  # (convention, muon space, adamw space, muon base, expected misses)
        ("leg_searched_in_both", leg, "", "", [("leg_not_searched", "adamw")]),
        ("leg_searched_in_both", leg, leg.replace("0.1,", "0.05,"), "", [("leg_ranges_differ", "adamw")]),
        ("leg_searched_in_both", leg, leg, "", []),
        ("leg_fixed_equal", "", "", ", adamw_lr = 0.003", [("leg_not_fixed", "adamw")]),
        ("wen_ratio", leg, "", "", [("leg_not_ratio", "muon")]),
        ("wen_ratio", "", leg, ", adamw_lr = 0.003", [("adamw_not_one_lr", "adamw"), ("leg_not_ratio", "muon")]),
        ("moonlight_rms", "", "", ", lr = 0.003, adamw_lr = 0.003", [("not_rms_matched", "muon")]),
        ("moonlight_rms", "", "", ', lr = 0.003, adamw_lr = 0.003, update_scale = "match_rms_adamw"', []),
        ("custom", leg, "", "", []),
    ]
    for convention, muon_space, adamw_space, muon_base, expected in cases:
        study = write_study(tmp_path, muon_space=muon_space, adamw_space=adamw_space, muon_base=muon_base)
        study = study.model_copy(update={"convention": convention})
        if convention == "moonlight_rms":  # one fixed LR in both arms
            study.arms["muon"].space.pop("lr")
        audit = fairness_audit(study)
        assert sorted((m.code, m.arm) for m in audit.misses) == sorted(expected), convention
        text = "\n".join(verdict_lines(audit))
        assert f"Convention for the AdamW leg: `{convention}`" in text
        assert ("**The study does not follow it:**" in text) == bool(expected), convention


def test_wen_study_lists_the_leg_lr_asymmetry():
    study = load_study(WEN)
    audit = fairness_audit(study)
    muon = next(a for a in audit.arms if a.arm == "muon")
    assert muon.knob("lr").freedom == "searched" and muon.knob("lr").own
    assert muon.knob("momentum").own and not muon.knob("weight_decay").own
    assert muon.knob("weight_decay").freedom == "fixed" and muon.knob("weight_decay").value == 0.1
    (pair,) = audit.pairs
    (leg,) = pair.asymmetries  # the only one: weight decay, betas, warmup are fixed alike
    assert leg.knob == "adamw_lr" and leg.group == "adamw_leg"
    sides = {pair.arm_a: leg.a, pair.arm_b: leg.b}
    assert (sides["muon"].freedom, sides["muon"].source, sides["muon"].factor, sides["muon"].by) == \
        ("tied", "lr", 0.1, "study")
    assert (sides["adamw"].freedom, sides["adamw"].source, sides["adamw"].factor, sides["adamw"].by) == \
        ("tied", "lr", 1.0, "trainer default")
    assert sides["muon"].moves and sides["adamw"].moves  # both follow a searched LR
    text = "\n".join(verdict_lines(audit))
    assert "did not have equal freedom" in text
    assert "in muon tied to lr at 0.1x" in text and "in adamw equal to lr" in text


def test_leaders_leg_lr_as_trained(tmp_path):
    """The leaders' difference in the leg LR is the LR each trained with (muon: 0.1 x lr; adamw: lr)."""
    study = load_study(WEN)
    b = confirmed(tmp_path, {"lr": 0.16, "momentum": 0.875}, {"lr": 0.0042})
    (pair,) = fairness_audit(study, analyze(study, b.records, make_plan())).pairs
    assert pair.leaders == "confirmed"
    diffs = {d.knob: d for d in pair.differences}
    assert set(diffs) == {"adamw_lr"}  # momentum and the matrices' lr are each optimizer's own
    values = {pair.arm_a: diffs["adamw_lr"].value_a, pair.arm_b: diffs["adamw_lr"].value_b}
    assert values["muon"] == 0.016 and values["adamw"] == 0.0042


def test_planted_weight_decay_asymmetry_is_listed(tmp_path):
    study = write_study(tmp_path, muon_space='weight_decay = { type = "float", low = 0.0, high = 0.5 }',
                        adamw_base=", weight_decay = 0.1", muon_base=", adamw_lr = 0.003")
    (pair,) = fairness_audit(study).pairs
    by_knob = {x.knob: x for x in pair.asymmetries}
    wd = by_knob["weight_decay"]
    sides = {pair.arm_a: wd.a, pair.arm_b: wd.b}
    assert sides["muon"].freedom == "searched" and (sides["muon"].low, sides["muon"].high) == (0.0, 0.5)
    assert sides["adamw"].freedom == "fixed" and sides["adamw"].value == 0.1 and sides["adamw"].origin == "arm base"
    # the leg LR: fixed in muon, moving with the searched lr in adamw: only adamw may tune it
    leg = by_knob["adamw_lr"]
    assert leg.tunable_in == ["adamw"]
    text = "\n".join(verdict_lines(fairness_audit(study)))
    assert "`weight_decay`: in adamw fixed at 0.1 (arm base); in muon searched over [0, 0.5]" in text
    assert "Only adamw may tune it; muon may not." in text


def test_leaders_differing_in_warmup_are_listed(tmp_path):
    space = ('warmup_ratio = { type = "float", low = 0.0, high = 0.2 }\n'
             'adamw_lr = { type = "float", low = 0.0001, high = 0.1, log = true }')
    study = write_study(tmp_path, muon_space=space, adamw_space=space)
    b = confirmed(tmp_path, {"lr": 0.02, "warmup_ratio": 0.0, "adamw_lr": 0.004},
                  {"lr": 0.002, "warmup_ratio": 0.1, "adamw_lr": 0.004})
    audit = fairness_audit(study, analyze(study, b.records, make_plan()))
    (pair,) = audit.pairs
    assert pair.asymmetries == []  # equally free ...
    assert [(d.knob, d.value_a, d.value_b) for d in pair.differences] == [("warmup_ratio", 0.1, 0.0)]  # ... not equal
    text = "\n".join(verdict_lines(audit))
    assert "confirmed leaders were trained with different shared settings" in text
    assert "`warmup_ratio`: adamw's leader 0.1, muon's 0" in text


def test_symmetric_study_reports_equal_freedom(tmp_path):
    leg = 'adamw_lr = { type = "float", low = 0.0001, high = 0.1, log = true }'
    study = write_study(tmp_path, muon_space=leg, adamw_space=leg)
    audit = fairness_audit(study)
    assert audit.equal and audit.pairs[0].asymmetries == []
    lines = fairness_section(audit)
    assert any(line.startswith("Fairness: the arms had equal freedom over shared settings") for line in lines)
    assert not any("did not have equal freedom" in line for line in lines)
    # the same study with different ranges for the leg LR is not symmetric
    other = write_study(tmp_path, muon_space=leg,
                        adamw_space='adamw_lr = { type = "float", low = 0.0001, high = 0.05, log = true }')
    assert [x.knob for x in fairness_audit(other).pairs[0].asymmetries] == ["adamw_lr"]


def test_final_report_states_the_asymmetry_right_after_the_recommendation(tmp_path):
    study = load_study(WEN)
    b = confirmed(tmp_path, {"lr": 0.16, "momentum": 0.875}, {"lr": 0.0042})
    write_final_report(tmp_path, study, make_plan(), b.records, {"preset": "tiny"}, ["python -m research_agents"])
    lines = (tmp_path / "report.md").read_text().splitlines()
    at = lines.index("## Recommendation")
    confidence = next(i for i in range(at, len(lines)) if lines[i].startswith("Confidence: "))
    after = [line for line in lines[confidence + 1:] if line.strip()]
    assert after.pop(0).startswith("Convention for the AdamW leg: `wen_ratio`")
    assert after[0].startswith("**Fairness: the arms did not have equal freedom over shared settings**")
    assert after[1].startswith("- The AdamW leg's LR") and "tied to lr at 0.1x" in after[1]
    assert "adamw's leader 0.0042, muon's 0.016" in "\n".join(after[:6])
    assert "## Fairness audit" in lines and lines.index("## Fairness audit") > confidence
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fairness"]["pairs"][0]["asymmetries"][0]["knob"] == "adamw_lr"
    assert {a["arm"] for a in summary["fairness"]["arms"]} == {"muon", "adamw"}
    round_text = write_round_report(tmp_path, study, 2, b.records[-4:], b.records, make_plan())
    assert "## Fairness audit" in round_text and "current leaders" not in round_text
    assert "confirmed leaders were trained with different shared settings" in round_text
