"""The 2x2 decomposition of a leaders' gap (analysis/stats/decompose.py and findings): planted
optimizer, shared-settings and interaction effects are recovered, from numbers and from trial records."""

from __future__ import annotations

import math

import pytest

from research_agents.analysis.findings import analyze
from research_agents.analysis.stats import decompose
from research_agents.config import load_study, make_plan
from research_agents.records import SwapOf, TrialRecord
from tests.test_swap import DEFAULT_STUDY

SEEDS = [1000, 1001, 1002, 1003, 1004, 1005]  # 6 pairs: a rank test can reach p < 0.05
NOISE = {
    1000: 0.03,
    1001: -0.02,
    1002: 0.01,
    1003: -0.04,
    1004: 0.02,
    1005: 0.0,
}  # shared by every cell of a seed (paired)
JITTER = {("A", 1000): 0.004, ("B", 1001): -0.003, ("A'", 1002): 0.002, ("B'", 1003): -0.005, ("A", 1004): 0.001}


def planted(opt: float, shared: float, inter: float) -> dict[str, dict[int, float]]:
    """Cells of a 2x2 with these effects (a's optimizer - b's; a's settings - b's; interaction),
    a seed noise every cell of a seed shares and a little noise of each run."""
    base = 4.0
    mean = {"A": base + opt / 2 + shared / 2 + inter / 2, "A'": base + opt / 2 - shared / 2 - inter / 2,
            "B'": base - opt / 2 + shared / 2 - inter / 2, "B": base - opt / 2 - shared / 2 + inter / 2}
    return {k: {s: mean[k] + NOISE[s] + JITTER.get((k, s), 0.0) for s in SEEDS} for k in mean}


@pytest.mark.parametrize("opt,shared,inter", [(0.30, 0.10, 0.02), (-0.20, 0.25, -0.05), (0.0, -0.4, 0.1)])
def test_planted_effects_are_recovered(opt, shared, inter):
    d = decompose(planted(opt, shared, inter))
    assert d.seeds == SEEDS
    assert d.optimizer.mean == pytest.approx(opt, abs=0.006)
    assert d.shared.mean == pytest.approx(shared, abs=0.006)
    assert d.interaction.mean == pytest.approx(inter, abs=0.006)
    assert d.optimizer.mean + d.shared.mean == pytest.approx(d.gap.mean, abs=1e-12)  # exactly the raw gap
    for e in (d.optimizer, d.shared, d.interaction, d.gap):
        assert e.n == 6 and e.ci_low < e.mean < e.ci_high and e.ci_high - e.ci_low < 0.03
    assert d.shared.p < 0.001  # a planted effect far from 0 is significant


def test_only_seeds_in_all_four_cells_count_and_t_interval():
    cells = planted(0.3, 0.1, 0.0)
    del cells["B'"][1004]
    cells["A'"][1003] = float("nan")  # a diverged run
    d = decompose(cells)
    assert d.seeds == [1000, 1001, 1002, 1005]
    xs = [((cells["A"][s] - cells["B'"][s]) + (cells["A'"][s] - cells["B"][s])) / 2 for s in d.seeds]
    m = sum(xs) / 4
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / 3)
    half = 3.182446305284263 * sd / math.sqrt(4)  # scipy.stats.t.ppf(0.975, 3)
    assert d.optimizer.ci_low == pytest.approx(m - half) and d.optimizer.ci_high == pytest.approx(m + half)
    assert decompose({"A": {1: 1.0}, "B": {1: 2.0}, "A'": {}, "B'": {1: 1.0}}).optimizer.mean is None


def _rec(i: int, arm: str, params: dict, seed: int, phase: str, loss: float, swap: SwapOf | None = None) -> TrialRecord:
    return TrialRecord(id=i, order=i, arm=arm, params=params, seed=seed, origin="confirm" if phase != "search"
                       else "default", phase=phase, round=1, status="completed", val_loss=loss, swap=swap)


