"""The API key is never written: not under OUT, not in the store, not on the console, even when the
endpoint echoes it back in an error and in its replies."""

from __future__ import annotations

import json

from research_agents.cli import main
from research_agents.planners.llm_client import DEFAULT_MODEL, SEND_KEY_ENV
from tests.openai_stub import StubLLM, batch
from tests.reliability.helpers import write_study

KEY = "sk-reliability-marker-7f3c9e1b5a2d4c68"


def echoing_endpoint():
    """Replies with valid proposals for both arms whose rationale and expectation repeat the key
    (as a proxy or a prompt-injected model might); the first request fails with the key in its error."""
    state = {"k": 0}

    def reply(body):
        out = []
        for arm, lr0 in (("muon", 0.005), ("adamw", 0.0002)):
            for _ in range(2):
                state["k"] += 1
                out.append({"arm": arm, "params": {"lr": round(lr0 * 1.3 ** state["k"], 6)},
                            "rationale": f"you sent {KEY}", "expected": KEY})
        return {"content": batch(*out)}

    return [{"status": 500, "error": f"upstream refused the key {KEY}"}], reply


def test_the_api_key_is_never_written(tmp_path, table, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv(SEND_KEY_ENV, "1")  # opted in: the key goes to this (loopback) endpoint
    study = write_study(tmp_path / "rel.toml")
    out, db = tmp_path / "out", tmp_path / "elsewhere" / "trials.db"
    db.parent.mkdir()
    script, reply = echoing_endpoint()
    with StubLLM(script, default=reply) as stub:
        endpoint = stub.base_url
        code = main(["run", "--study", str(study), "--budget", "12", "--executor", f"replay:{table}", "--out", str(out),
                     "--planner", "llm", "--llm-base-url", stub.base_url, "--llm-backoff", "0",
                     "--storage", f"sqlite:///{db}"])
        assert main(["report", str(out)]) == 0 and main(["status", str(out)]) == 0
    console = capsys.readouterr()
    assert code == 0, console.err
    assert stub.auth and all(a == f"Bearer {KEY}" for a in stub.auth)  # the key was used...
    files = [p for p in out.rglob("*") if p.is_file()] + [db]
    assert len(files) > 20 and any(p.parent.name == "llm" for p in files)  # transcripts, [str(p) for p in files]
    leaks = [str(p) for p in files if KEY.encode() in p.read_bytes()]
    assert leaks == [], f"the API key was written to {leaks}"  # ...and written nowhere
    assert KEY not in console.out and KEY not in console.err
    saved = json.loads((out / "run.json").read_text())
    assert saved["llm"] == {"endpoint": endpoint, "model": DEFAULT_MODEL, "on_error": "stop",
                            "key_sent": True}  # whether it was sent, never the key itself
