"""The LLM service side: endpoint settings, the client with retries and output modes, accounting.

`LLMClient` wraps the official `openai` client with our own retries (each try is recorded) and
the structured-output chain json_schema -> json_object (with the schema) -> plain text. After
its retries it raises `LLMUnavailable`. The API key lives only inside the client object: it is
never written to disk or printed (`LLMConfig.public` is what may be written down).
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field

MODES = ("json_schema", "json_object", "text")
DEFAULT_MODEL = "gpt-4o-mini"
OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "not-needed"  # local servers (vLLM, Ollama, llama.cpp) take any key
PRICE_ENV = ("RESEARCH_AGENTS_LLM_PRICE_IN", "RESEARCH_AGENTS_LLM_PRICE_OUT")


class LLMUnavailable(RuntimeError):
    """The LLM service failed after its retries (or refused the request outright)."""


# ------------------------------------------------------------------------------ configuration


class LLMConfig(BaseModel):
    """Where the LLM is and how to talk to it (flags and environment: cli.llm_config)."""

    base_url: str | None = None
    model: str = DEFAULT_MODEL
    api_key: str | None = Field(default=None, repr=False, exclude=True)  # never written anywhere
    timeout_s: float = 60.0
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
    report_chars: int = 1500  # how much of the latest round report the prompt carries

    @property
    def endpoint(self) -> str:
        return self.base_url or OPENAI_URL

    def public(self) -> dict:
        """What may be written down (run.json, reports): never the key."""
        return {"endpoint": self.endpoint, "model": self.model, "on_error": self.on_error}

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


class LLMClient:
    """The official `openai` client with our own retries (so each try is recorded) and mode chain."""

    def __init__(self, cfg: LLMConfig, sleep: Callable[[float], None] = time.sleep):
        from openai import OpenAI

        self.cfg = cfg
        self.sleep = sleep
        self._secret = cfg.api_key
        self._client = OpenAI(base_url=cfg.endpoint, api_key=cfg.api_key or NO_KEY,
                              timeout=cfg.timeout_s, max_retries=0)
        self.mode_index = 0
        self.mode_works = False  # a call succeeded in the current mode
        self.failures: list[dict] = []  # failed tries of the last `complete` (also when it raised)

    @property
    def mode(self) -> str:
        return MODES[self.mode_index]

    def scrub(self, text: str) -> str:
        if self._secret and len(self._secret) >= 4:
            text = text.replace(self._secret, "***")
        return text

    def _reason(self, err: Exception) -> str:
        import openai

        if isinstance(err, openai.APITimeoutError):
            return f"timed out after {self.cfg.timeout_s:g} s"
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

    def complete(self, messages: list[dict], schema: dict) -> CallResult:
        import openai

        self.failures = []
        transport = 0
        while True:
            kwargs = self._request(messages, schema)
            mode = self.mode
            start = time.monotonic()
            try:
                resp = self._client.chat.completions.create(**kwargs)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as err:
                why = self.scrub(self._reason(err))
                self.failures.append({"mode": mode, "error": why, "latency_s": time.monotonic() - start})
                about_format = re.search(r"response_format|json_schema|json_object|schema|grammar", why, re.I)
                if mode != "text" and (about_format or not self.mode_works):
                    self.mode_index += 1
                    self.mode_works = False
                    continue
                raise LLMUnavailable(f"LLM endpoint {self.cfg.endpoint} rejected the request: {why}") from None
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
                why = self.scrub(self._reason(err))
                self.failures.append({"mode": mode, "error": why, "latency_s": time.monotonic() - start})
                raise LLMUnavailable(f"LLM endpoint {self.cfg.endpoint} refused the request "
                                     f"(model {self.cfg.model}): {why}") from None
            except (openai.APIConnectionError, openai.APIStatusError, openai.APIResponseValidationError) as err:
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
                    word = "unreachable" if isinstance(err, openai.APIConnectionError) else "failing"
                    raise LLMUnavailable(f"LLM endpoint {self.cfg.endpoint} {word} after {transport} "
                                         f"tr{'y' if transport == 1 else 'ies'}: {why}") from None
                self.sleep(self.cfg.backoff_s * 2 ** (transport - 1))
                continue
            latency = time.monotonic() - start
            self.mode_works = True
            choice = resp.choices[0] if resp.choices else None
            text = self.scrub((choice.message.content if choice and choice.message else None) or "")  # echoed key
            usage = resp.usage
            return CallResult(text=text, mode=mode, latency_s=latency, failures=list(self.failures),
                              finish_reason=getattr(choice, "finish_reason", None),
                              prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                              completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0))
