"""How the planning went: LLM usage (calls, tokens, latency, cost, fallbacks) and rejected proposals.

Computed from the run's metadata (what the planners and the loop recorded in the store);
research_agents.report renders it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class RoundUsage(BaseModel):
    round: int
    calls: int
    failed_tries: int
    modes: list[str]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost: float | None


class LLMUsage(BaseModel):
    endpoint: str
    model: str
    modes: list[str]  # structured-output modes that produced an answer
    answered: int
    failed_tries: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost: float | None
    accepted: int
    rejected: int
    invalid_replies: int
    slots_filled_by_tpe: int
    fallbacks: list[dict[str, Any]]
    by_round: list[RoundUsage]


class PlanningSummary(BaseModel):
    llm: LLMUsage | None = None  # None: no LLM call was made and none failed
    rejections: list[dict[str, Any]] = Field(default_factory=list)


def _costs(calls: list[dict]) -> float | None:
    costs = [c["cost"] for c in calls if c.get("cost") is not None]
    return sum(costs) if costs else None


def _tokens(calls: list[dict], key: str) -> int:
    return sum(c.get(key) or 0 for c in calls)


def llm_usage(meta: dict[str, Any]) -> LLMUsage | None:
    calls = meta.get("llm_calls") or []
    fallback = meta.get("llm_fallback") or []
    if not calls and not fallback:
        return None
    info = meta.get("llm") or {}
    ok = [c for c in calls if c.get("ok")]
    rounds: dict[int, list[dict]] = {}
    for c in calls:
        rounds.setdefault(c["round"], []).append(c)
    by_round = [RoundUsage(round=rnd, calls=sum(bool(c.get("ok")) for c in cs),
                           failed_tries=sum(not c.get("ok") for c in cs),
                           modes=sorted({c["mode"] for c in cs if c.get("ok")}),
                           prompt_tokens=_tokens(cs, "prompt_tokens"),
                           completion_tokens=_tokens(cs, "completion_tokens"),
                           latency_s=sum(c.get("latency_s") or 0 for c in cs), cost=_costs(cs))
                for rnd, cs in sorted(rounds.items())]
    return LLMUsage(
        endpoint=info.get("endpoint", "?"), model=info.get("model", "?"), modes=sorted({c["mode"] for c in ok}),
        answered=len(ok), failed_tries=len(calls) - len(ok), prompt_tokens=_tokens(calls, "prompt_tokens"),
        completion_tokens=_tokens(calls, "completion_tokens"),
        latency_s=sum(c.get("latency_s") or 0.0 for c in calls), cost=_costs(calls),
        accepted=sum(c.get("accepted", 0) for c in ok), rejected=sum(c.get("rejected", 0) for c in ok),
        invalid_replies=sum(bool(c.get("invalid")) for c in ok),
        slots_filled_by_tpe=sum(f["n"] for f in meta.get("llm_fills") or []), fallbacks=list(fallback),
        by_round=by_round)


def planning_summary(meta: dict[str, Any]) -> PlanningSummary:
    """`meta`: the store's metadata values under "llm", "llm_calls", "llm_fallback", "llm_fills",
    "rejections" (missing keys mean none)."""
    return PlanningSummary(llm=llm_usage(meta), rejections=list(meta.get("rejections") or []))


META_KEYS = ("llm", "llm_calls", "llm_fallback", "llm_fills", "rejections")

__all__ = ["PlanningSummary", "LLMUsage", "RoundUsage", "planning_summary", "META_KEYS"]
