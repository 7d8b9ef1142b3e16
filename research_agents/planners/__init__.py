"""Planners: who proposes the next points. `make_planner` picks one by name.

grid: a fixed list (manual mode); random and tpe: Optuna samplers through ask-and-tell;
llm: an LLM over any OpenAI-compatible API; hybrid: TPE owns the state, the LLM proposes a share.
A new planner subclasses `BasePlanner` and adds one entry to `_FACTORIES`.
"""

from __future__ import annotations

from typing import Callable

from research_agents.actions import Proposal
from research_agents.config.study import Point, Study, validate_params
from research_agents.planners.base import BasePlanner, Planner, PlanningContext
from research_agents.planners.grid import GridPlanner, grid_points, parse_grid
from research_agents.planners.sampler import SamplerPlanner


def study_points(study: Study, points: list[Point] | None = None) -> list[Proposal]:
    """The study's named points (or the given ones) as grid proposals."""
    return [Proposal(arm=p.arm, params=p.params, origin="grid", point=p.name)
            for p in (study.points if points is None else points)]


def point_planner(study: Study, points: list[Point]) -> tuple[BasePlanner, str]:
    """The grid planner over a run's selected named experiments, and the line that says so."""
    line = (f"planner: grid ({len(points)} named experiment(s) x seeds {study.seeds.search}; "
            "no confirmation phase: the points are fixed in advance)")
    return GridPlanner(study_points(study, points)), line


def _grid(study: Study, grid: str | None, llm) -> tuple[BasePlanner, str]:
    if grid is not None:
        points = grid_points(study, parse_grid(grid))
        for p in points:
            problems = validate_params(study, p.arm, p.params)
            if problems:
                raise ValueError(f"--grid: {p.arm} {p.params}: {problems[0]}")
        return GridPlanner(points), f"planner: grid ({len(points)} points from --grid)"
    if not study.points:
        raise ValueError(f"--planner grid needs --grid or a study with named points; {study.name} has none")
    return GridPlanner(study_points(study)), f"planner: grid ({len(study.points)} named points)"


def _sampler(kind: str) -> Callable[[Study, str | None, object], tuple[BasePlanner, str]]:
    def make(study: Study, grid: str | None, llm) -> tuple[BasePlanner, str]:
        s = study.planner
        return SamplerPlanner(kind, s.seed, s.tpe_startup_trials), f"planner: {kind}"

    return make


def _policy(study: Study, grid: str | None, llm) -> tuple[BasePlanner, str]:
    from research_agents.planners.policy import PolicyPlanner

    s = study.planner
    return PolicyPlanner(s.seed, s.tpe_startup_trials), ("planner: policy (brackets each arm's LR first, "
                                                         "replicates close calls, checks one-knob neighbours, "
                                                         "then TPE around the leader; confirmation sized by "
                                                         "the measured noise)")


def _queued(study: Study, grid: str | None, llm) -> tuple[BasePlanner, str]:
    from research_agents.planners.queued import QueuedPlanner

    s = study.planner
    return QueuedPlanner(s.seed, s.tpe_startup_trials), ("planner: mcp (research actions queued through the MCP "
                                                         "server first, each vetted like any planner's; the "
                                                         "default policy plans the rest)")


def _llm(kind: str) -> Callable[[Study, str | None, object], tuple[BasePlanner, str]]:
    def make(study: Study, grid: str | None, llm) -> tuple[BasePlanner, str]:
        return _llm_planner(kind, study, llm)

    return make


_FACTORIES: dict[str, Callable[[Study, str | None, object], tuple[BasePlanner, str]]] = {
    "grid": _grid,
    "random": _sampler("random"),
    "tpe": _sampler("tpe"),
    "policy": _policy,
    "llm": _llm("llm"),
    "hybrid": _llm("hybrid"),
    "mcp": _queued,
}
PLANNERS = ("auto", *_FACTORIES)


def make_planner(kind: str, study: Study, grid: str | None = None, llm=None) -> tuple[BasePlanner, str]:
    """The planner and one line saying which and why (ValueError on bad input).

    `llm` is an LLMConfig (cli.llm_config); `auto` picks grid for a study of named points only,
    hybrid when an LLM endpoint is configured, else the default policy.
    """
    if grid is not None and kind not in ("auto", "grid"):
        raise ValueError(f"--grid goes with --planner grid (or auto), not {kind}")
    has_space = any(arm.space for arm in study.arms.values())
    if kind == "auto":
        if grid is not None or (study.points and not has_space):
            kind = "grid"
        elif llm is not None and llm.configured and has_space:
            kind = "auto-hybrid"
        else:
            planner, line = _policy(study, grid, llm)
            return planner, line.replace("planner: policy (", "planner: auto -> policy (no LLM endpoint configured; ")
    if kind == "auto-hybrid":
        return _llm_planner("auto", study, llm)
    if kind not in _FACTORIES:
        raise ValueError(f"--planner: unknown {kind!r}; choose from {', '.join(PLANNERS)}")
    return _FACTORIES[kind](study, grid, llm)


def _llm_planner(kind: str, study: Study, llm) -> tuple[BasePlanner, str]:
    from research_agents.planners.hybrid import HybridPlanner
    from research_agents.planners.llm import LLMPlanner

    if llm is None or not llm.configured:
        raise ValueError(f"--planner {kind} needs an LLM endpoint: set OPENAI_API_KEY (OpenAI), or "
                         "--llm-base-url / OPENAI_BASE_URL (a local vLLM, Ollama or llama.cpp server)")
    if not any(arm.space for arm in study.arms.values()):
        raise ValueError(f"--planner {kind}: study {study.name} has no search space to plan in")
    s = study.planner
    planner = LLMPlanner(llm, s.seed, s.tpe_startup_trials)
    where = f"model {llm.model} at {llm.shown}, {llm.key_note()}, timeout {llm.timeout:g} s"
    errors = (f"on LLM errors or {llm.bad_rounds} rounds in a row without a valid action: "
              + ("fall back to tpe" if llm.on_error == "fallback" else "stop (rerun resumes)"))
    if kind == "llm":
        return planner, (f"planner: llm ({where}; chooses try / replicate / bracket / stop, every action validated, "
                         f"up to {llm.repairs} repair(s) per round; {errors})")
    share = s.llm_share if llm.share is None else llm.share
    hybrid = HybridPlanner(planner, share, s.llm_warmup_trials)
    why = f"auto -> hybrid (LLM endpoint configured by {llm.source}; " if kind == "auto" else "hybrid ("
    return hybrid, (f"planner: {why}{where}; Optuna TPE owns the search, the LLM chooses actions for {share:.0%} "
                    f"of each arm's search points after a warm-up of min({s.llm_warmup_trials}, a third of the arm's "
                    f"points); {errors})")


def sizes_confirmation(name: str | None) -> bool:
    """Whether the planner a run saved under `name` has an adaptive plan (the confirmation sized by
    the measured noise): its class says so (`BasePlanner.sizes_confirmation`)."""
    from research_agents.planners.policy import PolicyPlanner
    from research_agents.planners.queued import QueuedPlanner

    classes: list[type[BasePlanner]] = [GridPlanner, SamplerPlanner, PolicyPlanner, QueuedPlanner]
    return any(cls.sizes_confirmation for cls in classes if cls.name == name)


__all__ = ["BasePlanner", "Planner", "PlanningContext", "GridPlanner", "SamplerPlanner", "make_planner",
           "point_planner", "study_points", "sizes_confirmation", "PLANNERS"]
