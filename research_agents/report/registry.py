"""The one registry of report sections: each section once (its heading and its renderer), and the
order in which the final report (report.md) and a round report (rounds/round-NN.md) show them.

A new section is one entry in `SECTIONS` and its name in the layout of each report that shows it;
its renderer reads the analysed facts from a `ReportContext` and returns markdown lines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from research_agents.analysis.fairness import Audit
from research_agents.analysis.models import Findings
from research_agents.config.study import Study
from research_agents.evidence import OpenQuestion
from research_agents.fmt import f4, fruns, fs, mean_ci, params_text, table
from research_agents.records import BAD, TrialRecord
from research_agents.report import sections
from research_agents.report.decomposition import HEADING, decomposition_section
from research_agents.report.fairness import fairness_section, verdict_lines
from research_agents.report.recommendation import recommendation_text
from research_agents.report.words import question_lines


@dataclass
class ReportContext:
    """What a report's sections render: the study, its records and findings, and the report's own
    extras (set-up, fairness audit, plots made, commands, the study's extra sections, this round's runs)."""

    study: Study
    fnd: Findings
    records: list[TrialRecord]
    audit: Audit
    out: Path | None = None
    setup: dict = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    extra: Sequence[tuple[str, str]] = ()
    round_records: list[TrialRecord] = field(default_factory=list)
    questions: list[OpenQuestion] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    heading: str | None  # None: the renderer writes its own headings (the study's extra sections)
    render: Callable[[ReportContext], list[str]]
    optional: bool = False  # left out, heading and all, when it has nothing to say


# ------------------------------------------------------------------------------ renderers not in sections.py


def _recommendation(c: ReportContext) -> list[str]:
    rec = c.fnd.recommendation
    verdict = ["", *verdict_lines(c.audit)] if c.audit.pairs else []  # the fairness statement next to the verdict
    return [recommendation_text(rec), "", f"Confidence: {rec.confidence}", *verdict]


def _extra(c: ReportContext) -> list[str]:
    return [line for heading, body in c.extra for line in (f"## {heading}", "", body.rstrip(), "")][:-1]


def _plots(c: ReportContext) -> list[str]:
    if not c.plots:
        return ["Nothing to plot."]
    root = c.out or Path(".")
    return [f"![{title}]({path.relative_to(root).as_posix()})" for title, path in c.plots.items()]


def _tried(c: ReportContext) -> list[str]:
    if not c.round_records:
        return ["Nothing ran this round."]
    return [table(["arm", "params", "seed", "origin", "status", "val loss", "rationale"],
                  [[r.arm, params_text(r.params), r.seed, r.origin, r.status,
                    f4(r.val_loss) if r.val_loss is not None else "-", r.shown_rationale[:160]]
                   for r in c.round_records])]


def _results_so_far(c: ReportContext) -> list[str]:
    lines = ["Mean final val loss over completed runs (lower is better), top configs per arm:", ""]
    for arm in c.study.arms:
        rows = [cfg for cfg in c.fnd.configs if cfg.arm == arm]
        ok = [cfg for cfg in rows if cfg.n]
        if not ok:
            lines.append(f"- {arm}: no completed run yet ({len(rows)} config(s) tried).")
            continue
        lines.append(f"- {arm} ({len(ok)} of {len(rows)} configs completed):")
        for cfg in ok[:3]:
            extra = []
            if cfg.confirmed:
                extra.append("confirmed")
            if cfg.n_diverged or cfg.n_failed:
                extra.append(f"{cfg.n_diverged} diverged, {cfg.n_failed} failed")
            lines.append(f"  - #{cfg.rank} {cfg.describe()}: {mean_ci(cfg.summary)}"
                         + (f" [{'; '.join(extra)}]" if extra else ""))
    return lines


def _round_noise(c: ReportContext) -> list[str]:
    nf = c.fnd.noise
    if nf.pooled_sd is None:
        lines = ["Not yet measured: no config has repeats."]
    else:
        sds = sorted(nf.sd_by_config.values())
        lines = [f"Seed sd pooled {nf.pooled_sd:.4f} (median {fs(nf.median_sd)}, range {sds[0]:.4f}-"
                 f"{sds[-1]:.4f}) from {nf.n_configs_with_repeats} repeated config(s), df {nf.df}; "
                 f"differences under {nf.threshold:.4f} (2 sd) are no evidence."]
    return [*lines, sections.spread_text(c.fnd.spread)]


def _round_budget(c: ReportContext) -> list[str]:
    b = c.fnd.budget
    per_arm = ", ".join(f"{a} {fruns(n)}" for a, n in b.by_arm.items())
    unit = "run equivalents" if b.stopped else "runs"
    if b.total is not None:
        return [f"Used {fruns(b.used)} of {b.total} {unit} ({fruns(b.left or 0)} left; search "
                f"{fruns(b.by_phase['search'])} of {b.search_budget}, confirmation reserve {b.confirm_reserve}). "
                f"Per arm: {per_arm}.", *sections.early_stop_lines(b)]
    return [f"Used {fruns(b.used)} {unit}. Per arm: {per_arm}.", *sections.early_stop_lines(b)]


def _failures(c: ReportContext) -> list[str]:
    bad = [r for r in c.records if r.status in BAD]
    if not bad:
        return ["None."]
    this_round = {r.id for r in c.round_records}
    shown = bad[-10:]
    lines = [f"({len(bad) - len(shown)} earlier failure(s) not shown.)"] if len(bad) > len(shown) else []
    for r in shown:
        mark = " (this round)" if r.id in this_round else ""
        lines.append(f"- {r.arm} {params_text(r.params)} seed {r.seed}: {r.status}{mark}: "
                     f"{r.reason or 'no reason recorded'}")
    return lines


# ------------------------------------------------------------------------------ the registry

SECTIONS: dict[str, Section] = {
    "question": Section("Question", lambda c: sections.question_section(c.study, c.fnd)),
    "setup": Section("Set-up", lambda c: sections.setup_section(c.setup)),
    "ranking": Section("Ranking", lambda c: sections.ranking_section(c.fnd)),
    "noise": Section("Noise floor and spread", lambda c: sections.noise_section(c.fnd)),
    "tuning": Section("Tuning evidence", lambda c: sections.tuning_section(c.fnd.tuning)),
    "comparisons": Section("Comparisons", lambda c: sections.comparison_section(c.fnd)),
    "recommendation": Section("Recommendation", _recommendation),
    "decomposition": Section(HEADING, lambda c: decomposition_section(c.fnd), optional=True),
    "fairness": Section("Fairness audit", lambda c: fairness_section(c.audit, statement=False)),
    "fairness-round": Section("Fairness audit", lambda c: fairness_section(c.audit)),
    "extra": Section(None, _extra),
    "lr": Section("LR sensitivity", lambda c: sections.lr_section(c.fnd)),
    "origins": Section("Outcomes by origin", lambda c: sections.origin_section(c.fnd)),
    "budget": Section("Budget", lambda c: sections.budget_section(c.fnd)),
    "plots": Section("Plots", _plots),
    "reproduce": Section("Reproduce", lambda c: ["```bash", *c.commands, "```"]),
    "tried": Section("Tried this round", _tried),
    "results": Section("Results so far", _results_so_far),
    "noise-round": Section("Noise floor", _round_noise),
    "budget-round": Section("Budget", _round_budget),
    "failures": Section("Failures", _failures),
    "questions": Section("Open questions", lambda c: question_lines(c.questions)),
}

FINAL_LAYOUT = ("question", "setup", "ranking", "noise", "tuning", "comparisons", "recommendation", "decomposition",
                "fairness", "extra", "lr", "origins", "budget", "plots", "reproduce")
ROUND_LAYOUT = ("tried", "results", "tuning", "fairness-round", "noise-round", "budget-round", "failures",
                "questions")


def render(layout: Sequence[str], ctx: ReportContext) -> list[str]:
    """The sections of `layout`, each "## heading", a blank line and its lines, separated by blank lines."""
    lines: list[str] = []
    for name in layout:
        section = SECTIONS[name]
        body = section.render(ctx)
        if section.heading is None or section.optional:
            if body:
                lines += ["", *body] if section.heading is None else ["", f"## {section.heading}", "", *body]
            continue
        lines += ["", f"## {section.heading}", "", *body]
    return lines[1:]


__all__ = ["FINAL_LAYOUT", "ROUND_LAYOUT", "ReportContext", "SECTIONS", "Section", "render"]
