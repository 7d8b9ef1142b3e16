"""What a study found so far: one JSON-serialisable object the reports, plots and planners read.

`analyze` turns trial records into findings. Every statistic comes from `analyzer` (summaries,
noise floor, paired comparisons with multiplicity correction, LR sensitivity); this module only
groups records, picks which numbers to compare and words the recommendation. The recommendation
never claims more than the comparison's verdict: a difference is stated only when the analyzer's
verdict says one arm is better.
"""

from __future__ import annotations

import itertools
import json
import math
from statistics import fmean
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from research_agents import analyzer
from research_agents.analyzer import Comparison, LRRange, NoiseFloor, Summary
from research_agents.specs import Study
from research_agents.store import COUNTED, TrialRecord

if TYPE_CHECKING:  # loop imports executor/planners; keep this module light at import time
    from research_agents.loop import Plan

Confidence = Literal["high", "moderate", "low", "none"]
FAILED = ("failed", "timeout")
POINT_PREFIX = "point: "


# ------------------------------------------------------------------------------ models


class ConfigRow(BaseModel):
    """One configuration (arm + params, any seed), over its finished runs."""

    config: str
    rank: int  # 1 = lowest mean val loss; configs with no ok run come last
    arm: str
    params: dict[str, Any]
    label: str
    status: str  # "ok" when at least one run completed, else e.g. "diverged" or "diverged/failed"
    n: int  # ok runs (the ones the statistics use)
    n_runs: int  # finished runs that spent budget (completed, diverged, failed, timeout)
    seeds: list[int]  # seeds of the ok runs
    summary: Summary  # analyzer.summarize of the ok runs' val losses
    confirm_summary: Summary | None = None  # the ok runs that decide: confirm phase (fresh seeds), or
    # in a point run (no confirmation phase) the named experiment's own seeds
    val_accuracy: float | None = None  # means over ok runs
    val_perplexity: float | None = None
    wall_time_s: float | None = None
    n_diverged: int = 0
    n_failed: int = 0  # failed or timed out
    origins: list[str]
    phases: list[str]
    confirmed: bool  # has confirm-phase runs


class Spread(BaseModel):
    best_config: str | None = None
    best_label: str | None = None
    best_mean: float | None = None
    worst_config: str | None = None
    worst_label: str | None = None
    worst_mean: float | None = None
    gap: float | None = None
    threshold: float | None = None  # 2 x the larger per-config sd of best/worst (pooled fallback)
    pooled_threshold: float | None = None  # 2 x pooled sd
    gap_over_threshold: float | None = None
    separated: bool | None = None  # gap > threshold; None when the noise is not measured
    text: str = ""


class ComparisonResult(BaseModel):
    """One requested comparison between two arms' confirmed leaders, paired by seed."""

    arm_a: str
    arm_b: str
    config_a: str | None = None
    config_b: str | None = None
    label_a: str | None = None
    label_b: str | None = None
    params_a: dict[str, Any] | None = None
    params_b: dict[str, Any] | None = None
    comparison: Comparison | None = None  # None when an arm has no confirmed config
    note: str = ""


class Recommendation(BaseModel):
    text: str
    confidence: Confidence
    winner_arm: str | None = None  # set only when a verdict says that arm is better
    winner_config: str | None = None
    winner_params: dict[str, Any] | None = None
    best_arm: str | None = None  # lowest confirmed mean, whether or not the difference is real
    best_config: str | None = None
    best_params: dict[str, Any] | None = None
    basis: list[str] = Field(default_factory=list)  # the comparison summaries it rests on


class OriginStats(BaseModel):
    origin: str
    n_trials: int
    n_ok: int
    n_configs: int
    best_val_loss: float | None = None
    mean_val_loss: float | None = None
    n_diverged: int = 0
    n_failed: int = 0


class BudgetUse(BaseModel):
    used: int
    total: int | None = None
    left: int | None = None
    by_phase: dict[str, int]
    by_arm: dict[str, int]
    search_budget: int | None = None
    confirm_reserve: int | None = None
    confirm_seeds: list[int] = Field(default_factory=list)


