"""budget.py and the plan's split, directly: one share-rounding rule, the paired-t confirmation size,
the adaptive search allowance, the round's slots and the replicate seed pool."""

from __future__ import annotations

import pytest

from research_agents import budget
from research_agents.config.plan import Plan, make_plan, split_shares
from research_agents.config.study import Study
from research_agents.evidence import ArmEvidence
from research_agents.records import TrialRecord


def _study(shares=(1.0, 1.0), search=(0,), confirm=5, per_round=4) -> Study:
    arm = {"space": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}, "start": {"lr": 0.01}}
    return Study.model_validate({
        "name": "budget-test", "question": "q?", "preset": "tiny", "comparisons": [["a", "b"]],
        "seeds": {"search": list(search), "confirm": confirm, "confirm_start": 1000},
        "planner": {"trials_per_round": per_round},
        "arms": {"a": {**arm, "base": {"optimizer": "muon"}, "share": shares[0]},
                 "b": {**arm, "base": {"optimizer": "adamw"}, "share": shares[1]}},
    })


def _rec(i: int, arm: str, lr: float, seed: int, loss: float | None, phase: str = "search",
         status: str = "completed") -> TrialRecord:
    return TrialRecord(id=i, order=i, arm=arm, params={"lr": lr}, seed=seed, origin="tpe", phase=phase, round=1,
                       status=status, val_loss=loss)


def _ev(arm: str, mean: float | None, threshold: float | None) -> ArmEvidence:
    return ArmEvidence(arm=arm, leader_config="x" if mean is not None else None, leader_mean=mean,
                       threshold=threshold)


# ------------------------------------------------------------------ one share-rounding rule


