"""Markdown sections of the reports: each renders numbers that research_agents.analysis computed."""

from __future__ import annotations

import json
from collections import Counter

from research_agents.analysis.claims import ClaimResult
from research_agents.analysis.models import BudgetUse, ComparisonResult, Findings, Spread
from research_agents.analysis.planning import LLMUsage, PlanningSummary
from research_agents.analysis.seed_analyses import DiagnosticsRow, MomentumAnalysis
from research_agents.analysis.stats import Comparison
from research_agents.config.study import Study
from research_agents.evidence import ArmEvidence
from research_agents.fmt import ci, f4, fmt_value, fp, fruns, fs, params_text, setup_value, table
from research_agents.report.claims import claim_statistics
from research_agents.report.words import comparison_summary, hybrid_plan_text, limit_text


def setup_section(setup: dict) -> list[str]:
    if not setup:
        return ["No set-up recorded (no trial wrote a metrics.json)."]
    lines = []
    for key, value in setup.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()):
            lines.append(f"- **{key}**:")
            lines += [f"  - {k}: {setup_value(v)}" for k, v in value.items()]
        else:
            lines.append(f"- **{key}**: {setup_value(value)}")
    return lines


def question_section(study: Study, fnd: Findings) -> list[str]:
    lines = [study.question, "", "Arms and their search spaces:", ""]
    for name, arm in study.arms.items():
        space = "; ".join(f"{k}: {p.describe()}" for k, p in arm.space.items()) or "fixed (no search)"
        base = f" Fixed: {params_text(arm.base)}." if arm.base else ""
        tied = "".join(f" Tied: {k} = {t.factor:g} x {t.source}" + (f" ({t.why})." if t.why else ".")
                       for k, t in arm.tie.items())
        lines.append(f"- **{name}**: {space}.{base}{tied}")
    pairs = [f"{c.arm_b} vs {c.arm_a}" for c in fnd.comparisons]
    if pairs:
        where = ("the confirmation seeds" if fnd.decided_on == "confirm" else
                 "the named experiments' own seeds, each arm's best-ranked experiment")
        lines += ["", f"Comparisons tested: {', '.join(pairs)} (paired by seed on {where}, "
                  f"{fnd.correction} correction for {len(pairs)} comparison(s))."]
    return lines


def ranking_section(fnd: Findings) -> list[str]:
    rows = []
    for c in fnd.configs:
        notes = []
        if c.confirmed:
            notes.append("confirmed")
        if c.n_diverged:
            notes.append(f"{c.n_diverged} diverged")
        if c.n_failed:
            notes.append(f"{c.n_failed} failed")
        if not c.n:
            notes.insert(0, c.status.upper())
        seeds = f"{c.n} ({', '.join(map(str, sorted(c.seeds)))})" if c.n else "0"
        rows.append([c.rank, c.describe(), f4(c.summary.mean), ci(c.summary), fs(c.val_perplexity, 4),
                     f4(c.val_accuracy), "n/a" if c.wall_time_s is None else f"{c.wall_time_s:.1f}", seeds,
                     c.arm, ", ".join(c.origins), "; ".join(notes)])
    if not rows:
        return ["No trial finished."]
    return ["The seeds' columns (val loss, val perplexity, val accuracy, time) as means over completed runs, "
            "with the 95% CI of the mean val loss and the seeds it rests on (lower loss is better); diverged or "
            "failed runs are not in the mean and are counted in the notes. CIs from fewer than 3 runs are "
            "t-intervals (n=2) or absent.",
            "",
            table(["rank", "configuration", "val loss", "95% CI", "val perplexity", "val accuracy", "time (s)",
                   "seeds n (seeds)", "arm", "origin", "notes"], rows)]


def spread_text(s: Spread) -> str:
    """Whether the best and worst configurations differ beyond the noise."""
    if s.best_config is None:
        return "No configuration has a completed run yet."
    if s.best_config == s.worst_config:
        return "Only one configuration has completed runs: no spread to compare with the noise."
    if s.threshold is None:
        return (f"Best and worst configurations differ by {s.gap:.4f} nats, but the noise floor is not "
                "measured (no configuration has repeats), so it is unknown whether that exceeds the noise.")
    ratio = f" ({s.gap_over_threshold:.1f}x the threshold)" if s.gap_over_threshold is not None else ""
    return (f"Best and worst configurations differ by {s.gap:.4f} nats{ratio}; the noise threshold "
            f"(2 x the larger of these configs' seed sd and the pooled sd) is {s.threshold:.4f}. The spread is "
            + ("LARGER than the measured noise floor: the search space matters at this budget."
               if s.separated else
               "NOT larger than the measured noise floor: these configurations cannot be told apart."))


