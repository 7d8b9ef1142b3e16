"""How the planning went: LLM usage (calls, tokens, latency, cost, actions by kind, rounds without a
valid action, stops and fallbacks), arms a planner stopped, and rejected proposals.

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


class ArmShare(BaseModel):
    """The hybrid's plan for one arm at this budget."""

    points: int  # search points the arm gets
    warmup: int  # of them TPE's warm-up
    llm: int  # of them the LLM chooses


class HybridPlan(BaseModel):
    """What the hybrid planner's LLM share gives at this budget (report.words.hybrid_plan_text words it)."""

    share: float
    arms: dict[str, ArmShare]


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
    kinds: dict[str, int] = Field(default_factory=dict)  # accepted actions by kind (try, replicate, ...)
    rounds_asked: int = 0
    rounds_without_action: list[int] = Field(default_factory=list)
    stops: list[dict[str, Any]] = Field(default_factory=list)  # the run stopped on an LLM failure (round, reason)
    resumed_after_stop: bool = False  # the LLM was asked again after the last stop
    plan: HybridPlan | None = None  # hybrid: what the LLM's share gives at this budget (None: not a hybrid run)


class PlanningSummary(BaseModel):
    llm: LLMUsage | None = None  # None: no LLM planner in this run
    rejections: list[dict[str, Any]] = Field(default_factory=list)
    stopped_arms: list[dict[str, Any]] = Field(default_factory=list)  # stop actions the loop accepted


def _costs(calls: list[dict]) -> float | None:
    costs = [c["cost"] for c in calls if c.get("cost") is not None]
    return sum(costs) if costs else None


def _tokens(calls: list[dict], key: str) -> int:
    return sum(c.get(key) or 0 for c in calls)


def llm_usage(meta: dict[str, Any]) -> LLMUsage | None:
    calls = meta.get("llm_calls") or []
    fallback = meta.get("llm_fallback") or []
    info = meta.get("llm") or {}
    if not calls and not fallback and not info:
        return None
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
    kinds: dict[str, int] = {}
    for c in ok:
        for kind, n in (c.get("kinds") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + n
    asked = meta.get("llm_rounds") or []
    stops = list(meta.get("llm_stop") or [])
    last_stop = max((st["round"] for st in stops), default=None)
    plan = meta.get("llm_plan")
    return LLMUsage(
        kinds=kinds, rounds_asked=len(asked), rounds_without_action=[r["round"] for r in asked if not r["valid"]],
        stops=stops, resumed_after_stop=last_stop is not None and any(c["round"] > last_stop for c in calls),
        plan=HybridPlan.model_validate(plan) if plan else None,
        endpoint=info.get("endpoint", "?"), model=info.get("model", "?"), modes=sorted({c["mode"] for c in ok}),
        answered=len(ok), failed_tries=len(calls) - len(ok), prompt_tokens=_tokens(calls, "prompt_tokens"),
        completion_tokens=_tokens(calls, "completion_tokens"),
        latency_s=sum(c.get("latency_s") or 0.0 for c in calls), cost=_costs(calls),
        accepted=sum(c.get("accepted", 0) for c in ok), rejected=sum(c.get("rejected", 0) for c in ok),
        invalid_replies=sum(bool(c.get("invalid")) for c in ok),
        slots_filled_by_tpe=sum(f["n"] for f in meta.get("llm_fills") or []), fallbacks=list(fallback),
        by_round=by_round)


def planning_summary(meta: dict[str, Any]) -> PlanningSummary:
    """`meta`: the store's metadata values under META_KEYS (missing keys mean none)."""
    return PlanningSummary(llm=llm_usage(meta), rejections=list(meta.get("rejections") or []),
                           stopped_arms=[a for a in meta.get("actions") or [] if a.get("kind") == "stop"])


META_KEYS = ("llm", "llm_calls", "llm_fallback", "llm_fills", "llm_rounds", "llm_stop", "llm_plan", "actions",
             "rejections")

__all__ = ["PlanningSummary", "LLMUsage", "RoundUsage", "HybridPlan", "ArmShare", "planning_summary", "META_KEYS"]
