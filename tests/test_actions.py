"""actions.py, directly: each research action's validation against space, budget and history, its
slot cost and its expansion into runs."""

from __future__ import annotations

import pytest

from research_agents.actions import (
    DUPLICATE,
    Bracket,
    Confirm,
    Ledger,
    Proposal,
    Replicate,
    StopArm,
    Work,
    expand,
    search_runs,
    slots_left,
)
from research_agents.config.plan import Plan
from research_agents.config.space import config_id
from research_agents.config.study import Study
from research_agents.evidence import ArmEvidence, KnobEvidence
from research_agents.records import TrialRecord

LEADER = {"lr": 0.01}


def _study() -> Study:
    arm = {"space": {"lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}, "start": {"lr": 0.01}}
    return Study.model_validate({
        "name": "actions-test", "question": "q?", "preset": "tiny", "comparisons": [["a", "b"]],
        "seeds": {"search": [0, 1], "confirm": 3, "confirm_start": 1000},
        "arms": {"a": {**arm, "base": {"optimizer": "muon"}}, "b": {**arm, "base": {"optimizer": "adamw"}}},
    })


def _rec(i: int, arm: str, params: dict, seed: int, status: str = "completed") -> TrialRecord:
    return TrialRecord(id=i, order=i, arm=arm, params=params, seed=seed, origin="tpe", phase="search", round=1,
                       status=status, val_loss=3.0 if status == "completed" else None)


def _evidence(to_try=(0.005, 0.02)) -> dict[str, ArmEvidence]:
    knob = KnobEvidence(knob="lr", status="open both" if to_try else "bracketed", leader_value=0.01,
                        to_try=list(to_try))
    return {"a": ArmEvidence(arm="a", leader_config=config_id("a", LEADER), leader_params=LEADER, leader_mean=3.0,
                             knobs=[knob])}


def _ledger(need=None, search_left=None, history=None, evidence=None) -> Ledger:
    study = _study()
    history = [_rec(1, "a", LEADER, 0), _rec(2, "a", LEADER, 1)] if history is None else history
    return Ledger(study, history, _evidence() if evidence is None else evidence,
                  search_left={"a": 10, "b": 10} if search_left is None else search_left,
                  need={"a": 3, "b": 3} if need is None else need, seen={r.config for r in history},
                  runs={"a": 0, "b": 0}, plan=Plan(20, [1000, 1001, 1002], 14, {"a": 7, "b": 7}))


# ------------------------------------------------------------------ slot cost


def test_slot_cost_of_each_action():
    ev = _evidence()
    assert Proposal(arm="a", params={"lr": 0.05}, origin="llm").slots(ev, 2) == 1
    assert Replicate(arm="a", params=LEADER, seeds=1, origin="llm").slots(ev, 2) == 1
    assert Replicate(arm="a", params=LEADER, seeds=3, origin="llm").slots(ev, 2) == 2  # 2 seed sets
    assert Bracket(arm="a", knob="lr", origin="llm").slots(ev, 2) == 2  # one per missing neighbour
    assert Bracket(arm="a", knob="lr", origin="llm").slots(_evidence(to_try=[0.02]), 2) == 1
    assert Bracket(arm="a", knob="momentum", origin="llm").slots(ev, 2) == 1  # (rejected later)
    assert StopArm(arm="a", origin="llm").slots(ev, 2) == 0
    actions = [Bracket(arm="a", knob="lr", origin="llm"), StopArm(arm="b", origin="llm")]
    assert slots_left(ev, 2, {"a": 3, "b": 2}, actions) == {"a": 1}  # b stopped: no slots left


# ------------------------------------------------------------------ try


def test_a_try_expands_into_its_point_on_the_search_seeds():
    ledger = _ledger()
    [(work, why)] = expand(Proposal(arm="a", params={"lr": 0.03}, origin="tpe", rationale="r"), ledger)
    assert why is None and work == Work("a", {"lr": 0.03}, [0, 1], "tpe", "r")
    ledger.accept(work)
    assert ledger.need["a"] == 2 and ledger.runs["a"] == 2 and config_id("a", {"lr": 0.03}) in ledger.seen
    [(_, why)] = expand(Proposal(arm="a", params={"lr": 0.03}, origin="tpe"), ledger)
    assert why == DUPLICATE  # accepted earlier this round


def test_a_try_is_checked_against_space_arm_and_slots():
    ledger = _ledger(need={"a": 1, "b": 0})
    [(item, why)] = expand(Proposal(arm="a", params={"lr": 5.0}, origin="tpe"), ledger)
    assert "lr" in why and isinstance(item, Proposal)
    [(_, why)] = expand(Proposal(arm="a", params={"lr": 0.05, "beta": 1}, origin="tpe"), ledger)
    assert "beta: not a parameter" in why
    [(_, why)] = expand(Proposal(arm="a", params=LEADER, origin="tpe"), ledger)
    assert why == DUPLICATE  # in the history
    [(_, why)] = expand(Proposal(arm="c", params=LEADER, origin="tpe"), ledger)
    assert why == "unknown arm 'c'"
    [(_, why)] = expand(Proposal(arm="b", params={"lr": 0.05}, origin="tpe"), ledger)
    assert why == "arm 'b' needs no more proposals this round"
    # a grid's points were checked when the grid was built
    [(_, why)] = expand(Proposal(arm="a", params={"lr": 5.0}, origin="grid"), ledger)
    assert why is None


# ------------------------------------------------------------------ replicate


def test_a_replicate_takes_the_next_pool_seeds_within_the_runs_left():
    ledger = _ledger(search_left={"a": 3, "b": 10})
    ledger.runs["a"] = 1  # two runs left this round
    [(work, why)] = expand(Replicate(arm="a", params=LEADER, seeds=5, origin="policy"), ledger)
    assert why is None and work.kind == "replicate"
    assert work.seeds == [2, 3]  # the pool after the search seeds 0, 1; cut at the 2 runs left
    ledger.accept(work)
    assert ledger.need["a"] == 2 and ledger.runs["a"] == 3
    [(_, why)] = expand(Replicate(arm="a", params=LEADER, seeds=1, origin="policy"), ledger)
    assert why == "replicate: arm 'a' has no search runs left"


def test_a_replicate_needs_a_completed_run_to_repeat():
    ledger = _ledger(history=[_rec(1, "a", LEADER, 0, status="failed")])
    [(item, why)] = expand(Replicate(arm="a", params=LEADER, seeds=1, origin="policy"), ledger)
    assert why == "replicate: no completed run of this configuration to repeat"
    assert isinstance(item, Proposal) and item.params == LEADER  # recorded as the point it names


# ------------------------------------------------------------------ bracket


def test_a_bracket_expands_into_the_missing_neighbours_each_checked():
    study_seen = config_id("a", {"lr": 0.005})
    ledger = _ledger()
    ledger.seen.add(study_seen)
    out = expand(Bracket(arm="a", knob="lr", origin="llm", rationale="why"), ledger)
    assert [(type(i).__name__, i.params, why) for i, why in out] == [
        ("Proposal", {"lr": 0.005}, DUPLICATE), ("Work", {"lr": 0.02}, None)]
    assert out[1][0].rationale == "bracket lr (open both): why"


def test_a_bracket_of_a_settled_or_unknown_knob_is_rejected():
    ledger = _ledger(evidence=_evidence(to_try=[]))
    [(item, why)] = expand(Bracket(arm="a", knob="lr", origin="llm"), ledger)
    assert why == "lr is already bracketed: nothing to bracket" and item.params == {"knob": "lr"}
    [(_, why)] = expand(Bracket(arm="a", knob="ns_steps", origin="llm"), _ledger())
    assert why == "'ns_steps' is not a searched knob of arm 'a'"


# ------------------------------------------------------------------ stop, and the round's runs


def test_a_stop_is_accepted_whatever_the_slots_and_ends_the_arm():
    ledger = _ledger(need={"a": 0, "b": 1})
    [(item, why)] = expand(StopArm(arm="a", origin="policy"), ledger)
    assert why is None and isinstance(item, StopArm)
    ledger.accept(item)
    assert ledger.stopped == {"a"}


def test_search_runs_are_cut_at_each_arms_allowance():
    work = [Work("a", {"lr": 0.02}, [0, 1], "tpe"), Work("a", {"lr": 0.03}, [0, 1], "tpe"),
            Work("b", {"lr": 0.02}, [5, 6], "tpe", kind="replicate")]
    runs = search_runs(work, {"a": 3, "b": 0}, round_no=4)
    assert [(r.arm, r.params["lr"], r.seed, r.round, r.phase) for r in runs] == [
        ("a", 0.02, 0, 4, "search"), ("a", 0.02, 1, 4, "search"), ("a", 0.03, 0, 4, "search")]


def test_confirm_interleaves_leaders_by_seed_skips_done_and_stops_at_the_budget():
    confirm = Confirm({"a": [{"lr": 0.01}], "b": [{"lr": 0.02}]}, [1000, 1001],
                      done={(config_id("a", {"lr": 0.01}), 1000)})
    runs = confirm.runs(round_no=7, budget_left=10)
    assert [(r.arm, r.seed) for r in runs] == [("b", 1000), ("a", 1001), ("b", 1001)]
    assert all(r.phase == "confirm" and r.origin == "confirm" and r.round == 7 for r in runs)
    assert [(r.arm, r.seed) for r in confirm.runs(7, budget_left=2)] == [("b", 1000), ("a", 1001)]
    assert confirm.runs(7, budget_left=-1) == []


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
