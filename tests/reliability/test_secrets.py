"""The API key is never written: not under OUT, not in the store, not on the console, even when the
endpoint echoes it back in an error and in its replies."""

from __future__ import annotations

import json

from research_agents.cli import main
from research_agents.config import load_study
from research_agents.planners.llm_client import DEFAULT_MODEL, SEND_KEY_ENV
from research_agents.records import COUNTED
from research_agents.store import OptunaStore
from tests.openai_stub import StubLLM, batch
from tests.reliability.helpers import write_study

KEY = "sk-reliability-marker-7f3c9e1b5a2d4c68"


def _proposals(state: dict, rationale: str, expected: str) -> str:
    """A batch of two new valid points per arm (each call new ones), with this rationale and expectation."""
    out = []
    for arm, lr0 in (("muon", 0.005), ("adamw", 0.0002)):
        for _ in range(2):
            state["k"] += 1
            out.append({"arm": arm, "params": {"lr": round(lr0 * 1.3 ** state["k"], 6)},
                        "rationale": rationale, "expected": expected})
    return batch(*out)


def echoing_endpoint():
    """Replies with valid proposals for both arms whose rationale and expectation repeat the key
    (as a proxy or a prompt-injected model might); the first request fails with the key in its error."""
    state = {"k": 0}

    def reply(body):
        return {"content": _proposals(state, f"you sent {KEY}", KEY)}

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


# ------------------------------------------------------------------ every encoding, and credentials in URLs

PASSWORD = "pw-reliability-4e8a1c"


def _encodings(secret: str) -> dict[str, str]:
    import base64
    from urllib.parse import quote

    return {"raw": secret, "json \\u escapes": "".join(f"\\u{ord(c):04x}" for c in secret),
            "json \\u escapes, upper, mixed":
                secret[:3] + "".join(f"\\u{ord(c):04X}" for c in secret[3:9]) + secret[9:],
            "url-encoded": "".join(f"%{ord(c):02x}" for c in secret), "quote": quote(secret, safe=""),
            "base64": base64.b64encode(f"Bearer {secret}".encode()).decode()}


def _encoded_echo():
    """Valid proposals whose rationale and expectation repeat the key in every encoding above."""
    state = {"k": 0}

    def reply(body):
        text = _proposals(state, "SLOT", "SLOT2")
        forms = list(_encodings(KEY).values()) + list(_encodings(PASSWORD).values())
        text = text.replace('"SLOT"', '"' + " ".join(forms) + '"', 1)  # JSON escapes stay escapes in the text
        return {"content": text.replace('"SLOT2"', '"' + forms[1] + '"')}

    return reply


def test_the_key_and_url_credentials_are_written_in_no_encoding(tmp_path, table, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv(SEND_KEY_ENV, "1")
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    with StubLLM([], default=_encoded_echo()) as stub:
        base = stub.base_url
        url = base.replace("://", f"://user:{PASSWORD}@")
        code = main(["run", "--study", str(study), "--budget", "12", "--executor", f"replay:{table}", "--out", str(out),
                     "--planner", "llm", "--llm-base-url", url, "--llm-backoff", "0"])
        assert main(["report", str(out)]) == 0 and main(["status", str(out)]) == 0
    console = capsys.readouterr()
    assert code == 0, console.err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.parent.name == "llm" for p in files)
    for secret in (KEY, PASSWORD):
        for how, form in _encodings(secret).items():
            leaks = [str(p) for p in files if form.encode() in p.read_bytes()]
            assert leaks == [], f"{secret} ({how}) was written to {leaks}"
            assert form not in console.out and form not in console.err, how
    saved = json.loads((out / "run.json").read_text())
    assert saved["llm"]["endpoint"] == base.replace("://", "://user:***@")
    assert "--llm-base-url " + saved["llm"]["endpoint"] in (out / "report.md").read_text()


def test_one_mask_for_urls_and_one_scrub_for_every_encoding():
    from research_agents.redact import mask_url, mask_urls, scrub

    assert mask_url("http://u:p@h:1/v1") == "http://u:***@h:1/v1" and mask_url("https://tok@h/") == "https://***@h/"
    assert mask_urls("a postgresql://u:p@h/db b") == "a postgresql://u:***@h/db b"
    for how, form in _encodings(KEY).items():
        text = json.dumps({"r": f"x {form} y"})
        assert KEY not in json.loads(scrub(text, [KEY])), how
        for enc in _encodings(KEY).values():
            assert enc not in scrub(text, [KEY]) or enc == "Bearer", how
    assert scrub('{"a": "100% \\n fine"}', [KEY]) == '{"a": "100% \\n fine"}'


def test_a_storage_password_is_masked_on_the_console(tmp_path, table, capsys):
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    code = main(["run", "--study", str(study), "--budget", "8", "--executor", f"replay:{table}", "--out", str(out),
                 "--storage", f"postgresql://user:{PASSWORD}@127.0.0.1:1/x"])
    err = capsys.readouterr().err
    assert code == 2 and PASSWORD not in err and "postgresql://user:***@127.0.0.1:1/x" in err, err


def test_a_storage_password_is_never_written_and_a_resume_gives_it_again(tmp_path, table, postgres_server,
                                                                          postgres_url, capsys, monkeypatch):
    """run.json records `user:***@host` of --storage: no file under OUT holds the password, nor the
    console; status, report and the resume take it again (--storage, or PGPASSWORD)."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    password = postgres_server.password
    assert password in postgres_url
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    args = ["run", "--study", str(study), "--executor", f"replay:{table}", "--out", str(out)]

    def nowhere(said: str) -> None:
        assert password not in said
        for path in out.rglob("*"):
            if path.is_file() and path.name != "study.db":
                assert password.encode() not in path.read_bytes(), path

    assert main([*args, "--budget", "8", "--storage", postgres_url]) == 0
    nowhere(str(capsys.readouterr()))
    saved = json.loads((out / "run.json").read_text())["storage"]
    assert saved == postgres_url.replace(f":{password}@", ":***@"), saved
    # without the password: one line that says how to give it
    for command in (["status", str(out)], ["report", str(out)], [*args, "--budget", "8"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "keeps no password: give --storage URL with it again" in err, err
        assert password not in err
    assert main(["status", str(out), "--storage", postgres_url]) == 0
    assert main(["report", str(out), "--storage", postgres_url]) == 0
    assert main([*args, "--budget", "10", "--storage", postgres_url]) == 0  # the resume, the password given again
    nowhere(str(capsys.readouterr()))
    monkeypatch.setenv("PGPASSWORD", password)  # ...or from the environment, run.json's URL as it is
    assert main([*args, "--budget", "12"]) == 0
    nowhere(str(capsys.readouterr()))
    statuses = [r.status for r in OptunaStore.for_study(None, load_study(study), url=postgres_url,
                                                        readonly=True).records()]
    assert len([s for s in statuses if s in COUNTED]) == 12, statuses
