"""The round report: OUT/rounds/round-NN.md, short and factual, what the next planning round reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from research_agents import safefs
from research_agents.analysis.fairness import fairness_audit
from research_agents.analysis.findings import analyze
from research_agents.analysis.questions import open_questions
from research_agents.config.plan import Plan
from research_agents.config.study import Study
from research_agents.records import TrialRecord
from research_agents.report.registry import ROUND_LAYOUT, ReportContext, render


def write_round_report(out: Path, study: Study, round_no: int, round_records: list[TrialRecord],
                       all_records: list[TrialRecord], plan: Plan | None, preset: str | None = None,
                       overrides: dict[str, Any] | None = None) -> str:
    """Write OUT/rounds/round-NN.md (compact, factual: what the next planning round reads); `preset` and
    `overrides`: the run's, for the fairness audit's trial specs."""
    fnd = analyze(study, all_records, plan)
    audit = fairness_audit(study, fnd, preset, overrides)
    ctx = ReportContext(study=study, fnd=fnd, records=all_records, audit=audit,
                        round_records=round_records, questions=open_questions(study, all_records, fnd))
    lines = [f"# Round {round_no:02d}: {study.name}", "", f"Question: {study.question}", "",
             *render(ROUND_LAYOUT, ctx)]
    text = "\n".join(lines) + "\n"
    path = round_path(out, round_no)
    path.parent.mkdir(parents=True, exist_ok=True)
    safefs.write_text(path, text, root=out)  # whole or absent: a missing report is rebuilt on resume
    return text


def round_path(out: Path, round_no: int) -> Path:
    return Path(out) / "rounds" / f"round-{round_no:02d}.md"
