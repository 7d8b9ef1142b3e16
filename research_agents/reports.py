"""Markdown reports: a short one per round (what the next planning round reads) and the final one.

Round reports go to OUT/rounds/round-NN.md. The final report writes OUT/report.md,
OUT/results.csv (one row per trial), OUT/summary.json (the findings plus the set-up) and the
plots under OUT/plots/. Every number comes from `findings.analyze`; nothing here computes
statistics.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from research_agents import plots
from research_agents.analyzer import Comparison, Summary
from research_agents.findings import ConfigRow, Findings, analyze, fmt_value, params_text
from research_agents.specs import Study, active_params
from research_agents.store import TrialRecord

if TYPE_CHECKING:
    from research_agents.loop import Plan

CSV_COLUMNS = ["id", "order", "round", "phase", "arm", "origin", "seed", "status", "val_loss",
               "val_accuracy", "val_perplexity", "train_loss", "wall_time_s", "tokens_seen", "config",
               "params", "reason"]
BAD = ("diverged", "failed", "timeout")


# ------------------------------------------------------------------------------ formatting


def f4(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def fp(p: float | None) -> str:
    """p-values to 3 significant digits."""
    return "n/a" if p is None else f"{p:.3g}"


def fs(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def ci(s: Summary | None) -> str:
    if s is None or s.ci_low is None or s.ci_high is None:
        return "n/a"
    return f"[{s.ci_low:.4f}, {s.ci_high:.4f}]"


def mean_ci(s: Summary | None) -> str:
    if s is None or s.mean is None:
        return "no completed run"
    if s.ci_low is None:
        return f"{s.mean:.4f} (n={s.n}, no CI)"
    return f"{s.mean:.4f} ± {(s.ci_high - s.ci_low) / 2:.4f} (95% CI {ci(s)}, n={s.n})"


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def config_text(row: ConfigRow) -> str:
    if row.label.startswith(f"{row.arm} "):
        return params_text(row.params)
    return f"{row.label} ({params_text(row.params)})" if row.params else row.label


def _loss(r: TrialRecord) -> str:
    return f4(r.val_loss) if r.val_loss is not None else "-"


# ------------------------------------------------------------------------------ round report


def _open_questions(study: Study, records: list[TrialRecord], fnd: Findings) -> list[str]:
    qs: list[str] = []
    ok_by_arm = {a: sum(1 for r in records if r.arm == a and r.ok) for a in study.arms}
    most = max(ok_by_arm.values(), default=0)
    for arm, n in ok_by_arm.items():
        if len(study.arms) > 1 and n < most:
            qs.append(f"{arm} has fewer completed runs ({n}) than the best-covered arm ({most}).")
    for arm, spec in study.arms.items():
        search_ok = [r for r in records if r.arm == arm and r.phase == "search" and r.ok]
        rng = fnd.lr_sensitivity.get(arm)
        if rng is not None and rng.best_lr is not None and rng.lrs:
            bound = spec.space.get("lr")
            if rng.best_lr == rng.lrs[0]:
                at_bound = bound is not None and bound.low is not None and rng.best_lr <= bound.low
                qs.append(f"{arm}: the best lr {rng.best_lr:.4g} is the SMALLEST tried"
                          + (" and sits at the space's lower bound (the optimum may lie outside the space)."
                             if at_bound else "; lower lrs are untested."))
            elif rng.best_lr == rng.lrs[-1]:
                at_bound = bound is not None and bound.high is not None and rng.best_lr >= bound.high
                qs.append(f"{arm}: the best lr {rng.best_lr:.4g} is the LARGEST tried"
                          + (" and sits at the space's upper bound (the optimum may lie outside the space)."
                             if at_bound else "; higher lrs are untested."))
            edges = [side for side, hit in (("lowest", rng.lo_at_edge), ("highest", rng.hi_at_edge)) if hit]
            if edges:
                qs.append(f"{arm}: the near-optimal lr range [{rng.lr_lo:.4g}, {rng.lr_hi:.4g}] (within "
                          f"{rng.margin:g} nats of the best) reaches the {' and '.join(edges)} lr tried; "
                          "its true width is unknown.")
        elif "lr" in spec.space:
            n_lr = len({r.params.get("lr") for r in search_ok if "lr" in r.params})
            qs.append(f"{arm}: lr sensitivity not measurable yet ({n_lr} distinct lr value(s) completed, 3 needed).")
        little = []
        for key in spec.space:
            vals = {json.dumps(r.params[key], sort_keys=True, default=str) for r in search_ok
                    if key in r.params and key in active_params(spec.space, r.params)}
            p = spec.space[key]
            enough = min(3, len(p.choices)) if p.type == "choice" else 3
            if len(vals) < enough:
                little.append(f"{key} ({len(vals)} value{'s' if len(vals) != 1 else ''})")
        if little:
            qs.append(f"{arm}: still uncertain, tried at few values: {', '.join(little)}.")
        arm_rows = [c for c in fnd.configs if c.arm == arm and c.n]
        if arm_rows:
            top = arm_rows[0]
            if top.n == 1:
                qs.append(f"{arm}: the leader ({config_text(top)}) rests on a single run.")
            if len(arm_rows) > 1:
                second = arm_rows[1]
                gap = second.summary.mean - top.summary.mean
                thr = fnd.noise.threshold_for(top.config, second.config)
                if thr is not None and gap <= thr:
                    qs.append(f"{arm}: the top two configs differ by {gap:.4f}, within the noise threshold "
                              f"{thr:.4f}: which is better is unknown.")
    leaders = {a: rows[0] for a in study.arms if (rows := [c for c in fnd.configs if c.arm == a and c.n])}
    if len(leaders) >= 2:
        ordered = sorted(leaders.values(), key=lambda c: c.summary.mean)
        gap = ordered[1].summary.mean - ordered[0].summary.mean
        thr = fnd.noise.threshold_for(ordered[0].config, ordered[1].config)
        if thr is None:
            qs.append(f"The arm leaders differ by {gap:.4f} (best: {ordered[0].arm}); the noise floor is not "
                      "measured yet, so whether that is real is unknown until confirmation.")
        elif gap <= thr:
            qs.append(f"The arm leaders ({ordered[0].arm}, {ordered[1].arm}) differ by {gap:.4f}, within the "
                      f"noise threshold {thr:.4f}.")
    return qs


def write_round_report(out: Path, study: Study, round_no: int, round_records: list[TrialRecord],
                       all_records: list[TrialRecord], plan: Plan | None) -> str:
    """Write OUT/rounds/round-NN.md (compact, factual: what the next planning round reads)."""
    fnd = analyze(study, all_records, plan)
    lines = [f"# Round {round_no:02d}: {study.name}", "", f"Question: {study.question}", ""]

    lines += ["## Tried this round", ""]
    if round_records:
        lines.append(table(["arm", "params", "seed", "origin", "status", "val loss", "rationale"],
                           [[r.arm, params_text(r.params), r.seed, r.origin, r.status, _loss(r),
                             (r.rationale or "")[:160]] for r in round_records]))
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
            lines.append(f"  - #{c.rank} {config_text(c)}: {mean_ci(c.summary)}"
                         + (f" [{'; '.join(extra)}]" if extra else ""))

    lines += ["", "## Noise floor", ""]
    nf = fnd.noise
    if nf.pooled_sd is None:
        lines.append("Not yet measured: no config has repeats.")
    else:
        sds = sorted(nf.sd_by_config.values())
        lines.append(f"Seed sd pooled {nf.pooled_sd:.4f} (median {fs(nf.median_sd)}, range {sds[0]:.4f}-"
                     f"{sds[-1]:.4f}) from {nf.n_configs_with_repeats} repeated config(s), df {nf.df}; "
                     f"differences under {nf.threshold:.4f} (2 sd) are no evidence.")
    if fnd.spread.text:
        lines.append(fnd.spread.text)

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
    qs = _open_questions(study, all_records, fnd)
    lines += [f"- {q}" for q in qs] or ["- None flagged."]
    text = "\n".join(lines) + "\n"
    path = Path(out) / "rounds" / f"round-{round_no:02d}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


# ------------------------------------------------------------------------------ final report


def setup_from_metrics(metrics: dict, study: Study | None = None, preset: str | None = None,
                       **extra: Any) -> dict[str, Any]:
    """The set-up facts of a study, read from one trial's metrics.json (what the report renders)."""
    spec = metrics.get("spec") or {}
    env = metrics.get("env") or {}
    model = spec.get("model") or {}
    out: dict[str, Any] = {}
    if study is not None or preset:
        out["preset"] = preset or study.preset
    out["model"] = model
    out["n_params"] = env.get("n_params")
    out["data"] = {**(spec.get("data") or {}), **({"fingerprint": env["data"]} if env.get("data") else {})}
    for key in ("steps", "batch_size", "grad_accum", "seq_len", "eval_every", "eval_batches"):
        if key in spec:
            out[key] = spec[key]
    if all(k in spec for k in ("batch_size", "grad_accum", "seq_len", "steps")):
        out["tokens_per_trial"] = spec["batch_size"] * spec["grad_accum"] * spec["seq_len"] * spec["steps"]
    out["device"] = metrics.get("device")
    out["precision"] = metrics.get("precision")
    for key in ("python", "torch", "numpy", "platform", "cuda", "threads"):
        out[key] = env.get(key)
    out.update(extra)
    return out


