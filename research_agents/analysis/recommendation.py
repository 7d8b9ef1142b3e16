"""The recommendation: which arm to use, with which settings, and how sure.

It never claims more than the comparisons' verdicts: a difference is stated only when the
paired verdict says one arm is better; otherwise it says what would tell the arms apart. It
returns a case and its numbers (analysis.models.Recommendation); report/recommendation.py words it.
"""

from __future__ import annotations

import math

from research_agents.analysis import stats as analyzer
from research_agents.analysis.models import (
    ComparisonResult,
    Confidence,
    ConfigRow,
    HowMuch,
    Leader,
    PairDecomposition,
    Pair,
    Recommendation,
    SeedsAdvice,
    TroubledLeader,
    UntunedArm,
    Versus,
    confirmed_leader,
)
from research_agents.analysis.stats import Comparison, Effect
from research_agents.analysis.tuning import settle_runs
from research_agents.config.plan import Plan
from research_agents.config.study import Study
from research_agents.evidence import ArmEvidence


def _strength(c: Comparison, winner_is_b: bool) -> Confidence:
    poi = c.prob_improvement
    strong_poi = poi is not None and (poi >= 0.9 if winner_is_b else poi <= 0.1)
    if c.p_adjusted is not None and c.p_adjusted < 0.01 and strong_poi:
        return "high"
    return "moderate"


def seeds_advice(c: Comparison | None) -> SeedsAdvice:
    """What would tell the arms apart, from the comparison's effect and noise threshold."""
    advice = SeedsAdvice(pairs_needed=analyzer.wilcoxon_pairs_needed())
    if c is None:
        return advice
    advice.n_pairs = c.n_pairs
    if c.hedges_g is not None and c.hedges_g != 0:
        # rough paired-t sample size for 80% power at alpha 0.05: n ~ ((1.96 + 0.84) / |d_z|)^2
        advice.hedges_g = c.hedges_g
        advice.pairs_to_detect = math.ceil((2.8 / abs(c.hedges_g)) ** 2)
    if c.min_effect is not None and c.diff is not None:
        advice.abs_diff, advice.min_effect = abs(c.diff), c.min_effect
        advice.within_noise = abs(c.diff) <= c.min_effect
    return advice


def recommend(study: Study, rows: list[ConfigRow], comps: list[ComparisonResult],
              decided_on: str = "confirm", tuning: dict[str, ArmEvidence] | None = None,
              plan: Plan | None = None, decompositions: list[PairDecomposition] | None = None) -> Recommendation:
    """The recommendation: never more than the comparisons' verdicts and the tuning evidence support.

    `decided_on` "search" is a point run (named experiments, no confirmation phase): the leaders
    were measured on the experiments' own seeds, and a leader chosen among several experiments on
    those same seeds is optimistic, so high confidence is capped at moderate.
    `tuning`: an arm is untuned when one of the LR-like knobs it searches (`lr`, `*_lr`) is not
    bracketed. An untuned arm that did not win (a loser, or both arms untuned) caps the confidence at
    "low": tuning it could overturn the verdict. An untuned winner does not: tuning can only lower
    the loss of the arm already ahead, so its measured advantage is a lower bound and the confidence
    follows the paired test. Either way the recommendation names the arm and the runs that would
    settle (or measure) it.
    `decompositions`: where each pair's gap comes from; the winner's "by how much" (`how_much`) is
    the optimizer effect where its pair was decomposed, else the gap as measured and why.
    """
    rec = _recommend_core(study, rows, comps)
    if decompositions is not None:
        rec.how_much = how_much(rec, comps, decompositions)
    rec.decided_on = "search" if decided_on == "search" else "confirm"
    rec.paired_confidence = rec.confidence
    if tuning is not None:
        _tuning(study, rec, comps, tuning, plan)
    rec.troubled = [TroubledLeader(arm=arm, params=c.params, n_diverged=c.n_diverged, n_failed=c.n_failed)
                    for arm in study.arms if (c := confirmed_leader(rows, arm)) and (c.n_diverged or c.n_failed)]
    if rec.decided_on == "search":
        per_arm = {a: sum(c.arm == a and c.n > 0 for c in rows) for a in dict.fromkeys(c.arm for c in rows)}
        rec.chosen_among = [(a, n) for a, n in per_arm.items() if n > 1]
        if rec.chosen_among and rec.confidence == "high":
            rec.confidence = "moderate"
    return rec


def _as_advantage(e: Effect, flip: bool) -> Effect:
    """An effect signed as "arm a has the higher loss", re-signed as the winner's advantage."""
    if not flip or e.mean is None:
        return e
    return e.model_copy(update={"mean": -e.mean, "ci_low": None if e.ci_high is None else -e.ci_high,
                                "ci_high": None if e.ci_low is None else -e.ci_low})


