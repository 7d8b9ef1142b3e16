"""The words for where a gap comes from: the final report's "Where the gap comes from" section
(the 2x2 of cell means, the optimizer, shared-settings and interaction effects with their CIs, one
plain sentence), the recommendation's "by how much", summary.json's `decomposition` and the
console's line on the swaps the budget holds. The numbers come from analysis (stats/decompose.py,
findings, recommendation); nothing here computes.
"""

from __future__ import annotations

from typing import Any

from research_agents.analysis.models import Findings, HowMuch, PairDecomposition, Recommendation
from research_agents.analysis.stats import Effect
from research_agents.config.plan import Plan
from research_agents.fmt import f4, fd, fmt_value, fp, table

HEADING = "Where the gap comes from"


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in settings.items()) or "none"


def effect_text(e: Effect | None) -> str:
    """`+0.1234 nats (95% CI [+0.1000, +0.1500], n=3, p 0.004)`."""
    if e is None or e.mean is None:
        return "not measured"
    ci = f"95% CI [{fd(e.ci_low)}, {fd(e.ci_high)}]" if e.ci_low is not None else "no CI"
    return f"{fd(e.mean)} nats ({ci}, n={e.n}, p {fp(e.p)})"


def _excludes_zero(e: Effect) -> bool:
    return e.ci_low is not None and e.ci_high is not None and (e.ci_low > 0 or e.ci_high < 0)


def _sentence(d: PairDecomposition) -> str:
    x = d.decomposition
    a, b = d.arm_a, d.arm_b
    if x is None or x.optimizer.mean is None or x.shared.mean is None:
        return (f"No seed has a completed run in all four cells, so the gap between {a} and {b} cannot be "
                "decomposed.")
    opt, shared = x.optimizer.mean, x.shared.mean
    ahead = b if opt > 0 else a
    part = (f"With the shared settings held fixed, {ahead}'s optimizer is ahead by {abs(opt):.4f} nats"
            + ("" if _excludes_zero(x.optimizer) else " (its CI includes 0: not distinguishable from no effect)"))
    total = x.gap.mean
    share = (f"; of the raw gap ({a} - {b}) of {total:+.4f} nats, the optimizer accounts for {opt:+.4f} "
             f"and the shared settings for {shared:+.4f}" if total is not None else "")
    inter = ("" if not _excludes_zero(x.interaction) else
             f"; the optimizer effect depends on the settings (interaction {x.interaction.mean:+.4f})")
    return f"{part}{share}{inter}."


def pair_lines(d: PairDecomposition) -> list[str]:
    """One pair: its 2x2 (what each cell trained) and effects, or why there is none."""
    a, b = d.arm_a, d.arm_b
    if d.status == "not needed":
        return [f"{b} vs {a}: the confirmed leaders share every shared setting, so their gap is all optimizer "
                "(no swap runs needed)."]
    if d.status == "no swap runs":
        return [f"{b} vs {a}: the confirmed leaders differ in shared settings ({_settings(d.settings_b)} for "
                f"{a}; {_settings(d.settings_a)} for {b}) and no swap runs were made, so the measured gap "
                "includes those settings: it is not the optimizer's alone."]
    x = d.decomposition
    cells = x.cells if x is not None else {}
    rows = [[f"{a}'s leader", f4(cells.get("A")), f4(cells.get("A'"))],
            [f"{b}'s leader", f4(cells.get("B'")), f4(cells.get("B"))]]
    lines = [f"{b} vs {a}: each confirmed leader re-run with the other's shared settings (swap runs) on the "
             f"confirmation seeds {x.seeds if x is not None else []}. {a}'s settings: {_settings(d.settings_b)}; "
             f"{b}'s settings: {_settings(d.settings_a)}. Mean val loss per cell:", "",
             table(["", f"with {a}'s settings", f"with {b}'s settings"], rows), ""]
    if x is not None:
        lines += [f"- raw gap ({a} - {b}): {effect_text(x.gap)}",
                  f"- optimizer effect ({a}'s optimizer - {b}'s, settings held fixed): {effect_text(x.optimizer)}",
                  f"- shared-settings effect ({a}'s settings - {b}'s, optimizer held fixed): {effect_text(x.shared)}",
                  f"- interaction: {effect_text(x.interaction)}", ""]
    return [*lines, _sentence(d)]


def decomposition_section(fnd: Findings) -> list[str]:
    """The final report's section (nothing when no compared pair has both leaders confirmed)."""
    lines: list[str] = []
    for i, d in enumerate(fnd.decompositions):
        lines += ([""] if i else []) + pair_lines(d)
    return lines


def how_much_text(h: HowMuch) -> str:
    """The recommendation's "by how much" against one beaten arm."""
    if h.status == "measured" and h.optimizer is not None and h.optimizer.mean is not None:
        return (f"By how much: the optimizer effect (shared settings held fixed by swap runs) is "
                f"{effect_text(h.optimizer)} in {h.arm}'s favour over {h.versus}; of the measured gap of "
                f"{f4(h.gap)} nats, the shared settings ({', '.join(h.settings)}) account for "
                f"{effect_text(h.shared)}.")
    if h.status == "not needed":
        return (f"By how much: {f4(h.gap)} nats over {h.versus}, all of it the optimizer (the confirmed leaders share "
                "every shared setting).")
    return (f"By how much: {f4(h.gap)} nats over {h.versus} as measured; the gap includes shared settings "
            f"({', '.join(h.settings) or 'none'}) in which the leaders differ; no swap runs separated them "
            "from the optimizer.")


def how_much_lines(rec: Recommendation) -> str:
    """Every beaten arm's "by how much", one sentence each ("" when there is none)."""
    return " ".join(how_much_text(h) for h in rec.how_much)


def decomposition_json(fnd: Findings) -> list[dict[str, Any]]:
    """summary.json's `decomposition`: per pair, its status, the swapped settings, each cell's mean,
    the raw gap and each effect's mean, CI, n and p."""
    out = []
    for d in fnd.decompositions:
        entry: dict[str, Any] = {"arm_a": d.arm_a, "arm_b": d.arm_b, "status": d.status,
                                 "settings_a": d.settings_a, "settings_b": d.settings_b}
        if d.decomposition is not None:
            x = d.decomposition
            entry["seeds"] = x.seeds
            entry["cells"] = x.cells
            for name in ("gap", "optimizer", "shared", "interaction"):
                e: Effect = getattr(x, name)
                entry[name] = {"mean": e.mean, "ci": [e.ci_low, e.ci_high], "n": e.n, "p": e.p}
        out.append(entry)
    return out


def swap_plan_text(plan: Plan) -> str:
    """The console's line on the swaps the plan holds runs for."""
    pairs = ", ".join(f"{a}/{b}" for a, b in plan.swap_pairs)
    return (f"swaps: after confirmation, each confirmed leader of {pairs} is re-run with the other's shared "
            f"settings on the confirmation seeds (2 runs per pair and seed, {plan.swap_reserve()} at most, held "
            "back from the search) when the leaders differ in them")


__all__ = ["HEADING", "decomposition_json", "decomposition_section", "effect_text", "how_much_lines",
           "how_much_text", "pair_lines", "swap_plan_text"]