class Findings(BaseModel):
    study: str
    question: str
    correction: str
    decided_on: Literal["confirm", "search"] = "confirm"  # "search": a point run, no confirmation phase
    n_records: int
    configs: list[ConfigRow]
    noise: NoiseFloor
    spread: Spread
    comparisons: list[ComparisonResult]
    recommendation: Recommendation
    lr_sensitivity: dict[str, LRRange]
    by_origin: list[OriginStats]
    budget: BudgetUse
    best_so_far: list[tuple[int, float | None]]  # (search run index from 1, best val loss so far)
    best_so_far_by_arm: dict[str, list[tuple[int, float | None]]]

    def config(self, config_id: str) -> ConfigRow | None:
        return next((c for c in self.configs if c.config == config_id), None)

    def leaders(self) -> dict[str, ConfigRow]:
        """Each arm's leader: its confirmed leader when there is one, else its best-ranked config."""
        out: dict[str, ConfigRow] = {}
        for c in self.comparisons:
            for arm, cfg in ((c.arm_a, c.config_a), (c.arm_b, c.config_b)):
                if cfg and arm not in out and (row := self.config(cfg)):
                    out[arm] = row
        for row in self.configs:
            if row.arm not in out and row.n:
                out[row.arm] = row
        return out


# ----------------------------------------------------------------------------- helpers


def fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (int, str)):
        return str(v)
    return json.dumps(v, sort_keys=True, default=str)


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k.split('.')[-1]}={fmt_value(v)}" for k, v in params.items()) or "(arm defaults)"


def _point_name(rationale: str) -> str | None:
    if not rationale.startswith(POINT_PREFIX):
        return None
    name = rationale[len(POINT_PREFIX):].strip()
    for sep in (";", "\n", " — ", " - ", ": "):
        name = name.split(sep)[0]
    return name.strip() or None


def _label(arm: str, params: dict[str, Any], runs: list[TrialRecord]) -> str:
    for r in runs:
        if r.origin == "grid" and (name := _point_name(r.rationale)):
            return name
    return f"{arm} {params_text(params)}"


def _mean(values: list[float | None]) -> float | None:
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    return fmean(xs) if xs else None


def _loss_or_nan(r: TrialRecord) -> float | None:
    """A confirm run's loss for pairing: completed -> loss, diverged -> NaN, anything else -> skip."""
    if r.ok:
        return float(r.val_loss)
    if r.status == "diverged":
        return float("nan")
    return None


def _counted(records: list[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.status in COUNTED]


# ------------------------------------------------------------------------------ analyze


def _config_rows(records: list[TrialRecord], decide: str = "confirm") -> list[ConfigRow]:
    groups: dict[str, list[TrialRecord]] = {}
    for r in _counted(records):
        groups.setdefault(r.config, []).append(r)
    rows = []
    for cid, runs in groups.items():
        ok = [r for r in runs if r.ok]
        conf_ok = [r for r in ok if r.phase == decide]
        n_div = sum(r.status == "diverged" for r in runs)
        n_fail = sum(r.status in FAILED for r in runs)
        if ok:
            status = "ok"
        else:
            status = "/".join(s for s in ("diverged", "failed", "timeout") if any(r.status == s for r in runs))
        rows.append(ConfigRow(
            config=cid, rank=0, arm=runs[0].arm, params=runs[0].params,
            label=_label(runs[0].arm, runs[0].params, runs), status=status,
            n=len(ok), n_runs=len(runs), seeds=[r.seed for r in ok],
            summary=analyzer.summarize([r.val_loss for r in ok]),
            confirm_summary=analyzer.summarize([r.val_loss for r in conf_ok]) if conf_ok else None,
            val_accuracy=_mean([r.val_accuracy for r in ok]),
            val_perplexity=_mean([r.val_perplexity for r in ok]),
            wall_time_s=_mean([r.wall_time_s for r in ok]),
            n_diverged=n_div, n_failed=n_fail,
            origins=sorted({r.origin for r in runs}), phases=sorted({r.phase for r in runs}),
            confirmed=any(r.phase == "confirm" for r in runs),
        ))
    rows.sort(key=lambda c: (c.summary.mean is None, c.summary.mean if c.summary.mean is not None else 0.0,
                             -c.n, c.label))
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, 1):
        row.rank = i
        seen[row.label] = seen.get(row.label, 0) + 1
    for row in rows:  # labels must identify a config
        if seen[row.label] > 1:
            row.label = f"{row.label} [{row.config}]"
    return rows


