"""The seeds' claims, tested on this run: does it agree, with which statistics?

A study lists the claims it tests (`claims = [...]` in its TOML); each is a function of the run's
finished trials that returns a ClaimResult with a verdict:

* "agrees": the run's statistics support the claim (a Holm-adjusted test beyond the noise floor,
  or for "as good as" claims: no evidence of a difference AND the 95% CI of the difference within
  the study's `equivalence_margin`);
* "disagrees": they support the opposite;
* "inconclusive": neither, or the run lacks the experiments the claim needs (`missing` says which).

A result is data: the verdict, the comparisons and numbers it rests on, a code for what the run
lacks; research_agents.report.claims words it (the report's table, comparison_summary.json).

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
from research_agents.records import COUNTED, HistoryPoint, TrialRecord
from trainer.spec import load_spec

Verdict = Literal["agrees", "disagrees", "inconclusive"]
# what a run lacks to test a claim (report.claims words each)
Missing = Literal["muon and adamw runs", "lr sweeps", "ns_steps pairs", "momentum values", "momentum pairs",
                  "warmup pairs", "schedule baseline", "svd entropy runs"]
IGNORED_KEYS = ("seed", "save_checkpoint", "save_checkpoint_every", "device", "compile", "log_every")


class KnobPairs(BaseModel):
    """Runs paired on one knob (knob_pairs): the values met on each side, how many pairs and groups."""

    a_values: list[Any]
    b_values: list[Any]
    n_pairs: int
    n_matched_groups: int


class LRRanges(BaseModel):
    """muon_wider_lr_range: each optimizer's near-optimal LR range and the seed bootstrap of their ratio."""

    muon: analyzer.LRRange
    adamw: analyzer.LRRange
    margin: float  # nats within the best (study.lr_margin)
    width_ratio: float  # Muon's range width / Adam's
    interval: tuple[float, float]  # its seed-bootstrap 95% interval
    p_wider: float  # P(Muon's range wider)
    p_at_least_2x: float
    n_boot: int
    n_seeds: int  # the fewest seeds behind one LR


class ClaimResult(BaseModel):
    claim: str
    seed_source: str
    statement: str  # the seed's words
    verdict: Verdict
    missing: Missing | None = None  # not tested: what the run lacks
    comparison: analyzer.Comparison | None = None  # the paired comparison that decides it
    pairs: KnobPairs | None = None  # a knob's effect: the runs paired on it
    configs: dict[str, int] = Field(default_factory=dict)  # muon_beats_adam: each side is its best of these
    equivalence_margin: float | None = None  # "as good as": the margin the CI must sit inside
    within_margin: bool | None = None
    lr_ranges: LRRanges | None = None
    baseline: str | None = None  # each of `comparisons` is a configuration against it
    comparisons: dict[str, analyzer.Comparison] = Field(default_factory=dict)
    better: list[str] = Field(default_factory=list)  # configurations that support the claim
    worse: list[str] = Field(default_factory=list)  # and that contradict it
    noise_threshold: float | None = None  # the threshold a "better" verdict had to clear


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
               where: Callable[[dict], bool] = lambda s: True) -> tuple[dict[int, float], dict[int, float], KnobPairs]:
    """Paired losses for a knob: runs that differ only in `knob`, on the same seed.

    For every group of otherwise identical runs and every seed, the mean loss over the runs whose
    knob value satisfies `a` is paired with the mean over those satisfying `b`. Returns
    ({pair: a loss}, {pair: b loss}, KnobPairs: the values met on each side and the counts).
    """
    groups: dict[str, dict[int, list[tuple[Any, float]]]] = {}
    for run in runs:
        if run.loss is None or knob not in run.spec or not where(run.spec):
            continue
        key = _key(run.spec, lambda k: k == knob)
        groups.setdefault(key, {}).setdefault(run.record.seed, []).append((run.spec[knob], run.loss))
    side_a: dict[int, float] = {}
    side_b: dict[int, float] = {}
    values_a: set[Any] = set()
    values_b: set[Any] = set()
    matched: set[int] = set()
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
    return side_a, side_b, KnobPairs(a_values=sorted(values_a), b_values=sorted(values_b), n_pairs=len(side_a),
                                     n_matched_groups=len(matched))


def _noise(findings: Findings) -> float | None:
    return findings.noise.threshold


def _not_tested(claim: str, source: str, statement: str, missing: Missing) -> ClaimResult:
    return ClaimResult(claim=claim, seed_source=source, statement=statement, verdict="inconclusive", missing=missing)


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
        return _not_tested(name, source, statement, "muon and adamw runs")
    (la, sa), (lb, sb) = best["adamw"], best["muon"]
    c = analyzer.compare_paired(sa, sb, name_a=la, name_b=lb, min_effect=_noise(findings))
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=_verdict(c), comparison=c,
                       configs=counts)