def comparison_note(res: ComparisonResult) -> str:
    """Why a requested comparison was not tested ("" when it was)."""
    if res.comparison is not None or not res.missing:
        return ""
    return f"not compared: no confirmed configuration for {' and '.join(res.missing)} yet"


def noise_section(fnd: Findings) -> list[str]:
    nf = fnd.noise
    if nf.pooled_sd is None:
        lines = ["Noise floor not measured: no configuration has two or more completed runs."]
    else:
        sd_items = sorted(nf.sd_by_config.items(), key=lambda kv: kv[1])
        label = {c.config: c.describe() for c in fnd.configs}
        lines = [f"- pooled seed sd: {nf.pooled_sd:.4f} (df {nf.df}, {nf.n_configs_with_repeats} configs with "
                 f"repeats, {nf.n_runs} runs)",
                 f"- median per-config sd: {fs(nf.median_sd)}",
                 f"- per-config sd ranges from {sd_items[0][1]:.4f} ({label.get(sd_items[0][0], sd_items[0][0])}) "
                 f"to {sd_items[-1][1]:.4f} ({label.get(sd_items[-1][0], sd_items[-1][0])}); noise is not uniform, "
                 "so each comparison uses 2 x the larger sd of its own two configs",
                 f"- pooled threshold (2 x pooled sd): {nf.threshold:.4f} nats"]
    lines += ["", spread_text(fnd.spread)]
    return lines


def comparison_section(fnd: Findings) -> list[str]:
    if not fnd.comparisons:
        return ["No comparison requested (single arm)."]
    lines: list[str] = []
    for res in fnd.comparisons:
        lines += [f"### {res.arm_b} vs {res.arm_a}", ""]
        for side, arm, label, params in (("a", res.arm_a, res.label_a, res.params_a),
                                         ("b", res.arm_b, res.label_b, res.params_b)):
            if label:
                lines.append(f"- {side} = {arm} confirmed leader: {params_text(params or {})}"
                             + ("" if label.startswith(f"{arm} ") else f" ({label})"))
        lines.append("")
        c: Comparison | None = res.comparison
        if c is None:
            lines += [comparison_note(res), ""]
            continue
        diff_ci = (f"[{c.diff_ci_low:+.4f}, {c.diff_ci_high:+.4f}]"
                   if c.diff_ci_low is not None and c.diff_ci_high is not None else "n/a")
        rows = [
            ["mean a / mean b", f"{f4(c.mean_a)} / {f4(c.mean_b)}"],
            ["diff (b - a), negative = b lower loss", f"{c.diff:+.4f}" if c.diff is not None else "n/a"],
            [f"{round(c.confidence * 100)}% CI of diff", f"{diff_ci} ({c.ci_method or 'none'})"],
            ["paired t p", fp(c.p_value)],
            ["Wilcoxon p", f"{fp(c.rank_p_value)} ({c.rank_test_method or 'n/a'}; min possible "
                           f"{fp(c.rank_test_min_p)})"],
            ["p adjusted", f"{fp(c.p_adjusted)} ({c.correction}, family of {c.family_size})"],
            ["Hedges g (paired)", fs(c.hedges_g)],
            [f"P({c.name_b} < {c.name_a})", fs(c.prob_improvement)],
            ["n pairs", f"{c.n_pairs} (seeds {', '.join(str(s) for s in c.seeds_used or [])})"],
            ["min effect (noise threshold)", f4(c.min_effect)],
            ["verdict", f"**{c.verdict}**"],
        ]
        lines += [table(["statistic", "value"], rows), "", comparison_summary(c), ""]
        if c.limits:
            lines.append("Limits:")
            lines += [f"- {limit_text(lim)}" for lim in c.limits]
            lines.append("")
    return lines


