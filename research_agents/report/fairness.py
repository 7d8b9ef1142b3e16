"""The fairness audit in words (analysis/fairness.py computes it): the statement that goes next to
the verdict, and the section with each arm's knobs (searched, tied or fixed)."""

from __future__ import annotations

from research_agents.analysis.fairness import (
    ArmFreedom,
    Asymmetry,
    Audit,
    ConventionMiss,
    Difference,
    KnobFreedom,
    PairAudit,
)
from research_agents.config.study import CONVENTIONS
from research_agents.fmt import fmt_value, table

GROUP_WORDS = {
    "hidden": "the hidden matrices' LR (`lr`)",
    "adamw_leg": "the AdamW leg's LR (embedding and tied head, norm gains, router: `adamw_lr`)",
}


MISS_WORDS = {
    "leg_not_searched": "{arm} does not search `adamw_lr`",
    "leg_ranges_differ": "{arm} and {arm_b} search `adamw_lr` over different ranges",
    "leg_not_fixed": "{arm} does not fix `adamw_lr`",
    "leg_values_differ": "{arm} and {arm_b} fix `adamw_lr` at different values",
    "leg_not_ratio": "{arm}'s leg LR is not tied to its own LR by a ratio",
    "adamw_not_one_lr": "{arm} (AdamW) does not train every parameter at its one LR",
    "leg_not_shared_lr": "{arm}'s leg LR is not its `lr`",
    "not_rms_matched": "{arm}'s Muon update is not RMS-matched to AdamW's (`update_scale`)",
}


def miss_text(m: ConventionMiss) -> str:
    return MISS_WORDS[m.code].format(arm=m.arm, arm_b=m.arm_b)


def convention_line(audit: Audit) -> str:
    """The study's named convention for the AdamW leg, and whether it follows it."""
    if audit.convention is None:
        return ("Convention for the AdamW leg: none named (a study names one with `convention`; see README, "
                "Fairness conventions).")
    line = f"Convention for the AdamW leg: `{audit.convention}` ({CONVENTIONS[audit.convention]})."
    if audit.misses:
        line += " **The study does not follow it:** " + "; ".join(miss_text(m) for m in audit.misses) + "."
    return line


def _knob_name(knob: str, group: str | None) -> str:
    return GROUP_WORDS[group] if group else f"`{knob}`"


def freedom_text(k: KnobFreedom) -> str:
    """One knob's freedom in one arm: `searched over [0.003, 1.2] (log scale)`, `tied to lr at 0.1x
    (the study's tie; moves with it)`, `equal to lr (...)`, `fixed at 0.1 (arm base)`."""
    if k.freedom == "searched":
        if k.type == "choice":
            text = "searched among " + ", ".join(fmt_value(c) for c in k.choices or [])
        else:
            text = f"searched over [{fmt_value(k.low)}, {fmt_value(k.high)}]" + (" (log scale)" if k.log else "")
        if k.when:
            text += " when " + "; ".join(f"{w} is {', '.join(fmt_value(v) for v in vs)}" for w, vs in k.when.items())
        return text
    if k.freedom == "tied":
        moves = f"moves with the searched {k.source}" if k.moves else f"fixed, as {k.source} is"
        if k.by == "trainer default":
            return f"equal to {k.source} (unset in an AdamW arm: the trainer's default; {moves})"
        return f"tied to {k.source} at {fmt_value(k.factor)}x (the study's tie; {moves})"
    return f"fixed at {fmt_value(k.value)} ({k.origin})"


def _asymmetry_line(p: PairAudit, x: Asymmetry) -> str:
    what = _knob_name(x.knob, x.group)
    line = f"- {what[0].upper()}{what[1:]}: in {p.arm_a} {freedom_text(x.a)}; in {p.arm_b} {freedom_text(x.b)}."
    if x.group and len(x.tunable_in) == 1:
        other = p.arm_b if x.tunable_in[0] == p.arm_a else p.arm_a
        line += f" Only {x.tunable_in[0]} may tune it; {other} may not."
    elif x.group == "adamw_leg" and x.a.freedom == x.b.freedom == "tied" and x.a.moves and x.b.moves:
        line += (" Neither arm tunes it on its own: in each it follows that arm's own hidden-matrix LR, at a "
                 "different ratio, so the leg gets whatever LR suits each optimizer's matrices.")
    return line


def _difference_line(p: PairAudit, d: Difference) -> str:
    what = _knob_name(d.knob, d.group)
    return (f"- {what[0].upper()}{what[1:]}: {p.arm_a}'s leader {fmt_value(d.value_a)}, "
            f"{p.arm_b}'s {fmt_value(d.value_b)}.")


def verdict_lines(audit: Audit) -> list[str]:
    """What goes next to the verdict: the asymmetries, stated plainly, or that there were none."""
    if not audit.pairs:
        return []
    if audit.equal:
        leaders = ("; the leaders were trained with the same shared settings"
                   if all(p.leaders != "none" for p in audit.pairs) else "")
        return [convention_line(audit), "",
                "Fairness: the arms had equal freedom over shared settings (everything outside the hidden-matrix "
                f"optimizer's own knobs was searched, tied or fixed alike){leaders}."]
    lines = [convention_line(audit), "",
             "**Fairness: the arms did not have equal freedom over shared settings**, so the measured gap is not "
             "the hidden-matrix optimizer's alone:"]
    for p in audit.pairs:
        if p.equal:
            lines.append(f"- {p.arm_a} vs {p.arm_b}: equal freedom over shared settings.")
            continue
        if len(audit.pairs) > 1:
            lines.append(f"- {p.arm_a} vs {p.arm_b}:")
        lines += [_asymmetry_line(p, x) for x in p.asymmetries]
        if p.differences:
            who = "confirmed leaders" if p.leaders == "confirmed" else "current leaders"
            lines.append(f"- The {who} were trained with different shared settings:")
            lines += ["  " + _difference_line(p, d) for d in p.differences]
    return lines


def _arm_rows(f: ArmFreedom) -> list[list[str]]:
    return [[f.arm, k.knob, "own" if k.own else "shared", k.freedom, freedom_text(k)] for k in f.knobs]


def fairness_section(audit: Audit, statement: bool = True) -> list[str]:
    """The audit: the statement (unless it stands next to the verdict already), then per arm each knob
    searched, tied or fixed."""
    lines = ["What each arm was free to tune. A knob is *own* when only the arm's hidden-matrix optimizer reads "
             "it (Muon's momentum, Newton-Schulz steps and momentum schedule; each optimizer's LR of the hidden "
             "matrices); every other knob (the AdamW leg's LR, weight decay, betas, warmup, the LR schedule) is "
             "*shared* and should be equal, or equally free, in compared arms.", ""]
    if statement:
        lines += [*(verdict_lines(audit) or ["One arm: nothing compared."]), ""]
    rows = [row for f in audit.arms for row in _arm_rows(f)]
    lines += [table(["arm", "knob", "kind", "freedom", "how"], rows)]
    return lines


__all__ = ["fairness_section", "freedom_text", "verdict_lines"]
