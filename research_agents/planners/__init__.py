"""Planners: who proposes the next points. `make_planner` picks one by name.

grid: a fixed list (manual mode); random and tpe: Optuna samplers through ask-and-tell.
"""

from __future__ import annotations

from research_agents.planners.base import Planner, PlanningContext
from research_agents.planners.grid import GridPlanner, grid_points, parse_grid
from research_agents.planners.sampler import SamplerPlanner
from research_agents.specs import Proposal, Study, validate_params

PLANNERS = ("auto", "grid", "random", "tpe")


def study_points(study: Study) -> list[Proposal]:
    return [Proposal(arm=p.arm, params=p.params, origin="grid", rationale=f"point: {p.name}")
            for p in study.points]


def make_planner(kind: str, study: Study, grid: str | None = None) -> tuple[Planner, str]:
    """The planner and one line saying which and why (ValueError on bad input)."""
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
    if kind in ("random", "tpe"):
        s = study.planner
        return SamplerPlanner(kind, s.seed, s.tpe_startup_trials), f"planner: {kind}"
    if kind == "auto":
        s = study.planner
        return (SamplerPlanner("tpe", s.seed, s.tpe_startup_trials),
                "planner: auto -> tpe (no LLM endpoint configured; Optuna TPE owns the search)")
    raise ValueError(f"--planner: unknown {kind!r}; choose from {', '.join(PLANNERS)}")


__all__ = ["Planner", "PlanningContext", "GridPlanner", "SamplerPlanner", "make_planner", "PLANNERS"]
