"""The words for what the planners also read: tuning evidence, open questions, the hybrid's LLM share.

One renderer for the round report, the final report and the LLM prompt: analysis hands over data
(research_agents.evidence) and these functions word it. This module sits below the planners (it
imports only fmt and evidence), so the LLM prompt renders with it what the reports render.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from research_agents.evidence import KnobEvidence, Neighbour, OpenQuestion
from research_agents.fmt import fmt_value, fp4, fs


def _side_words(k: KnobEvidence, direction: int) -> str:
    word, state = ("below", k.below_state) if direction < 0 else ("above", k.above_state)
    nb: Neighbour | None = k.below if direction < 0 else k.above
    name, value = k.knob, k.leader_value
    if state == "edge":
        return (f"{word}: the leader sits at the space's {'lower' if direction < 0 else 'upper'} bound "
                "(the optimum may lie outside the space)")
    if state == "closed":
        assert nb is not None, f"{name}: a closed side has a measured neighbour"
        close = " (within the noise)" if nb.within_noise else ""
        return f"{word}: {fmt_value(nb.value)} measured, {nb.gap:+.4f}{close}"
    far = f"; nearest measured {fmt_value(nb.value)}, {nb.steps:.1f} steps away" if nb is not None else ""
    edge = k.low if direction < 0 else k.high
    region = (f"({fmt_value(nb.value)}, {fmt_value(value)})" if direction < 0 and nb is not None else
              f"({fmt_value(value)}, {fmt_value(nb.value)})" if nb is not None else
              f"[{fmt_value(edge)}, {fmt_value(value)})" if direction < 0
              else f"({fmt_value(value)}, {fmt_value(edge)}]")
    return f"{word}: untested region {name} in {region}{far}"


def knob_text(k: KnobEvidence) -> str:
    """One knob's evidence in a line: `lr = 0.02: open below; below: untested region ...`."""
    name = k.knob
    if k.status == "not searched":
        return f"{name}: fixed by the study (not searched)"
    if k.status == "all choices tried":
        return f"{name}: every choice tried with the leader's other settings"
    if k.status == "choices untried":
        return f"{name}: untried with the leader's other settings: {', '.join(map(fmt_value, k.to_try))}"
    if k.below_state is None or k.above_state is None:
        return f"{name}: nothing measured yet"
    return (f"{name} = {fmt_value(k.leader_value)}: {k.status}; "
            + "; ".join(_side_words(k, d) for d in (-1, 1)))


def _at_bound(q: OpenQuestion, side: str) -> str:
    return (f" and sits at the space's {side} bound (the optimum may lie outside the space)."
            if q.at_bound else f"; {'lower' if side == 'lower' else 'higher'} lrs are untested.")


def question_text(q: OpenQuestion) -> str:
    """One open question as a sentence."""
    arm = q.arm
    if q.code == "fewer runs":
        return f"{arm} has fewer completed runs ({q.n}) than the best-covered arm ({q.most})."
    if q.code == "lr smallest":
        return f"{arm}: the best lr {q.lr:.4g} is the SMALLEST tried" + _at_bound(q, "lower")
    if q.code == "lr largest":
        return f"{arm}: the best lr {q.lr:.4g} is the LARGEST tried" + _at_bound(q, "upper")
    if q.code == "lr range at edge":
        return (f"{arm}: the near-optimal lr range [{q.lo:.4g}, {q.hi:.4g}] (within {q.margin:g} nats of the "
                f"best) reaches the {' and '.join(q.edges)} lr tried; its true width is unknown.")
    if q.code == "lr unmeasured":
        return f"{arm}: lr sensitivity not measurable yet ({q.n} distinct lr value(s) completed, 3 needed)."
    if q.code == "few values":
        little = ", ".join(f"{key} ({n} value{'s' if n != 1 else ''})" for key, n in q.knobs)
        return f"{arm}: still uncertain, tried at few values: {little}."
    if q.code == "single-run leader":
        return f"{arm}: the leader ({q.leader}) rests on a single run."
    if q.code == "top two close":
        return (f"{arm}: the top two configs differ by {q.gap:.4f}, within the noise threshold "
                f"{q.threshold:.4f}: which is better is unknown.")
    if q.code == "leaders noise unknown":
        return (f"The arm leaders differ by {q.gap:.4f} (best: {arm}); the noise floor is not measured yet, so "
                "whether that is real is unknown until confirmation.")
    if q.code == "leaders close":
        return (f"The arm leaders ({', '.join(q.arms)}) differ by {q.gap:.4f}, within the noise threshold "
                f"{q.threshold:.4f}.")
    raise ValueError(f"no words for open question {q.code!r}")