def test_split_shares_rounds_down_and_hands_the_remainder_to_the_first_arms():
    assert split_shares(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert split_shares(7, {"a": 1, "b": 2}) == {"a": 3, "b": 4}  # 2.33 -> 2 (+1), 4.67 -> 4
    assert split_shares(0, {"a": 1, "b": 1}) == {"a": 0, "b": 0}
    for n in range(0, 40):
        assert sum(split_shares(n, {"a": 1.0, "b": 3.0, "c": 0.5}).values()) == n


def test_make_plan_and_the_adaptive_allowance_split_alike():
    study = _study(shares=(1.0, 2.0))
    plan = make_plan(study, 31)
    assert plan.search_share == split_shares(plan.search_budget, {"a": 1.0, "b": 2.0})
    adaptive = Plan(plan.budget, plan.confirm_seeds, plan.search_budget, plan.search_share, adaptive=True)
    # nothing measured: the full reserve (2 arms x 1 leader x 5 seeds), the rest split by the same rule
    assert budget.search_allowance(study, adaptive, [], {}) == split_shares(31 - 10, {"a": 1.0, "b": 2.0})


# ------------------------------------------------------------------ the confirmation's size


def test_paired_t_size_is_the_normal_approximation():
    # ((1.96 + 0.84) * sqrt(2) * sd / gap)^2 = 15.68 (sd/gap)^2, rounded up
    assert budget.paired_t_size(1.0, 1.0) == 16
    assert budget.paired_t_size(0.01, 0.02) == 4
    assert budget.paired_t_size(0.01, 0.1) == 1


def test_confirm_count_follows_the_measured_noise_within_its_bounds():
    study = _study()
    plan = make_plan(study, 40, adaptive=True)
    assert len(plan.confirm_seeds) == 5
    far = {"a": _ev("a", 3.0, 0.02), "b": _ev("b", 3.5, 0.02)}  # sd 0.01, gap 0.5: 1 seed -> at least 3
    assert budget.confirm_count(plan, far) == budget.MIN_CONFIRM
    close = {"a": _ev("a", 3.0, 0.02), "b": _ev("b", 3.012, 0.02)}  # sd 0.01, gap 0.012: 11 -> at most 5
    assert budget.confirm_count(plan, close) == 5
    mid = {"a": _ev("a", 3.0, 0.02), "b": _ev("b", 3.0125, 0.02)}  # 15.68 * (0.8)^2 = 10.04 -> 11, capped
    assert budget.confirm_count(plan, mid) == 5
    four = {"a": _ev("a", 3.0, 0.02), "b": _ev("b", 3.02, 0.02)}  # 15.68 / 4 = 3.92 -> 4
    assert budget.confirm_count(plan, four) == 4
    # an arm without a noise estimate is assumed 3x noisier: 9 x 3.92 -> capped at 5
    assert budget.confirm_count(plan, {"a": _ev("a", 3.0, 0.02), "b": _ev("b", 3.02, None)}) == 5
    assert budget.confirm_count(plan, {"a": _ev("a", 3.0, None), "b": _ev("b", 3.5, None)}) == 5  # not measured
    assert budget.confirm_count(plan, {"a": _ev("a", 3.0, 0.02)}) == 5  # one arm: nothing to tell apart
    fixed = make_plan(study, 40, adaptive=False)
    assert budget.confirm_count(fixed, far) == 5  # a fixed plan keeps its seeds
    assert budget.confirm_seeds(plan, four) == plan.confirm_seeds[:4]


# ------------------------------------------------------------------ the search allowance


def test_the_adaptive_allowance_reserves_what_confirming_the_leaders_still_costs():
    study = _study()
    plan = make_plan(study, 40, adaptive=True)
    seeds = plan.confirm_seeds[:3]
    far = {"a": _ev("a", 3.0, 0.02), "b": _ev("b", 3.5, 0.02)}  # 3 confirmation seeds
    records = [_rec(1, "a", 0.01, 0, 3.0), _rec(2, "b", 0.01, 0, 3.5)]
    assert budget.search_allowance(study, plan, records, far) == {"a": 17, "b": 17}  # 40 - 2 x 3
    # a confirmation run made of the current leader costs nothing more to reserve
    records.append(_rec(3, "a", 0.01, seeds[0], 3.0, phase="confirm"))
    assert budget.search_allowance(study, plan, records, far) == {"a": 17, "b": 17}  # 40 - 1 made - 5 left
    # one made for a config that is no longer the leader is spent and not part of the reserve
    records.append(_rec(4, "b", 0.02, seeds[0], 3.9, phase="confirm"))
    assert budget.search_allowance(study, plan, records, far) == {"a": 17, "b": 16}  # 40 - 2 - 5 = 33
    fixed = make_plan(study, 40)
    assert budget.search_allowance(study, fixed, records, far) == fixed.search_share


def test_runs_stopped_early_cost_their_share_when_the_swap_reserve_is_weighed():
    """The swap reserve goes back to the search only when the search made no longer leaves room for
    it; a run stopped early at a rung counts its share there, as in every other sum of the budget."""
    study = _study()
    plan = make_plan(study, 32, adaptive=True, swap_pairs=[("b", "a")])
    far = {"a": _ev("a", 3.0, 0.02), "b": _ev("b", 3.5, 0.02)}  # 3 confirmation seeds, 6 swap runs
    records = [_rec(i, "ab"[i % 2], 0.01 + i / 1000, 0, 3.0 + i / 100) for i in range(1, 18)]
    records += [_rec(i, "a", 0.05 + i / 1000, 0, 5.0, status="stopped").model_copy(update={"fraction": 0.25})
                for i in range(18, 22)]
    # 17 full runs and 4 stopped at a quarter cost 18 runs: 32 - 6 to confirm - 18 leaves the 6 swaps
    assert budget.search_allowance(study, plan, records, far, [("b", "a")]) == {"a": 10, "b": 10}
    # counted as whole runs (21) they would not fit, and the swaps' 6 runs would go to the search
    full = [r.model_copy(update={"status": "completed", "fraction": None}) for r in records]
    assert budget.search_allowance(study, plan, full, far, [("b", "a")]) == {"a": 13, "b": 13}


def test_round_slots_go_round_robin_in_search_seed_sets():
    study = _study(search=(0, 1), per_round=6)  # 3 sets of 2 seeds a round
    assert budget.round_slots(study, {"a": 10, "b": 10}) == {"a": 2, "b": 1}
    assert budget.round_slots(study, {"a": 1, "b": 10}) == {"a": 0, "b": 3}  # 1 run is not a seed set
    assert budget.round_slots(study, {"a": 0, "b": -3}) == {"a": 0, "b": 0}


# ------------------------------------------------------------------ replicate seeds


def test_replicate_seeds_are_one_pool_that_skips_search_confirm_and_taken_seeds():
    study = _study(search=(0, 2))
    plan = Plan(40, [3, 5], 30, {"a": 15, "b": 15})
    assert budget.replicate_seeds(study, plan, [], "a", {"lr": 0.01}, 3) == [4, 6, 7]
    records = [_rec(1, "a", 0.01, 4, 3.0), _rec(2, "a", 0.01, 6, None, status="interrupted"),
               _rec(3, "b", 0.01, 7, 3.0)]
    # seed 4 is taken by this config; an interrupted run spent nothing; another config's seed is no matter
    assert budget.replicate_seeds(study, plan, records, "a", {"lr": 0.01}, 3) == [6, 7, 8]


def test_leaders_are_the_best_completed_search_configs():
    study = _study()
    records = [_rec(1, "a", 0.01, 0, 3.2), _rec(2, "a", 0.02, 0, 3.1), _rec(3, "a", 0.04, 0, None, status="failed"),
               _rec(4, "a", 0.03, 1000, 2.0, phase="confirm"), _rec(5, "b", 0.01, 0, 1.0)]
    assert budget.leaders(study, records, "a") == [{"lr": 0.02}]
    assert budget.confirmed(records) == {(records[3].config, 1000)}


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
