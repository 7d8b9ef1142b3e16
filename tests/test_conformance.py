"""One conformance suite per interface: every store, executor and planner passes the same tests.

A new implementation joins by adding itself to the list of its interface's fixture.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from research_agents.actions import Proposal, Replicate
from research_agents.analysis.tuning import tuning_evidence
from research_agents.config import load_study, validate_params
from research_agents.execution import BaseExecutor, LocalExecutor, Outcome
from research_agents.planners import GridPlanner, SamplerPlanner, study_points
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.planners.hybrid import HybridPlanner
from research_agents.planners.llm import LLMPlanner
from research_agents.planners.llm_client import LLMConfig
from research_agents.planners.policy import PolicyPlanner
from research_agents.planners.queued import QueuedPlanner
from research_agents.records import TrialMetrics, TrialRecord
from research_agents.store import BaseStore, OptunaStore
from tests.openai_stub import StubLLM, batch

# ------------------------------------------------------------------------------ stores


def _optuna_file(tmp_path, study):
    return OptunaStore.for_study(tmp_path / "run", study)


def _optuna_url(tmp_path, study):
    return OptunaStore.for_study(tmp_path / "run", study, url=f"sqlite:///{tmp_path / 'elsewhere.db'}")


def _optuna_postgresql(tmp_path, study, url):  # a real server the tests start (tests/postgres.py)
    return OptunaStore.for_study(tmp_path / "run", study, url=url)


def _optuna_one_write_each(tmp_path, study, monkeypatch):  # Optuna's public API only: an Optuna without its models
    without_models(monkeypatch)
    store = OptunaStore.for_study(tmp_path / "run", study)
    assert not store.batched
    return store


def without_models(monkeypatch) -> None:
    """An Optuna whose private SQLAlchemy models (optuna.storages._rdb.models, which the batched
    writes use) are gone: the store must notice and keep to the public API, which any use of a
    model would break (Optuna's own RDBStorage keeps the models it imported)."""
    import types

    import optuna.storages._rdb as rdb

    from research_agents.store import optuna as optuna_store

    monkeypatch.setattr(rdb, "models", types.ModuleType("models"))  # every attribute: AttributeError
    monkeypatch.setattr(optuna_store, "_BATCHED", optuna_store._batches())


STORES = {"optuna-sqlite-in-run-dir": _optuna_file, "optuna-sqlalchemy-url": _optuna_url,
          "optuna-postgresql": _optuna_postgresql, "optuna-one-write-each": _optuna_one_write_each}
NEEDS = {"optuna-postgresql": "postgres_url", "optuna-one-write-each": "monkeypatch"}  # fixtures a store needs


@pytest.fixture(params=list(STORES))
def store(request, tmp_path, fast_study) -> BaseStore:
    extra = [request.getfixturevalue(NEEDS[request.param])] if request.param in NEEDS else []
    return STORES[request.param](tmp_path, load_study(fast_study), *extra)


def _metrics(loss: float | None, status: str = "completed") -> TrialMetrics:
    return TrialMetrics.model_validate({"spec": {}, "status": status, "final": {"val_loss": loss, "train_loss": loss},
                                        "optimizer_steps": 12, "tokens_seen": 3072, "wall_time_s": 0.5})


def test_store_round_trips_a_trial(store):
    r = store.start("muon", {"lr": 0.02, "ns_steps": 3}, 7, "tpe", "search", 1, "why", "trials/0001")
    assert (r.status, r.order, r.seed, r.params) == ("running", 1, 7, {"lr": 0.02, "ns_steps": 3})
    done = store.finish(r, "completed", _metrics(4.25), None)
    assert done.status == "completed" and done.val_loss == 4.25 and done.tokens_seen == 3072
    [back] = store.records()
    assert back.model_dump() == done.model_dump()


def test_store_persists_the_named_point_and_the_forecast_as_fields(store):
    """point and expected are written by start, kept apart from the rationale and read back by
    another driver (from the database), not parsed out of the rationale."""
    p = store.start("muon", {"lr": 0.02}, 0, "grid", "search", 1, "", "a", point="fixed_095")
    e = store.start("muon", {"lr": 0.03}, 0, "llm", "search", 1, "bold", "b", expected="4.9")
    n = store.start("muon", {"lr": 0.04}, 0, "llm", "search", 1, "point: not a point [expected: 1]", "c")
    store.finish(p, "completed", _metrics(4.25), None)
    back = {r.run_dir: r for r in _another_driver(store).records()}
    assert (back["a"].point, back["a"].expected, back["a"].rationale) == ("fixed_095", None, "")
    assert (back["b"].point, back["b"].expected, back["b"].rationale) == (None, "4.9", "bold")
    assert (back["c"].point, back["c"].expected) == (None, None)  # a new record's rationale is only text
    assert [back[d].shown_rationale for d in "abc"] == ["point: fixed_095", "bold [expected: 4.9]",
                                                        "point: not a point [expected: 1]"]
    assert [back[r.run_dir].model_dump() for r in (p, e, n)][1:] == [e.model_dump(), n.model_dump()]


def test_store_orders_trials_across_arms_and_counts_spent_budget(store):
    a = store.start("muon", {"lr": 0.02}, 0, "default", "search", 1, "", "a")
    b = store.start("adamw", {"lr": 0.003}, 0, "default", "search", 1, "", "b")
    c = store.start("adamw", {"lr": 0.003}, 1000, "confirm", "confirm", 2, "", "c")
    store.finish(a, "diverged", _metrics(None, "diverged"), "loss 16 at step 3")
    store.finish(b, "completed", _metrics(4.5), None)
    store.finish(c, "interrupted", None, "Ctrl-C")
    assert [r.order for r in store.records()] == [1, 2, 3]
    assert [r.arm for r in store.records()] == ["muon", "adamw", "adamw"]
    assert store.spent() == 2 and store.spent("search") == 2 and store.spent("confirm") == 0
    assert store.spent(arm="adamw") == 1


def test_store_non_finite_losses_become_none(store):
    r = store.start("muon", {"lr": 0.02}, 0, "tpe", "search", 1, "", "a")
    done = store.finish(r, "diverged", _metrics(math.nan, "diverged"), "nan")
    assert done.val_loss is None and store.records()[0].val_loss is None


def test_store_recover_marks_running_trials_interrupted(store):
    r = store.start("muon", {"lr": 0.02}, 0, "tpe", "search", 1, "", "a")
    stale = store.recover()
    assert [s.id for s in stale] == [r.id]
    assert store.records()[0].status == "interrupted" and store.recover() == []


def test_store_metadata_is_json_and_appends(store):
    assert store.get_meta("nothing", "default") == "default"
    store.set_meta("llm", {"model": "m", "n": 1})
    store.append_meta("rejections", [{"reason": "a"}])
    store.append_meta("rejections", [{"reason": "b"}])
    assert store.get_meta("llm") == {"model": "m", "n": 1}
    assert [x["reason"] for x in store.get_meta("rejections")] == ["a", "b"]


def _another_driver(store: BaseStore) -> BaseStore:
    """A second store object on the same database, as another driver of the study opens it."""
    return type(store)(store.url, next(iter(store.studies.values())).study_name.rsplit(":", 1)[0], store.spaces)


def test_store_two_drivers_see_one_study(store):
    """What one driver writes the other reads at once; trials are numbered across both."""
    other = _another_driver(store)
    a = store.start("muon", {"lr": 0.02}, 0, "tpe", "search", 1, "", "a")
    assert [(r.id, r.status) for r in other.records()] == [(a.id, "running")]
    b = other.start("adamw", {"lr": 0.003}, 0, "tpe", "search", 1, "", "b")
    assert [r.order for r in store.records()] == [1, 2] and b.order == 2
    other.finish(b, "completed", _metrics(4.5), None)
    assert [r.status for r in store.records()] == ["running", "completed"] and store.records()[1].val_loss == 4.5
    store.finish(a, "diverged", _metrics(None, "diverged"), "loss 16")
    c = store.start("adamw", {"lr": 0.01}, 1, "tpe", "search", 2, "", "c")
    assert [(r.order, r.status) for r in other.records()] == [(1, "diverged"), (2, "completed"), (3, "running")]
    assert [r.model_dump() for r in other.records()] == [r.model_dump() for r in store.records()]
    assert other.spent() == store.spent() == 2 and c.order == 3
    other.set_meta("planner", {"round": 2})
    assert store.get_meta("planner") == {"round": 2}


def test_store_records_are_what_a_fresh_open_reads(store):
    """The records a store keeps in memory are exactly what opening the database anew reads."""
    r = store.start("muon", {"lr": 0.02, "ns_steps": 3}, 7, "tpe", "search", 1, "why", "trials/0001")
    store.finish(r, "completed", _metrics(4.25), None)
    store.start("adamw", {"lr": 0.003}, 0, "default", "search", 1, "", "trials/0002")
    assert [x.model_dump() for x in _another_driver(store).records()] == [x.model_dump() for x in store.records()]


# ------------------------------------------------------------------------------ executors


def _replay(tmp_path: Path) -> BaseExecutor:
    """A replay table with one AdamW and one Muon config, three seeds each (real-looking rows), for the default
    (fair) study: both arms carry the shared LR `adamw_lr`."""
    from research_agents.execution.replay import ReplayExecutor

    cols = ("arm,lr,adamw_lr,momentum,momentum_schedule.kind,momentum_schedule.start,momentum_schedule.warmup_steps,"
            "ns_steps,seed,status,val_loss,val_accuracy,train_loss,loss_25,loss_50,loss_75,loss_100,diverged_step,"
            "wall_time_s")
    rows = [
        f"adamw,0.003,0.01,,,,,,{s},completed,{5.1 + s / 100},0.1,5.2,6,5.6,5.3,{5.1 + s / 100},,4.0" for s in range(3)
    ]
    rows += [f"muon,0.02,0.01,0.95,fixed,,,5,{s},completed,{4.6 + s / 100},0.1,4.7,5.5,5,4.8,{4.6 + s / 100},,5.0"
             for s in range(3)]
    table = tmp_path / "replay.csv"
    table.write_text("\n".join([cols, *rows]) + "\n")
    return ReplayExecutor(table, seed=0)


def _broken_for_local(spec, tmp_path):  # a data source that does not exist
    return spec.model_copy(
        update={"data": spec.data.model_copy(update={"source": str(tmp_path / "no-such-corpus.txt")})}
    )


def _ray(tmp_path: Path) -> BaseExecutor:
    from research_agents.execution.ray import RayExecutor

    return RayExecutor()


EXECUTORS = {"local": lambda tmp_path: LocalExecutor(), "local-cold": lambda tmp_path: LocalExecutor(warm=False),
             "ray": _ray, "replay": _replay}


@pytest.fixture(params=list(EXECUTORS))
def executor(request, tmp_path) -> BaseExecutor:
    if request.param == "ray":
        request.getfixturevalue("local_ray")  # a real local Ray (skips where Ray is not installed)
    return EXECUTORS[request.param](tmp_path)


def _spec(fast_study, **params):
    return load_study(fast_study).trial_spec("muon", params, seed=0)


def test_executor_runs_a_trial_and_returns_typed_metrics(executor, fast_study, tmp_path):
    out = executor.run(_spec(fast_study, lr=0.02), tmp_path / "t", timeout_s=300)
    assert isinstance(out, Outcome) and out.status == "completed", out.reason
    assert isinstance(out.metrics, TrialMetrics) and out.metrics.optimizer_steps == 12
    assert math.isfinite(out.metrics.final.val_loss) and out.wall_time_s > 0
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["status"] == "completed"


def test_executor_same_spec_same_numbers(executor, fast_study, tmp_path):
    a = executor.run(_spec(fast_study, lr=0.02), tmp_path / "a", timeout_s=300)
    b = executor.run(_spec(fast_study, lr=0.02), tmp_path / "b", timeout_s=300)
    assert a.metrics.final.val_loss == b.metrics.final.val_loss


def test_executor_records_a_trial_it_cannot_run_as_failed_with_a_reason(executor, fast_study, tmp_path):
    spec = _spec(fast_study, lr=0.02)
    if executor.name in ("local", "ray"):
        spec, word = _broken_for_local(spec, tmp_path), "no-such-corpus"
    else:  # the replay table holds no run of this optimizer
        executor.table = {k: v for k, v in executor.table.items() if k[0] != "muon"}
        word = "no muon runs"
    out = executor.run(spec, tmp_path / "t", timeout_s=300)
    assert out.status == "failed" and word in out.reason


def test_executor_cancel_of_one_run_dir_stops_that_trial_only(executor, fast_study, tmp_path):
    """The loop stops a run trained ahead that no round made, and only it."""
    import threading

    if executor.name == "replay":
        executor.pace = 0.5  # paced: a trial takes half its recorded time
    long = _spec(fast_study, lr=0.02).model_copy(update={"steps": 3000})
    short = _spec(fast_study, lr=0.03) if executor.name != "replay" else long.model_copy(update={"seed": 1})
    outcomes = {}
    threads = [threading.Thread(target=lambda n=n, s=s: outcomes.__setitem__(n, executor.run(s, tmp_path / n, 300)))
               for n, s in (("stop", long), ("keep", short))]
    for t in threads:
        t.start()
    time.sleep(1.0)
    deadline = time.time() + 120
    while "stop" not in outcomes and time.time() < deadline:  # (again, until its process had started)
        executor.cancel(tmp_path / "stop")
        time.sleep(0.2)
    for t in threads:
        t.join(300)
    assert outcomes["stop"].status == "failed", outcomes["stop"]
    assert outcomes["keep"].status == "completed", outcomes["keep"].reason


# ------------------------------------------------------------------------------ planners


def _valid_llm_reply(body):
    """Two fresh valid points per arm asked for, numbered by the call (never repeats)."""
    _valid_llm_reply.k = getattr(_valid_llm_reply, "k", 0) + 1
    k = _valid_llm_reply.k
    props = [{"arm": "muon", "params": {"lr": round(0.006 * 1.21 ** k, 6), "ns_steps": 2 + k % 5},
              "rationale": "stub"},
             {"arm": "adamw", "params": {"lr": round(0.0004 * 1.19 ** k, 7)}, "rationale": "stub"}]
    return {"content": batch(*props)}


def _llm(stub):
    return LLMPlanner(LLMConfig(base_url=stub.base_url, configured=True))


PLANNERS = {
    "grid": lambda study, stub: GridPlanner([*study_points(study), Proposal(
        arm="muon", params={"lr": 0.01, "ns_steps": 3}, origin="grid"), Proposal(
        arm="adamw", params={"lr": 0.001}, origin="grid")]),
    "random": lambda study, stub: SamplerPlanner("random", 0, 2),
    "tpe": lambda study, stub: SamplerPlanner("tpe", 0, 2),
    "llm": lambda study, stub: _llm(stub),
    "hybrid": lambda study, stub: HybridPlanner(_llm(stub), share=0.5, warmup=0),
    "policy": lambda study, stub: PolicyPlanner(seed=0),
    "mcp": lambda study, stub: QueuedPlanner(seed=0),
}


@pytest.fixture(params=list(PLANNERS))
def planner_and_study(request, fast_study):
    study = load_study(fast_study)
    with StubLLM(default=_valid_llm_reply) as stub:
        yield PLANNERS[request.param](study, stub), study


def _history(study) -> list[TrialRecord]:
    out = []
    for i, (arm, lr, loss) in enumerate([("muon", 0.02, 4.6), ("adamw", 0.003, 5.1), ("muon", 0.05, 4.5)]):
        params = {"lr": lr, "ns_steps": 5} if arm == "muon" else {"lr": lr}
        out.append(TrialRecord(id=i, order=i, arm=arm, params=params, seed=0, origin="tpe", phase="search",
                               round=1, status="completed", val_loss=loss))
    return out


def test_planner_proposes_valid_points_for_the_arms_asked_only(planner_and_study, tmp_path):
    planner, study = planner_and_study
    assert isinstance(planner, BasePlanner) and planner.name
    store = OptunaStore.for_study(tmp_path / "run", study)
    planner.attach(store, tmp_path / "run")
    ctx = PlanningContext(study=study, wanted={"muon": 1}, history=_history(study), round=2, budget_left=10,
                          evidence=tuning_evidence(study, _history(study)))
    got = planner.propose(ctx)
    assert got and all(isinstance(p, (Proposal, Replicate)) for p in got)
    assert {p.arm for p in got} == {"muon"} and len(got) <= 1
    for p in got:  # a planner's actions here are new points or replicates of measured ones
        assert validate_params(study, p.arm, p.params) == [], p
        assert p.origin in ("grid", "random", "tpe", "policy", "llm")
    assert isinstance(planner.drain_rejections(), list)
    pub = planner.public()
    assert pub is None or (isinstance(pub, dict) and "api_key" not in json.dumps(pub))


def test_planner_fills_several_arms(planner_and_study, tmp_path):
    planner, study = planner_and_study
    planner.attach(OptunaStore.for_study(tmp_path / "run", study), tmp_path / "run")
    ctx = PlanningContext(study=study, wanted={"muon": 1, "adamw": 1}, history=_history(study), round=2,
                          evidence=tuning_evidence(study, _history(study)))
    got = planner.propose(ctx)
    assert sorted(p.arm for p in got) == ["adamw", "muon"]
    assert all(p.kind in ("try", "replicate") for p in got)


def test_a_planners_dry_copy_proposes_what_it_would_and_changes_nothing(planner_and_study, tmp_path):
    """What the loop asks ahead (speculation) must be what the planner itself says next, and asking
    must not change what it says after; a planner that cannot promise that gives no copy."""
    planner, study = planner_and_study
    planner.attach(OptunaStore.for_study(tmp_path / "run", study), tmp_path / "run")
    copy = planner.dry_copy()
    if not planner.pure:
        assert copy is None
        return
    assert copy is not planner

    def ask(p):
        ctx = PlanningContext(study=study, wanted={"muon": 2, "adamw": 1}, history=_history(study), round=2,
                              evidence=tuning_evidence(study, _history(study)))
        return [a.model_dump() for a in p.propose(ctx)]

    ahead = ask(copy)
    assert ask(copy) == ahead and ask(planner) == ahead and ask(planner) == ahead