def question_lines(questions: list[OpenQuestion]) -> list[str]:
    """The "Open questions" list, as the round report shows it and the LLM prompt quotes it."""
    return [f"- {question_text(q)}" for q in questions] or ["- None flagged."]



def hybrid_plan_text(share: float, arms: dict[str, dict[str, int]]) -> str:
    """What the hybrid planner's LLM share gives at this budget (arm -> its search points, warm-up and
    LLM points), as the console announces it and the LLM usage section repeats it."""
    per_arm = "; ".join(f"{a} {v['llm']} of {v['points']} (warm-up {v['warmup']})" for a, v in arms.items())
    if any(v["llm"] for v in arms.values()):
        return (f"hybrid at this budget: the LLM chooses about {share:.0%} of each arm's search points "
                f"after its warm-up: {per_arm}")
    return (f"hybrid at this budget: the LLM will never be asked ({per_arm}): too few search points per "
            f"arm for a {share:.0%} share after the warm-up; raise --budget or --llm-share")


# --- a comparison's words (research_agents.analysis.stats.compare.Comparison and its Limit codes). The
# objects are read by their fields, not imported: this module sits below analysis, so the claims,
# the reports and summary.json word a comparison with the same functions.

class _Fields(dict):
    """What a template's {placeholders} read: a derived field where `derived` names one (computed only
    when the template uses it), else the object's attribute of that name."""

    def __init__(self, obj, derived: dict[str, Callable[[Any], Any]]):
        super().__init__()
        self.obj, self.derived = obj, derived

    def __missing__(self, key: str) -> Any:
        return self.derived[key](self.obj) if key in self.derived else getattr(self.obj, key)


def _worded(templates: dict[str, str], code: str, obj, derived: dict[str, Callable[[Any], Any]], what: str) -> str:
    """The template of `code`, filled from `obj` (one formatting rule for every code-to-words table)."""
    if code not in templates:
        raise ValueError(f"unknown {what} {code!r}")
    return templates[code].format_map(_Fields(obj, derived))


LIMITS = {
    "nonfinite seeds": "seeds {seeds} have a non-finite loss (diverged?) and were dropped from the pairing",
    "unpaired seeds": "seeds {seeds} are not in both arms and were not used",
    "too few pairs": "only {n} common seed(s): paired tests need >= 2 pairs",
    "zero spread paired": "the paired differences have zero spread; the t statistic is degenerate{t_test}",
    "hedges g needs 3 pairs": "Hedges' g needs >= 3 pairs (the small-sample correction is 0 at n=2)",
    "hedges g undefined paired": "Hedges' g is undefined (zero spread of the paired differences)",
    "nonfinite losses": "{count} non-finite loss(es) of {name} (diverged?) were dropped",
    "too few runs": "{n_a} vs {n_b} runs: unpaired tests need >= 2 runs per arm",
    "degenerate welch": "both arms have zero spread; the Welch t-test is degenerate",
    "hedges g undefined pooled": "Hedges' g is undefined (zero pooled sd)",
    "bootstrap undercover": "bootstrap CIs from {sample} undercover (too narrow); read them as optimistic",
    "rank cannot reach alpha": ("{test} with {rank_sample} cannot reach p < {alpha:g} (smallest possible two-sided "
                                "p = {min_p_text}); {needed} are needed. Its p-value is reported but not used."),
}
LIMIT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "t_test": lambda lim: " and the t-test is undefined" if lim.t_undefined else "",
    "sample": lambda lim: f"{lim.n} pairs" if lim.n is not None else f"{lim.n_a} vs {lim.n_b} runs",
    "rank_sample": lambda lim: (f"n={lim.n_nonzero} pairs"  # Wilcoxon (paired) counts the non-zero differences
                                + ("" if lim.n_nonzero == lim.n else f" (non-zero of {lim.n})")
                                if lim.n is not None else f"{lim.n_a} vs {lim.n_b} runs"),
    "needed": lambda lim: f"{lim.needed} pairs" if lim.n is not None else f"{lim.needed} runs per arm",
    "min_p_text": lambda lim: fp4(lim.min_p),
}

