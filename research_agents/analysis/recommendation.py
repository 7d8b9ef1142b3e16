"""The recommendation: which arm to use, with which settings, and how sure.

It never claims more than the comparisons' verdicts: a difference is stated only when the
paired verdict says one arm is better; otherwise it says what would tell the arms apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from research_agents.analysis import stats as analyzer
from research_agents.analysis.models import ComparisonResult, Confidence, ConfigRow, Recommendation, \
    confirmed_leader
from research_agents.analysis.stats import Comparison
from research_agents.analysis.tuning import settle_runs
from research_agents.config.plan import Plan
from research_agents.config.study import Study
from research_agents.evidence import ArmEvidence
from research_agents.fmt import fmt_value, params_text


@dataclass(frozen=True)
class Words:
    """How the runs that decide are named: fresh confirmation seeds, or a point run's own seeds."""

    fresh: str
    more_seeds: str
    seeds_key: str
    nothing_confirmed: str


CONFIRMED = Words("fresh seeds", "more confirmation seeds", "seeds.confirm",
                  "no configuration has been re-run on the confirmation seeds yet (the study stopped before "
                  "the confirmation phase)")
POINT_RUN = Words("seeds", "more seeds", "seeds.search", "nothing completed")


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


def _seeds_advice(c: Comparison | None, w: Words) -> str:
    need = analyzer.wilcoxon_pairs_needed()
    text = (f"What would tell them apart: {w.more_seeds}, paired across arms (re-run with a larger "
            f"budget or more `{w.seeds_key}`); a rank test needs at least {need} pairs to reach p < 0.05")
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


def recommend(study: Study, rows: list[ConfigRow], comps: list[ComparisonResult],
              decided_on: str = "confirm", tuning: dict[str, ArmEvidence] | None = None,
              plan: Plan | None = None) -> Recommendation:
    """The recommendation: never more than the comparisons' verdicts and the tuning evidence support.

    `decided_on` "search" is a point run (named experiments, no confirmation phase): the leaders
    were measured on the experiments' own seeds, which the wording says, and a leader chosen among
    several experiments on those same seeds is optimistic, so high confidence is capped at moderate.
    `tuning`: an arm whose searched LR is not bracketed is untuned, and a comparison with it is at
    most "low" confidence; the text names the arm and the runs that would settle it.
    """
    w = POINT_RUN if decided_on == "search" else CONFIRMED
    rec = _recommend_core(study, rows, comps, w)
    if tuning is not None:
        rec = _tuning_cap(study, rec, comps, tuning, plan)
    notes = [f"{c.arm}'s confirmed leader ({params_text(c.params)}) had {c.n_diverged} diverged and "
             f"{c.n_failed} failed run(s), which are not in its mean"
             for arm in study.arms if (c := confirmed_leader(rows, arm)) and (c.n_diverged or c.n_failed)]
    if notes:
        rec.text += " Note: " + "; ".join(notes) + "."
    if w is POINT_RUN:
        rec = _point_run_note(rec, rows)
    return rec