def _render_value(v: Any) -> str:
    if isinstance(v, float):
        return fmt_value(v)
    if isinstance(v, (dict, list, tuple)):
        return "`" + json.dumps(v, sort_keys=True, default=str) + "`"
    return str(v)


def _setup_section(setup: dict) -> list[str]:
    if not setup:
        return ["No set-up recorded (no trial wrote a metrics.json)."]
    lines = []
    for key, value in setup.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()):
            lines.append(f"- **{key}**:")
            lines += [f"  - {k}: {_render_value(v)}" for k, v in value.items()]
        else:
            lines.append(f"- **{key}**: {_render_value(value)}")
    return lines


def _question_section(study: Study, fnd: Findings) -> list[str]:
    lines = [study.question, "", "Arms and their search spaces:", ""]
    for name, arm in study.arms.items():
        space = "; ".join(f"{k}: {p.describe()}" for k, p in arm.space.items()) or "fixed (no search)"
        base = f" Fixed: {params_text(arm.base)}." if arm.base else ""
        lines.append(f"- **{name}**: {space}.{base}")
    pairs = [f"{c.arm_b} vs {c.arm_a}" for c in fnd.comparisons]
    if pairs:
        where = ("the confirmation seeds" if fnd.decided_on == "confirm" else
                 "the named experiments' own seeds, each arm's best-ranked experiment")
        lines += ["", f"Comparisons tested: {', '.join(pairs)} (paired by seed on {where}, "
                  f"{fnd.correction} correction for {len(pairs)} comparison(s))."]
    return lines


