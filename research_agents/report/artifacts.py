"""The seeds' study artifacts: comparison_plot.png, comparison_summary.json, the claims' verdicts
and the analyses a study asks for (statistical_analysis.json and momentum_schedules.png for
"momentum"), with their report sections. analysis computes, this module writes and renders.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from research_agents import safefs
from research_agents.analysis.claims import ClaimResult, evaluate, load_runs
from research_agents.analysis.models import Findings
from research_agents.analysis.seed_analyses import ANALYSES, DiagnosticsRow, MomentumAnalysis
from research_agents.config import catalog
from research_agents.config.study import Study
from research_agents.fmt import json_safe
from research_agents.records import TrialRecord
from research_agents.report import plots, sections
from research_agents.report.claims import claim_json
from trainer.checkpoint import MODEL_FILE

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


def _config_entry(c) -> dict[str, Any]:
    s = c.summary
    return {"rank": c.rank, "name": c.label, "arm": c.arm, "params": c.params, "n": c.n, "seeds": c.seeds,
            "val_loss": {"mean": s.mean, "sd": s.sd, "ci_low": s.ci_low, "ci_high": s.ci_high, "min": s.min,
                         "max": s.max},
            "val_perplexity": c.val_perplexity, "val_accuracy": c.val_accuracy, "time_s": c.wall_time_s,
            "status": c.status, "n_diverged": c.n_diverged}


def comparison_summary(out: Path, study: Study, fnd: Findings, claims: list[ClaimResult]) -> Path:
    """OUT/comparison_summary.json: per configuration and the best one, plus the seed claims' verdicts."""
    configs = [_config_entry(c) for c in fnd.configs]
    summary = {"study": study.name, "scale": study.scale, "question": study.question,
               "metric": "final val loss (nats, lower is better), mean over seeds",
               "keys": SUMMARY_KEYS, "configs": configs, "best": configs[0] if configs else None,
               "claims": [claim_json(c) for c in claims]}
    path = Path(out) / "comparison_summary.json"
    safefs.write_text(path, json.dumps(json_safe(summary), indent=1, allow_nan=False), root=out)
    return path


def _momentum(out: Path, a: MomentumAnalysis) -> str:
    doc = a.model_dump(mode="json", exclude={"curves"})
    safefs.write_text(Path(out) / "statistical_analysis.json", json.dumps(json_safe(doc), indent=1, allow_nan=False),
                      root=out)
    plots.momentum_schedules_plot(out, a)
    return sections.momentum_section(a)


def _diagnostics(out: Path, rows: list[DiagnosticsRow]) -> str:
    return sections.diagnostics_section(rows)


_RENDER: dict[str, Callable[[Path, Any], str]] = {"momentum": _momentum, "diagnostics": _diagnostics}
assert set(_RENDER) == set(catalog.ANALYSES), "config.catalog.ANALYSES and report.artifacts disagree"


def write_study_artifacts(out: Path, study: Study, records: list[TrialRecord], fnd: Findings) -> list[tuple[str, str]]:
    """Write the seeds' study artifacts; return the extra report sections (heading, markdown)."""
    out = Path(out)
    for r in records:  # trials that finished before the hook existed, or in another process
        if r.run_dir and (out / r.run_dir / "metrics.json").is_file() and not (out / r.run_dir / "metrics_plot.png").is_file():
            plots.trial_plot(out / r.run_dir)
    runs = load_runs(out, records, fnd)
    claims = evaluate(study, runs, fnd)
    plots.comparison_plot(out, runs, fnd)
    comparison_summary(out, study, fnd, claims)
    found = []
    if claims:
        found.append(("Seed claims", sections.claims_section(claims)))
    for name in study.analyses:
        result = ANALYSES[name](runs, fnd)
        found.append((catalog.ANALYSES[name], _RENDER[name](out, result)))
    files = ["`comparison_plot.png` (val loss curves, final val loss with 95% CIs)",
             "`comparison_summary.json` (per configuration: name, params, seeds, val loss mean/CI, perplexity, "
             "accuracy, time; the best; the claims)",
             "`trials/*/metrics.json` and `trials/*/metrics_plot.png` (loss vs time, loss vs steps, accuracy, LR)"]
    if any((out / r.run_dir / MODEL_FILE).is_file() for r in records if r.run_dir):
        files.append(f"`trials/*/{MODEL_FILE}` (the trained model, `--save-model`)")
    files += [{"momentum": "`statistical_analysis.json`, `momentum_schedules.png`"}.get(a, "") for a in study.analyses]
    body = "\n".join(f"- {f}" for f in files if f)
    if (out / "comparison_plot.png").is_file():
        body += "\n\n![Comparison](comparison_plot.png)"
    found.append(("Seed artifacts", body))
    return found
