"""The LLM settings (an LLMConfig) from the `run` command's --llm-* flags and the environment.

Flags win over the environment ($OPENAI_BASE_URL, $OPENAI_MODEL, $OPENAI_API_KEY, the price and
send-key variables); `configured` says an endpoint was set by either, and `source` by what.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from research_agents.argtypes import number
from research_agents.planners.llm_client import DEFAULT_MODEL, PRICE_ENV, SEND_KEY_ENV, LLMConfig


def llm_config(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> LLMConfig:
    """The LLM settings from `flags` (the run command's arguments by their argparse names, e.g.
    "llm_base_url"; a missing one takes its default) and `env` (default os.environ).

    ValueError (one line) when a price variable is not a number, or the key would go over plain
    http to another machine."""
    env = os.environ if env is None else env
    base_url = flags.get("llm_base_url") or env.get("OPENAI_BASE_URL") or None
    key = env.get("OPENAI_API_KEY") or None
    model = flags.get("llm_model") or env.get("OPENAI_MODEL") or DEFAULT_MODEL
    sources = [s for s, on in (("--llm-base-url", flags.get("llm_base_url")),
                               ("--llm-model", flags.get("llm_model")),
                               ("OPENAI_BASE_URL", env.get("OPENAI_BASE_URL")),
                               ("OPENAI_API_KEY", key)) if on]
    prices = []
    for flag, name in zip(("llm_price_in", "llm_price_out"), PRICE_ENV):
        value = flags.get(flag)
        if value is None and env.get(name):
            try:
                value = number(0.0)(env[name])
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"${name}: {e}") from None
        prices.append(value)
    send_key = bool(flags.get("llm_send_key", False)) or env.get(SEND_KEY_ENV, "").strip() == "1"
    cfg = LLMConfig(base_url=base_url.rstrip("/") if base_url else None, model=model, api_key=key, send_key=send_key,
                    timeout_s=flags.get("llm_timeout") or None,
                    tries=max(1, flags.get("llm_tries", 3)), backoff_s=flags.get("llm_backoff", 1.0),
                    repairs=flags.get("llm_repairs", 3), max_tokens=flags.get("llm_max_tokens", 1024) or 1024,
                    price_in=prices[0], price_out=prices[1], on_error=flags.get("on_llm_error", "stop"),
                    share=flags.get("llm_share"), configured=bool(sources), source=", ".join(sources),
                    bad_rounds=flags.get("llm_bad_rounds", 2))
    if cfg.configured and (problem := cfg.key_problem()):
        raise ValueError(problem)
    return cfg


__all__ = ["llm_config"]
