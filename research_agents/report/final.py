"""The final report: OUT/report.md, OUT/results.csv (one row per trial), OUT/summary.json (the
findings plus the set-up) and the figures under OUT/plots/. Every number comes from
research_agents.analysis; nothing here computes statistics.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research_agents import safefs
from research_agents.analysis.fairness import fairness_audit
from research_agents.analysis.findings import analyze
from research_agents.analysis.models import Findings
from research_agents.config.plan import Plan
from research_agents.config.study import Study
from research_agents.fmt import json_safe
from research_agents.records import HistoryPoint, TrialMetrics, TrialRecord
from research_agents.report import plots, sections
from research_agents.report.decomposition import decomposition_json
from research_agents.report.recommendation import recommendation_text
from research_agents.report.registry import FINAL_LAYOUT, ReportContext, render
from research_agents.report.words import comparison_json, comparison_summary, knob_text

CSV_COLUMNS = ["id", "order", "round", "phase", "arm", "origin", "seed", "status", "val_loss",
               "val_accuracy", "val_perplexity", "train_loss", "wall_time_s", "tokens_seen", "config",
               "params", "reason"]


def setup_from_metrics(metrics: TrialMetrics, study: Study | None = None, preset: str | None = None,
                       **extra: Any) -> dict[str, Any]:
    """The set-up facts of a study, read from one trial's metrics.json (what the report renders)."""
    spec = metrics.spec.model_dump(mode="json") if metrics.spec is not None else {}
    env = metrics.env or {}
    model = spec.get("model") or {}
    out: dict[str, Any] = {}
    if study is not None or preset:
        out["preset"] = preset or (study.preset if study is not None else None)
    out["model"] = model
    out["n_params"] = env.get("n_params")
    out["data"] = {**(spec.get("data") or {}), **({"fingerprint": env["data"]} if env.get("data") else {})}
    for key in ("steps", "batch_size", "grad_accum", "seq_len", "eval_every", "eval_batches"):
        if key in spec:
            out[key] = spec[key]
    if all(k in spec for k in ("batch_size", "grad_accum", "seq_len", "steps")):
        out["tokens_per_trial"] = spec["batch_size"] * spec["grad_accum"] * spec["seq_len"] * spec["steps"]
    out["device"] = metrics.device
    out["precision"] = metrics.precision
    for key in ("python", "torch", "numpy", "platform", "cuda", "threads"):
        out[key] = env.get(key)
    out.update(extra)
    return out


def leader_histories(out: Path, records: list[TrialRecord], fnd: Findings) -> dict[int, list[HistoryPoint]]:
    """The metrics history of each arm's leader's runs, by trial id (what the loss-curve figure draws)."""
    configs = {row.config for row in fnd.leaders().values()}
    histories = {}
    for r in records:
        if r.config in configs and (metrics := r.metrics(out)) is not None:
            histories[r.id] = metrics.history
    return histories


def _write_csv(path: Path, records: list[TrialRecord]) -> None:
    with io.StringIO(newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for r in sorted(records, key=lambda r: r.order):
            w.writerow([r.id, r.order, r.round, r.phase, r.arm, r.origin, r.seed, r.status,
                        *("" if v is None else repr(float(v)) for v in
                          (r.val_loss, r.val_accuracy, r.val_perplexity, r.train_loss, r.wall_time_s)),
                        "" if r.tokens_seen is None else r.tokens_seen, r.config,
                        json.dumps(r.params, sort_keys=True, default=str), r.reason or ""])
        safefs.write_text(path, fh.getvalue(), root=path.parent)


_REC_KEYS = ("confidence", "paired_confidence", "capped", "lower_bound", "winner_arm", "winner_config",
             "winner_params", "best_arm", "best_config", "best_params", "basis")
_KNOB_DATA = ("below_state", "above_state", "low", "high")


def summary_json(fnd: Findings) -> dict[str, Any]:
    """The findings as summary.json has always shown them: the numbers, with the words beside them
    (the recommendation's, the spread's, each comparison's note and each knob's line) in place of
    the data they are made from."""
    out = fnd.model_dump(mode="json")
    out.pop("decompositions")
    if fnd.decompositions:  # (studies without a compared pair keep the summary they always had)
        out["decomposition"] = decomposition_json(fnd)
    rec = out["recommendation"]
    out["recommendation"] = {"text": recommendation_text(fnd.recommendation), **{k: rec[k] for k in _REC_KEYS},
                             "basis": [comparison_summary(c) for c in fnd.recommendation.basis],
                             "untuned": [{"arm": u.arm, "role": u.role, "knobs": {k.knob: k.status for k in u.knobs}}
                                         for u in fnd.recommendation.untuned]}
    if fnd.recommendation.how_much:
        out["recommendation"]["how_much"] = rec["how_much"]
    out["spread"]["text"] = sections.spread_text(fnd.spread)
    for res, dumped in zip(fnd.comparisons, out["comparisons"]):
        dumped.pop("missing")
        if res.comparison is not None:
            dumped["comparison"] = comparison_json(res.comparison)
        dumped["note"] = sections.comparison_note(res)
    for arm, ev in fnd.tuning.items():
        for k, dumped in zip(ev.knobs, out["tuning"][arm]["knobs"]):
            for key in _KNOB_DATA:
                dumped.pop(key)
            dumped["text"] = knob_text(k)
    return out


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
    made = plots.make_all(out, records, fnd, leader_histories(out, records, fnd))
    audit = fairness_audit(study, fnd, preset=setup.get("preset"), overrides=setup.get("overrides"))
    ctx = ReportContext(study=study, fnd=fnd, records=records, audit=audit, out=out, setup=setup, plots=made,
                        commands=commands, extra=extra_sections)
    lines = [f"# {study.name}", "", *render(FINAL_LAYOUT, ctx), ""]
    safefs.write_text(out / "report.md", "\n".join(lines), root=out)

    _write_csv(out / "results.csv", records)
    summary = {**summary_json(fnd), "fairness": audit.model_dump(mode="json"), "setup": setup,
               "plots": {t: p.relative_to(out).as_posix() for t, p in made.items()}}
    safefs.write_text(out / "summary.json", json.dumps(json_safe(summary), indent=1, allow_nan=False), root=out)
    return fnd