def _spread(rows: list[ConfigRow], noise: NoiseFloor) -> Spread:
    scored = [c for c in rows if c.summary.mean is not None]
    if not scored:
        return Spread(text="No configuration has a completed run yet.")
    best, worst = scored[0], scored[-1]
    gap = worst.summary.mean - best.summary.mean
    # a config without repeats has an unknown sd: never let it look quieter than the pooled noise
    known = [t for t in (noise.threshold_for(best.config, worst.config), noise.threshold) if t is not None]
    thr = max(known) if known else None
    s = Spread(best_config=best.config, best_label=best.label, best_mean=best.summary.mean,
               worst_config=worst.config, worst_label=worst.label, worst_mean=worst.summary.mean,
               gap=gap, threshold=thr, pooled_threshold=noise.threshold)
    if len(scored) < 2:
        s.text = "Only one configuration has completed runs: no spread to compare with the noise."
    elif thr is None:
        s.text = (f"Best and worst configurations differ by {gap:.4f} nats, but the noise floor is not "
                  "measured (no configuration has repeats), so it is unknown whether that exceeds the noise.")
    else:
        s.gap_over_threshold = gap / thr if thr > 0 else None
        s.separated = gap > thr
        ratio = f" ({s.gap_over_threshold:.1f}x the threshold)" if s.gap_over_threshold is not None else ""
        s.text = (f"Best and worst configurations differ by {gap:.4f} nats{ratio}; the noise threshold "
                  f"(2 x the larger of these configs' seed sd and the pooled sd) is {thr:.4f}. The spread is "
                  + ("LARGER than the measured noise floor: the search space matters at this budget."
                     if s.separated else
                     "NOT larger than the measured noise floor: these configurations cannot be told apart."))
    return s


def _confirmed_leader(rows: list[ConfigRow], arm: str) -> ConfigRow | None:
    conf = [c for c in rows if c.arm == arm and c.confirm_summary is not None
            and c.confirm_summary.mean is not None]
    if not conf:
        return None
    return min(conf, key=lambda c: c.confirm_summary.mean)


def _comparisons(study: Study, records: list[TrialRecord], rows: list[ConfigRow], noise: NoiseFloor,
                 correction: str, decide: str = "confirm") -> list[ComparisonResult]:
    pairs = list(study.comparisons) or list(itertools.combinations(list(study.arms), 2))
    results: list[ComparisonResult] = []
    built: list[tuple[int, Comparison]] = []
    for a, b in pairs:
        la, lb = _confirmed_leader(rows, a), _confirmed_leader(rows, b)
        res = ComparisonResult(arm_a=a, arm_b=b)
        for side, leader in (("a", la), ("b", lb)):
            if leader:
                setattr(res, f"config_{side}", leader.config)
                setattr(res, f"label_{side}", leader.label)
                setattr(res, f"params_{side}", leader.params)
        missing = [arm for arm, leader in ((a, la), (b, lb)) if leader is None]
        if missing:
            res.note = f"not compared: no confirmed configuration for {' and '.join(missing)} yet"
            results.append(res)
            continue
        by_seed = []
        for leader in (la, lb):
            seeds: dict[int, float] = {}
            for r in records:
                if r.phase == decide and r.config == leader.config and (x := _loss_or_nan(r)) is not None:
                    seeds[r.seed] = x
            by_seed.append(seeds)
        # seed noise is not uniform: each comparison gets 2 x the larger sd of its own two configs
        min_effect = noise.threshold_for(la.config, lb.config)
        comp = analyzer.compare_paired(by_seed[0], by_seed[1], name_a=a, name_b=b, min_effect=min_effect)
        built.append((len(results), comp))
        results.append(res)
    if built:
        corrected = analyzer.apply_correction([c for _, c in built], method=correction)
        for (i, _), c in zip(built, corrected):
            results[i].comparison = c
    return results


def _strength(c: Comparison, winner_is_b: bool) -> Confidence:
    poi = c.prob_improvement
    strong_poi = poi is not None and (poi >= 0.9 if winner_is_b else poi <= 0.1)
    if c.p_adjusted is not None and c.p_adjusted < 0.01 and strong_poi:
        return "high"
    return "moderate"


