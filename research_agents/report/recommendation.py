"""The recommendation's words: what analysis.recommendation decided, as the report and the console say it."""

from __future__ import annotations

from dataclasses import dataclass

from research_agents.analysis.models import Leader, Recommendation, SeedsAdvice, UntunedArm
from research_agents.analysis.stats import Comparison
from research_agents.fmt import fmt_value, params_text
from research_agents.report.decomposition import how_much_lines
from research_agents.report.words import knob_text


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
MODERATE_WHY = "adjusted p >= 0.01 or the improvement is not consistent on at least 90% of seeds"


def _stats_text(c: Comparison) -> str:
    ci = (f"95% CI [{c.diff_ci_low:+.4f}, {c.diff_ci_high:+.4f}]"
          if c.diff_ci_low is not None and c.diff_ci_high is not None else "no CI")
    p = "n/a" if c.p_adjusted is None else f"{c.p_adjusted:.3g}"
    poi = "n/a" if c.prob_improvement is None else f"{c.prob_improvement:.2f}"
    diff = "n/a" if c.diff is None else f"{c.diff:+.4f}"
    return (f"{c.n_pairs} paired seeds, diff ({c.name_b} - {c.name_a}) {diff} nats, {ci}, "
            f"paired t p_adj {p}, P({c.name_b} < {c.name_a}) {poi}")


def _advice_text(a: SeedsAdvice, w: Words) -> str:
    text = (f"What would tell them apart: {w.more_seeds}, paired across arms (re-run with a larger "
            f"budget or more `{w.seeds_key}`); a rank test needs at least {a.pairs_needed} pairs to reach p < 0.05")
    if a.pairs_to_detect is not None:
        if a.pairs_to_detect > 200:
            text += (f"; the observed effect (g = {a.hedges_g:.2f}) is so small that hundreds of pairs would be "
                     "needed to detect it, if it is real at all")
        elif a.pairs_to_detect > (a.n_pairs or 0):
            text += (f", and if the observed effect (g = {a.hedges_g:.2f}) is real about {a.pairs_to_detect} pairs "
                     "would detect it (rough estimate)")
    if a.within_noise:
        text += (f". The observed mean difference {a.abs_diff:.4f} is within the noise threshold "
                 f"{a.min_effect:.4f}, so in practice the two may be equivalent")
    return text + "."


def _core_text(rec: Recommendation, w: Words) -> str:
    lead: Leader | None = rec.leader
    if rec.case == "nothing confirmed":
        why = "confirmation runs were started but none completed" if rec.confirm_started else w.nothing_confirmed
        text = f"No recommendation: {why}. Search results alone are selected on the same seeds that ranked them."
        if lead:
            text += (f" The best search result so far is {lead.arm} ({params_text(lead.params)}), "
                     f"mean val loss {lead.mean:.4f} over {lead.n} run(s); treat it as unconfirmed.")
        return text
    if rec.case == "no comparison":
        why = ("the study has a single arm, so there is no comparison to test" if rec.single_arm else
               f"{', '.join(rec.missing)} has no confirmed configuration, so no comparison could be tested")
        return (f"{lead.arm} ({params_text(lead.params)}) has a confirmed mean val loss of "
                f"{lead.mean:.4f} over {lead.n} {w.fresh}, but {why}. "
                "The budget cannot say whether one optimizer is ahead. " + _advice_text(rec.advice, w))
    params = params_text(lead.params)
    if rec.case == "disagree":
        p = rec.pair
        return (f"The comparisons disagree with the ranking of means: {lead.arm} has the lowest confirmed mean, "
                f"yet the paired comparison {p.arm_b} vs {p.arm_a} says "
                f"'{p.comparison.verdict}'. No arm can be recommended on this evidence. " + _advice_text(rec.advice, w))
    if rec.case == "better":
        others = "; ".join(f"vs {v.arm} ({params_text(v.params)}): {_stats_text(v.comparison)}" for v in rec.wins)
        text = (f"Use {lead.arm} with {params}. Its confirmed mean val loss is {lead.mean:.4f} "
                f"over {lead.n} {w.fresh}, and the paired comparison verdict says it is better ({others}).")
        if rec.paired_confidence == "moderate" and not rec.capped:  # capped: the cap says what it would have been
            text += f" The evidence is moderate ({MODERATE_WHY}); {w.more_seeds} would firm it up."
        return text
    if rec.case == "mixed":
        won = ", ".join(v.arm for v in rec.wins)
        tied = ", ".join(rec.tied)
        return (f"{lead.arm} ({params}) has the lowest confirmed mean val loss ({lead.mean:.4f}). "
                f"Its comparison verdicts favour it over {won}, but there is no evidence of a difference "
                f"from {tied}: the budget cannot tell {lead.arm} and {tied} apart, so no single arm is "
                f"recommended over all others. " + _advice_text(rec.advice, w))
    p, comp = rec.pair, rec.pair.comparison
    named = "; ".join(f"{x.arm}: {params_text(x.params)}, confirmed mean {x.mean:.4f} over {x.n} seeds"
                      for x in rec.leaders)
    if rec.case == "not testable":
        head = f"Not testable: fewer than 2 paired confirmation seeds ({comp.n_pairs}) for {p.arm_b} vs {p.arm_a}."
    else:
        direction = ("" if rec.lower_b is None else
                     f" {p.arm_b} had the lower loss on {rec.lower_b} of {comp.n_pairs} paired seeds; "
                     "that is not evidence.")
        head = f"No evidence of a difference between the arms ({_stats_text(comp)}).{direction}"
    return (f"{head} The budget cannot tell them apart: pick either on other grounds (speed, "
            f"simplicity). Confirmed leaders: {named}. " + _advice_text(rec.advice, w))


