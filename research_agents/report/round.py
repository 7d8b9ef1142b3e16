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
from research_agents.fmt import f4, fs, mean_ci, params_text, table
from research_agents.records import BAD, TrialRecord
from research_agents.report.fairness import fairness_section
from research_agents.report.sections import spread_text, tuning_section
from research_agents.report.words import question_lines


def write_round_report(out: Path, study: Study, round_no: int, round_records: list[TrialRecord],
                       all_records: list[TrialRecord], plan: Plan | None, preset: str | None = None,
                       overrides: dict[str, Any] | None = None) -> str:
    """Write OUT/rounds/round-NN.md (compact, factual: what the next planning round reads); `preset` and
    `overrides`: the run's, for the fairness audit's trial specs."""
    fnd = analyze(study, all_records, plan)
    lines = [f"# Round {round_no:02d}: {study.name}", "", f"Question: {study.question}", ""]

    lines += ["## Tried this round", ""]
    if round_records:
        lines.append(table(["arm", "params", "seed", "origin", "status", "val loss", "rationale"],
                           [[r.arm, params_text(r.params), r.seed, r.origin, r.status, f4(r.val_loss) if r.val_loss is not None else "-",
                             r.shown_rationale[:160]] for r in round_records]))
    else:
        lines.append("Nothing ran this round.")

    lines += ["", "## Results so far", "",
              "Mean final val loss over completed runs (lower is better), top configs per arm:", ""]
    for arm in study.arms:
        rows = [c for c in fnd.configs if c.arm == arm]
        ok = [c for c in rows if c.n]
        if not ok:
            lines.append(f"- {arm}: no completed run yet ({len(rows)} config(s) tried).")
            continue
        lines.append(f"- {arm} ({len(ok)} of {len(rows)} configs completed):")
        for c in ok[:3]:
            extra = []
            if c.confirmed:
                extra.append("confirmed")
            if c.n_diverged or c.n_failed:
                extra.append(f"{c.n_diverged} diverged, {c.n_failed} failed")
            lines.append(f"  - #{c.rank} {c.describe()}: {mean_ci(c.summary)}"
                         + (f" [{'; '.join(extra)}]" if extra else ""))

    lines += ["", "## Tuning evidence", "", *tuning_section(fnd.tuning)]

    lines += ["", "## Fairness audit", "", *fairness_section(fairness_audit(study, fnd, preset, overrides))]

    lines += ["", "## Noise floor", ""]
    nf = fnd.noise
    if nf.pooled_sd is None:
        lines.append("Not yet measured: no config has repeats.")
    else:
        sds = sorted(nf.sd_by_config.values())
        lines.append(f"Seed sd pooled {nf.pooled_sd:.4f} (median {fs(nf.median_sd)}, range {sds[0]:.4f}-"
                     f"{sds[-1]:.4f}) from {nf.n_configs_with_repeats} repeated config(s), df {nf.df}; "
                     f"differences under {nf.threshold:.4f} (2 sd) are no evidence.")
    lines.append(spread_text(fnd.spread))

    lines += ["", "## Budget", ""]
    b = fnd.budget
    if b.total is not None:
        lines.append(f"Used {b.used} of {b.total} runs ({b.left} left; search {b.by_phase['search']} of "
                     f"{b.search_budget}, confirmation reserve {b.confirm_reserve}). Per arm: "
                     + ", ".join(f"{a} {n}" for a, n in b.by_arm.items()) + ".")
    else:
        lines.append(f"Used {b.used} runs. Per arm: " + ", ".join(f"{a} {n}" for a, n in b.by_arm.items()) + ".")

    lines += ["", "## Failures", ""]
    bad = [r for r in all_records if r.status in BAD]
    if not bad:
        lines.append("None.")
    else:
        this_round = {r.id for r in round_records}
        shown = bad[-10:]
        if len(bad) > len(shown):
            lines.append(f"({len(bad) - len(shown)} earlier failure(s) not shown.)")
        for r in shown:
            mark = " (this round)" if r.id in this_round else ""
            lines.append(f"- {r.arm} {params_text(r.params)} seed {r.seed}: {r.status}{mark}: "
                         f"{r.reason or 'no reason recorded'}")

    lines += ["", "## Open questions", ""]
    lines += question_lines(open_questions(study, all_records, fnd))
    text = "\n".join(lines) + "\n"
    path = round_path(out, round_no)
    path.parent.mkdir(parents=True, exist_ok=True)
    safefs.write_text(path, text, root=out)  # whole or absent: a missing report is rebuilt on resume
    return text


def round_path(out: Path, round_no: int) -> Path:
    return Path(out) / "rounds" / f"round-{round_no:02d}.md"
