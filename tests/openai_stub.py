"""A scripted OpenAI-compatible chat server for the tests: real HTTP on 127.0.0.1, no model.

    with StubLLM([reply, reply, ...], default=fn) as stub:
        ... OpenAI(base_url=stub.base_url, ...) ...

Each POST /v1/chat/completions takes the next scripted reply (then `default`, a reply or a
function of the request body returning one; with neither, HTTP 500). A reply is a dict:
  {"content": "..."}                 200 with that assistant text and usage token counts
  {"status": 500, "error": "..."}    that HTTP status with an OpenAI-style error body
  {"sleep": 5.0, ...}                wait first (longer than the client timeout = a hang)
  {"raw": "<html>...", "type": "text/html"}   200 with that body as it is: not a chat completion
`reject_json_schema` / `reject_json_object` answer 400 to that response_format type without
using up a scripted reply, as llama.cpp's server does for "json_schema". Every request body
and its Authorization header is recorded; usage sums count only the 200 replies sent without
a sleep (what the client received).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = dict[str, Any]


def batch(*proposals: dict) -> str:
    """The JSON text of a proposal batch."""
    return json.dumps({"proposals": list(proposals)})


class StubLLM:
    def __init__(self, script: list[Reply | Callable[[dict], Reply]] = (), default=None,
                 reject_json_schema: bool = False, reject_json_object: bool = False, model: str = "stub-model"):
        self.script = list(script)
        self.default = default
        self.reject_json_schema = reject_json_schema
        self.reject_json_object = reject_json_object
        self.model = model
        self.requests: list[dict] = []  # chat request bodies, in order (rejected ones included)
        self.auth: list[str] = []  # Authorization headers seen
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> StubLLM:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict | tuple[str, str]) -> None:
                kind, data = (body[0], body[1].encode()) if isinstance(body, tuple) else \
                    ("application/json", json.dumps(body).encode())
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": stub.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                    return
                status, payload, sleep = stub._answer(body, self.headers.get("Authorization", ""))
                if sleep:
                    time.sleep(sleep)
                self._send(status, payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> StubLLM:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self.server is not None, "not started"
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- what the tests read
    def chat_requests(self, ok_only: bool = False) -> list[dict]:
        return [r for r in self.requests if not ok_only or not r.get("_rejected")]

    def last_user_message(self, i: int) -> str:
        return [m for m in self.requests[i]["messages"] if m["role"] == "user"][-1]["content"]

    # -- one answer
    def _answer(self, body: dict, auth: str) -> tuple[int, dict | tuple[str, str], float]:
        with self.lock:
            self.requests.append(body)
            self.auth.append(auth)
            kind = (body.get("response_format") or {}).get("type")
            refused = {"json_schema": self.reject_json_schema, "json_object": self.reject_json_object}
            if refused.get(kind):
                body["_rejected"] = True
                return 400, {"error": {"message": f"response_format type {kind!r} is not supported",
                                       "type": "invalid_request_error", "param": "response_format"}}, 0.0
            reply = self.script.pop(0) if self.script else self.default
            if callable(reply):
                reply = reply(body)
            if reply is None:
                return 500, {"error": {"message": "stub script exhausted", "type": "server_error"}}, 0.0
            sleep = float(reply.get("sleep", 0.0))
            if "raw" in reply:
                return 200, (reply.get("type", "text/html"), str(reply["raw"])), sleep
            if "status" in reply:
                return int(reply["status"]), {"error": {"message": reply.get("error", "scripted error"),
                                                        "type": "server_error"}}, sleep
            content = reply["content"]
            prompt = int(reply.get("prompt_tokens",
                                   sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))))
            completion = int(reply.get("completion_tokens", max(1, len(content.split()))))
            if not sleep:
                self.prompt_tokens += prompt
                self.completion_tokens += completion
            n = len(self.requests)
            return 200, {
                "id": f"chatcmpl-stub-{n}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
            }, sleep
