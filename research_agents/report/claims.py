"""The words for the seeds' claims: analysis.claims judges each claim and returns data (its verdict,
comparisons, numbers, a code for what the run lacks); this module words it for the report's
"Seed claims" table and comparison_summary.json (`statistics`: how the run judged it, `details`: its
numbers, each comparison as report.words renders it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from research_agents.analysis.claims import ClaimResult, LRRanges, Missing
from research_agents.config import catalog
from research_agents.fmt import f4, fd, fp
from research_agents.report.words import comparison_json, comparison_summary

MISSING: dict[Missing, str] = {
    "muon and adamw runs": "it needs completed Muon and AdamW runs",
    "lr sweeps": "it needs LR sweeps of at least 3 learning rates for both optimizers (run -e lr_sweep)",
    "ns_steps pairs": ("it needs Muon runs that differ only in ns_steps, with 3 or 4 steps on one side and 5 or "
                       "more on the other"),
    "momentum values": "it needs Muon runs at two or more fixed momentum values",
    "momentum pairs": "no two Muon runs differ only in their momentum",
    "warmup pairs": ("it needs Muon runs that differ only in warmup_ratio, one of them 0 "
                     "(run -e muon_no_warmup muon_optimal)"),
    "schedule baseline": ("it needs the fixed 0.95 baseline and at least one warmup schedule with the same other "
                          "settings"),
    "svd entropy runs": "it needs Muon and AdamW runs with diagnostics.svd_entropy",
}


def _comparison(r: ClaimResult):
    assert r.comparison is not None, f"claim {r.claim} has no comparison"
    return r.comparison


def _pairs(r: ClaimResult):
    assert r.pairs is not None, f"claim {r.claim} has no paired runs"
    return r.pairs


def _ranges(r: ClaimResult) -> LRRanges:
    assert r.lr_ranges is not None, f"claim {r.claim} has no LR ranges"
    return r.lr_ranges


def _beats(r: ClaimResult) -> str:
    c, n = _comparison(r), r.configs
    rel = ""
    if c.diff is not None and c.mean_a:
        rel = f" (Muon's loss {abs(c.diff) / c.mean_a * 100:.2f}% {'lower' if c.diff < 0 else 'higher'} than Adam's)"
    text = f"Best Muon vs best Adam, paired by seed{rel}: {comparison_summary(c)}"
    if max(n.values()) > 1:
        text += (f" Each side is its best of {n['muon']} (Muon) and {n['adamw']} (Adam) configurations on "
                 "these same seeds, so both are optimistic.")
    return text


def _lr_range(r: ClaimResult) -> str:
    f = _ranges(r)
    m, a = f.muon, f.adamw
    lo, hi = f.interval
    text = (f"LRs within {f.margin:g} nats of each optimizer's best (mean over seeds): Muon [{m.lr_lo:.3g}, "
            f"{m.lr_hi:.3g}] = {m.width_ratio:.3g}x of a {max(m.lrs) / min(m.lrs):.3g}x sweep, Adam "
            f"[{a.lr_lo:.3g}, {a.lr_hi:.3g}] = {a.width_ratio:.3g}x of a {max(a.lrs) / min(a.lrs):.3g}x sweep; "
            f"Muon's range is {f.width_ratio:.3g}x as wide (seed-bootstrap 95% interval [{lo:.3g}, {hi:.3g}], "
            f"P(Muon wider) {f.p_wider:.2f}, P(at least 2x wider) {f.p_at_least_2x:.2f}; {f.n_boot} resamples of "
            f">= {f.n_seeds} seeds per LR). 'Agrees' needs >= 2x with P >= 0.95.")
    edges = [f"{label}'s range reaches the end of its sweep, so it may be wider than measured"
             for label, rng in (("Muon", m), ("Adam", a)) if rng.lo_at_edge or rng.hi_at_edge]
    if edges:
        text += " " + "; ".join(edges) + "."
    return text


def _effect(r: ClaimResult) -> str:
    p = _pairs(r)
    return (f"{p.n_pairs} pairs (runs identical but for this knob, same seed; {p.n_matched_groups} "
            f"matched configuration group(s)): {comparison_summary(_comparison(r))}")


def _as_good_as(r: ClaimResult) -> str:
    c, p, margin = _comparison(r), _pairs(r), r.equivalence_margin
    ci = ("no CI" if c.diff_ci_low is None else f"95% CI of the difference [{c.diff_ci_low:+.4f}, "
          f"{c.diff_ci_high:+.4f}] {'inside' if r.within_margin else 'not inside'} the equivalence margin "
          f"+-{margin:g} nats")
    return (f"{p.n_pairs} pairs ({p.n_matched_groups} matched group(s)): {comparison_summary(c)} {ci}. "
            "'As good as' = no evidence of a difference and the CI inside the margin (or fewer steps better).")


def _schedules(r: ClaimResult) -> str:
    lines = [f"{lab}: diff {fd(c.diff)} (95% CI {fd(c.diff_ci_low)}, {fd(c.diff_ci_high)}), paired t p_holm "
             f"{fp(c.p_adjusted)} -> {c.verdict}" for lab, c in r.comparisons.items()]
    return (f"Each of {len(r.comparisons)} warmup schedules vs {r.baseline}, paired by seed, Holm across schedules, "
            f"beyond the noise threshold {f4(r.noise_threshold)} (negative diff: the schedule has the lower "
            f"loss). Better: {', '.join(r.better) or 'none'}; worse: "
            f"{', '.join(r.worse) or 'none'}. " + "; ".join(lines) + ".")


def _entropy(r: ClaimResult) -> str:
    comps = list(r.comparisons.values())
    lines = [f"{c.name_b}: {f4(c.mean_b)} vs {f4(c.mean_a)} (diff {fd(c.diff)}, p_holm {fp(c.p_adjusted)})"
             for c in comps]
    return (f"Final mean SVD entropy (normalised, 1 = all directions equal) of each Muon configuration vs "
            f"{r.baseline}, paired by seed, Holm across {len(comps)}: higher in {len(r.better)}, lower in "
            f"{len(r.worse)}. " + "; ".join(lines) + ".")


def _lr_details(r: ClaimResult) -> dict[str, Any]:
    f = _ranges(r)
    return {"muon": f.muon.model_dump(mode="json"), "adamw": f.adamw.model_dump(mode="json"),
            "width_ratio_muon_over_adam": f.width_ratio, "bootstrap_interval": list(f.interval),
            "p_muon_wider": f.p_wider, "p_at_least_2x": f.p_at_least_2x}


def _effect_details(r: ClaimResult) -> dict[str, Any]:
    return {**_pairs(r).model_dump(mode="json"), "comparison": comparison_json(_comparison(r))}


# per claim: (its statistics in words, its details as comparison_summary.json shows them)
WORDS: dict[str, tuple[Callable[[ClaimResult], str], Callable[[ClaimResult], dict[str, Any]]]] = {
    "muon_beats_adam": (_beats, lambda r: {"comparison": comparison_json(_comparison(r))}),
    "muon_wider_lr_range": (_lr_range, _lr_details),
    "ns_3_4_as_good_as_5_plus": (_as_good_as, lambda r: {**_pairs(r).model_dump(mode="json"),
                                                        "equivalence_margin": r.equivalence_margin,
                                                        "comparison": comparison_json(_comparison(r))}),
    "lower_muon_momentum_better": (_effect, _effect_details),
    "warmup_helps_muon": (_effect, _effect_details),
    "momentum_warmup_helps_muon": (_schedules, lambda r: {
        "baseline": r.baseline, "better": r.better, "worse": r.worse,
        "comparisons": {lab: comparison_json(c) for lab, c in r.comparisons.items()}}),
    "muon_higher_svd_entropy": (_entropy, lambda r: {
        "baseline": r.baseline, "comparisons": [comparison_json(c) for c in r.comparisons.values()]}),
}
assert set(WORDS) == set(catalog.CLAIMS), "config.catalog.CLAIMS and report.claims disagree"


def claim_statistics(r: ClaimResult) -> str:
    """How this run judged the claim, with its numbers (or what the run lacks to test it)."""
    if r.missing is not None:
        return f"Not tested in this run: {MISSING[r.missing]}."
    return WORDS[r.claim][0](r)


def claim_details(r: ClaimResult) -> dict[str, Any]:
    """The numbers behind the verdict, each comparison with its limits and summary in words."""
    return {} if r.missing is not None else WORDS[r.claim][1](r)


def claim_json(r: ClaimResult) -> dict[str, Any]:
    """A claim's result as comparison_summary.json shows it."""
    return {"claim": r.claim, "seed_source": r.seed_source, "statement": r.statement, "verdict": r.verdict,
            "statistics": claim_statistics(r), "details": claim_details(r)}


__all__ = ["MISSING", "WORDS", "claim_statistics", "claim_details", "claim_json"]