def _recommend_core(study: Study, rows: list[ConfigRow], comps: list[ComparisonResult], w: Words) -> Recommendation:
    confirmed = [c for c in rows if c.confirm_summary is not None and c.confirm_summary.mean is not None]
    if not confirmed:
        any_confirm = any(c.confirmed for c in rows)
        why = ("confirmation runs were started but none completed" if any_confirm else w.nothing_confirmed)
        best = next((c for c in rows if c.n), None)
        text = f"No recommendation: {why}. Search results alone are selected on the same seeds that ranked them."
        if best:
            text += (f" The best search result so far is {best.arm} ({params_text(best.params)}), "
                     f"mean val loss {best.summary.mean:.4f} over {best.n} run(s); treat it as unconfirmed.")
        return Recommendation(text=text, confidence="none")
    leaders = {arm: leader for arm in study.arms if (leader := confirmed_leader(rows, arm))}
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
                    f"{best.confirm_summary.mean:.4f} over {best.confirm_summary.n} {w.fresh}, but {why}. "
                    "The budget cannot say whether one optimizer is ahead. "
                    + _seeds_advice(None, w))
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
                    + _seeds_advice(other.comparison, w))
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
                    f"over {row.confirm_summary.n} {w.fresh}, and the paired comparison verdict says it is "
                    f"better ({others}).")
        if rec.confidence == "moderate":
            rec.text += (" The evidence is moderate (adjusted p >= 0.01 or the improvement is not consistent "
                         f"on at least 90% of seeds); {w.more_seeds} would firm it up.")
        return rec
    if wins and ties:
        won = ", ".join(c.arm_a if c.arm_b == cand else c.arm_b for c in wins)
        tied = ", ".join(c.arm_a if c.arm_b == cand else c.arm_b for c in ties)
        rec.text = (f"{cand} ({params}) has the lowest confirmed mean val loss ({row.confirm_summary.mean:.4f}). "
                    f"Its comparison verdicts favour it over {won}, but there is no evidence of a difference "
                    f"from {tied}: the budget cannot tell {cand} and {tied} apart, so no single arm is "
                    f"recommended over all others. " + _seeds_advice(ties[0].comparison, w))
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
                f"simplicity). Confirmed leaders: {named}. " + _seeds_advice(comp, w))
    rec.confidence = "low"
    return rec


def _tuning_cap(study: Study, rec: Recommendation, comps: list[ComparisonResult], tuning: dict[str, ArmEvidence],
                plan: Plan | None) -> Recommendation:
    compared = [a for a in study.arms if any(a in (c.arm_a, c.arm_b) for c in comps)] or list(study.arms)
    untuned = [tuning[a] for a in compared if a in tuning and tuning[a].lr_bracketed is False]
    if not untuned:
        return rec
    n_seeds = len(study.seeds.search)
    asks, runs = [], 0
    for ev in untuned:
        points, cost = settle_runs(ev, n_seeds)
        runs += cost
        where = ", ".join(f"lr {fmt_value(p['lr'])}" for p in points) or "a wider LR range (the leader is at its edge)"
        asks.append(f"{ev.arm} at {where}")
    why = "; ".join(f"{ev.arm}'s LR is {ev.knob('lr').status} ({ev.knob('lr').text})" for ev in untuned)
    settle = "What would settle it: " + "; ".join(asks)
    if runs and plan is not None:
        budget = plan.budget + runs + len(plan.confirm_seeds) * len(untuned)  # a new leader is re-confirmed
        settle += (f" ({runs} search run(s), plus re-confirming a new leader: resume with `--budget {budget}` "
                   "on the same --out)")
    settle += "."
    names = " and ".join(ev.arm for ev in untuned)
    is_ = "is" if len(untuned) == 1 else "are"
    if rec.confidence in ("moderate", "high"):
        what = ("a tuned optimizer with one whose LR optimum was not found" if len(untuned) == 1 else
                "optimizers whose LR optima were not found")
        head = (f"Confidence capped at low: {names} {is_} not tuned, {why}. The paired test alone would have said "
                f"{rec.confidence}, but it compares {what}. ")
        return rec.model_copy(update={"confidence": "low", "winner_arm": None, "winner_config": None,
                                      "winner_params": None, "text": f"{head}{settle} {rec.text}"})
    return rec.model_copy(update={"text": f"{rec.text} Tuning: {names} {is_} not tuned ({why}). {settle}"})


def _point_run_note(rec: Recommendation, rows: list[ConfigRow]) -> Recommendation:
    """A point run's note: no fresh seeds, and leaders chosen on the same seeds (high capped at moderate)."""
    per_arm = {a: sum(c.arm == a and c.n > 0 for c in rows) for a in dict.fromkeys(c.arm for c in rows)}
    chosen = [f"{a} among {n}" for a, n in per_arm.items() if n > 1]
    note = ("Point run (named experiments, no confirmation phase): 'confirmed' means measured on the "
            "experiments' own seeds")
    if chosen:
        note += (f", and each arm's leader is its best-ranked experiment ({', '.join(chosen)}) chosen on those "
                 "same seeds, so its lead is optimistic")
        if rec.confidence == "high":
            rec.confidence = "moderate"
    return rec.model_copy(update={"text": f"{rec.text} {note}."})
