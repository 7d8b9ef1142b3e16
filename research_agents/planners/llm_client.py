"""The LLM service side: endpoint settings, the client with retries and output modes, accounting.

`LLMClient` wraps the official `openai` client with our own retries (each try is recorded) and
the structured-output chain json_schema -> json_object (with the schema) -> plain text. After
its retries it raises `LLMUnavailable`. The API key lives only inside the client object: it is
never written to disk or printed (`LLMConfig.public` is what may be written down).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from research_agents.argtypes import number, whole

MODES = ("json_schema", "json_object", "text")
DEFAULT_MODEL = "gpt-4o-mini"
OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "not-needed"  # local servers (vLLM, Ollama, llama.cpp) take any key
PRICE_ENV = ("RESEARCH_AGENTS_LLM_PRICE_IN", "RESEARCH_AGENTS_LLM_PRICE_OUT")


class LLMUnavailable(RuntimeError):
    """The LLM service failed after its retries (or refused the request outright)."""


# ------------------------------------------------------------------------------ configuration


@dataclass
class LLMConfig:
    base_url: str | None = None
    model: str = DEFAULT_MODEL
    api_key: str | None = field(default=None, repr=False)  # never written anywhere
    timeout_s: float = 60.0
    tries: int = 3
    backoff_s: float = 1.0  # waits backoff, 2x, 4x ... between tries
    repairs: int = 3  # corrected batches asked for per round (LLAMBO: up to 3)
    max_tokens: int = 1024
    temperature: float = 0.7
    price_in: float | None = None  # USD per 1M prompt tokens
    price_out: float | None = None  # USD per 1M completion tokens
    on_error: str = "stop"  # or "fallback"
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


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("LLM planner (--planner llm|hybrid, or auto when an endpoint is configured)")
    g.add_argument("--llm-base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 "
                   "(default $OPENAI_BASE_URL, else OpenAI)")
    g.add_argument("--llm-model", help=f"model name (default $OPENAI_MODEL, else {DEFAULT_MODEL})")
    g.add_argument("--llm-share", type=number(0.0, 1.0), help="hybrid: share of points the LLM proposes after the "
                   "warm-up (default: the study's planner.llm_share, 0.3)")
    g.add_argument("--on-llm-error", choices=("stop", "fallback"), default="stop",
                   help="when the LLM service fails after its retries: stop (default; the same command "
                   "resumes) or fall back to the classical planner for the rest of the run")
    g.add_argument("--llm-timeout", type=number(0.0), default=60.0, help="seconds per request (default 60)")
    g.add_argument("--llm-tries", type=whole(1), default=3, help="tries per request (default 3)")
    g.add_argument("--llm-backoff", type=number(0.0), default=1.0, help="first wait between tries, doubled each "
                   "time (default 1 s)")
    g.add_argument("--llm-repairs", type=whole(0), default=3, help="corrected batches asked for per round (default 3)")
    g.add_argument("--llm-max-tokens", type=whole(1), default=1024, help="completion tokens per call (default 1024)")
    g.add_argument("--llm-price-in", type=number(0.0), help="USD per 1M prompt tokens (or $RESEARCH_AGENTS_LLM_PRICE_IN)")
    g.add_argument("--llm-price-out", type=number(0.0), help="USD per 1M completion tokens "
                   "(or $RESEARCH_AGENTS_LLM_PRICE_OUT)")


def config_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> LLMConfig:
    """The LLM settings from flags and environment; `configured` says whether an endpoint is set."""
    env = os.environ if env is None else env
    base_url = getattr(args, "llm_base_url", None) or env.get("OPENAI_BASE_URL") or None
    key = env.get("OPENAI_API_KEY") or None
    model = getattr(args, "llm_model", None) or env.get("OPENAI_MODEL") or DEFAULT_MODEL
    sources = [s for s, on in (("--llm-base-url", getattr(args, "llm_base_url", None)),
                               ("--llm-model", getattr(args, "llm_model", None)),
                               ("OPENAI_BASE_URL", env.get("OPENAI_BASE_URL")),
                               ("OPENAI_API_KEY", key)) if on]
    prices = []
    for flag, name in zip(("llm_price_in", "llm_price_out"), PRICE_ENV):
        value = getattr(args, flag, None)
        if value is None and env.get(name):
            try:
                value = number(0.0)(env[name])
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"${name}: {e}") from None
        prices.append(value)
    return LLMConfig(base_url=base_url.rstrip("/") if base_url else None, model=model, api_key=key,
                     timeout_s=getattr(args, "llm_timeout", 60.0) or 60.0,
                     tries=max(1, getattr(args, "llm_tries", 3)), backoff_s=getattr(args, "llm_backoff", 1.0),
                     repairs=getattr(args, "llm_repairs", 3), max_tokens=getattr(args, "llm_max_tokens", 1024) or 1024,
                     price_in=prices[0], price_out=prices[1], on_error=getattr(args, "on_llm_error", "stop"),
                     share=getattr(args, "llm_share", None), configured=bool(sources), source=", ".join(sources))


# ------------------------------------------------------------------------------ client


@dataclass
class CallResult:
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
            text = (choice.message.content if choice and choice.message else None) or ""
            usage = resp.usage
            return CallResult(text=text, mode=mode, latency_s=latency, failures=list(self.failures),
                              finish_reason=getattr(choice, "finish_reason", None),
                              prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                              completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0))


# ------------------------------------------------------------------------------ report


def report_sections(store) -> list[tuple[str, str]]:
    """Extra report sections: "LLM usage" when any call happened, "Rejected proposals" when any."""
    out = []
    calls = store.get_meta("llm_calls", []) or []
    fallback = store.get_meta("llm_fallback", []) or []
    fills = store.get_meta("llm_fills", []) or []
    if calls or fallback:
        info = store.get_meta("llm", {}) or {}
        ok = [c for c in calls if c.get("ok")]
        p_in = sum(c.get("prompt_tokens") or 0 for c in calls)
        p_out = sum(c.get("completion_tokens") or 0 for c in calls)
        lat = sum(c.get("latency_s") or 0.0 for c in calls)
        costs = [c["cost"] for c in calls if c.get("cost") is not None]
        modes = sorted({c["mode"] for c in ok})
        lines = [f"Endpoint {info.get('endpoint', '?')}, model {info.get('model', '?')}; structured output: "
                 + (", ".join(modes) or "none succeeded") + ".", "",
                 f"- calls: {len(ok)} answered, {len(calls) - len(ok)} failed tries (errors, timeouts, "
                 "output modes the server refused)",
                 f"- tokens: {p_in} in, {p_out} out",
                 f"- latency: {lat:.1f} s in total" + (f", {lat / len(calls):.2f} s per call" if calls else ""),
                 "- cost: " + (f"${sum(costs):.4f}" if costs else "no prices configured "
                               "(--llm-price-in/--llm-price-out, USD per 1M tokens)"),
                 f"- proposals: {sum(c.get('accepted', 0) for c in ok)} accepted, "
                 f"{sum(c.get('rejected', 0) for c in ok)} rejected, "
                 f"{sum(bool(c.get('invalid')) for c in ok)} replies not a usable JSON batch",
                 "- transcripts: llm/round-NN-K.json (messages, raw response, validation errors)"]
        if fills:
            lines.append(f"- slots the LLM never filled validly (given to tpe): {sum(f['n'] for f in fills)}")
        for fb in fallback:
            lines.append(f"- FALLBACK at round {fb['round']}: the LLM service failed ({fb['reason']}); "
                         f"the classical {fb.get('planner', 'tpe')} planner planned the rest of that run")
        by_round: dict[int, list[dict]] = {}
        for c in calls:
            by_round.setdefault(c["round"], []).append(c)
        if by_round:
            lines += ["", "| round | calls | failed tries | mode | tokens in | tokens out | latency (s) | cost |",
                      "|---|---|---|---|---|---|---|---|"]
            for rnd, cs in sorted(by_round.items()):
                c_ok = [c for c in cs if c.get("ok")]
                c_cost = [c["cost"] for c in cs if c.get("cost") is not None]
                lines.append(f"| {rnd} | {len(c_ok)} | {len(cs) - len(c_ok)} | "
                             f"{', '.join(sorted({c['mode'] for c in c_ok})) or '-'} | "
                             f"{sum(c.get('prompt_tokens') or 0 for c in cs)} | "
                             f"{sum(c.get('completion_tokens') or 0 for c in cs)} | "
                             f"{sum(c.get('latency_s') or 0 for c in cs):.2f} | "
                             + (f"${sum(c_cost):.4f}" if c_cost else "-") + " |")
        out.append(("LLM usage", "\n".join(lines)))
    rejections = store.get_meta("rejections", []) or []
    if rejections:
        shown = rejections[-30:]
        lines = [f"{len(rejections)} proposal(s) rejected before training (never clamped, never run)"
                 + (f"; the last {len(shown)}:" if len(shown) < len(rejections) else ":"), "",
                 "| round | origin | arm | params | reason |", "|---|---|---|---|---|"]
        for r in shown:
            cells = [str(r.get("round")), str(r.get("origin")), str(r.get("arm")),
                     json.dumps(r.get("params"), default=str)[:160], str(r.get("reason"))[:200]]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        out.append(("Rejected proposals", "\n".join(lines)))
    return out


def reproduce_flags(saved: dict) -> str:
    """LLM flags for the report's reproduce command (endpoint and model; never a key)."""
    llm = saved.get("llm") or {}
    if not llm:
        return ""
    flags = f" --llm-model {llm['model']}"
    if llm.get("endpoint") and llm["endpoint"] != OPENAI_URL:
        flags = f" --llm-base-url {llm['endpoint']}" + flags
    if llm.get("on_error") == "fallback":
        flags += " --on-llm-error fallback"
    return flags