def _ranking_section(fnd: Findings) -> list[str]:
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
        rows.append([c.rank, config_text(c), f4(c.summary.mean), ci(c.summary), fs(c.val_perplexity, 4),
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


def _noise_section(fnd: Findings) -> list[str]:
    nf = fnd.noise
    if nf.pooled_sd is None:
        lines = ["Noise floor not measured: no configuration has two or more completed runs."]
    else:
        sd_items = sorted(nf.sd_by_config.items(), key=lambda kv: kv[1])
        label = {c.config: config_text(c) for c in fnd.configs}
        lines = [f"- pooled seed sd: {nf.pooled_sd:.4f} (df {nf.df}, {nf.n_configs_with_repeats} configs with "
                 f"repeats, {nf.n_runs} runs)",
                 f"- median per-config sd: {fs(nf.median_sd)}",
                 f"- per-config sd ranges from {sd_items[0][1]:.4f} ({label.get(sd_items[0][0], sd_items[0][0])}) "
                 f"to {sd_items[-1][1]:.4f} ({label.get(sd_items[-1][0], sd_items[-1][0])}); noise is not uniform, "
                 "so each comparison uses 2 x the larger sd of its own two configs",
                 f"- pooled threshold (2 x pooled sd): {nf.threshold:.4f} nats"]
    lines += ["", fnd.spread.text] if fnd.spread.text else []
    return lines


def _comparison_section(fnd: Findings) -> list[str]:
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
            lines += [res.note, ""]
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
        lines += [table(["statistic", "value"], rows), "", c.summary, ""]
        if c.limits:
            lines.append("Limits:")
            lines += [f"- {lim}" for lim in c.limits]
            lines.append("")
    return lines


def _lr_section(fnd: Findings) -> list[str]:
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


def _origin_section(fnd: Findings) -> list[str]:
    if not fnd.by_origin:
        return ["No trial finished."]
    rows = [[o.origin, o.n_trials, o.n_configs, o.n_ok, o.n_diverged, o.n_failed, f4(o.best_val_loss),
             f4(o.mean_val_loss)] for o in fnd.by_origin]
    return ["Who proposed each trial and how it turned out (\"confirm\" = leader re-runs on fresh seeds; "
            "\"default\" = the study's starting point, given to every planner).", "",
            table(["origin", "trials", "configs", "ok", "diverged", "failed", "best val loss", "mean val loss"], rows)]


def _budget_section(fnd: Findings) -> list[str]:
    b = fnd.budget
    lines = [f"- used: {b.used} runs" + (f" of {b.total} ({b.left} left)" if b.total is not None else ""),
             f"- by phase: search {b.by_phase.get('search', 0)}" +
             (f" of {b.search_budget}" if b.search_budget is not None else "") +
             f", confirmation {b.by_phase.get('confirm', 0)}" +
             (f" of {b.confirm_reserve} reserved" if b.confirm_reserve is not None else ""),
             "- by arm: " + ", ".join(f"{a} {n}" for a, n in b.by_arm.items())]
    if b.confirm_seeds:
        lines.append(f"- confirmation seeds: {', '.join(map(str, b.confirm_seeds))}")
    best = [v for _, v in fnd.best_so_far if v is not None]
    if best:
        lines.append(f"- best search val loss after {len(fnd.best_so_far)} search runs: {best[-1]:.4f}")
    return lines


def _write_csv(path: Path, records: list[TrialRecord]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in sorted(records, key=lambda r: r.order):
            w.writerow([r.id, r.order, r.round, r.phase, r.arm, r.origin, r.seed, r.status,
                        *("" if v is None else repr(float(v)) for v in
                          (r.val_loss, r.val_accuracy, r.val_perplexity, r.train_loss, r.wall_time_s)),
                        "" if r.tokens_seen is None else r.tokens_seen, r.config,
                        json.dumps(r.params, sort_keys=True, default=str), r.reason or ""])


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)


def write_final_report(out: Path, study: Study, plan: Plan | None, records: list[TrialRecord], setup: dict,
                       commands: list[str], extra_sections: Sequence[tuple[str, str]] = (),
                       correction: str = "holm", findings: Findings | None = None) -> Findings:
    """Write OUT/report.md, OUT/results.csv, OUT/summary.json and OUT/plots/*.png; return the findings.

    `extra_sections` (heading, markdown) follow the recommendation; `findings`: already analysed (e.g. by
    the caller that built `extra_sections` from them).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fnd = findings or analyze(study, records, plan, correction=correction)
    made = plots.make_all(out, records, fnd)

    lines = [f"# {study.name}", "", "## Question", "", *_question_section(study, fnd),
             "", "## Set-up", "", *_setup_section(setup),
             "", "## Ranking", "", *_ranking_section(fnd),
             "", "## Noise floor and spread", "", *_noise_section(fnd),
             "", "## Comparisons", "", *_comparison_section(fnd),
             "", "## Recommendation", "", fnd.recommendation.text, "",
             f"Confidence: {fnd.recommendation.confidence}",
             *[line for heading, body in extra_sections for line in ("", f"## {heading}", "", body.rstrip())],
             "", "## LR sensitivity", "", *_lr_section(fnd),
             "", "## Outcomes by origin", "", *_origin_section(fnd),
             "", "## Budget", "", *_budget_section(fnd),
             "", "## Plots", ""]
    if made:
        lines += [f"![{title}]({path.relative_to(out).as_posix()})" for title, path in made.items()]
    else:
        lines.append("Nothing to plot.")
    lines += ["", "## Reproduce", "", "```bash", *commands, "```", ""]
    (out / "report.md").write_text("\n".join(lines))

    _write_csv(out / "results.csv", records)
    summary = {**fnd.model_dump(mode="json"), "setup": setup,
               "plots": {t: p.relative_to(out).as_posix() for t, p in made.items()}}
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=1, allow_nan=False))
    return fnd


__all__ = ["write_round_report", "write_final_report", "setup_from_metrics", "CSV_COLUMNS"]
