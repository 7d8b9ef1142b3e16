"""Facts apart from words: analysis hands over data, report/ words it, and the words are what they were.

tests/words_at_81a0212.json holds the sentences the analysis objects themselves carried at 81a0212
(recommendation, spread, each knob's line, each comparison's note, the open questions) for four
studies; the renderers must make them byte for byte from the data alone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import get_args

import pytest

from research_agents.analysis.findings import analyze
from research_agents.analysis.models import ComparisonResult, Recommendation, Spread
from research_agents.analysis.questions import open_questions, round_questions
from research_agents.analysis.stats import Comparison, apply_correction, compare_paired, compare_unpaired
from research_agents.analysis.stats.compare import Limit, LimitCode, VerdictReason
from research_agents.evidence import KnobEvidence, OpenQuestion
from research_agents.planners import llm_prompt
from research_agents.planners.base import PlanningContext
from research_agents.report.decomposition import how_much_text
from research_agents.report.recommendation import recommendation_text
from research_agents.report.sections import comparison_note, spread_text
from research_agents.report.words import (
    comparison_json,
    comparison_summary,
    knob_text,
    limit_text,
    question_lines,
    question_text,
    verdict_reason_text,
)
from tests.test_reports import build, make_plan, make_study

OLD = json.loads((Path(__file__).parent / "words_at_81a0212.json").read_text())
SCENARIOS = {"better": (4.05, 4.40), "same": (4.20, 4.20), "none": (None, None), "open": (4.05, 4.40)}


def _records(tmp_path: Path, key: str):
    b = build(tmp_path, *SCENARIOS[key])
    if key == "open":  # leave muon's LR open above and adamw's open below
        b.records = [r for r in b.records if not (r.arm == "adamw" and r.params.get("lr") == 0.001)
                     and not (r.arm == "muon" and r.params.get("lr") == 0.08)]
    return b.records


def test_analysis_objects_carry_no_sentences():
    for model, field in ((Recommendation, "text"), (KnobEvidence, "text"), (Spread, "text"),
                         (ComparisonResult, "note")):
        assert field not in model.model_fields, f"{model.__name__}.{field} is a sentence: report/ words it"


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_the_renderers_make_the_old_words_from_the_data_alone(tmp_path, key):
    study, records = make_study(), _records(tmp_path, key)
    fnd = analyze(study, records, make_plan())
    old = OLD[key]
    # the data round-trips through JSON, and the words come from the data alone
    rec = Recommendation.model_validate_json(fnd.recommendation.model_dump_json())
    assert rec == fnd.recommendation
    # (the "by how much" sentence is new since: report/decomposition.py words it, tests/test_swap.py tests it)
    assert recommendation_text(rec.model_copy(update={"how_much": []})) == old["rec"]
    assert all(how_much_text(h) in recommendation_text(rec) for h in rec.how_much)
    assert spread_text(Spread.model_validate_json(fnd.spread.model_dump_json())) == old["spread"]
    assert [knob_text(KnobEvidence.model_validate_json(k.model_dump_json()))
            for ev in fnd.tuning.values() for k in ev.knobs] == old["knobs"]
    assert [comparison_note(c) for c in fnd.comparisons] == old["notes"]
    qs = open_questions(study, records, fnd)
    assert all(isinstance(q, OpenQuestion) for q in qs)
    assert [question_text(OpenQuestion.model_validate_json(q.model_dump_json())) for q in qs] == old["questions"]


def test_the_prompt_words_the_open_questions_from_data_as_the_round_report_does(tmp_path):
    from research_agents.report.round import write_round_report

    study, records = make_study(), _records(tmp_path, "same")
    qs = round_questions(study, records, make_plan())
    assert qs and all(isinstance(q, OpenQuestion) for q in qs)
    report = write_round_report(tmp_path, study, 3, records[-4:], records, make_plan())
    section = report.split("## Open questions\n\n", 1)[1].strip().splitlines()
    assert section == question_lines(qs) == [f"- {q}" for q in OLD["same"]["questions"]]

    templates = llm_prompt.load_prompts()
    labels = llm_prompt.config_labels(records)

    def prompt(questions):
        ctx = PlanningContext(study=study, wanted={"muon": 1, "adamw": 1}, history=records, round=4,
                              open_questions=questions)
        return llm_prompt.round_message(templates, ctx, ctx.wanted, labels)

    user = prompt(qs)
    assert all(line in user for line in section)
    # the prompt reads the data it is given, not a report on disk
    (tmp_path / "rounds").rename(tmp_path / "gone")
    edited = [qs[0].model_copy(update={"n": 77, "most": 78})]
    assert "adamw has fewer completed runs (77) than the best-covered arm (78)." in prompt(edited)
    assert section[1] not in prompt(edited)
    assert "- None flagged." in prompt([])
    assert "- none yet (no round report)" in prompt(None)
    assert round_questions(study, [], make_plan()) is None


# --- a comparison: its limits and its one-line summary are data in analysis, words in report.words.
# tests/words_comparisons_at_68dbcf2.json holds the sentences Comparison itself carried at 68dbcf2
# (`limits`, `summary`) for these cases; the renderer must make them from the codes and numbers.

_R = 200
_NAN = float("nan")
_COMPARISONS = {
    "paired dropped seeds": lambda: compare_paired(
        {1: 3.0, 2: 3.1, 3: 3.2, 7: 3.3}, {3: 3.0, 2: 3.05, 1: 2.9, 9: 2.0}, "adam", "muon", n_resamples=_R
    ),
    "paired non-finite seed": lambda: compare_paired(
        {1: 3.0, 2: 3.1, 3: 3.2, 4: 3.3}, {1: 2.9, 2: _NAN, 3: 3.0, 4: 3.1}, "a", "b", n_resamples=_R
    ),
    "too few pairs": lambda: compare_paired({1: 3.0, 2: 3.1}, {1: 2.9, 5: 3.0}, "a", "b", n_resamples=_R),
    "two pairs": lambda: compare_paired({1: 3.0, 2: 3.1}, {1: 2.9, 2: 3.05}, "a", "b", n_resamples=_R),
    "zero spread pairs": lambda: compare_paired(
        {1: 3.0, 2: 3.1, 3: 3.2}, {1: 2.9, 2: 3.0, 3: 3.1}, "a", "b", n_resamples=_R
    ),
    "wilcoxon zeros": lambda: compare_paired(
        {1: 3.0, 2: 3.1, 3: 3.2, 4: 3.3}, {1: 3.0, 2: 3.0, 3: 3.05, 4: 3.1}, "a", "b", n_resamples=_R
    ),
    "within noise": lambda: compare_paired(
        dict(enumerate([3.0, 3.1, 3.2, 3.3, 3.4, 3.5])),
        dict(enumerate([2.99, 3.09, 3.185, 3.29, 3.385, 3.49])),
        "a",
        "b",
        n_resamples=_R,
        min_effect=0.05,
    ),
    "degenerate welch": lambda: compare_unpaired([3.0, 3.0], [2.0, 2.0], "a", "b", n_resamples=_R),
    "unpaired 3 vs 3": lambda: compare_unpaired([3.0, 3.1, 3.2], [3.05, 2.9, 3.3], "a", "b", n_resamples=_R),
    "unpaired too few, non-finite": lambda: compare_unpaired(
        [3.0, _NAN], [2.0, 2.1, math.inf], "adam", "muon", n_resamples=_R
    ),
    "holm family": lambda: apply_correction(
        [
            compare_paired(
                dict(enumerate([3.0, 3.1, 3.2, 3.3])), dict(enumerate([2.5, 2.62, 2.71, 2.8])), "a", "b", n_resamples=_R
            ),
            compare_paired(
                dict(enumerate([3.0, 3.1, 3.2, 3.3])), dict(enumerate([3.1, 3.0, 3.3, 3.2])), "a", "c", n_resamples=_R
            ),
        ],
        method="holm",
    )[1],
}
_OLD_COMPARISONS = json.loads((Path(__file__).parent / "words_comparisons_at_68dbcf2.json").read_text())


def test_a_comparison_carries_no_sentence():
    c = _COMPARISONS["paired dropped seeds"]()
    assert "summary" not in Comparison.model_fields
    assert all(isinstance(lim, Limit) for lim in c.limits) and c.limits
    dumped = json.dumps(c.model_dump(mode="json"))
    for sentence in _OLD_COMPARISONS["paired dropped seeds"]["limits"]:
        assert sentence not in dumped
    assert "not in both arms" not in dumped and "->" not in dumped and "smallest possible" not in dumped


def test_the_old_cases_cover_every_limit_kind():
    codes = {lim.code for make in _COMPARISONS.values() for lim in make().limits}
    assert codes == set(get_args(LimitCode))


def test_every_limit_and_verdict_reason_has_one_template_and_an_unknown_code_is_an_error():
    from research_agents.report import words

    assert set(words.LIMITS) == set(get_args(LimitCode))
    assert set(words.VERDICT_REASONS) == set(get_args(VerdictReason))
    c = _COMPARISONS["within noise"]()
    assert verdict_reason_text(c, "within noise").startswith("|diff| = 0.0")
    with pytest.raises(ValueError, match="unknown verdict reason 'nope'"):
        verdict_reason_text(c, "nope")
    with pytest.raises(ValueError, match="unknown limit code 'nope'"):
        limit_text(Limit.model_construct(code="nope"))


@pytest.mark.parametrize("case", sorted(_COMPARISONS))
def test_the_renderer_makes_a_comparisons_old_words(case):
    c, old = _COMPARISONS[case](), _OLD_COMPARISONS[case]
    assert [limit_text(lim) for lim in c.limits] == old["limits"]
    assert comparison_summary(c) == old["summary"]
    dumped = comparison_json(c)
    assert dumped["limits"] == old["limits"] and dumped["summary"] == old["summary"]
    assert list(dumped)[-2:] == ["limits", "summary"] and "verdict_reasons" not in dumped