def lr_section(fnd: Findings) -> list[str]:
    if not fnd.lr_sensitivity:
        return ["Not measured: no arm has completed search runs at 3 or more distinct learning rates."]
    rows = []
    for arm, r in fnd.lr_sensitivity.items():
        edge = [s for s, hit in (("low", r.lo_at_edge), ("high", r.hi_at_edge)) if hit]
        rows.append([arm, fs(r.best_lr, 4), f4(r.best_loss),
                     f"[{fs(r.lr_lo, 4)}, {fs(r.lr_hi, 4)}]" if r.lr_lo is not None else "n/a",
                     fs(r.width_ratio), f"{r.n_in_range} of {r.n_lrs}",
                     ("range reaches the " + " and ".join(edge) + " end of the sweep") if edge else "inside the sweep"])
    margin = next(iter(fnd.lr_sensitivity.values())).margin
    return [f"Learning rates whose mean final val loss is within {margin:g} nats of the arm's best (search runs, "
            "contiguous range). A wider range (larger hi/lo ratio) means the optimizer is less sensitive to its lr; "
            "a range that reaches the end of the sweep may be wider than measured.", "",
            table(["arm", "best lr", "best loss", "near-optimal range", "hi/lo", "lrs in range", "edge"], rows)]


def origin_section(fnd: Findings) -> list[str]:
    if not fnd.by_origin:
        return ["No trial finished."]
    rows = [[o.arm, o.origin, o.n_trials, o.n_configs, o.n_ok, o.n_diverged, o.n_failed, f4(o.best_val_loss),
             f4(o.mean_val_loss)] for o in fnd.by_origin]
    return ["Who proposed each trial and how it turned out, per arm so that origins are compared like with like "
            "(\"confirm\" = leader re-runs on fresh seeds; \"default\" = the study's starting point, given to every "
            "planner; a replicate counts under the origin that asked for it).", "",
            table(["arm", "origin", "trials", "configs", "ok", "diverged", "failed", "best val loss",
                   "mean val loss"], rows)]


def early_stop_lines(b: BudgetUse, limit: int = 8) -> list[str]:
    """How many search runs stopped early, at which rung and why (research_agents/rungs.py); none: no line."""
    if not b.stopped:
        return []
    at = Counter(s.rung for s in b.stopped)
    lines = [f"- stopped early: {len(b.stopped)} search run(s) ("
             + ", ".join(f"{n} at {q}%" for q, n in sorted(at.items(), key=lambda x: x[0] or 0))
             + "), each behind its arm's leader at that rung by more than the margin (the measured seed "
             "noise times a safety factor); each counts the share of the steps it trained and none is "
             "evidence: leaders, brackets, the noise and every comparison rest on full-length runs"]
    for s in b.stopped[-limit:]:
        lines.append(f"  - trial {s.order} {s.arm} {params_text(s.params)}: {s.reason or 'stopped'}")
    if len(b.stopped) > limit:
        lines.append(f"  - ({len(b.stopped) - limit} earlier ones not shown)")
    return lines


def budget_section(fnd: Findings) -> list[str]:
    b = fnd.budget
    unit = "run equivalents" if b.stopped else "runs"
    lines = [f"- used: {fruns(b.used)} {unit}"
             + (f" of {b.total} ({fruns(b.left or 0)} left)" if b.total is not None else ""),
             f"- by phase: search {fruns(b.by_phase.get('search', 0))}" +
             (f" of {b.search_budget}" if b.search_budget is not None else "") +
             f", confirmation {fruns(b.by_phase.get('confirm', 0))}" +
             (f" of {b.confirm_reserve} reserved" if b.confirm_reserve is not None else "") +
             (f", swap {fruns(b.by_phase['swap'])}" if "swap" in b.by_phase else ""),
             "- by arm: " + ", ".join(f"{a} {fruns(n)}" for a, n in b.by_arm.items()),
             *early_stop_lines(b)]
    if b.confirm_seeds:
        lines.append(f"- confirmation seeds: {', '.join(map(str, b.confirm_seeds))}")
    best = [v for _, v in fnd.best_so_far if v is not None]
    if best:
        lines.append(f"- best search val loss after {len(fnd.best_so_far)} search runs: {best[-1]:.4f}")
    return lines




def claims_section(results: list[ClaimResult]) -> str:
    rows = [[r.claim, r.seed_source, r.statement, f"**{r.verdict}**", claim_statistics(r)] for r in results]
    return ("Each seed claim this run can test, judged by its statistics: *agrees* needs a Holm-adjusted test "
            "beyond the noise floor (or, for 'as good as', no evidence of a difference with the CI inside the "
            "equivalence margin); *disagrees* needs the same for the opposite; otherwise *inconclusive*.\n\n"
            + table(["claim", "seed", "the seed said", "this run", "statistics"], rows))




