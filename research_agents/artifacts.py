"""The seeds' artifacts, and the per-study analyses the seeds asked for.

Per trial (in its directory): `metrics_plot.png`, four panels as the seeds drew them (loss against
time, loss against steps, val accuracy, LR schedule). Per study (in OUT/):

* `comparison_plot.png`: val loss curves of every configuration (mean over seeds) and final val
  loss bars with 95% CIs, best first;
* `comparison_summary.json`: per configuration and the best one (keys documented in the file
  itself under "keys"), plus the seed claims' verdicts;
* a study's `analyses` add their own: "momentum" (seed 004: `momentum_schedules.png` and
  `statistical_analysis.json`), "diagnostics" (seed 003: loss, memory, time, grad norms, update
  RMS and SVD entropy per configuration).

Every statistic comes from `analyzer` (through `findings` and `claims`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import fmean
from typing import Any

from research_agents import analyzer
from research_agents.claims import Run, claims_section, evaluate, final_svd_entropy, load_runs, \
    schedule_comparisons
from research_agents.executor import read_metrics
from research_agents.findings import Findings
from research_agents.specs import Study
from research_agents.store import TrialRecord

SUMMARY_KEYS = {
    "study": "study name", "scale": "the study's scale this run used (seed, cpu, ...)",
    "metric": "what ranks the configurations",
    "configs[]": "one entry per configuration, best (rank 1) first",
    "configs[].rank": "1 = lowest mean final val loss",
    "configs[].name": "configuration name (the seed's experiment name in a point run)",
    "configs[].arm": "arm of the study", "configs[].params": "parameters that define it",
    "configs[].n": "completed runs (seeds) in the statistics", "configs[].seeds": "their seeds",
    "configs[].val_loss": "final val loss over seeds: mean, sd, ci_low, ci_high (95%, bootstrap or t), min, max",
    "configs[].val_perplexity": "mean final val perplexity exp(min(loss, 20))",
    "configs[].val_accuracy": "mean final next-token accuracy",
    "configs[].time_s": "mean wall time of one run, seconds",
    "configs[].status": "ok, or how every run of it ended", "configs[].n_diverged": "diverged runs",
    "best": "the rank-1 configuration (same fields)",
    "claims[]": "seed claims tested: claim, seed_source, statement, verdict, statistics",
}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------ per trial


def trial_plot(run_dir: Path) -> Path | None:
    """metrics_plot.png in the trial's directory (None when it has no history); never raises."""
    try:
        metrics = read_metrics(Path(run_dir)) or {}
        hist = [h for h in metrics.get("history") or [] if isinstance(h, dict)]
        if not hist:
            return None
        plt = _plt()
        fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
        evals = [h for h in hist if _finite(h.get("val_loss"))]
        for ax, x in ((axes[0, 0], "time_s"), (axes[0, 1], "step")):
            pts = [(h[x], h["train_loss"]) for h in hist if _finite(h.get(x)) and _finite(h.get("train_loss"))]
            if pts:
                ax.plot(*zip(*pts), lw=0.8, alpha=0.6, label="train loss")
            vpts = [(h[x], h["val_loss"]) for h in evals if _finite(h.get(x))]
            if vpts:
                ax.plot(*zip(*vpts), marker="o", ms=3, label="val loss")
            ax.set_xlabel("wall time (s)" if x == "time_s" else "optimizer step")
            ax.set_ylabel("loss (nats)")
            ax.set_title(f"Loss vs {'time' if x == 'time_s' else 'steps'}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax = axes[1, 0]
        apts = [(h["step"], h["val_accuracy"]) for h in evals if _finite(h.get("val_accuracy"))]
        if apts:
            ax.plot(*zip(*apts), marker="o", ms=3, color="tab:green")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("val accuracy")
        ax.set_title("Validation accuracy")
        ax.grid(alpha=0.3)
        ax = axes[1, 1]
        for key, label in (("lr", "LR (main optimizer)"), ("adamw_lr", "AdamW-leg LR")):
            pts = [(h["step"], h[key]) for h in hist if _finite(h.get(key))]
            if pts and not (key == "adamw_lr" and metrics.get("spec", {}).get("optimizer") == "adamw"):
                ax.plot(*zip(*pts), label=label)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("learning rate")
        ax.set_title("LR schedule")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        spec = metrics.get("spec") or {}
        final = metrics.get("final") or {}
        loss = f"{final['val_loss']:.4f}" if _finite(final.get("val_loss")) else "n/a"
        fig.suptitle(f"{spec.get('optimizer', '?')} lr={spec.get('lr')} seed={spec.get('seed')}: "
                     f"{metrics.get('status')}, final val loss {loss}", fontsize=10)
        fig.tight_layout()
        path = Path(run_dir) / "metrics_plot.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
    except Exception:  # a plot must never break a run
        return None


# ------------------------------------------------------------------------------ per study


def _mean_curve(runs: list[Run], key: str = "val_loss") -> tuple[list[int], list[float]]:
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for h in run.metrics.get("history") or []:
            if _finite(h.get(key)) and _finite(h.get("step")):
                by_step.setdefault(int(h["step"]), []).append(float(h[key]))
    steps = sorted(by_step)
    return steps, [fmean(by_step[s]) for s in steps]


def comparison_plot(out: Path, runs: list[Run], fnd: Findings) -> Path | None:
    rows = [c for c in fnd.configs if c.summary.mean is not None]
    if not rows:
        return None
    plt = _plt()
    height = max(4.5, 0.28 * len(rows) + 1.5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, height), gridspec_kw={"width_ratios": [1.2, 1]})
    for c in rows:
        steps, losses = _mean_curve([r for r in runs if r.record.config == c.config])
        if steps:
            left.plot(steps, losses, lw=1.6 if c.rank <= 10 else 0.7, alpha=1.0 if c.rank <= 10 else 0.4,
                      label=f"{c.rank}. {c.label}"[:48] if c.rank <= 10 else None)
    left.set_xlabel("optimizer step")
    left.set_ylabel("val loss (nats), mean over seeds")
    left.set_title("Validation loss (top 10 labelled)")
    left.grid(alpha=0.3)
    if left.get_legend_handles_labels()[0]:  # no curve when every run failed
        left.legend(fontsize=7)
    ys = list(range(len(rows)))[::-1]
    means = [c.summary.mean for c in rows]
    err = [[max(0.0, c.summary.mean - c.summary.ci_low) if c.summary.ci_low is not None else 0.0 for c in rows],
           [max(0.0, c.summary.ci_high - c.summary.mean) if c.summary.ci_high is not None else 0.0 for c in rows]]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    arms = list(dict.fromkeys(c.arm for c in rows))
    right.barh(ys, means, xerr=err, capsize=2, color=[colours[arms.index(c.arm) % len(colours)] for c in rows])
    right.set_yticks(ys, [f"{c.label} (n={c.n})"[:40] for c in rows], fontsize=7)
    lo = min(c.summary.ci_low if c.summary.ci_low is not None else c.summary.mean for c in rows)
    hi = max(c.summary.ci_high if c.summary.ci_high is not None else c.summary.mean for c in rows)
    pad = max(0.02, 0.1 * (hi - lo))
    right.set_xlim(lo - pad, hi + pad)
    right.set_xlabel("final val loss, mean and 95% CI over seeds (lower is better)")
    right.set_title("Final validation loss by configuration (colour = arm)")
    right.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path = Path(out) / "comparison_plot.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _config_entry(c) -> dict[str, Any]:
    s = c.summary
    return {"rank": c.rank, "name": c.label, "arm": c.arm, "params": c.params, "n": c.n, "seeds": c.seeds,
            "val_loss": {"mean": s.mean, "sd": s.sd, "ci_low": s.ci_low, "ci_high": s.ci_high, "min": s.min,
                         "max": s.max},
            "val_perplexity": c.val_perplexity, "val_accuracy": c.val_accuracy, "time_s": c.wall_time_s,
            "status": c.status, "n_diverged": c.n_diverged}