def test_findings_decompose_planted_records():
    """From trial records: the confirmation runs are A and B, the swap runs of these leaders A' and B';
    swap runs never enter the ranking, the leaders or the confirmation statistics."""
    study = load_study(DEFAULT_STUDY)
    pa = {"lr": 0.003, "adamw_lr": 0.01}
    pb = {"lr": 0.08, "adamw_lr": 0.03, "momentum": 0.95, "momentum_schedule.kind": "fixed", "ns_steps": 5}
    cells = planted(0.45, 0.12, 0.03)  # a = adamw (arm_a of the study's comparison), b = muon
    recs = [_rec(1, "adamw", pa, 0, "search", cells["A"][1005]), _rec(2, "muon", pb, 0, "search", cells["B"][1005])]
    for s in SEEDS:
        recs += [_rec(len(recs) + 1, "adamw", pa, s, "confirm", cells["A"][s]),
                 _rec(len(recs) + 2, "muon", pb, s, "confirm", cells["B"][s])]
    for s in SEEDS:
        recs += [_rec(len(recs) + 1, "adamw", pa, s, "swap", cells["A'"][s],
                      SwapOf(pair=("adamw", "muon"), settings={"adamw_lr": 0.03})),
                 _rec(len(recs) + 2, "muon", pb, s, "swap", cells["B'"][s],
                      SwapOf(pair=("adamw", "muon"), settings={"adamw_lr": 0.01}))]
    fnd = analyze(study, recs, make_plan(study, 40, adaptive=True))
    (d,) = fnd.decompositions
    assert (d.arm_a, d.arm_b, d.status) == ("adamw", "muon", "measured")
    assert d.settings_a == {"adamw_lr": 0.03} and d.settings_b == {"adamw_lr": 0.01}
    x = d.decomposition
    assert x.optimizer.mean == pytest.approx(0.45, abs=0.006)
    assert x.shared.mean == pytest.approx(0.12, abs=0.006)
    assert x.interaction.mean == pytest.approx(0.03, abs=0.006)
    # the swap runs are not in the leaders' confirmed means nor anywhere in the ranking
    conf = {c.arm: c.confirm_summary.mean for c in fnd.configs if c.confirm_summary is not None}
    assert conf["adamw"] == pytest.approx(sum(cells["A"].values()) / 6)
    assert all("swap" not in c.phases for c in fnd.configs)
    assert fnd.comparisons[0].comparison.n_pairs == 6
    # the winner (muon) is better by the optimizer effect, signed as its advantage
    (h,) = fnd.recommendation.how_much
    assert (h.arm, h.versus, h.status) == ("muon", "adamw", "measured")
    assert h.optimizer.mean == pytest.approx(0.45, abs=0.006) and h.optimizer.ci_low > 0
    assert fnd.budget.by_phase["swap"] == 12


def test_without_swap_runs_the_status_says_what_was_measured():
    study = load_study(DEFAULT_STUDY)
    pa = {"lr": 0.003, "adamw_lr": 0.01}
    pb = {"lr": 0.08, "adamw_lr": 0.03, "momentum": 0.95, "momentum_schedule.kind": "fixed", "ns_steps": 5}
    recs = []
    for s in SEEDS:
        recs += [_rec(len(recs) + 1, "adamw", pa, s, "confirm", 5.0 + NOISE[s]),
                 _rec(len(recs) + 2, "muon", pb, s, "confirm", 4.5 + NOISE[s] + JITTER.get(("B", s), 0))]
    (d,) = analyze(study, recs, make_plan(study, 40, adaptive=True)).decompositions
    assert d.status == "no swap runs" and d.settings_a == {"adamw_lr": 0.03}
    same = [r.model_copy(update={"params": {**pb, "adamw_lr": 0.01}}) if r.arm == "muon" else r for r in recs]
    fnd = analyze(study, same, make_plan(study, 40, adaptive=True))
    assert fnd.decompositions[0].status == "not needed"
    assert fnd.recommendation.how_much[0].status == "not needed"
