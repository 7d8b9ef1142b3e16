"""The words for what the planners also read: tuning evidence and open questions.

One renderer for the round report, the final report and the LLM prompt: analysis hands over data
(research_agents.evidence) and these functions word it. This module sits below the planners (it
imports only fmt and evidence), so the LLM prompt renders with it what the reports render.
"""

from __future__ import annotations

from research_agents.evidence import KnobEvidence, Neighbour, OpenQuestion
from research_agents.fmt import fmt_value


def _side_words(k: KnobEvidence, direction: int) -> str:
    word, state = ("below", k.below_state) if direction < 0 else ("above", k.above_state)
    nb: Neighbour | None = k.below if direction < 0 else k.above
    name, value = k.knob, k.leader_value
    if state == "edge":
        return (f"{word}: the leader sits at the space's {'lower' if direction < 0 else 'upper'} bound "
                "(the optimum may lie outside the space)")
    if state == "closed":
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


__all__ = ["knob_text", "question_text", "question_lines"]