def comparison_summary(out: Path, study: Study, fnd: Findings, claims: list) -> Path:
    from research_agents.reports import _json_safe

    configs = [_config_entry(c) for c in fnd.configs]
    summary = {"study": study.name, "scale": study.scale, "question": study.question,
               "metric": "final val loss (nats, lower is better), mean over seeds",
               "keys": SUMMARY_KEYS, "configs": configs, "best": configs[0] if configs else None,
               "claims": [c.model_dump(mode="json") for c in claims]}
    path = Path(out) / "comparison_summary.json"
    path.write_text(json.dumps(_json_safe(summary), indent=1, allow_nan=False))
    return path


# ------------------------------------------------------------------------------ momentum (seed 004)


def _by_label(runs: list[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.label, []).append(r)
    return out


def _mean(xs) -> float | None:
    xs = [float(x) for x in xs if _finite(x)]
    return fmean(xs) if xs else None


def momentum_analysis(out: Path, study: Study, runs: list[Run], fnd: Findings) -> str:
    """Seed 004's analysis: schedules plot, statistical_analysis.json, and its report section."""
    from research_agents.reports import _json_safe, f4, fp, fs, table

    groups = _by_label([r for r in runs if r.record.status in ("completed", "diverged")])
    # the schedules as recorded (first run of each configuration)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, rs in groups.items():
        pts = [(h["step"], h["momentum"]) for h in rs[0].metrics.get("history") or []
               if _finite(h.get("momentum")) and _finite(h.get("step"))]
        if pts:
            ax.plot(*zip(*pts), lw=1.4, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("Muon momentum (recorded)")
    ax.set_title("Momentum schedules as the runs recorded them")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(Path(out) / "momentum_schedules.png", dpi=100)
    plt.close(fig)

    base, comps = schedule_comparisons(runs, min_effect=fnd.noise.threshold)
    target = None
    if base is not None:
        base_mean = _mean(r.loss for r in groups[base])
        target = None if base_mean is None else base_mean * 1.05
    per: dict[str, dict] = {}
    for label, rs in groups.items():
        ok = [r for r in rs if r.loss is not None]
        stab = [analyzer.stability([h["train_loss"] for h in r.metrics.get("history") or []
                                    if "train_loss" in h]) for r in rs]
        reach = []
        for r in ok:
            ev = [h for h in r.metrics.get("history") or [] if _finite(h.get("val_loss"))]
            reach.append(None if target is None or not ev else
                         analyzer.steps_to_target([h["step"] for h in ev], [h["val_loss"] for h in ev], target))
        entry: dict[str, Any] = {
            "n": len(ok), "seeds": [r.record.seed for r in ok],
            "final_val_loss": analyzer.summarize([r.loss for r in ok]).model_dump(mode="json"),
            "stability": {"n_spikes_mean": _mean(s["n_spikes"] for s in stab),
                          "tail_variance_mean": _mean(s["tail_variance"] for s in stab),
                          "n_diverged": sum(r.record.status == "diverged" for r in rs)},
            "convergence": {"target_val_loss": target, "steps_to_target": reach,
                            "steps_to_target_mean": _mean(reach), "reached": sum(x is not None for x in reach)},
            "peak_memory_mb_mean": _mean(r.metrics.get("peak_memory_mb") for r in ok),
            "wall_time_s_mean": _mean(r.record.wall_time_s for r in ok),
        }
        if label in comps:
            w, p = comps[label]
            xa = [r.loss for r in groups[base] if r.loss is not None]
            entry["vs_baseline"] = {
                "diff": w.diff, "ci_low": w.diff_ci_low, "ci_high": w.diff_ci_high,
                "welch_t": w.t_statistic, "welch_df": w.t_df, "p": w.p_value, "p_holm": w.p_adjusted,
                "cohens_d": analyzer.cohens_d(xa, [r.loss for r in ok]), "hedges_g": w.hedges_g,
                "verdict": w.verdict, "paired_t_p": p.p_value, "paired_t_p_holm": p.p_adjusted,
                "paired_verdict": p.verdict, "n_pairs": p.n_pairs}
        per[label] = entry
    doc = {"baseline": base, "target_rule": "baseline's mean final val loss + 5%", "target_val_loss": target,
           "method": ("each schedule vs the baseline: Welch t-test (the seed's t-test, unpaired) and the paired t "
                      "(same seeds), Holm-adjusted across schedules; Cohen's d and Hedges' g (negative: the "
                      "schedule has the lower loss); stability = analyzer.stability over train-loss curves "
                      "(spikes > 3x the median step change, variance of the last 20%); convergence = first "
                      "eval step with val loss <= target"),
           "schedules": per}
    (Path(out) / "statistical_analysis.json").write_text(json.dumps(_json_safe(doc), indent=1, allow_nan=False))

    rows = []
    for label, e in sorted(per.items(), key=lambda kv: (kv[1]["final_val_loss"]["mean"] is None,
                                                        kv[1]["final_val_loss"]["mean"] or 0.0)):
        v = e.get("vs_baseline") or {}
        conv = e["convergence"]
        rows.append([label, f4(e["final_val_loss"]["mean"]), f4(v.get("diff")) if v else
                     ("baseline" if label == base else "not compared"),
                     fp(v.get("p_holm")), fs(v.get("cohens_d")), fs(v.get("hedges_g")), fp(v.get("paired_t_p_holm")),
                     fs(e["stability"]["n_spikes_mean"]), fs(e["stability"]["tail_variance_mean"]),
                     f"{fs(conv['steps_to_target_mean'], 4)} ({conv['reached']}/{e['n']})",
                     fs(e["peak_memory_mb_mean"], 5)])
    return ("Seed 004's analysis over the recorded runs (`statistical_analysis.json`, `momentum_schedules.png`). "
            f"Baseline: {base or 'none run'}; convergence target: val loss {f4(target)} (baseline mean + 5%).\n\n"
            + table(["schedule", "val loss", "diff vs base", "Welch p (Holm)", "Cohen's d", "Hedges' g",
                     "paired p (Holm)", "spikes", "tail var", "steps to target (reached)", "peak mem (MB)"], rows)
            + "\n\n![Momentum schedules](momentum_schedules.png)")


# ------------------------------------------------------------------------------ diagnostics (seed 003)


def diagnostics_analysis(out: Path, study: Study, runs: list[Run], fnd: Findings) -> str:
    """Seed 003's measurements per configuration: loss, memory, time, grad norms, updates, SVD entropy."""
    from research_agents.reports import f4, fs, table

    groups = _by_label([r for r in runs if r.loss is not None])
    rows = []
    for c in fnd.configs:
        rs = groups.get(c.label)
        if not rs:
            continue

        def tail_grad(r: Run) -> float | None:
            g = [h["grad_norm"] for h in r.metrics.get("history") or [] if _finite(h.get("grad_norm"))]
            return _mean(g[-max(1, len(g) // 5):]) if g else None

        def mean_update(r: Run, group: str) -> float | None:
            return _mean((d.get("update_rms") or {}).get(group) for d in r.metrics.get("diagnostics") or [])

        rows.append([c.label, f4(_mean(r.record.train_loss for r in rs)), f4(c.summary.mean),
                     fs(_mean(r.metrics.get("peak_memory_mb") for r in rs), 5), fs(c.wall_time_s, 4),
                     fs(_mean(tail_grad(r) for r in rs)), fs(_mean(mean_update(r, "muon") for r in rs)),
                     fs(_mean(mean_update(r, "adamw_decay") for r in rs)),
                     fs(_mean(final_svd_entropy(r) for r in rs)), c.n])
    if not rows:
        return "No completed run."
    return ("Per configuration, means over seeds: train and val loss at the end; grad norm = mean pre-clip norm "
            "over the last 20% of steps; update RMS = RMS of one step's parameter change per optimizer group, "
            "averaged over the eval steps; SVD entropy = normalised entropy of the singular values of the tracked weight matrices "
            "(1 = all directions equal) at the last eval.\n\n"
            + table(["configuration", "train loss", "val loss", "peak mem (MB)", "time (s)", "grad norm",
                     "update RMS (Muon)", "update RMS (AdamW)", "SVD entropy", "n"], rows))


ANALYSES = {"momentum": ("Momentum schedules (seed 004)", momentum_analysis),
            "diagnostics": ("Training diagnostics (seed 003)", diagnostics_analysis)}


def write_study_artifacts(out: Path, study: Study, records: list[TrialRecord], fnd: Findings) -> list[tuple[str, str]]:
    """Write the seeds' study artifacts; return the extra report sections (heading, markdown)."""
    out = Path(out)
    for r in records:  # trials that finished before the hook existed, or in another process
        if r.run_dir and (out / r.run_dir / "metrics.json").is_file() and not (out / r.run_dir / "metrics_plot.png").is_file():
            trial_plot(out / r.run_dir)
    runs = load_runs(out, records, fnd)
    claims = evaluate(study, runs, fnd)
    comparison_plot(out, runs, fnd)
    comparison_summary(out, study, fnd, claims)
    sections = []
    if claims:
        sections.append(("Seed claims", claims_section(claims)))
    for name in study.analyses:
        heading, fn = ANALYSES[name]
        sections.append((heading, fn(out, study, runs, fnd)))
    files = ["`comparison_plot.png` (val loss curves, final val loss with 95% CIs)",
             "`comparison_summary.json` (per configuration: name, params, seeds, val loss mean/CI, perplexity, "
             "accuracy, time; the best; the claims)",
             "`trials/*/metrics.json` and `trials/*/metrics_plot.png` (loss vs time, loss vs steps, accuracy, LR)"]
    if any((out / r.run_dir / "model.safetensors").is_file() for r in records if r.run_dir):
        files.append("`trials/*/model.safetensors` (the trained model, `--save-model`)")
    files += [{"momentum": "`statistical_analysis.json`, `momentum_schedules.png`"}.get(a, "") for a in study.analyses]
    body = "\n".join(f"- {f}" for f in files if f)
    if (out / "comparison_plot.png").is_file():
        body += "\n\n![Comparison](comparison_plot.png)"
    sections.append(("Seed artifacts", body))
    return sections


__all__ = ["trial_plot", "comparison_plot", "comparison_summary", "momentum_analysis", "diagnostics_analysis",
           "write_study_artifacts", "ANALYSES", "SUMMARY_KEYS"]
