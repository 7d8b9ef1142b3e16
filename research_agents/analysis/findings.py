"""What a study found so far: `analyze` turns trial records into `Findings` (analysis.models).

Every statistic comes from `analysis.stats` (summaries, noise floor, paired comparisons with
multiplicity correction, LR sensitivity); this module only groups records and picks which
numbers to compare. The recommendation is decided by `analysis.recommendation`; report/ words all of it.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from statistics import fmean
from typing import Any

from research_agents.analysis import stats as analyzer
from research_agents.analysis.fairness import leader_differences
from research_agents.analysis.models import (
    BudgetUse,
    ComparisonResult,
    ConfigRow,
    EarlyStop,
    Findings,
    OriginStats,
    PairDecomposition,
    Spread,
    confirmed_leader,
)
from research_agents.analysis.recommendation import recommend
from research_agents.analysis.stats import Comparison, LRRange, NoiseFloor
from research_agents.analysis.tuning import tuning_evidence
from research_agents.config.plan import Plan
from research_agents.config.study import Study
from research_agents.fmt import params_text
from research_agents.records import FAILED, ORIGINS, TrialRecord, by_config, counted, spent, without_swaps

# ----------------------------------------------------------------------------- helpers


def _label(arm: str, params: dict[str, Any], runs: list[TrialRecord]) -> str:
    for r in runs:
        if r.origin == "grid" and (name := r.point):
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


# ------------------------------------------------------------------------------ analyze


def _config_row(cid: str, runs: list[TrialRecord], decide: str) -> ConfigRow:
    ok = [r for r in runs if r.ok]
    conf_ok = [r for r in ok if r.phase == decide]
    n_div = sum(r.status == "diverged" for r in runs)
    n_fail = sum(r.status in FAILED for r in runs)
    if ok:
        status = "ok"
    else:
        status = "/".join(s for s in ("diverged", "stopped", "failed", "timeout") if any(r.status == s for r in runs))
    return ConfigRow(
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
    )


# Each config's row as last computed, with the very record objects it came from: a config whose
# runs are the same objects as then (the store hands out the same records until one changes) is
# not summarised again, and its row object is reused while its rank and label stay the same (few
# new objects per analysis: fewer and cheaper garbage collections in a long study).
# (decide, config) -> [ids of its runs, its runs, row as computed (rank 0), row as last ranked]
_ROWS: dict[tuple[str, str], list] = {}


def _config_rows(records: list[TrialRecord], decide: str = "confirm") -> list[ConfigRow]:
    entries = []
    for cid, runs in by_config(counted(records)).items():
        ids = tuple(map(id, runs))
        entry = _ROWS.get((decide, cid))
        if entry is None or entry[0] != ids:
            entry = _ROWS[(decide, cid)] = [ids, runs, _config_row(cid, runs, decide), None]
        entries.append(entry)
    entries.sort(key=lambda e: (e[2].summary.mean is None, e[2].summary.mean if e[2].summary.mean is not None
                                else 0.0, -e[2].n, e[2].label))
    seen = Counter(e[2].label for e in entries)
    rows = []
    for rank, entry in enumerate(entries, 1):
        base, last = entry[2], entry[3]
        label = base.label if seen[base.label] == 1 else f"{base.label} [{base.config}]"  # labels identify a config
        if last is None or last.rank != rank or last.label != label:
            last = entry[3] = base.model_copy(update={"rank": rank, "label": label})
        rows.append(last)
    if len(_ROWS) > 2 * len(entries) + 100:  # forget configs of other studies
        keep = {(decide, e[2].config) for e in entries}
        for key in [k for k in list(_ROWS) if k not in keep]:  # (list(): another thread may add meanwhile)
            _ROWS.pop(key, None)
    return rows


def _spread(rows: list[ConfigRow], noise: NoiseFloor) -> Spread:
    scored = [c for c in rows if c.summary.mean is not None]
    if not scored:
        return Spread()
    best, worst = scored[0], scored[-1]
    gap = worst.summary.mean - best.summary.mean
    # a config without repeats has an unknown sd: never let it look quieter than the pooled noise
    known = [t for t in (noise.threshold_for(best.config, worst.config), noise.threshold) if t is not None]
    thr = max(known) if known else None
    s = Spread(best_config=best.config, best_label=best.label, best_mean=best.summary.mean,
               worst_config=worst.config, worst_label=worst.label, worst_mean=worst.summary.mean,
               gap=gap, threshold=thr, pooled_threshold=noise.threshold)
    if len(scored) >= 2 and thr is not None:
        s.gap_over_threshold = gap / thr if thr > 0 else None
        s.separated = gap > thr
    return s


def _comparisons(study: Study, records: list[TrialRecord], rows: list[ConfigRow], noise: NoiseFloor,
                 correction: str, decide: str = "confirm") -> list[ComparisonResult]:
    pairs = list(study.comparisons) or list(itertools.combinations(list(study.arms), 2))
    results: list[ComparisonResult] = []
    built: list[tuple[int, Comparison]] = []
    for a, b in pairs:
        la, lb = confirmed_leader(rows, a), confirmed_leader(rows, b)
        res = ComparisonResult(arm_a=a, arm_b=b)
        for side, leader in (("a", la), ("b", lb)):
            if leader:
                setattr(res, f"config_{side}", leader.config)
                setattr(res, f"label_{side}", leader.label)
                setattr(res, f"params_{side}", leader.params)
        missing = [arm for arm, leader in ((a, la), (b, lb)) if leader is None]
        if missing:
            res.missing = missing
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


def _decompositions(study: Study, everything: list[TrialRecord],
                    comps: list[ComparisonResult]) -> list[PairDecomposition]:
    """Per comparison whose leaders are both confirmed: the 2x2 from the confirmation runs (A, B) and
    the swap runs of that pair made with these very leaders (A': a's leader with b's settings, B':
    b's with a's); without swap runs, whether one was needed (the leaders' shared settings differ)."""
    out = []
    for c in comps:
        if c.config_a is None or c.config_b is None:
            continue
        pair = {c.arm_a, c.arm_b}
        swaps = [r for r in everything if r.phase == "swap" and r.swap is not None and set(r.swap.pair) == pair]
        own = {k: {r.seed: x for r in everything if r.phase == "confirm" and r.config == cid
                   and (x := _loss_or_nan(r)) is not None} for k, cid in (("A", c.config_a), ("B", c.config_b))}
        mine = {k: [r for r in swaps if r.config == cid] for k, cid in (("A'", c.config_a), ("B'", c.config_b))}
        d = PairDecomposition(arm_a=c.arm_a, arm_b=c.arm_b, config_a=c.config_a, config_b=c.config_b,
                              status="no swap runs")
        if mine["A'"] or mine["B'"]:
            d.status = "measured"
            d.settings_a = dict(mine["A'"][0].swap.settings) if mine["A'"] and mine["A'"][0].swap else {}
            d.settings_b = dict(mine["B'"][0].swap.settings) if mine["B'"] and mine["B'"][0].swap else {}
            cells = {**own, **{k: {r.seed: x for r in rs if (x := _loss_or_nan(r)) is not None}
                               for k, rs in mine.items()}}
            d.decomposition = analyzer.decompose(cells)
        elif c.params_a is not None and c.params_b is not None:
            diffs = leader_differences(study, c.arm_a, c.params_a, c.arm_b, c.params_b)
            d.status = "no swap runs" if diffs else "not needed"
            d.settings_a = {x.knob: x.value_b for x in diffs}
            d.settings_b = {x.knob: x.value_a for x in diffs}
        out.append(d)
    return out


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
    """Per arm and origin (origins compared like with like: within one arm)."""
    groups: dict[tuple[str, str], list[TrialRecord]] = {}
    for r in counted(records):
        groups.setdefault((r.arm, r.origin), []).append(r)
    arms = list(dict.fromkeys(r.arm for r in records))
    out = []
    for arm, origin in sorted(groups, key=lambda k: (arms.index(k[0]), ORIGINS.index(k[1]) if k[1] in ORIGINS
                                                     else len(ORIGINS), k[1])):
        rs = groups[(arm, origin)]
        losses = [r.val_loss for r in rs if r.ok]
        out.append(OriginStats(arm=arm, origin=origin, n_trials=len(rs), n_ok=len(losses),
                               n_configs=len({r.config for r in rs}),
                               best_val_loss=min(losses) if losses else None, mean_val_loss=_mean(losses),
                               n_diverged=sum(r.status == "diverged" for r in rs),
                               n_failed=sum(r.status in FAILED for r in rs)))
    return out


def _budget(study: Study, records: list[TrialRecord], plan: Plan | None) -> BudgetUse:
    used = counted(records)
    b = BudgetUse(used=spent(used),
                  by_phase={p: spent(used, phase=p) for p in ("search", "confirm")},
                  by_arm={a: spent(used, arm=a) for a in study.arms},
                  stopped=[EarlyStop(order=r.order, arm=r.arm, params=r.params, rung=r.rung, reason=r.reason)
                           for r in used if r.status == "stopped"])
    if any(r.phase == "swap" for r in used):
        b.by_phase["swap"] = spent(used, phase="swap")
    if plan is not None:
        b.total = plan.budget
        b.left = max(0, plan.budget - b.used)
        b.search_budget = plan.search_budget
        b.confirm_reserve = plan.budget - plan.search_budget - plan.swap_reserve()
        b.confirm_seeds = list(plan.confirm_seeds)
        seeds = sorted({r.seed for r in used if r.phase == "confirm"})
        if plan.adaptive and seeds:  # the confirmation was sized by the noise: report what it used
            b.confirm_seeds = seeds
            b.confirm_reserve = b.by_phase["confirm"]
            b.search_budget = plan.budget - b.confirm_reserve - b.by_phase.get("swap", 0)
    return b


def _best_so_far(records: list[TrialRecord], arm: str | None = None) -> list[tuple[int, float | None]]:
    out, best = [], None
    search = [r for r in sorted(counted(records), key=lambda r: r.order)
              if r.phase == "search" and (arm is None or r.arm == arm)]
    for i, r in enumerate(search, 1):
        if r.ok and (best is None or r.val_loss < best):
            best = float(r.val_loss)
        out.append((i, best))
    return out


def analyze(study: Study, records: list[TrialRecord], plan: Plan | None = None,
            correction: str = "holm") -> Findings:
    """Everything the reports need, from the trial records (statistics from `analyzer`)."""
    everything = sorted(records, key=lambda r: r.order)
    records = without_swaps(everything)  # swap runs decide nothing; they decompose the gap (below)
    # a point run (named experiments, no confirmation phase) decides on the experiments' own seeds
    decide = "search" if plan is not None and not plan.confirm_seeds else "confirm"
    rows = _config_rows(records, decide)
    ok_losses: dict[str, list[float]] = {}
    for r in records:
        if r.ok:
            ok_losses.setdefault(r.config, []).append(r.val_loss)
    noise = analyzer.noise_floor({c.config: ok_losses[c.config] for c in rows if c.n >= 2})
    comps = _comparisons(study, records, rows, noise, correction, decide)
    tuning = tuning_evidence(study, records)
    decompositions = _decompositions(study, everything, comps) if decide == "confirm" else []
    rec = recommend(study, rows, comps, decide, tuning=tuning if decide == "confirm" else None, plan=plan,
                    decompositions=decompositions)
    return Findings(
        study=study.name, question=study.question, correction=correction, decided_on=decide,
        n_records=len(everything), configs=rows, noise=noise, spread=_spread(rows, noise), comparisons=comps,
        recommendation=rec,
        lr_sensitivity=_lr_sensitivity(study, records), by_origin=_by_origin(records),
        budget=_budget(study, everything, plan), best_so_far=_best_so_far(records),
        best_so_far_by_arm={a: _best_so_far(records, a) for a in study.arms}, tuning=tuning,
        decompositions=decompositions,
    )