VERDICT_REASONS = {
    "diff undefined": "difference undefined",
    "p undefined": "{primary_test} p-value undefined",
    "p not below alpha": "adjusted p = {p_text} is not < alpha = {alpha:g}",
    "ci includes 0": "CI of the difference includes 0",
    "within noise": "|diff| = {abs_diff} is within the noise threshold {min_effect_text}",
}
REASON_FIELDS: dict[str, Callable[[Any], Any]] = {
    "p_text": lambda c: fp4(c.p_adjusted),
    "abs_diff": lambda c: fs(abs(c.diff), 4),
    "min_effect_text": lambda c: fs(c.min_effect, 4),
}


def limit_text(lim) -> str:
    """One limit of a comparison in a sentence, from its code and numbers."""
    return _worded(LIMITS, lim.code, lim, LIMIT_FIELDS, "limit code")


def verdict_reason_text(c, reason: str) -> str:
    """Why a comparison's verdict is not "better", from its code and the comparison's numbers."""
    return _worded(VERDICT_REASONS, reason, c, REASON_FIELDS, "verdict reason")


def comparison_summary(c) -> str:
    """A comparison in one line: `b vs a (paired, n=4 pairs): diff (b - a) = ... -> verdict.`"""
    n_txt = f"n={c.n_pairs} pairs" if c.kind == "paired" else f"n={c.n_a} vs {c.n_b}"
    conf = f"{round(c.confidence * 100):d}%"
    ci = f"[{conf} CI {fs(c.diff_ci_low, 4)}, {fs(c.diff_ci_high, 4)}]" if c.diff_ci_low is not None else "[no CI]"
    adj = "" if c.correction.startswith("none") else f" {c.correction}, m={c.family_size}"
    poi = "n/a" if c.prob_improvement is None else f"{c.prob_improvement:.2f}"
    if c.verdict == "b better":
        v = f"{c.name_b} better than {c.name_a} (lower loss)"
    elif c.verdict == "a better":
        v = f"{c.name_a} better than {c.name_b} (lower loss)"
    elif c.verdict == "not testable (n too small)":
        v = "not testable (n too small)"
    else:
        v = "no evidence of a difference" + (
            f" ({verdict_reason_text(c, c.verdict_reasons[0])})" if c.verdict_reasons else "")
    line = (f"{c.name_b} vs {c.name_a} ({c.kind}, {n_txt}): diff (b - a) = {fs(c.diff, 4)} {ci}, "
            f"p_adj = {fp4(c.p_adjusted)} ({c.primary_test}{adj}), g = {fs(c.hedges_g, 3)}, "
            f"P({c.name_b} < {c.name_a}) = {poi} -> {v}.")
    if c.rank_test_can_reach_alpha is False:
        line += f" {c.rank_test} cannot reach p < {c.alpha:g} at this n (min p = {fp4(c.rank_test_min_p)})."
    return line


def comparison_json(c) -> dict:
    """A comparison as the JSON files have always shown it: its numbers, its limits as sentences
    and its one-line summary last (the verdict's reason codes live in the summary's words)."""
    out = c.model_dump(mode="json")
    out.pop("verdict_reasons")
    out["limits"] = [limit_text(lim) for lim in c.limits]
    out["summary"] = comparison_summary(c)
    return out


__all__ = ["knob_text", "question_text", "question_lines", "hybrid_plan_text", "limit_text", "verdict_reason_text",
           "comparison_summary", "comparison_json"]