def _stats_text(c: Comparison) -> str:
    ci = (f"95% CI [{c.diff_ci_low:+.4f}, {c.diff_ci_high:+.4f}]"
          if c.diff_ci_low is not None and c.diff_ci_high is not None else "no CI")
    p = "n/a" if c.p_adjusted is None else f"{c.p_adjusted:.3g}"
    poi = "n/a" if c.prob_improvement is None else f"{c.prob_improvement:.2f}"
    diff = "n/a" if c.diff is None else f"{c.diff:+.4f}"
    return (f"{c.n_pairs} paired seeds, diff ({c.name_b} - {c.name_a}) {diff} nats, {ci}, "
            f"paired t p_adj {p}, P({c.name_b} < {c.name_a}) {poi}")


def _seeds_advice(c: Comparison | None) -> str:
    need = analyzer.wilcoxon_pairs_needed()
    text = (f"What would tell them apart: more confirmation seeds, paired across arms (re-run with a larger "
            f"budget or more `seeds.confirm`); a rank test needs at least {need} pairs to reach p < 0.05")
    if c is not None and c.hedges_g is not None and c.hedges_g != 0:
        # rough paired-t sample size for 80% power at alpha 0.05: n ~ ((1.96 + 0.84) / |d_z|)^2
        n = math.ceil((2.8 / abs(c.hedges_g)) ** 2)
        if n > 200:
            text += (f"; the observed effect (g = {c.hedges_g:.2f}) is so small that hundreds of pairs would be "
                     "needed to detect it, if it is real at all")
        elif n > (c.n_pairs or 0):
            text += (f", and if the observed effect (g = {c.hedges_g:.2f}) is real about {n} pairs would "
                     "detect it (rough estimate)")
    if c is not None and c.min_effect is not None and c.diff is not None and abs(c.diff) <= c.min_effect:
        text += (f". The observed mean difference {abs(c.diff):.4f} is within the noise threshold "
                 f"{c.min_effect:.4f}, so in practice the two may be equivalent")
    return text + "."


def _recommend(study: Study, rows: list[ConfigRow], comps: list[ComparisonResult]) -> Recommendation:
    rec = _recommend_core(study, rows, comps)
    notes = [f"{c.arm}'s confirmed leader ({params_text(c.params)}) had {c.n_diverged} diverged and "
             f"{c.n_failed} failed run(s), which are not in its mean"
             for arm in study.arms if (c := _confirmed_leader(rows, arm)) and (c.n_diverged or c.n_failed)]
    if notes:
        rec.text += " Note: " + "; ".join(notes) + "."
    return rec


