"""The seeds' claims, tested on this run: does it agree, with which statistics?

A study lists the claims it tests (`claims = [...]` in its TOML); each is a function of the run's
finished trials that returns a ClaimResult with a verdict:

* "agrees": the run's statistics support the claim (a Holm-adjusted test beyond the noise floor,
  or for "as good as" claims: no evidence of a difference AND the 95% CI of the difference within
  the study's `equivalence_margin`);
* "disagrees": they support the opposite;
* "inconclusive": neither, or the run lacks the experiments the claim needs (the text says which).

Configurations are matched on their effective trial spec (metrics.json), not on their names: a
knob's effect is measured between runs that differ only in that knob, paired by seed (same data
order and initialisation). Every statistic comes from `analyzer`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean, median
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from research_agents.analysis import stats as analyzer
from research_agents.analysis.models import Findings
from research_agents.config import catalog
from research_agents.config.catalog import claim_text
from research_agents.config.study import Study
from research_agents.fmt import f4, fd, fp
from research_agents.records import COUNTED, HistoryPoint, TrialRecord
from research_agents.report.words import comparison_json, comparison_summary
from trainer.spec import load_spec

Verdict = Literal["agrees", "disagrees", "inconclusive"]
IGNORED_KEYS = ("seed", "save_checkpoint", "save_checkpoint_every", "device", "compile", "log_every")


class ClaimResult(BaseModel):
    claim: str
    seed_source: str
    statement: str  # the seed's words
    verdict: Verdict
    statistics: str  # how this run judged it, with its numbers
    details: dict[str, Any] = Field(default_factory=dict)


# ----------------------------------------------------------------------------- run data


@dataclass
class Run:
    record: TrialRecord
    label: str  # the configuration's name in the findings (a point's name in a point run)
    spec: dict[str, Any]  # effective trial spec by dotted key (TrialSpec.flat)
    history: list[HistoryPoint]  # the trainer's per-step log (metrics.json)
    diagnostics: list[dict[str, Any]]
    peak_memory_mb: float | None = None

    @property
    def loss(self) -> float | None:
        return self.record.val_loss if self.record.ok else None


def load_runs(out: Path, records: list[TrialRecord], findings: Findings) -> list[Run]:
    """Every finished trial with its label, effective spec and metrics."""
    labels = {c.config: c.label for c in findings.configs}
    runs = []
    for r in records:
        if r.status not in COUNTED:
            continue
        metrics = r.metrics(out)
        spec = metrics.spec if metrics is not None else None
        if spec is None:
            try:
                spec = load_spec(Path(out) / r.run_dir / "spec.json")
            except (OSError, ValueError):  # ValidationError is a ValueError
                spec = None
        runs.append(Run(r, labels.get(r.config, r.arm), spec.flat() if spec is not None else {},
                        history=list(metrics.history) if metrics else [],
                        diagnostics=list(metrics.diagnostics) if metrics else [],
                        peak_memory_mb=metrics.peak_memory_mb if metrics else None))
    return runs


def _key(spec: dict[str, Any], drop: Callable[[str], bool]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k not in IGNORED_KEYS and not drop(k)},
                      sort_keys=True, default=str)


def knob_pairs(runs: list[Run], knob: str, a: Callable[[Any], bool], b: Callable[[Any], bool],
               where: Callable[[dict], bool] = lambda s: True):
    """Paired losses for a knob: runs that differ only in `knob`, on the same seed.

    For every group of otherwise identical runs and every seed, the mean loss over the runs whose
    knob value satisfies `a` is paired with the mean over those satisfying `b`. Returns
    ({pair: a loss}, {pair: b loss}, description with the values met on each side).
    """
    groups: dict[str, dict[int, list[tuple[Any, float]]]] = {}
    for run in runs:
        if run.loss is None or knob not in run.spec or not where(run.spec):
            continue
        key = _key(run.spec, lambda k: k == knob)
        groups.setdefault(key, {}).setdefault(run.record.seed, []).append((run.spec[knob], run.loss))
    side_a: dict[int, float] = {}
    side_b: dict[int, float] = {}
    values_a, values_b, matched = set(), set(), set()
    for gi, by_seed in enumerate(groups.values()):
        for vals in by_seed.values():
            xa = [x for v, x in vals if a(v)]
            xb = [x for v, x in vals if b(v)]
            if xa and xb:
                pair = len(side_a)
                side_a[pair], side_b[pair] = fmean(xa), fmean(xb)
                values_a.update(v for v, _ in vals if a(v))
                values_b.update(v for v, _ in vals if b(v))
                matched.add(gi)
    return side_a, side_b, {"a_values": sorted(values_a), "b_values": sorted(values_b), "n_pairs": len(side_a),
                            "n_matched_groups": len(matched)}


def _noise(findings: Findings) -> float | None:
    return findings.noise.threshold


def _not_tested(claim: str, source: str, statement: str, need: str) -> ClaimResult:
    return ClaimResult(claim=claim, seed_source=source, statement=statement, verdict="inconclusive",
                       statistics=f"Not tested in this run: {need}.")


def _is_muon(spec: dict) -> bool:
    return spec.get("optimizer") == "muon"


def _fixed_momentum(spec: dict) -> bool:
    return _is_muon(spec) and spec.get("momentum_schedule.kind", "fixed") == "fixed"


# ----------------------------------------------------------------------------- claims


def muon_beats_adam(runs: list[Run], study: Study, findings: Findings) -> ClaimResult:
    name, source, statement = claim_text("muon_beats_adam")
    best: dict[str, tuple[str, dict[int, float]]] = {}
    counts: dict[str, int] = {}
    for opt in ("muon", "adamw"):
        by_label: dict[str, dict[int, float]] = {}
        for run in runs:
            if run.spec.get("optimizer") == opt and run.loss is not None:
                by_label.setdefault(run.label, {})[run.record.seed] = run.loss
        if by_label:
            counts[opt] = len(by_label)
            label = min(by_label, key=lambda k: fmean(by_label[k].values()))
            best[opt] = (label, by_label[label])
    if len(best) < 2:
        return _not_tested(name, source, statement, "it needs completed Muon and AdamW runs")
    (la, sa), (lb, sb) = best["adamw"], best["muon"]
    c = analyzer.compare_paired(sa, sb, name_a=la, name_b=lb, min_effect=_noise(findings))
    verdict = {"b better": "agrees", "a better": "disagrees"}.get(c.verdict, "inconclusive")
    rel = ""
    if c.diff is not None and c.mean_a:
        rel = f" (Muon's loss {abs(c.diff) / c.mean_a * 100:.2f}% {'lower' if c.diff < 0 else 'higher'} than Adam's)"
    text = f"Best Muon vs best Adam, paired by seed{rel}: {comparison_summary(c)}"
    if max(counts.values()) > 1:
        text += (f" Each side is its best of {counts['muon']} (Muon) and {counts['adamw']} (Adam) configurations on "
                 "these same seeds, so both are optimistic.")
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, statistics=text,
                       details={"comparison": comparison_json(c)})


def _lr_sweep(runs: list[Run], optimizer: str) -> dict[float, dict[int, float]]:
    """The largest group of runs that differ only in their LR: {lr: {seed: loss}}.

    Muon runs match when the AdamW leg's LR is the same fraction of the Muon LR (a Muon LR sweep
    scales both legs, as an Adam sweep scales every parameter's LR).
    """
    groups: dict[str, dict[float, dict[int, float]]] = {}
    for run in runs:
        if run.spec.get("optimizer") != optimizer or run.loss is None:
            continue
        spec = dict(run.spec)
        if optimizer == "muon":
            spec["adamw_lr"] = round(spec["adamw_lr"] / spec["lr"], 6)
        key = _key(spec, lambda k: k == "lr")
        groups.setdefault(key, {}).setdefault(float(run.spec["lr"]), {})[run.record.seed] = run.loss
    return max(groups.values(), key=len, default={})


def _width(sweep: dict[float, dict[int, float]], margin: float) -> analyzer.LRRange:
    return analyzer.lr_sensitivity([(lr, x) for lr, seeds in sweep.items() for x in seeds.values()], margin=margin)


def muon_wider_lr_range(runs: list[Run], study: Study, findings: Findings, n_boot: int = 1000) -> ClaimResult:
    name, source, statement = claim_text("muon_wider_lr_range")
    sweeps = {"muon": _lr_sweep(runs, "muon"), "adamw": _lr_sweep(runs, "adamw")}
    if any(len(s) < 3 for s in sweeps.values()):
        return _not_tested(name, source, statement, "it needs LR sweeps of at least 3 learning rates for both "
                           "optimizers (run -e lr_sweep)")
    margin = study.lr_margin
    ranges = {opt: _width(s, margin) for opt, s in sweeps.items()}
    ratio = (ranges["muon"].width_ratio or 0) / (ranges["adamw"].width_ratio or 1)
    # uncertainty: resample each LR's seeds with replacement and recompute both ranges
    rng = np.random.default_rng(0)
    wider = []
    for _ in range(n_boot):
        w = {}
        for opt, sweep in sweeps.items():
            boot = {lr: dict(enumerate(rng.choice(list(seeds.values()), size=len(seeds)))) for lr, seeds in sweep.items()}
            w[opt] = _width(boot, margin).width_ratio or 1.0
        wider.append(w["muon"] / w["adamw"])
    wider_arr = np.array(wider)
    p_wider = float(np.mean(wider_arr > 1.0))
    p_far = float(np.mean(wider_arr >= 2.0))
    lo, hi = (float(x) for x in np.percentile(wider_arr, [2.5, 97.5]))
    m, a = ranges["muon"], ranges["adamw"]
    muon_edge = m.lo_at_edge or m.hi_at_edge
    if ratio >= 2.0 and p_far >= 0.95:
        verdict = "agrees"
    elif ratio <= 1.0 and p_wider <= 0.05 and not muon_edge:
        verdict = "disagrees"
    else:
        verdict = "inconclusive"
    n_seeds = min(len(s) for sw in sweeps.values() for s in sw.values())
    text = (f"LRs within {margin:g} nats of each optimizer's best (mean over seeds): Muon [{m.lr_lo:.3g}, "
            f"{m.lr_hi:.3g}] = {m.width_ratio:.3g}x of a {max(m.lrs) / min(m.lrs):.3g}x sweep, Adam "
            f"[{a.lr_lo:.3g}, {a.lr_hi:.3g}] = {a.width_ratio:.3g}x of a {max(a.lrs) / min(a.lrs):.3g}x sweep; "
            f"Muon's range is {ratio:.3g}x as wide (seed-bootstrap 95% interval [{lo:.3g}, {hi:.3g}], P(Muon wider) "
            f"{p_wider:.2f}, P(at least 2x wider) {p_far:.2f}; {n_boot} resamples of >= {n_seeds} seeds per LR). "
            "'Agrees' needs >= 2x with P >= 0.95.")
    edges = [f"{label}'s range reaches the end of its sweep, so it may be wider than measured"
             for label, r in (("Muon", m), ("Adam", a)) if r.lo_at_edge or r.hi_at_edge]
    if edges:
        text += " " + "; ".join(edges) + "."
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, statistics=text,
                       details={"muon": m.model_dump(mode="json"), "adamw": a.model_dump(mode="json"),
                                "width_ratio_muon_over_adam": ratio, "bootstrap_interval": [lo, hi],
                                "p_muon_wider": p_wider, "p_at_least_2x": p_far})


def _effect(name: str, source: str, statement: str, findings: Findings, a: dict, b: dict, desc: dict,
            name_a: str, name_b: str) -> ClaimResult:
    """The claim is "b has the lower loss than a"."""
    c = analyzer.compare_paired(a, b, name_a=name_a, name_b=name_b, min_effect=_noise(findings))
    verdict = {"b better": "agrees", "a better": "disagrees"}.get(c.verdict, "inconclusive")
    text = (f"{desc['n_pairs']} pairs (runs identical but for this knob, same seed; {desc['n_matched_groups']} "
            f"matched configuration group(s)): {comparison_summary(c)}")
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, statistics=text,
                       details={**desc, "comparison": comparison_json(c)})


def lower_muon_momentum_better(runs: list[Run], study: Study, findings: Findings) -> ClaimResult:
    name, source, statement = claim_text("lower_muon_momentum_better")
    values = sorted({r.spec["momentum"] for r in runs if r.loss is not None and _fixed_momentum(r.spec)})
    if len(values) < 2:
        return _not_tested(name, source, statement, "it needs Muon runs at two or more fixed momentum values")
    mid = median(values)
    a, b, desc = knob_pairs(runs, "momentum", a=lambda v: v > mid, b=lambda v: v < mid, where=_fixed_momentum)
    if not a:
        return _not_tested(name, source, statement, "no two Muon runs differ only in their momentum")
    return _effect(name, source, statement, findings, a, b, desc,
                   f"momentum {desc['a_values']}", f"momentum {desc['b_values']}")


def ns_3_4_as_good_as_5_plus(runs: list[Run], study: Study, findings: Findings) -> ClaimResult:
    name, source, statement = claim_text("ns_3_4_as_good_as_5_plus")
    a, b, desc = knob_pairs(runs, "ns_steps", a=lambda v: v >= 5, b=lambda v: v in (3, 4), where=_is_muon)
    if not a:
        return _not_tested(name, source, statement, "it needs Muon runs that differ only in ns_steps, "
                           "with 3 or 4 steps on one side and 5 or more on the other")
    margin = study.equivalence_margin
    c = analyzer.compare_paired(a, b, name_a=f"ns_steps {desc['a_values']}", name_b=f"ns_steps {desc['b_values']}",
                                min_effect=_noise(findings))
    within = c.diff_ci_low is not None and c.diff_ci_high is not None and -margin <= c.diff_ci_low \
        and c.diff_ci_high <= margin
    if c.verdict == "a better" or (c.diff_ci_low is not None and c.diff_ci_low > margin):
        verdict = "disagrees"  # fewer steps are worse
    elif c.verdict == "b better" or (c.verdict == "no evidence of a difference" and within):
        verdict = "agrees"  # fewer steps are better, or equivalent within the margin
    else:
        verdict = "inconclusive"
    ci = ("no CI" if c.diff_ci_low is None else f"95% CI of the difference [{c.diff_ci_low:+.4f}, "
          f"{c.diff_ci_high:+.4f}] {'inside' if within else 'not inside'} the equivalence margin +-{margin:g} nats")
    text = (f"{desc['n_pairs']} pairs ({desc['n_matched_groups']} matched group(s)): {comparison_summary(c)} {ci}. "
            "'As good as' = no evidence of a difference and the CI inside the margin (or fewer steps better).")
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, statistics=text,
                       details={**desc, "equivalence_margin": margin, "comparison": comparison_json(c)})


def warmup_helps_muon(runs: list[Run], study: Study, findings: Findings) -> ClaimResult:
    name, source, statement = claim_text("warmup_helps_muon")
    a, b, desc = knob_pairs(runs, "warmup_ratio", a=lambda v: v == 0, b=lambda v: v > 0, where=_is_muon)
    if not a:
        return _not_tested(name, source, statement, "it needs Muon runs that differ only in warmup_ratio, "
                           "one of them 0 (run -e muon_no_warmup muon_optimal)")
    return _effect(name, source, statement, findings, a, b, desc, "no warmup", f"warmup {desc['b_values']}")


def schedule_comparisons(runs: list[Run], baseline: str = "fixed_095", warmups_only: bool = False,
                         min_effect: float | None = None):
    """Each momentum schedule (other fixed values too, unless warmups_only) against the fixed-0.95
    baseline with the same other knobs, Holm across the schedules compared; a "better" verdict
    also needs |diff| above `min_effect` (the noise threshold).

    Returns (baseline label or None, {label: (welch Comparison, paired Comparison)}), both with
    b = the schedule (negative diff: the schedule has the lower loss).
    """
    def is_base(spec):
        return _fixed_momentum(spec) and spec.get("momentum") == 0.95

    by_label: dict[str, dict[int, float]] = {}
    keys: dict[str, str] = {}
    for run in runs:
        if run.loss is None or not _is_muon(run.spec):
            continue
        by_label.setdefault(run.label, {})[run.record.seed] = run.loss
        keys[run.label] = _key(run.spec, lambda k: k.startswith("momentum_schedule.") or k == "momentum")
    bases = [lab for lab in by_label if any(is_base(r.spec) for r in runs if r.label == lab)]
    base = baseline if baseline in bases else (bases[0] if bases else None)
    if base is None:
        return None, {}
    others = [lab for lab in by_label if lab != base and keys[lab] == keys[base]
              and (not warmups_only or any(not _fixed_momentum(r.spec) for r in runs if r.label == lab))]
    welch = [analyzer.compare_unpaired(list(by_label[base].values()), list(by_label[lab].values()), name_a=base,
                                       name_b=lab) for lab in others]
    paired = [analyzer.compare_paired(by_label[base], by_label[lab], name_a=base, name_b=lab) for lab in others]
    welch = analyzer.apply_correction(welch, "holm", min_effect=min_effect)
    paired = analyzer.apply_correction(paired, "holm", min_effect=min_effect)
    return base, dict(zip(others, zip(welch, paired)))


def momentum_warmup_helps_muon(runs: list[Run], study: Study, findings: Findings) -> ClaimResult:
    name, source, statement = claim_text("momentum_warmup_helps_muon")
    base, comps = schedule_comparisons(runs, warmups_only=True, min_effect=_noise(findings))
    if base is None or not comps:
        return _not_tested(name, source, statement, "it needs the fixed 0.95 baseline and at least one warmup "
                           "schedule with the same other settings")
    paired = {lab: p for lab, (_, p) in comps.items()}
    better = [lab for lab, c in paired.items() if c.verdict == "b better"]
    worse = [lab for lab, c in paired.items() if c.verdict == "a better"]
    verdict: Verdict = "agrees" if better else ("disagrees" if worse else "inconclusive")
    lines = [f"{lab}: diff {fd(c.diff)} (95% CI {fd(c.diff_ci_low)}, {fd(c.diff_ci_high)}), paired t p_holm "
             f"{fp(c.p_adjusted)} -> {c.verdict}" for lab, c in paired.items()]
    text = (f"Each of {len(paired)} warmup schedules vs {base}, paired by seed, Holm across schedules, "
            f"beyond the noise threshold {f4(_noise(findings))} (negative diff: the schedule has the lower "
            f"loss). Better: {', '.join(better) or 'none'}; worse: "
            f"{', '.join(worse) or 'none'}. " + "; ".join(lines) + ".")
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, statistics=text,
                       details={"baseline": base, "better": better, "worse": worse,
                                "comparisons": {lab: comparison_json(c) for lab, c in paired.items()}})


def final_svd_entropy(run: Run) -> float | None:
    """Mean SVD entropy over the tracked matrices at the last diagnostics step."""
    diags = [d for d in run.diagnostics if d.get("svd_entropy")]
    if not diags:
        return None
    vals = [v for v in diags[-1]["svd_entropy"].values() if isinstance(v, (int, float)) and math.isfinite(v)]
    return fmean(vals) if vals else None


def muon_higher_svd_entropy(runs: list[Run], study: Study, findings: Findings) -> ClaimResult:
    name, source, statement = claim_text("muon_higher_svd_entropy")
    ent: dict[str, dict[int, float]] = {}
    opt: dict[str, str] = {}
    for run in runs:
        if run.record.ok and (e := final_svd_entropy(run)) is not None:
            ent.setdefault(run.label, {})[run.record.seed] = e
            opt[run.label] = run.spec.get("optimizer", "")
    adam = [lab for lab in ent if opt[lab] == "adamw"]
    muon = [lab for lab in ent if opt[lab] == "muon"]
    if not adam or not muon:
        return _not_tested(name, source, statement, "it needs Muon and AdamW runs with diagnostics.svd_entropy")
    base = adam[0]
    comps = analyzer.apply_correction([analyzer.compare_paired(ent[base], ent[lab], name_a=base, name_b=lab)
                                       for lab in muon], "holm")
    # a higher entropy is the claim, so "a better" (b has the larger value) supports it
    higher = [c.name_b for c in comps if c.verdict == "a better"]
    lower = [c.name_b for c in comps if c.verdict == "b better"]
    verdict: Verdict = "agrees" if len(higher) == len(comps) else ("disagrees" if lower else "inconclusive")
    lines = [f"{c.name_b}: {f4(c.mean_b)} vs {f4(c.mean_a)} (diff {fd(c.diff)}, p_holm {fp(c.p_adjusted)})"
             for c in comps]
    text = (f"Final mean SVD entropy (normalised, 1 = all directions equal) of each Muon configuration vs {base}, "
            f"paired by seed, Holm across {len(comps)}: higher in {len(higher)}, lower in {len(lower)}. "
            + "; ".join(lines) + ".")
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, statistics=text,
                       details={"baseline": base, "comparisons": [comparison_json(c) for c in comps]})


CLAIMS: dict[str, Callable[[list[Run], Study, Findings], ClaimResult]] = {
    "muon_beats_adam": muon_beats_adam,
    "muon_wider_lr_range": muon_wider_lr_range,
    "ns_3_4_as_good_as_5_plus": ns_3_4_as_good_as_5_plus,
    "lower_muon_momentum_better": lower_muon_momentum_better,
    "warmup_helps_muon": warmup_helps_muon,
    "momentum_warmup_helps_muon": momentum_warmup_helps_muon,
    "muon_higher_svd_entropy": muon_higher_svd_entropy,
}


assert set(CLAIMS) == set(catalog.CLAIMS), "config.catalog.CLAIMS and analysis.claims disagree"


def evaluate(study: Study, runs: list[Run], findings: Findings) -> list[ClaimResult]:
    return [CLAIMS[name](runs, study, findings) for name in study.claims]


__all__ = ["ClaimResult", "Run", "CLAIMS", "load_runs", "evaluate", "knob_pairs",
           "schedule_comparisons", "final_svd_entropy"]