def _verdict(c: analyzer.Comparison) -> Verdict:
    """The claim is "b has the lower loss than a"."""
    return "agrees" if c.verdict == "b better" else "disagrees" if c.verdict == "a better" else "inconclusive"


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
        return _not_tested(name, source, statement, "lr sweeps")
    margin = study.lr_margin
    ranges = {opt: _width(s, margin) for opt, s in sweeps.items()}
    ratio = (ranges["muon"].width_ratio or 0) / (ranges["adamw"].width_ratio or 1)
    # uncertainty: resample each LR's seeds with replacement and recompute both ranges
    rng = np.random.default_rng(0)
    wider: list[float] = []
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
    m = ranges["muon"]
    muon_edge = m.lo_at_edge or m.hi_at_edge
    verdict: Verdict
    if ratio >= 2.0 and p_far >= 0.95:
        verdict = "agrees"
    elif ratio <= 1.0 and p_wider <= 0.05 and not muon_edge:
        verdict = "disagrees"
    else:
        verdict = "inconclusive"
    n_seeds = min(len(s) for sw in sweeps.values() for s in sw.values())
    facts = LRRanges(muon=m, adamw=ranges["adamw"], margin=margin, width_ratio=ratio, interval=(lo, hi),
                     p_wider=p_wider, p_at_least_2x=p_far, n_boot=n_boot, n_seeds=n_seeds)
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, lr_ranges=facts)


def _effect(name: str, source: str, statement: str, findings: Findings, a: dict, b: dict, desc: KnobPairs,
            name_a: str, name_b: str) -> ClaimResult:
    """The claim is "b has the lower loss than a"."""
    c = analyzer.compare_paired(a, b, name_a=name_a, name_b=name_b, min_effect=_noise(findings))
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=_verdict(c), comparison=c,
                       pairs=desc)


def lower_muon_momentum_better(runs: list[Run], study: Study, findings: Findings) -> ClaimResult:
    name, source, statement = claim_text("lower_muon_momentum_better")
    values = sorted({r.spec["momentum"] for r in runs if r.loss is not None and _fixed_momentum(r.spec)})
    if len(values) < 2:
        return _not_tested(name, source, statement, "momentum values")
    mid = median(values)
    a, b, desc = knob_pairs(runs, "momentum", a=lambda v: v > mid, b=lambda v: v < mid, where=_fixed_momentum)
    if not a:
        return _not_tested(name, source, statement, "momentum pairs")
    return _effect(name, source, statement, findings, a, b, desc,
                   f"momentum {desc.a_values}", f"momentum {desc.b_values}")


def ns_3_4_as_good_as_5_plus(runs: list[Run], study: Study, findings: Findings) -> ClaimResult:
    name, source, statement = claim_text("ns_3_4_as_good_as_5_plus")
    a, b, desc = knob_pairs(runs, "ns_steps", a=lambda v: v >= 5, b=lambda v: v in (3, 4), where=_is_muon)
    if not a:
        return _not_tested(name, source, statement, "ns_steps pairs")
    margin = study.equivalence_margin
    c = analyzer.compare_paired(a, b, name_a=f"ns_steps {desc.a_values}", name_b=f"ns_steps {desc.b_values}",
                                min_effect=_noise(findings))
    within = c.diff_ci_low is not None and c.diff_ci_high is not None and -margin <= c.diff_ci_low \
        and c.diff_ci_high <= margin
    verdict: Verdict
    if c.verdict == "a better" or (c.diff_ci_low is not None and c.diff_ci_low > margin):
        verdict = "disagrees"  # fewer steps are worse
    elif c.verdict == "b better" or (c.verdict == "no evidence of a difference" and within):
        verdict = "agrees"  # fewer steps are better, or equivalent within the margin
    else:
        verdict = "inconclusive"
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, comparison=c,
                       pairs=desc, equivalence_margin=margin, within_margin=within)


def warmup_helps_muon(runs: list[Run], study: Study, findings: Findings) -> ClaimResult:
    name, source, statement = claim_text("warmup_helps_muon")
    a, b, desc = knob_pairs(runs, "warmup_ratio", a=lambda v: v == 0, b=lambda v: v > 0, where=_is_muon)
    if not a:
        return _not_tested(name, source, statement, "warmup pairs")
    return _effect(name, source, statement, findings, a, b, desc, "no warmup", f"warmup {desc.b_values}")


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
        return _not_tested(name, source, statement, "schedule baseline")
    paired = {lab: p for lab, (_, p) in comps.items()}
    better = [lab for lab, c in paired.items() if c.verdict == "b better"]
    worse = [lab for lab, c in paired.items() if c.verdict == "a better"]
    verdict: Verdict = "agrees" if better else ("disagrees" if worse else "inconclusive")
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, baseline=base,
                       comparisons=paired, better=better, worse=worse, noise_threshold=_noise(findings))


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
        return _not_tested(name, source, statement, "svd entropy runs")
    base = adam[0]
    comps = analyzer.apply_correction([analyzer.compare_paired(ent[base], ent[lab], name_a=base, name_b=lab)
                                       for lab in muon], "holm")
    # a higher entropy is the claim, so "a better" (b has the larger value) supports it
    higher = [c.name_b for c in comps if c.verdict == "a better"]
    lower = [c.name_b for c in comps if c.verdict == "b better"]
    verdict: Verdict = "agrees" if len(higher) == len(comps) else ("disagrees" if lower else "inconclusive")
    return ClaimResult(claim=name, seed_source=source, statement=statement, verdict=verdict, baseline=base,
                       comparisons={c.name_b: c for c in comps}, better=higher, worse=lower)


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


__all__ = ["ClaimResult", "KnobPairs", "LRRanges", "Missing", "Run", "CLAIMS", "load_runs", "evaluate", "knob_pairs",
           "schedule_comparisons", "final_svd_entropy"]