def momentum_section(a: MomentumAnalysis) -> str:
    """Seed 004's table (statistical_analysis.json rendered) and its figure."""
    rows = []
    for label, e in sorted(a.schedules.items(), key=lambda kv: (kv[1]["final_val_loss"]["mean"] is None,
                                                        kv[1]["final_val_loss"]["mean"] or 0.0)):
        v = e.get("vs_baseline") or {}
        conv = e["convergence"]
        rows.append([label, f4(e["final_val_loss"]["mean"]), f4(v.get("diff")) if v else
                     ("baseline" if label == a.baseline else "not compared"),
                     fp(v.get("p_holm")), fs(v.get("cohens_d")), fs(v.get("hedges_g")), fp(v.get("paired_t_p_holm")),
                     fs(e["stability"]["n_spikes_mean"]), fs(e["stability"]["tail_variance_mean"]),
                     f"{fs(conv['steps_to_target_mean'], 4)} ({conv['reached']}/{e['n']})",
                     fs(e["peak_memory_mb_mean"], 5)])
    return ("Seed 004's analysis over the recorded runs (`statistical_analysis.json`, `momentum_schedules.png`). "
            f"Baseline: {a.baseline or 'none run'}; convergence target: val loss {f4(a.target_val_loss)} (baseline mean + 5%).\n\n"
            + table(["schedule", "val loss", "diff vs base", "Welch p (Holm)", "Cohen's d", "Hedges' g",
                     "paired p (Holm)", "spikes", "tail var", "steps to target (reached)", "peak mem (MB)"], rows)
            + "\n\n![Momentum schedules](momentum_schedules.png)")


def diagnostics_section(rows: list[DiagnosticsRow]) -> str:
    """Seed 003's measurements per configuration."""
    if not rows:
        return "No completed run."
    body = [[r.label, f4(r.train_loss), f4(r.val_loss), fs(r.peak_memory_mb, 5), fs(r.wall_time_s, 4),
             fs(r.grad_norm), fs(r.update_rms_muon), fs(r.update_rms_adamw), fs(r.svd_entropy), r.n] for r in rows]
    return ("Per configuration, means over seeds: train and val loss at the end; grad norm = mean pre-clip norm "
            "over the last 20% of steps; update RMS = RMS of one step's parameter change per optimizer group, "
            "averaged over the eval steps; SVD entropy = normalised entropy of the singular values of the tracked weight matrices "
            "(1 = all directions equal) at the last eval.\n\n"
            + table(["configuration", "train loss", "val loss", "peak mem (MB)", "time (s)", "grad norm",
                     "update RMS (Muon)", "update RMS (AdamW)", "SVD entropy", "n"], body))