def _recommend_core(study: Study, rows: list[ConfigRow], comps: list[ComparisonResult]) -> Recommendation:
    confirmed = [c for c in rows if c.confirm_summary is not None and c.confirm_summary.mean is not None]
    if not confirmed:
        any_confirm = any(c.confirmed for c in rows)
        why = ("confirmation runs were started but none completed" if any_confirm else
               "no configuration has been re-run on the confirmation seeds yet (the study stopped before "
               "the confirmation phase)")
        best = next((c for c in rows if c.n), None)
        text = f"No recommendation: {why}. Search results alone are selected on the same seeds that ranked them."
        if best:
            text += (f" The best search result so far is {best.arm} ({params_text(best.params)}), "
                     f"mean val loss {best.summary.mean:.4f} over {best.n} run(s); treat it as unconfirmed.")
        return Recommendation(text=text, confidence="none")
    leaders = {arm: leader for arm in study.arms if (leader := _confirmed_leader(rows, arm))}
    best_arm = min(leaders, key=lambda a: leaders[a].confirm_summary.mean)
    best = leaders[best_arm]
    rec = Recommendation(text="", confidence="low", best_arm=best_arm, best_config=best.config,
                         best_params=best.params)
    done = [c for c in comps if c.comparison is not None]
    rec.basis = [c.comparison.summary for c in done]
    if not done:
        missing = [a for a in study.arms if a not in leaders]
        if len(study.arms) == 1:
            why = "the study has a single arm, so there is no comparison to test"
        else:
            why = f"{', '.join(missing)} has no confirmed configuration, so no comparison could be tested"
        rec.text = (f"{best_arm} ({params_text(best.params)}) has a confirmed mean val loss of "
                    f"{best.confirm_summary.mean:.4f} over {best.confirm_summary.n} fresh seeds, but {why}. "
                    "The budget cannot say whether one optimizer is ahead. "
                    + _seeds_advice(None))
        return rec

    # the candidate: the arm whose confirmed leader has the lowest mean among compared arms
    compared = {x for c in done for x in (c.arm_a, c.arm_b)}
    cand = min(compared, key=lambda a: leaders[a].confirm_summary.mean)
    mine = [c for c in done if cand in (c.arm_a, c.arm_b)]
    wins, losses, ties = [], [], []
    for c in mine:
        comp = c.comparison
        cand_is_b = c.arm_b == cand
        if comp.verdict in ("a better", "b better"):
            (wins if (comp.verdict == "b better") == cand_is_b else losses).append(c)
        else:
            ties.append(c)
    row = leaders[cand]
    params = params_text(row.params)
    if losses:
        other = losses[0]
        rec.text = (f"The comparisons disagree with the ranking of means: {cand} has the lowest confirmed mean, "
                    f"yet the paired comparison {other.arm_b} vs {other.arm_a} says "
                    f"'{other.comparison.verdict}'. No arm can be recommended on this evidence. "
                    + _seeds_advice(other.comparison))
        rec.confidence = "low"
        return rec
    if wins and not ties:
        levels = [_strength(c.comparison, c.arm_b == cand) for c in wins]
        rec.confidence = "high" if all(lv == "high" for lv in levels) else "moderate"
        rec.winner_arm, rec.winner_config, rec.winner_params = cand, row.config, row.params
        others = "; ".join(f"vs {c.arm_a if c.arm_b == cand else c.arm_b} "
                           f"({params_text((c.params_a if c.arm_b == cand else c.params_b) or {})}): "
                           f"{_stats_text(c.comparison)}" for c in wins)
        rec.text = (f"Use {cand} with {params}. Its confirmed mean val loss is {row.confirm_summary.mean:.4f} "
                    f"over {row.confirm_summary.n} fresh seeds, and the paired comparison verdict says it is "
                    f"better ({others}).")
        if rec.confidence == "moderate":
            rec.text += (" The evidence is moderate (adjusted p >= 0.01 or the improvement is not consistent "
                         "on at least 90% of seeds); more confirmation seeds would firm it up.")
        return rec
    if wins and ties:
        won = ", ".join(c.arm_a if c.arm_b == cand else c.arm_b for c in wins)
        tied = ", ".join(c.arm_a if c.arm_b == cand else c.arm_b for c in ties)
        rec.text = (f"{cand} ({params}) has the lowest confirmed mean val loss ({row.confirm_summary.mean:.4f}). "
                    f"Its comparison verdicts favour it over {won}, but there is no evidence of a difference "
                    f"from {tied}: the budget cannot tell {cand} and {tied} apart, so no single arm is "
                    f"recommended over all others. " + _seeds_advice(ties[0].comparison))
        rec.confidence = "low"
        return rec
    # no verdict supports a difference
    c = ties[0]
    comp = c.comparison
    named = "; ".join(f"{arm}: {params_text(leaders[arm].params)}, confirmed mean "
                      f"{leaders[arm].confirm_summary.mean:.4f} over {leaders[arm].confirm_summary.n} seeds"
                      for arm in sorted(compared, key=lambda a: leaders[a].confirm_summary.mean))
    if comp.verdict == "not testable (n too small)":
        head = (f"Not testable: fewer than 2 paired confirmation seeds ({comp.n_pairs}) for "
                f"{c.arm_b} vs {c.arm_a}.")
    else:
        direction = ""
        if comp.prob_improvement is not None and comp.n_pairs:
            lower_b = round(comp.prob_improvement * comp.n_pairs)
            direction = (f" {c.arm_b} had the lower loss on {lower_b} of {comp.n_pairs} paired seeds; "
                         "that is not evidence.")
        head = (f"No evidence of a difference between the arms ({_stats_text(comp)}).{direction}")
    rec.text = (f"{head} The budget cannot tell them apart: pick either on other grounds (speed, "
                f"simplicity). Confirmed leaders: {named}. " + _seeds_advice(comp))
    rec.confidence = "low"
    return rec