def _label(knob: str) -> str:
    return "LR" if knob == "lr" else knob


def _ask(u: UntunedArm) -> str:
    parts = []
    for k in u.knobs:
        parts += ([f"{k.knob} {fmt_value(v)}" for v in k.to_try]
                  or [f"a wider {_label(k.knob)} range (the leader is at its edge)"])
    return f"{u.arm} at " + ", ".join(parts)


def _advantage(rec: Recommendation) -> str:
    """The winner's measured advantage over each arm it beat, in nats (a lower bound when it is untuned)."""
    gaps = [f"{abs(v.comparison.diff):.4f} nats over {v.arm}" for v in rec.wins if v.comparison.diff is not None]
    return f"its measured advantage ({'; '.join(gaps)})" if gaps else "its measured advantage"


def _tuning_text(rec: Recommendation, text: str) -> str:
    """Which arms are untuned, and what that does to the confidence: an untuned arm that did not win caps
    it at low (the cap states what the paired test alone said, so the text never claims more); an
    untuned winner leaves it to the paired test, and its advantage is stated as a lower bound."""
    if not rec.untuned:
        return text
    why = "; ".join(f"{u.arm}'s {_label(k.knob)} is {k.status} ({knob_text(k)})" for u in rec.untuned for k in u.knobs)
    runs = "; ".join(_ask(u) for u in rec.untuned)
    if rec.resume_budget is not None:
        runs += (f" ({rec.settle_runs} search run(s), plus re-confirming a new leader: resume with "
                 f"`--budget {rec.resume_budget}` on the same --out)")
    names = " and ".join(u.arm for u in rec.untuned)
    is_ = "is" if len(rec.untuned) == 1 else "are"
    if rec.capped:
        what = ("a tuned optimizer with one whose LR optimum was not found" if len(rec.untuned) == 1 else
                "optimizers whose LR optima were not found")
        said = rec.paired_confidence + (f" ({MODERATE_WHY})" if rec.paired_confidence == "moderate" else "")
        head = (f"Confidence capped at low: {names} {is_} not tuned, {why}. The paired test alone would have said "
                f"{said}, but it compares {what}. ")
        return f"{head}What would settle it: {runs}. {text}"
    if rec.lower_bound:
        win = rec.untuned[0].arm
        return (f"{text} Tuning: {win} is not tuned ({why}), but it is the arm ahead: further tuning can only "
                f"lower {win}'s loss, so {_advantage(rec)} is a lower bound and the confidence follows the "
                f"paired test. What would measure the full advantage: {runs}.")
    return f"{text} Tuning: {names} {is_} not tuned ({why}). What would settle it: {runs}."


def recommendation_text(rec: Recommendation) -> str:
    """The recommendation as the report's "Recommendation" section and the console say it."""
    w = POINT_RUN if rec.decided_on == "search" else CONFIRMED
    text = _core_text(rec, w)
    if rec.how_much:  # by how much: the optimizer effect once the gap is decomposed, else what was measured
        text += " " + how_much_lines(rec)
    text = _tuning_text(rec, text)
    if rec.troubled:
        text += " Note: " + "; ".join(f"{t.arm}'s confirmed leader ({params_text(t.params)}) had {t.n_diverged} "
                                      f"diverged and {t.n_failed} failed run(s), which are not in its mean"
                                      for t in rec.troubled) + "."
    if rec.decided_on == "search":
        note = ("Point run (named experiments, no confirmation phase): 'confirmed' means measured on the "
                "experiments' own seeds")
        if rec.chosen_among:
            note += (f", and each arm's leader is its best-ranked experiment "
                     f"({', '.join(f'{a} among {n}' for a, n in rec.chosen_among)}) chosen on those "
                     "same seeds, so its lead is optimistic")
        text += f" {note}."
    return text


__all__ = ["recommendation_text", "CONFIRMED", "POINT_RUN"]