def llm_usage_section(u: LLMUsage) -> str:
    lines = [f"Endpoint {u.endpoint}, model {u.model}; structured output: "
             + (", ".join(u.modes) or "none succeeded") + ".", ""]
    if u.plan is not None:
        lines.append(f"- {hybrid_plan_text(u.plan.share, u.plan.model_dump()['arms'])}")
    if not u.answered and not u.failed_tries:
        lines.append("- the LLM was never asked: every point came from the other planner")
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(u.kinds.items()))
    lines += [f"- calls: {u.answered} answered, {u.failed_tries} failed tries (errors, timeouts, "
              "output modes the server refused)",
              f"- tokens: {u.prompt_tokens} in, {u.completion_tokens} out",
              f"- latency: {u.latency_s:.1f} s in total"
              + (f", {u.latency_s / (u.answered + u.failed_tries):.2f} s per call" if u.answered + u.failed_tries else ""),
              "- cost: " + (f"${u.cost:.4f}" if u.cost is not None else "no prices configured "
                            "(--llm-price-in/--llm-price-out, USD per 1M tokens)"),
              f"- actions: {u.accepted} accepted" + (f" ({kinds})" if kinds else "") + f", {u.rejected} rejected, "
              f"{u.invalid_replies} replies not a usable JSON batch",
              f"- rounds the LLM was asked in: {u.rounds_asked}; without one valid action: "
              + (", ".join(map(str, u.rounds_without_action)) or "none"),
              "- transcripts: llm/round-NN-K.json (messages, raw response, validation errors)"]
    if u.slots_filled_by_tpe:
        lines.append(f"- slots the LLM never filled validly (given to tpe): {u.slots_filled_by_tpe}")
    for i, st in enumerate(u.stops, 1):
        later = u.resumed_after_stop or i < len(u.stops)
        lines.append(f"- STOPPED at round {st['round']}: {st['reason']}; finished trials were kept"
                     + ("; the run was resumed afterwards" if later else "; the same command resumes"))
    for fb in u.fallbacks:
        lines.append(f"- FALLBACK at round {fb['round']}: the LLM failed ({fb['reason']}); "
                     f"the classical {fb.get('planner', 'tpe')} planner planned the rest of that run")
    if u.by_round:
        lines += ["", "| round | calls | failed tries | mode | tokens in | tokens out | latency (s) | cost |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in u.by_round:
            lines.append(f"| {r.round} | {r.calls} | {r.failed_tries} | {', '.join(r.modes) or '-'} | "
                         f"{r.prompt_tokens} | {r.completion_tokens} | {r.latency_s:.2f} | "
                         + (f"${r.cost:.4f}" if r.cost is not None else "-") + " |")
    return "\n".join(lines)


def stopped_arms_section(stops: list[dict]) -> str:
    return "\n".join(f"- round {s.get('round')}: {s.get('origin')} stopped the search of arm {s.get('arm')}: "
                     f"{s.get('reason') or 'no reason given'}; its remaining search budget went unspent" for s in stops)


def rejections_section(rejections: list[dict]) -> str:
    shown = rejections[-30:]
    rows = [[str(r.get("round")), str(r.get("origin")), str(r.get("arm")),
             json.dumps(r.get("params"), default=str)[:160], str(r.get("reason"))[:200]] for r in shown]
    return (f"{len(rejections)} proposal(s) rejected before training (never clamped, never run)"
            + (f"; the last {len(shown)}:" if len(shown) < len(rejections) else ":") + "\n\n"
            + table(["round", "origin", "arm", "params", "reason"], rows))


def planning_sections(p: PlanningSummary) -> list[tuple[str, str]]:
    """"LLM usage" for an LLM planner, "Stopped searches" and "Rejected proposals" when any."""
    out = []
    if p.llm is not None:
        out.append(("LLM usage", llm_usage_section(p.llm)))
    if p.stopped_arms:
        out.append(("Stopped searches", stopped_arms_section(p.stopped_arms)))
    if p.rejections:
        out.append(("Rejected proposals", rejections_section(p.rejections)))
    return out


def _side(nb) -> str:
    if nb is None:
        return "none measured"
    close = " (within noise)" if nb.within_noise else ""
    return f"{fmt_value(nb.value)}: {nb.gap:+.4f}, {nb.steps:.1f} steps{close}"


def tuning_section(tuning: dict[str, ArmEvidence]) -> list[str]:
    """Per arm and searched knob (LR first): bracketed, open (where), or at the edge of the space."""
    if not tuning:
        return ["No search runs: nothing to bracket."]
    lines = ["Is each arm's optimum found? A knob is *bracketed* when the leader's nearest one-knob neighbours "
             "on both sides (at most 1.5 grid steps away: a factor of about 2 for an LR) are measured and not "
             "better beyond the noise; *open* sides name what is untested; *edge* means the leader sits at the "
             "space's bound (the space may be too narrow). Only an arm whose LR is bracketed counts as tuned.", ""]
    rows = []
    for arm, ev in tuning.items():
        if ev.leader_config is None:
            rows.append([arm, "-", "-", "nothing measured", "-", "-", "-"])
            continue
        for k in ev.knobs:
            rows.append([arm, k.knob, fmt_value(k.leader_value), f"**{k.status}**" if k.knob == "lr" else k.status,
                         _side(k.below) if k.status not in ("all choices tried", "choices untried", "not searched") else "-",
                         _side(k.above) if k.status not in ("all choices tried", "choices untried", "not searched") else "-",
                         ", ".join(fmt_value(v) for v in k.to_try) or "-"])
    lines.append(table(["arm", "knob", "leader", "status", "below", "above", "to try"], rows))
    lines.append("")
    for arm, ev in tuning.items():
        if ev.leader_config is None:
            continue
        noise = "noise not measured" if ev.threshold is None else f"noise threshold {ev.threshold:.4f}"
        close = ("; the runner-up is within the noise (replicate before trusting the ranking)"
                 if ev.close_call and ev.runner_up_gap is not None else "")
        bad = " and ".join("LR" if k.knob == "lr" else k.knob for k in ev.untuned_lrs)  # every LR-like knob counts
        state = {True: "tuned (LR bracketed)", False: f"NOT tuned ({bad} not bracketed)", None: "LR fixed by the study"}
        lines.append(f"- {arm}: {state[ev.tuned]}; leader {params_text(ev.leader_params)} "
                     f"(mean {ev.leader_mean:.4f}, n={ev.leader_n}); {noise}{close}.")
    return lines
