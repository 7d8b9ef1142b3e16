"""The LLM service side: endpoint settings, the client with retries and output modes, accounting.

`LLMClient` wraps the official `openai` client with our own retries (each try is recorded) and
the structured-output chain json_schema -> json_object (with the schema) -> plain text. After
its retries it raises `LLMUnavailable`. The API key lives only inside the client object: it is
never written to disk or printed (`LLMConfig.public` is what may be written down), and it is
sent only to the official endpoint (https://api.openai.com) unless the user opts in for another
host (`--llm-send-key` or RESEARCH_AGENTS_SEND_KEY=1), and never over plain http to a host that
is not this machine (`LLMConfig.key_problem`).
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from research_agents.planners.llm_actions import MAX_REPLY_CHARS
from research_agents.redact import mask_url, scrub, url_secrets

MODES = ("json_schema", "json_object", "text")
DEFAULT_MODEL = "gpt-4o-mini"
OPENAI_URL = "https://api.openai.com/v1"
OPENAI_HOST = "api.openai.com"
NO_KEY = "not-needed"  # sent instead of the key: local servers (vLLM, Ollama, llama.cpp) take any key
PRICE_ENV = ("RESEARCH_AGENTS_LLM_PRICE_IN", "RESEARCH_AGENTS_LLM_PRICE_OUT")
SEND_KEY_ENV = "RESEARCH_AGENTS_SEND_KEY"  # "1": send OPENAI_API_KEY to a host other than OpenAI's
LOOPBACK_TIMEOUT_S = 300.0  # a CPU llama.cpp server takes minutes for one answer
REMOTE_TIMEOUT_S = 60.0


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def is_loopback(url: str) -> bool:
    """The endpoint is on this machine (localhost, 127.0.0.0/8, ::1)."""
    host = _host(url)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_official(url: str) -> bool:
    """The endpoint is OpenAI's own, over https."""
    return urlsplit(url).scheme == "https" and _host(url) == OPENAI_HOST


class RequestDeadline(Exception):
    """A request that ran past its whole-request deadline (counted as a timed-out try)."""


class LLMUnavailable(RuntimeError):
    """The LLM service failed after its retries (or refused the request outright)."""


# ------------------------------------------------------------------------------ configuration


class LLMConfig(BaseModel):
    """Where the LLM is and how to talk to it (flags and environment: cli.llm_config)."""

    base_url: str | None = None
    model: str = DEFAULT_MODEL
    api_key: str | None = Field(default=None, repr=False, exclude=True)  # never written anywhere
    send_key: bool = False  # the user opted in to sending the key to a host other than OpenAI's
    # seconds per request, whole; None: LOOPBACK_TIMEOUT_S for a server on this machine, else REMOTE_TIMEOUT_S
    timeout_s: float | None = Field(default=None, gt=0)
    tries: int = 3
    backoff_s: float = 1.0  # waits backoff, 2x, 4x ... between tries
    repairs: int = 3  # corrected batches asked for per round (LLAMBO: up to 3)
    max_tokens: int = 1024
    temperature: float = 0.7
    price_in: float | None = None  # USD per 1M prompt tokens
    price_out: float | None = None  # USD per 1M completion tokens
    on_error: Literal["stop", "fallback"] = "stop"
    share: float | None = None  # hybrid: overrides study.planner.llm_share
    configured: bool = False
    source: str = ""  # what configured it (for the console line)
    bad_rounds: int = 2  # this many rounds in a row without one valid LLM action count as an LLM failure

    @property
    def endpoint(self) -> str:
        return self.base_url or OPENAI_URL

    @property
    def shown(self) -> str:
        """The endpoint as written down or printed: credentials in it masked."""
        return mask_url(self.endpoint)

    @property
    def timeout(self) -> float:
        """Seconds per request, whole (not per read): the user's, else generous for a server on this machine."""
        if self.timeout_s is not None:
            return self.timeout_s
        return LOOPBACK_TIMEOUT_S if is_loopback(self.endpoint) else REMOTE_TIMEOUT_S

    @property
    def key_sent(self) -> bool:
        """Does the key go to the endpoint? Only to OpenAI's own, or where the user opted in."""
        return bool(self.api_key) and (is_official(self.endpoint) or self.send_key)

    def key_problem(self) -> str | None:
        """Why the key must not be sent as asked (None: fine): never over plain http off this machine."""
        if self.key_sent and urlsplit(self.endpoint).scheme != "https" and not is_loopback(self.endpoint):
            return (f"refusing to send OPENAI_API_KEY over plain http to {_host(self.endpoint) or self.endpoint}: "
                    "use an https endpoint, a server on this machine, or drop --llm-send-key / "
                    f"{SEND_KEY_ENV}")
        return None

    def key_note(self) -> str:
        """One phrase for the console: where the key goes."""
        if not self.api_key:
            return "no API key"
        if self.key_sent:
            return "OPENAI_API_KEY sent" + ("" if is_official(self.endpoint) else " (opted in)")
        return (f"OPENAI_API_KEY not sent (not {OPENAI_HOST}; --llm-send-key or {SEND_KEY_ENV}=1 sends it)")

    def public(self) -> dict:
        """What may be written down (run.json, reports): never the key."""
        return {"endpoint": self.shown, "model": self.model, "on_error": self.on_error,
                "key_sent": self.key_sent}

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.price_in is None and self.price_out is None:
            return None
        return ((self.price_in or 0.0) * prompt_tokens + (self.price_out or 0.0) * completion_tokens) / 1e6


