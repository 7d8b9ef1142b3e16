"""LLM service and LLM output are bounded: `--llm-timeout` is a whole-request deadline (a server
that drips its answer a byte at a time cannot hold a run), a timeout of 0 is refused, and a
reply too long or nested too deep is a recorded bad reply, read in milliseconds, never a crash."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from research_agents.cli import main
from research_agents.planners.llm_actions import MAX_REPLY_CHARS, parse_actions
from research_agents.planners.llm_client import LLMClient, LLMConfig, LLMUnavailable
from tests.openai_stub import StubLLM
from tests.reliability.helpers import one_error_line, write_study


class _Drip(http.server.BaseHTTPRequestHandler):
    """Answers every request with headers at once, then a byte every 0.2 s (for ~40 s)."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b" " * 200 + b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def drip_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_the_timeout_is_one_deadline_per_request_not_per_read(drip_url):
    cfg = LLMConfig(base_url=drip_url, timeout_s=1.0, tries=2, backoff_s=0.0)
    client = LLMClient(cfg, sleep=lambda s: None)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timed out after 1 s"):
        client.complete([{"role": "user", "content": "hi"}], {"type": "object"})
    took = time.monotonic() - started
    print(f"\n  dripping server, --llm-timeout 1, 2 tries: stopped after {took:.1f} s (the drip lasts 40 s)")
    assert took < 6, took
    assert [f["error"] for f in client.failures] == ["timed out after 1 s"] * 2


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_above_0_is_refused(tmp_path, capsys, table, value):
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    assert main(["run", "--study", str(study), "--executor", f"replay:{table}", "--out", str(out),
                 "--llm-timeout", value]) == 2
    assert "--llm-timeout" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("text", ["[" * 2_000_000, "[" * 150_000 + "]" * 50_000,
                                  '{"actions": ' + "[" * 5000 + "]" * 5000 + "}", "x {" * 60_000])
def test_a_huge_or_deep_reply_is_refused_in_milliseconds(text):
    started = time.monotonic()
    with pytest.raises(ValueError, match="characters long|levels deep|no JSON"):
        parse_actions(text)
    assert time.monotonic() - started < 1.0


def test_a_deeply_nested_reply_is_a_recorded_bad_reply(tmp_path, table, capsys):
    """The model answers only JSON nested 3000 deep (a RecursionError in json.loads): each reply is
    recorded as not a valid batch, the LLM failure rule stops the run in one line; no traceback."""
    study, out = write_study(tmp_path / "rel.toml"), tmp_path / "out"
    deep = '{"actions": [' + '{"a": ' * 3000 + "1" + "}" * 3000 + "]}"
    with StubLLM([], default={"content": deep}) as stub:
        code = main(["run", "--study", str(study), "--budget", "12", "--executor", f"replay:{table}", "--out",
                     str(out), "--planner", "llm", "--llm-base-url", stub.base_url, "--llm-repairs", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    assert "gave no valid action" in one_error_line(err)
    transcripts = sorted((out / "llm").glob("*.json"))
    assert transcripts
    errors = json.loads(transcripts[0].read_text())["validation_errors"]
    assert "levels deep" in errors[0], errors


def test_a_reply_over_the_size_cap_is_not_kept(tmp_path):
    with StubLLM([], default={"content": "[" * (MAX_REPLY_CHARS + 10)}) as stub:
        client = LLMClient(LLMConfig(base_url=stub.base_url, timeout_s=30))
        result = client.complete([{"role": "user", "content": "hi"}], {"type": "object"})
    assert result.text == "" and "more than" in result.problem
