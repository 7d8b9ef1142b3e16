"""Typed results: a record's point and forecast as fields (and old rationale-encoded records),
dotted keys read back by TrialSpec.get as set_dotted wrote them, one TrialSpec per distinct trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from research_agents.actions import Proposal
from research_agents.config import load_study
from research_agents.records import TrialRecord, split_rationale
from trainer.spec import TrialSpec, set_dotted

ROOT = Path(__file__).resolve().parents[1]


def _record(**over) -> TrialRecord:
    return TrialRecord(**{**dict(id=1, order=1, arm="muon", params={"lr": 0.02}, seed=0, origin="grid",
                                 phase="search", round=1, status="completed"), **over})


# ---------------------------------------------------------------- point and expected


@pytest.mark.parametrize("old, fields", [
    ("point: fixed_095", {"rationale": "", "point": "fixed_095", "expected": None}),
    ("point: fixed_095; the baseline", {"rationale": "the baseline", "point": "fixed_095", "expected": None}),
    ("between the extremes [expected: 4.9]", {"rationale": "between the extremes", "point": None, "expected": "4.9"}),
    ("[expected: lower]", {"rationale": "", "point": None, "expected": "lower"}),
    ("cut at 400 [expected: about 5 ]", {"rationale": "cut at 400", "point": None, "expected": "about 5 "}),
    ("a why with a space  [expected: 4.9]", {"rationale": "a why with a space ", "point": None, "expected": "4.9"}),
    ("random draw", {"rationale": "random draw", "point": None, "expected": None}),
    ("say [expected: x] mid-sentence", {"rationale": "say [expected: x] mid-sentence", "point": None,
                                        "expected": None}),
])
def test_a_record_of_an_older_store_reads_point_and_forecast_from_its_rationale(old, fields):
    """A record without the `point` and `expected` keys (a store written before they were fields)
    gets them from its rationale, and shows the rationale exactly as it was."""
    assert split_rationale(old) == fields
    r = _record(rationale=old)
    assert (r.rationale, r.point, r.expected) == (fields["rationale"], fields["point"], fields["expected"])
    assert r.shown_rationale == old


def test_a_new_record_keeps_its_fields_as_given_and_shows_them_as_before():
    r = _record(rationale="point: looks like a point", point=None, expected=None)  # keys given: no parsing
    assert (r.point, r.expected, r.shown_rationale) == (None, None, "point: looks like a point")
    r = _record(rationale="", point="fixed_095", expected=None)
    assert r.shown_rationale == "point: fixed_095"
    r = _record(origin="llm", rationale="bold", point=None, expected="4.9")
    assert r.shown_rationale == "bold [expected: 4.9]"
    assert TrialRecord.model_validate(r.model_dump()) == r  # what a store writes reads back the same


def test_a_proposal_keeps_its_forecast_short_and_bracket_free():
    p = Proposal(arm="muon", params={}, origin="llm", expected="  about [4.9] " + "x" * 200)
    assert p.expected == ("about [4.9] " + "x" * 200)[:100].replace("]", ")")  # stripped, cut, "]" -> ")"
    assert len(p.expected) == 100 and "]" not in p.expected
    assert Proposal(arm="muon", params={}, origin="llm", expected="").expected is None
    assert Proposal(arm="muon", params={}, origin="grid", point="fixed_095").point == "fixed_095"


# ---------------------------------------------------------------- dotted keys


def _points():
    for path in sorted((ROOT / "experiments").glob("*.toml")):
        study = load_study(path)
        for point in study.points:
            yield study, point


@pytest.mark.parametrize("study, point", list(_points()), ids=lambda x: getattr(x, "name", ""))
def test_spec_get_reads_every_dotted_key_a_study_sets(study, point):
    spec = study.trial_spec(point.arm, point.params, seed=0)
    for key, value in point.params.items():
        got = json.loads(json.dumps(spec.get(key)))  # tuples as lists, as the study file writes them
        assert got == json.loads(json.dumps(value)) == spec.flat()[key], (point.name, key)


def test_spec_get_is_the_inverse_of_set_dotted_for_every_setting():
    tree = TrialSpec().model_dump(mode="json")
    flat = TrialSpec().flat()
    assert "momentum_schedule.kind" in flat and "model.d_model" in flat and "lr" in flat
    changed = {"lr": 0.031, "momentum_schedule.kind": "linear", "momentum_schedule.warmup_steps": 37,
               "model.d_model": 96, "data.max_docs": 7, "diagnostics.svd_entropy": True, "adamw_betas": (0.8, 0.9)}
    for key, value in changed.items():
        set_dotted(tree, key, value)
    spec = TrialSpec.model_validate(tree)
    for key, value in changed.items():
        assert spec.get(key) == value, key
    for key, value in spec.flat().items():  # every dotted key the spec has reads back what it holds
        got = spec.get(key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key


@pytest.mark.parametrize("key", ["no_such_knob", "lr.value", "momentum_schedule.no_such", "model.d_model.x", ""])
def test_spec_get_refuses_a_key_the_spec_has_not(key):
    with pytest.raises(KeyError, match="not a setting"):
        TrialSpec().get(key)


# ---------------------------------------------------------------- one spec per trial


def test_trial_spec_is_built_once_per_distinct_trial(monkeypatch):
    study = load_study(ROOT / "experiments" / "muon_vs_adamw.toml")
    built = []
    real = TrialSpec.model_validate.__func__

    def counting(cls, *a, **k):
        built.append(1)
        return real(cls, *a, **k)

    monkeypatch.setattr(TrialSpec, "model_validate", classmethod(counting))
    params = {"lr": 0.0123456, "momentum": 0.9, "momentum_schedule.kind": "fixed", "ns_steps": 4}
    a = study.trial_spec("muon", params, seed=3)
    assert study.trial_spec("muon", dict(params), seed=3) is a and len(built) == 1
    b = study.trial_spec("muon", params, seed=4)
    assert b is not a and b.seed == 4 and len(built) == 2
    c = study.trial_spec("muon", params, seed=3, overrides={"steps": 50})
    assert c.steps == 50 and a.steps != 50 and len(built) == 3
    study.base["eval_every"] = 5  # a study changed in place is a different input, never a stale spec
    assert study.trial_spec("muon", params, seed=3).eval_every == 5 and len(built) == 4
