"""Planners: who proposes the next points. `make_planner` picks one by name.

grid: a fixed list (manual mode); random and tpe: Optuna samplers through ask-and-tell;
llm: an LLM over any OpenAI-compatible API; hybrid: TPE owns the state, the LLM proposes a share.
"""

from __future__ import annotations

from research_agents.planners.base import Planner, PlanningContext
from research_agents.planners.grid import GridPlanner, grid_points, parse_grid
from research_agents.planners.sampler import SamplerPlanner
from research_agents.specs import Proposal, Study, validate_params

PLANNERS = ("auto", "grid", "random", "tpe", "llm", "hybrid")


def study_points(study: Study) -> list[Proposal]:
    return [Proposal(arm=p.arm, params=p.params, origin="grid", rationale=f"point: {p.name}")
            for p in study.points]


def make_planner(kind: str, study: Study, grid: str | None = None, llm=None) -> tuple[Planner, str]:
    """The planner and one line saying which and why (ValueError on bad input).

    `llm` is an LLMConfig (planners.llm_client.config_from_args); `auto` picks hybrid when it says an
    endpoint is configured, else tpe.
    """
    if grid is not None:
        if kind not in ("auto", "grid"):
            raise ValueError(f"--grid goes with --planner grid (or auto), not {kind}")
        points = grid_points(study, parse_grid(grid))
        for p in points:
            problems = validate_params(study, p.arm, p.params)
            if problems:
                raise ValueError(f"--grid: {p.arm} {p.params}: {problems[0]}")
        return GridPlanner(points), f"planner: grid ({len(points)} points from --grid)"
    has_space = any(arm.space for arm in study.arms.values())
    if kind == "grid" or (kind == "auto" and study.points and not has_space):
        if not study.points:
            raise ValueError(f"--planner grid needs --grid or a study with named points; {study.name} has none")
        return GridPlanner(study_points(study)), f"planner: grid ({len(study.points)} named points)"
    if kind in ("llm", "hybrid") or (kind == "auto" and llm is not None and llm.configured and has_space):
        return _llm_planner(kind, study, llm)
    if kind in ("random", "tpe"):
        s = study.planner
        return SamplerPlanner(kind, s.seed, s.tpe_startup_trials), f"planner: {kind}"
    if kind == "auto":
        s = study.planner
        return (SamplerPlanner("tpe", s.seed, s.tpe_startup_trials),
                "planner: auto -> tpe (no LLM endpoint configured; Optuna TPE owns the search)")
    raise ValueError(f"--planner: unknown {kind!r}; choose from {', '.join(PLANNERS)}")


def _llm_planner(kind: str, study: Study, llm) -> tuple[Planner, str]:
    from research_agents.planners.hybrid import HybridPlanner
    from research_agents.planners.llm import LLMPlanner

    if llm is None or not llm.configured:
        raise ValueError(f"--planner {kind} needs an LLM endpoint: set OPENAI_API_KEY (OpenAI), or "
                         "--llm-base-url / OPENAI_BASE_URL (a local vLLM, Ollama or llama.cpp server)")
    if not any(arm.space for arm in study.arms.values()):
        raise ValueError(f"--planner {kind}: study {study.name} has no search space to plan in")
    s = study.planner
    planner = LLMPlanner(llm, s.seed, s.tpe_startup_trials)
    where = f"model {llm.model} at {llm.endpoint}"
    errors = "on LLM errors: " + ("fall back to tpe" if llm.on_error == "fallback" else "stop (rerun resumes)")
    if kind == "llm":
        return planner, (f"planner: llm ({where}; every proposal validated, up to {llm.repairs} repair(s) "
                         f"per round; {errors})")
    share = s.llm_share if llm.share is None else llm.share
    hybrid = HybridPlanner(planner, share, s.llm_warmup_trials)
    why = f"auto -> hybrid (LLM endpoint configured by {llm.source}; " if kind == "auto" else "hybrid ("
    return hybrid, (f"planner: {why}{where}; Optuna TPE owns the search, the LLM proposes {share:.0%} of "
                    f"the points after {s.llm_warmup_trials} warm-up trials per arm; {errors})")


__all__ = ["Planner", "PlanningContext", "GridPlanner", "SamplerPlanner", "make_planner", "PLANNERS"]