# ------------------------------------------------------------------------------ client


class CallResult(BaseModel):
    text: str
    mode: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    failures: list[dict]  # failed tries before this answer
    finish_reason: str | None = None
    problem: str | None = None  # the server answered, but not with a chat completion (text is then "")


class LLMClient:
    """The official `openai` client with our own retries (so each try is recorded) and mode chain."""

    def __init__(self, cfg: LLMConfig, sleep: Callable[[float], None] = time.sleep):
        from openai import OpenAI

        problem = cfg.key_problem()
        if problem:
            raise LLMUnavailable(problem)
        self.cfg = cfg
        self.sleep = sleep
        self._secrets = [cfg.api_key, *url_secrets(cfg.endpoint)]  # scrubbed from every transcript, sent or not
        self._client = OpenAI(base_url=cfg.endpoint, api_key=cfg.api_key if cfg.key_sent else NO_KEY,
                              timeout=cfg.timeout, max_retries=0)
        self.mode_index = 0
        self.mode_works = False  # a call succeeded in the current mode
        self.failures: list[dict] = []  # failed tries of the last `complete` (also when it raised)

    @property
    def mode(self) -> str:
        return MODES[self.mode_index]

    def scrub(self, text: str) -> str:
        """`text` without the key or the endpoint's credentials, in any encoding (redact.scrub)."""
        return scrub(text, self._secrets)

    def _reason(self, err: Exception) -> str:
        import openai

        if isinstance(err, (openai.APITimeoutError, RequestDeadline)):
            return f"timed out after {self.cfg.timeout:g} s"
        if isinstance(err, openai.APIConnectionError):
            cause = err.__cause__ or err.__context__
            return f"connection failed ({cause or err})" if cause else f"connection failed ({err})"
        if isinstance(err, openai.APIStatusError):
            body = err.body.get("message") if isinstance(err.body, dict) else None
            return " ".join(f"HTTP {err.status_code}: {body or err.message}".split())[:300]
        return f"{type(err).__name__}: {err}"[:300]

    def _request(self, messages: list[dict], schema: dict) -> dict:
        kwargs: dict[str, Any] = dict(model=self.cfg.model, max_tokens=self.cfg.max_tokens,
                                      temperature=self.cfg.temperature)
        if self.mode == "json_schema":
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "proposal_batch", "schema": schema, "strict": False}}
        elif self.mode == "json_object":
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        else:
            messages = [*messages[:-1], {"role": messages[-1]["role"], "content": messages[-1]["content"]
                        + "\n\nReply with the JSON object only: no prose, no code fence."}]
        kwargs["messages"] = messages
        return kwargs

    def _create(self, kwargs: dict) -> Any:
        """One request, ended after `cfg.timeout` seconds in all: the openai client's timeout bounds
        each read, so a server that drips a byte at a time would hold it for ever. The request runs
        in a daemon thread; past the deadline it is abandoned (its socket closes when the server
        gives up) and the try counts as timed out, like any other."""
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["resp"] = self._client.chat.completions.create(**kwargs)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                box["err"] = err

        worker = threading.Thread(target=call, name="llm-request", daemon=True)
        worker.start()
        worker.join(self.cfg.timeout)
        if worker.is_alive():
            raise RequestDeadline(self.cfg.timeout)
        if "err" in box:
            raise box["err"]
        return box["resp"]

    def complete(self, messages: list[dict], schema: dict) -> CallResult:
        import openai

        self.failures = []
        transport = 0
        while True:
            kwargs = self._request(messages, schema)
            mode = self.mode
            start = time.monotonic()
            try:
                resp = self._create(kwargs)
            except ValueError as err:  # a success status whose body is not JSON
                return self._not_chat(mode, start, f"the body is not JSON ({type(err).__name__})")
            except (openai.BadRequestError, openai.UnprocessableEntityError) as err:
                why = self.scrub(self._reason(err))
                self.failures.append({"mode": mode, "error": why, "latency_s": time.monotonic() - start})
                about_format = re.search(r"response_format|json_schema|json_object|schema|grammar", why, re.I)
                if mode != "text" and (about_format or not self.mode_works):
                    self.mode_index += 1
                    self.mode_works = False
                    continue
                raise LLMUnavailable(f"LLM endpoint {self.cfg.shown} rejected the request: {why}") from None
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
                why = self.scrub(self._reason(err))
                self.failures.append({"mode": mode, "error": why, "latency_s": time.monotonic() - start})
                raise LLMUnavailable(f"LLM endpoint {self.cfg.shown} refused the request "
                                     f"(model {self.cfg.model}): {why}") from None
            except (openai.APIConnectionError, openai.APIStatusError, openai.APIResponseValidationError,
                    RequestDeadline) as err:
                why = self.scrub(self._reason(err))
                self.failures.append({"mode": mode, "error": why, "latency_s": time.monotonic() - start})
                if (isinstance(err, openai.APIStatusError) and mode != "text"
                        and re.search(r"response_format|json_schema", why, re.I)):
                    # llama.cpp's server answers HTTP 500 to a response_format type it lacks
                    self.mode_index += 1
                    self.mode_works = False
                    continue
                transport += 1
                if transport >= self.cfg.tries:
                    word = "unreachable" if isinstance(err, (openai.APIConnectionError, RequestDeadline)) else "failing"
                    raise LLMUnavailable(f"LLM endpoint {self.cfg.shown} {word} after {transport} "
                                         f"tr{'y' if transport == 1 else 'ies'}: {why}") from None
                self.sleep(self.cfg.backoff_s * 2 ** (transport - 1))
                continue
            latency = time.monotonic() - start
            choices = getattr(resp, "choices", None)
            choice = choices[0] if isinstance(choices, list) and choices else None
            message = getattr(choice, "message", None)
            text = getattr(message, "content", None)
            if choice is None or not isinstance(text, (str, type(None))):
                return self._not_chat(mode, start, f"no choices[0].message in {str(resp)[:120]!r}")
            if text is not None and len(text) > MAX_REPLY_CHARS:  # never scrubbed, stored or parsed whole
                return self._not_chat(mode, start, f"a reply of {len(text)} characters, more than {MAX_REPLY_CHARS}")
            self.mode_works = True
            usage = getattr(resp, "usage", None)
            return CallResult(text=self.scrub(text or ""), mode=mode, latency_s=latency,  # an echoed key too
                              failures=list(self.failures),
                              finish_reason=getattr(choice, "finish_reason", None),
                              prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                              completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0))

    def _not_chat(self, mode: str, start: float, why: str) -> CallResult:
        """A server that answered with success but not a chat completion: an unusable reply (the
        planner counts it like any other reply without a valid action), not a transport error."""
        return CallResult(text="", mode=mode, latency_s=time.monotonic() - start, failures=list(self.failures),
                          prompt_tokens=0, completion_tokens=0,
                          problem=self.scrub(f"the server's response is not a chat completion: {why}"))
