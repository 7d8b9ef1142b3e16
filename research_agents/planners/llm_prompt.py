"""What the LLM planner sees: a bounded prompt rendered from the planning context.

The system message holds the question, the training set-up (from the run's trial spec), the
search space with its bounds and the actions; the round message holds the search runs left per
arm, the tuning evidence, each arm's measured configurations sorted by LR (mean, n, sd: the
noise per config), curve summaries of the latest runs, the noise, the failures, the open
questions (data from the loop, worded as the round report words them), the model's own earlier
expectations beside what happened
and, in hybrid mode, the sampler's suggestions at full precision. Fixed text lives in the
templates in prompts/ (`$name` placeholders).

The prompt is bounded: every section keeps whole lines up to its cap in SECTION_CHARS and says
how many it left out, and a rendered message never exceeds SYSTEM_CHARS / ROUND_CHARS /
REPAIR_CHARS (sections shrink to fit a longer custom template). A long study does not grow it.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

from research_agents.actions import Proposal, SwapOption
from research_agents.fmt import fmt_value, params_line
from research_agents.planners.base import PlanningContext
from research_agents.records import BAD, CURVE_POINTS, TrialRecord
from research_agents.report.words import knob_text, question_lines

PROMPT_FILES = ("system", "round", "repair")
SYSTEM_CHARS = 4000  # the system message, at most
ROUND_CHARS = 9000  # the round message, at most
REPAIR_CHARS = 2500  # a repair message, at most
SECTION_CHARS = {  # each section's cap (whole lines kept)
    "question": 600, "setup": 700, "space": 1400,
    "wanted": 300, "slots": 300, "evidence": 1500, "configs": 2000, "curves": 900, "noise": 300,
    "failures": 600, "open_questions": 900, "expectations": 700, "suggestions": 700, "rejected": 800,
    "errors": 1500,
}
CONFIG_ROWS = 12  # configurations per arm in the LR table (the best ones, then sorted by LR)
CURVE_ROWS = 8  # latest finished runs with a curve summary
FAILURE_ROWS = 5
EXPECTATION_ROWS = 6
REJECTED_ROWS = 8


# ------------------------------------------------------------------------------ templates


def prompts_dir() -> Path:
    env = os.environ.get("RESEARCH_AGENTS_PROMPTS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "prompts"
    return here if here.is_dir() else Path.cwd() / "prompts"


def load_prompts(directory: Path | None = None) -> dict[str, string.Template]:
    directory = directory or prompts_dir()
    out = {}
    for name in PROMPT_FILES:
        path = directory / f"{name}.md"
        if not path.is_file():
            raise ValueError(f"LLM prompt template {path} not found "
                             "(set RESEARCH_AGENTS_PROMPTS to the prompts/ folder)")
        out[name] = string.Template(path.read_text())
    return out


def clip(lines: list[str], cap: int, empty: str = "none") -> str:
    """Whole lines up to `cap` characters in all, then how many were left out (a line longer than
    half the cap is cut)."""
    if not lines:
        return empty
    kept: list[str] = []
    used = 0
    for i, line in enumerate(lines):
        if len(line) > cap // 2:
            line = line[: max(0, cap // 2 - 6)] + " (...)"
        rest = len(lines) - i - 1
        reserve = len(f"({rest} more not shown)") + 1 if rest else 0
        if used + len(line) + 1 + reserve > cap:
            kept.append(f"({len(lines) - i} more not shown)")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)


def render(template: string.Template, sections: dict[str, list[str] | str], values: dict[str, Any],
           limit: int) -> str:
    """The template with each section clipped to its cap, shrunk until the message fits `limit`."""
    scale = 1.0
    for _ in range(8):
        filled = {k: v if isinstance(v, str) else clip(v, int(SECTION_CHARS[k] * scale))
                  for k, v in sections.items()}
        text = template.safe_substitute({**{k: str(v) for k, v in values.items()}, **filled})
        if len(text) <= limit:
            return text
        scale *= 0.7
    return text[: limit - 10].rsplit("\n", 1)[0] + "\n(... cut)"


# ------------------------------------------------------------------------------ labels


def config_labels(history: list[TrialRecord]) -> dict[str, str]:
    """A short stable label per search configuration ("muon-3": the arm's third), by first run."""
    out: dict[str, str] = {}
    counts: dict[str, int] = {}
    for r in history:
        if r.phase == "search" and r.config not in out:
            counts[r.arm] = counts.get(r.arm, 0) + 1
            out[r.config] = f"{r.arm}-{counts[r.arm]}"
    return out


@dataclass
class ConfigRow:
    label: str
    params: dict[str, Any]
    losses: list[float]
    bad: list[str] = field(default_factory=list)  # statuses of runs without a usable loss

    @property
    def mean(self) -> float | None:
        return fmean(self.losses) if self.losses else None


def config_rows(ctx: PlanningContext, arm: str, labels: dict[str, str]) -> list[ConfigRow]:
    """The arm's measured search configurations (every run, bad ones counted)."""
    rows: dict[str, ConfigRow] = {}
    for r in ctx.history:
        if r.arm != arm or r.config not in labels or r.status == "running":
            continue
        if r.status in ("interrupted", "rejected"):
            continue
        row = rows.setdefault(r.config, ConfigRow(labels[r.config], r.params, []))
        if r.ok:
            row.losses.append(r.val_loss)
        else:
            row.bad.append(r.status)
    return list(rows.values())


def shown_rows(ctx: PlanningContext, arm: str, labels: dict[str, str]) -> tuple[list[ConfigRow], int]:
    """The rows the LR table shows (the best CONFIG_ROWS, sorted by LR) and how many it leaves out."""
    rows = config_rows(ctx, arm, labels)
    best = sorted(rows, key=lambda c: (c.mean is None, c.mean if c.mean is not None else 0.0))[:CONFIG_ROWS]
    return sorted(best, key=lambda c: (float(c.params.get("lr", 0.0)), c.label)), len(rows) - len(best)


def replicable(ctx: PlanningContext, arm: str, labels: dict[str, str]) -> list[str]:
    """Labels a replicate may name: the shown configurations with a completed run."""
    return [c.label for c in shown_rows(ctx, arm, labels)[0] if c.losses]


# ------------------------------------------------------------------------------ sections


def setup_lines(ctx: PlanningContext, arms: list[str]) -> list[str]:
    """Steps, batch, sequence, LR schedule, model dims and each arm's optimizer, from the trial spec."""
    out = []
    for i, arm in enumerate(arms):
        try:
            spec = ctx.spec(arm, ctx.study.arms[arm].start or {})
        except ValueError:
            continue
        if i == 0:
            m = spec.model
            dims = f"{m.kind} d_model {m.d_model}, {m.n_layers} layers, {m.n_heads} heads, d_ff {m.d_ff}"
            if m.kind == "moe":
                dims += f", {m.n_experts} experts top-{m.top_k}"
            out += [f"- {spec.steps} optimizer steps, batch {spec.batch_size} x grad accum {spec.grad_accum}, "
                    f"sequence {spec.seq_len} ({spec.tokens_per_step * spec.steps} tokens per run)",
                    f"- LR schedule {spec.lr_schedule}, warm-up {spec.warmup_ratio:g} of the steps, "
                    f"min LR ratio {spec.min_lr_ratio:g}; grad clip {spec.grad_clip}",
                    f"- model: {dims}; data {spec.data.source}",
                    f"- eval every {spec.eval_every} steps on {spec.eval_batches} val batches; "
                    f"search seeds {ctx.study.seeds.search}"]
        fixed = params_line(ctx.study.arms[arm].base)
        tied = "; ".join(f"{k} = {t.factor:g} x {t.source}" for k, t in ctx.study.arms[arm].tie.items())
        out.append(f"- arm {arm}: {fixed}" + (f"; tied: {tied}" if tied else ""))
    return out


def space_lines(ctx: PlanningContext, arms: list[str]) -> list[str]:
    lines = []
    for name in arms:
        arm = ctx.study.arms[name]
        start = f" (start point: {params_line(arm.start)})" if arm.start else ""
        lines.append(f"arm {name}{start}:")
        lines += [f"  - {k}: {p.describe()}" for k, p in arm.space.items()]
    return lines


def wanted_text(wanted: dict[str, int]) -> str:
    return ", ".join(f"{n} slot(s) for arm {a}" for a, n in wanted.items() if n > 0)


def slots_lines(ctx: PlanningContext, arms: list[str]) -> list[str]:
    n_seeds = len(ctx.study.seeds.search)
    return [f"- {a}: {ctx.search_left.get(a, 0)} search run(s) left "
            f"({ctx.search_left.get(a, 0) // n_seeds} new configuration(s) at {n_seeds} seed(s) each)"
            for a in arms]


def evidence_lines(ctx: PlanningContext, arms: list[str], labels: dict[str, str]) -> list[str]:
    out = []
    for arm in arms:
        ev = ctx.evidence.get(arm)
        if ev is None or ev.leader_config is None:
            out.append(f"- {arm}: nothing measured yet")
            continue
        noise = "noise not measured" if ev.threshold is None else f"noise threshold {ev.threshold:.4f}"
        out.append(f"- {arm}: leader {labels.get(ev.leader_config, '?')} ({params_line(ev.leader_params)}), "
                   f"mean {ev.leader_mean:.4f} over n={ev.leader_n}; {noise}")
        for k in ev.knobs:
            todo = f"; a bracket would run {', '.join(map(fmt_value, k.to_try))}" if k.to_try else ""
            out.append(f"  - {knob_text(k)}{todo}")
        if ev.close_call and ev.runner_up_gap is not None and ev.threshold is not None:
            out.append(f"  - close call: the runner-up is {ev.runner_up_gap:.4f} behind (n={ev.runner_up_n}), "
                       "within the noise: a replicate would tell them apart")
        elif ev.close_call and ev.runner_up_gap is not None:
            out.append(f"  - close call: the runner-up is {ev.runner_up_gap:.4f} behind (n={ev.runner_up_n}) and "
                       "the noise is not measured: a replicate of the leader measures it")
    return out


def config_lines(ctx: PlanningContext, arms: list[str], labels: dict[str, str]) -> list[str]:
    out = []
    for arm in arms:
        rows, hidden = shown_rows(ctx, arm, labels)
        out.append(f"{arm}:" if rows else f"{arm}: none measured yet")
        for c in rows:
            if c.losses:
                sd = f", sd {stdev(c.losses):.4f}" if len(c.losses) > 1 else ", sd n/a (1 seed)"
                text = f"mean {c.mean:.4f}, n={len(c.losses)}{sd}"
            else:
                text = "no usable loss"
            if c.bad:
                text += f"; {len(c.bad)} {'/'.join(sorted(set(c.bad)))}"
            out.append(f"  - {c.label}: {params_line(c.params)}: {text}")
        if hidden:
            out.append(f"  ({hidden} worse configuration(s) not shown)")
    return out


def curve_lines(ctx: PlanningContext, labels: dict[str, str]) -> list[str]:
    done = [r for r in ctx.history if r.status in ("completed", "diverged", "stopped", "failed", "timeout")]
    out = []
    for r in done[-CURVE_ROWS:]:
        c = ctx.curve_of(r)
        name = labels.get(r.config, f"{r.arm} {params_line(r.params)}")
        head = f"- {name} seed {r.seed} ({r.phase})"
        if c is None:
            out.append(f"{head}: {r.status}, no curve")
            continue
        pts = " / ".join("-" if c.val_loss.get(q) is None else f"{c.val_loss[q]:.3f}" for q in CURVE_POINTS)
        div = f"; diverged at step {c.diverged_step}" if c.diverged_step is not None else ""
        if r.rung is not None:  # a short run the rung rule stopped (research_agents/rungs.py)
            div += f"; stopped early at {r.rung}% (behind its leader by > the noise margin; no evidence)"
        out.append(f"{head}: {pts}{div}")
    return out


def noise_text(ctx: PlanningContext) -> str:
    if ctx.noise_sd is None:
        return ("not measured yet: no configuration has two seeds; a replicate action measures it "
                "(until then every difference may be noise)")
    return (f"seed sd {ctx.noise_sd:.4f} pooled over repeated configs; differences under {2 * ctx.noise_sd:.4f} "
            "are noise")


def failure_lines(ctx: PlanningContext, labels: dict[str, str]) -> list[str]:
    bad = [r for r in ctx.history if r.status in BAD][-FAILURE_ROWS:]
    return [f"- {labels.get(r.config, r.arm)} {params_line(r.params)} seed {r.seed}: {r.status}: "
            f"{(r.reason or 'no reason recorded')[:140]}" for r in bad]


def expectation_lines(ctx: PlanningContext, labels: dict[str, str]) -> list[str]:
    """The model's own `expected` for its earlier points beside what they measured."""
    seen: dict[str, list[TrialRecord]] = {}
    for r in ctx.history:
        if r.origin == "llm" and r.phase == "search" and r.expected and r.expected.strip():
            seen.setdefault(r.config, []).append(r)
    out = []
    for cid, rs in list(seen.items())[-EXPECTATION_ROWS:]:
        ok = [r.val_loss for r in rs if r.ok]
        got = f"measured {fmean(ok):.4f} (n={len(ok)})" if ok else f"measured nothing ({rs[-1].status})"
        out.append(f"- {labels.get(cid, rs[0].arm)} {params_line(rs[0].params)}: you expected "
                   f"{rs[0].expected.strip()}, {got}")
    return out


def suggestion_lines(suggestions: list[Proposal] | None) -> list[str]:
    """The sampler's points at full precision (what "near" is judged against)."""
    return [f"- {p.arm} {json.dumps(p.params, sort_keys=True)}" for p in suggestions or []]


def rejected_lines(rejections: list[tuple[Proposal, str]]) -> list[str]:
    return [f"- {p.arm} {params_line(p.params)}: {why[:200]}" for p, why in rejections[-REJECTED_ROWS:]]


# ------------------------------------------------------------------------------ messages


def system_message(templates: dict[str, string.Template], ctx: PlanningContext, arms: list[str]) -> str:
    return render(templates["system"], {
        "question": [ctx.study.question], "setup": setup_lines(ctx, arms), "space": space_lines(ctx, arms)},
        {}, SYSTEM_CHARS)


def round_message(templates: dict[str, string.Template], ctx: PlanningContext, wanted: dict[str, int],
                  labels: dict[str, str], suggestions: list[Proposal] | None = None,
                  rejections: list[tuple[Proposal, str]] = ()) -> str:
    arms = [a for a, n in wanted.items() if n > 0]
    sugg = suggestion_lines(suggestions)
    rejected = rejected_lines(list(rejections))
    sections: dict[str, list[str] | str] = {
        "wanted": wanted_text(wanted),
        "slots": slots_lines(ctx, arms),
        "evidence": evidence_lines(ctx, arms, labels),
        "configs": config_lines(ctx, arms, labels),
        "curves": curve_lines(ctx, labels),
        "noise": noise_text(ctx),
        "failures": failure_lines(ctx, labels),
        "open_questions": (["- none yet (no round report)"] if ctx.open_questions is None
                           else question_lines(ctx.open_questions)),
        "expectations": expectation_lines(ctx, labels),
        "suggestions": (["The sampler suggests these points this round (full precision); yours must differ "
                         "from them by more than a factor 1.11 in a float knob or in another value:", *sugg]
                        if sugg else "none"),
        "rejected": rejected if rejected else "none",
    }
    return render(templates["round"], sections, {"round": ctx.round, "n_total": sum(wanted.values())}, ROUND_CHARS)


def swap_message(options: list[SwapOption], budget_left: int) -> str:
    """After confirmation: the pairs whose confirmed leaders were trained with different shared
    settings, what swapping them costs and what it measures; the model answers with swap actions."""
    lines = ["The search and the confirmation are done. For these compared pairs the confirmed leaders were "
             "trained with different shared settings (outside the hidden-matrix optimizer's own knobs), so "
             "their measured gap mixes the optimizer with those settings. A swap re-runs each leader with the "
             "other leader's shared settings on the confirmation seeds (paired), which splits the gap into an "
             "optimizer effect, a shared-settings effect and their interaction.", ""]
    for o in options:
        lines.append(f"- pair {o.arm_a}/{o.arm_b}: {o.arm_a}'s leader ({params_line(o.params_a)}) would train "
                     f"with {params_line(o.settings_a)}; {o.arm_b}'s leader ({params_line(o.params_b)}) with "
                     f"{params_line(o.settings_b)}; seeds {o.seeds}: {2 * len(o.seeds)} runs")
    lines += ["", f"Runs left in the budget: {budget_left}.",
              'Answer with JSON {"actions": [{"kind": "swap", "pair": "A/B", "rationale": "..."}]} naming each '
              'pair to swap, or {"actions": []} for none.']
    return "\n".join(lines)


def repair_message(templates: dict[str, string.Template], errors: list[str], wanted: dict[str, int]) -> str:
    return render(templates["repair"], {"errors": [f"- {e}" for e in errors], "wanted": wanted_text(wanted)},
                  {"n_total": sum(wanted.values())}, REPAIR_CHARS)


__all__ = ["PROMPT_FILES", "SYSTEM_CHARS", "ROUND_CHARS", "REPAIR_CHARS", "SECTION_CHARS", "load_prompts",
           "prompts_dir", "clip", "config_labels", "replicable", "system_message", "round_message",
           "repair_message", "swap_message"]