def how_much(rec: Recommendation, comps: list[ComparisonResult],
             decompositions: list[PairDecomposition]) -> list[HowMuch]:
    """Per arm the candidate beat: what its advantage measures. Decomposed (swap runs): the optimizer
    effect, the shared-settings effect and their interaction, signed as the winner's advantage; else
    the paired gap as measured, with why it is not decomposed (no swap runs; or not needed: the
    leaders share every setting, so the gap is all optimizer)."""
    if rec.case not in ("better", "mixed") or rec.leader is None:
        return []
    cand = rec.leader.arm
    out = []
    for v in rec.wins:
        d = next((d for d in decompositions if {d.arm_a, d.arm_b} == {cand, v.arm}), None)
        if d is None:
            continue
        gap = abs(v.comparison.diff) if v.comparison.diff is not None else None
        item = HowMuch(arm=cand, versus=v.arm, status=d.status, gap=gap,
                       settings=list(d.settings_a))
        if d.status == "measured" and d.decomposition is not None:
            flip = d.arm_a == cand  # effects are "a has the higher loss": the winner a's advantage is minus that
            item.optimizer = _as_advantage(d.decomposition.optimizer, flip)
            item.shared = _as_advantage(d.decomposition.shared, flip)
            item.interaction = _as_advantage(d.decomposition.interaction, flip)
        out.append(item)
    return out


def _confirmed(row: ConfigRow) -> Leader:
    return Leader(arm=row.arm, params=row.params, mean=row.confirm_summary.mean, n=row.confirm_summary.n)


def _recommend_core(study: Study, rows: list[ConfigRow], comps: list[ComparisonResult]) -> Recommendation:
    confirmed = [c for c in rows if c.confirm_summary is not None and c.confirm_summary.mean is not None]
    if not confirmed:
        best = next((c for c in rows if c.n), None)
        return Recommendation(case="nothing confirmed", confidence="none",
                              confirm_started=any(c.confirmed for c in rows),
                              leader=Leader(arm=best.arm, params=best.params, mean=best.summary.mean, n=best.n)
                              if best else None)
    leaders = {arm: leader for arm in study.arms if (leader := confirmed_leader(rows, arm))}
    best_arm = min(leaders, key=lambda a: leaders[a].confirm_summary.mean)
    best = leaders[best_arm]
    rec = Recommendation(case="no comparison", confidence="low", best_arm=best_arm, best_config=best.config,
                         best_params=best.params)
    done = [c for c in comps if c.comparison is not None]
    rec.basis = [c.comparison for c in done]
    if not done:
        rec.leader = _confirmed(best)
        rec.single_arm = len(study.arms) == 1
        rec.missing = [] if rec.single_arm else [a for a in study.arms if a not in leaders]
        rec.advice = seeds_advice(None)
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
    rec.leader = _confirmed(row)
    rec.wins = [Versus(arm=c.arm_a if c.arm_b == cand else c.arm_b,
                       params=(c.params_a if c.arm_b == cand else c.params_b) or {}, comparison=c.comparison)
                for c in wins]
    if losses:
        other = losses[0]
        rec.case, rec.wins = "disagree", []
        rec.pair = Pair(arm_a=other.arm_a, arm_b=other.arm_b, comparison=other.comparison)
        rec.advice = seeds_advice(other.comparison)
        return rec
    if wins and not ties:
        levels = [_strength(c.comparison, c.arm_b == cand) for c in wins]
        rec.case = "better"
        rec.confidence = "high" if all(lv == "high" for lv in levels) else "moderate"
        rec.winner_arm, rec.winner_config, rec.winner_params = cand, row.config, row.params
        return rec
    if wins and ties:
        rec.case = "mixed"
        rec.tied = [c.arm_a if c.arm_b == cand else c.arm_b for c in ties]
        rec.advice = seeds_advice(ties[0].comparison)
        return rec
    # no verdict supports a difference
    c = ties[0]
    comp = c.comparison
    rec.pair = Pair(arm_a=c.arm_a, arm_b=c.arm_b, comparison=comp)
    rec.leaders = [_confirmed(leaders[arm]) for arm in sorted(compared, key=lambda a: leaders[a].confirm_summary.mean)]
    if comp.verdict == "not testable (n too small)":
        rec.case = "not testable"
    else:
        rec.case = "no difference"
        if comp.prob_improvement is not None and comp.n_pairs:
            rec.lower_b = round(comp.prob_improvement * comp.n_pairs)
    rec.advice = seeds_advice(comp)
    return rec


def _tuning(study: Study, rec: Recommendation, comps: list[ComparisonResult], tuning: dict[str, ArmEvidence],
            plan: Plan | None) -> None:
    compared = [a for a in study.arms if any(a in (c.arm_a, c.arm_b) for c in comps)] or list(study.arms)
    untuned = [tuning[a] for a in compared if a in tuning and tuning[a].tuned is False]
    if not untuned:
        return
    winner = rec.winner_arm if rec.case == "better" else None
    losers = {v.arm for v in rec.wins} if winner else set()
    n_seeds = len(study.seeds.search)
    for ev in untuned:
        rec.settle_runs += settle_runs(ev, n_seeds)[1]
        role = "winner" if ev.arm == winner else ("loser" if ev.arm in losers else "compared")
        rec.untuned.append(UntunedArm(arm=ev.arm, role=role, knobs=ev.untuned_lrs))
    if rec.settle_runs and plan is not None:  # a new leader is re-confirmed
        rec.resume_budget = plan.budget + rec.settle_runs + len(plan.confirm_seeds) * len(untuned)
    if rec.confidence not in ("moderate", "high"):
        return
    if all(u.role == "winner" for u in rec.untuned):
        rec.lower_bound = True  # the direction stands; tuning the winner can only widen its lead
        return
    rec.capped = True
    rec.confidence = "low"
    rec.winner_arm = rec.winner_config = rec.winner_params = None


__all__ = ["recommend", "seeds_advice", "how_much"]