def _point_run_note(rec: Recommendation, rows: list[ConfigRow]) -> Recommendation:
    """Reword a recommendation for a point run: no fresh seeds, and leaders chosen on the same seeds."""
    per_arm = {a: sum(c.arm == a and c.n > 0 for c in rows) for a in {c.arm for c in rows}}
    chosen = [f"{a} among {n}" for a, n in per_arm.items() if n > 1]
    note = ("Point run (named experiments, no confirmation phase): 'confirmed' means measured on the "
            "experiments' own seeds")
    if chosen:
        note += (f", and each arm's leader is its best-ranked experiment ({', '.join(chosen)}) chosen on those "
                 "same seeds, so its lead is optimistic")
        if rec.confidence == "high":
            rec.confidence = "moderate"
    text = (rec.text.replace("fresh seeds", "seeds").replace("more confirmation seeds", "more seeds")
            .replace("more `seeds.confirm`", "more `seeds.search`")
            .replace("No recommendation: no configuration has been re-run on the confirmation seeds yet",
                     "No recommendation: nothing completed"))
    return rec.model_copy(update={"text": f"{text} {note}."})


def _lr_sensitivity(study: Study, records: list[TrialRecord]) -> dict[str, LRRange]:
    out = {}
    for arm in study.arms:
        pts = [(float(r.params["lr"]), float(r.val_loss)) for r in records
               if r.arm == arm and r.phase == "search" and r.ok
               and isinstance(r.params.get("lr"), (int, float)) and r.params["lr"] > 0]
        if len({lr for lr, _ in pts}) >= 3:
            out[arm] = analyzer.lr_sensitivity(pts, margin=study.lr_margin)
    return out


def _by_origin(records: list[TrialRecord]) -> list[OriginStats]:
    groups: dict[str, list[TrialRecord]] = {}
    for r in _counted(records):
        groups.setdefault(r.origin, []).append(r)
    order = ["default", "grid", "random", "tpe", "llm", "manual", "confirm"]
    out = []
    for origin in sorted(groups, key=lambda o: (order.index(o) if o in order else len(order), o)):
        rs = groups[origin]
        losses = [r.val_loss for r in rs if r.ok]
        out.append(OriginStats(origin=origin, n_trials=len(rs), n_ok=len(losses),
                               n_configs=len({r.config for r in rs}),
                               best_val_loss=min(losses) if losses else None, mean_val_loss=_mean(losses),
                               n_diverged=sum(r.status == "diverged" for r in rs),
                               n_failed=sum(r.status in FAILED for r in rs)))
    return out


def _budget(study: Study, records: list[TrialRecord], plan: Plan | None) -> BudgetUse:
    used = _counted(records)
    b = BudgetUse(used=len(used),
                  by_phase={p: sum(r.phase == p for r in used) for p in ("search", "confirm")},
                  by_arm={a: sum(r.arm == a for r in used) for a in study.arms})
    if plan is not None:
        b.total = plan.budget
        b.left = max(0, plan.budget - len(used))
        b.search_budget = plan.search_budget
        b.confirm_reserve = plan.budget - plan.search_budget
        b.confirm_seeds = list(plan.confirm_seeds)
    return b


def _best_so_far(records: list[TrialRecord], arm: str | None = None) -> list[tuple[int, float | None]]:
    out, best = [], None
    search = [r for r in sorted(_counted(records), key=lambda r: r.order)
              if r.phase == "search" and (arm is None or r.arm == arm)]
    for i, r in enumerate(search, 1):
        if r.ok and (best is None or r.val_loss < best):
            best = float(r.val_loss)
        out.append((i, best))
    return out


def analyze(study: Study, records: list[TrialRecord], plan: Plan | None = None,
            correction: str = "holm") -> Findings:
    """Everything the reports need, from the trial records (statistics from `analyzer`)."""
    records = sorted(records, key=lambda r: r.order)
    # a point run (named experiments, no confirmation phase) decides on the experiments' own seeds
    decide = "search" if plan is not None and not plan.confirm_seeds else "confirm"
    rows = _config_rows(records, decide)
    noise = analyzer.noise_floor({c.config: [r.val_loss for r in records if r.config == c.config and r.ok]
                                  for c in rows if c.n >= 2})
    comps = _comparisons(study, records, rows, noise, correction, decide)
    rec = _recommend(study, rows, comps)
    if decide == "search":
        rec = _point_run_note(rec, rows)
    return Findings(
        study=study.name, question=study.question, correction=correction, decided_on=decide,
        n_records=len(records), configs=rows, noise=noise, spread=_spread(rows, noise), comparisons=comps,
        recommendation=rec,
        lr_sensitivity=_lr_sensitivity(study, records), by_origin=_by_origin(records),
        budget=_budget(study, records, plan), best_so_far=_best_so_far(records),
        best_so_far_by_arm={a: _best_so_far(records, a) for a in study.arms},
    )
