"""Manual mode: a fixed list of points, run in order, no model of the landscape.

Points come from `--grid "lr=0.01,0.02 momentum=0.9,0.95"` (the product, applied to every arm
whose space has all those names) or from the study's named `points`.
"""

from __future__ import annotations

import itertools
from typing import Any

from research_agents.actions import Proposal
from research_agents.config.space import config_id
from research_agents.config.study import Study
from research_agents.planners.base import BasePlanner, PlanningContext


def parse_grid(text: str) -> dict[str, list[Any]]:
    """'lr=0.01,0.02 momentum=0.9' -> {'lr': [0.01, 0.02], 'momentum': [0.9]} (ValueError on bad input)."""
    grid: dict[str, list[Any]] = {}
    for part in text.split():
        name, sep, values = part.partition("=")
        if not sep or not name or not values:
            raise ValueError(f"--grid: expected NAME=V1,V2,... but got {part!r}")
        if name in grid:  # a second "lr=" would silently replace the first
            raise ValueError(f"--grid: {name} is given twice; list all its values once, e.g. {name}=V1,V2")
        grid[name] = [_value(v) for v in values.split(",") if v != ""]
        if not grid[name]:
            raise ValueError(f"--grid: no values for {name!r}")
        repeated = sorted({str(v) for v in grid[name] if grid[name].count(v) > 1})
        if repeated:
            raise ValueError(f"--grid: {name} lists {', '.join(repeated)} more than once")
    if not grid:
        raise ValueError("--grid: empty")
    return grid


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def grid_points(study: Study, grid: dict[str, list[Any]]) -> list[Proposal]:
    points = []
    arms = [a for a, arm in study.arms.items() if set(grid) <= set(arm.space)]
    if not arms:
        raise ValueError(f"--grid: no arm of study {study.name!r} has all of {', '.join(grid)} in its space")
    for arm in arms:
        for combo in itertools.product(*grid.values()):
            points.append(Proposal(arm=arm, params=dict(zip(grid, combo)), origin="grid",
                                   rationale="manual grid point"))
    return points


class GridPlanner(BasePlanner):
    name = "grid"
    starts_at_study_point = False  # a manual grid runs exactly its points
    pure = True  # (its points are fixed)

    def __init__(self, points: list[Proposal]):
        self.points = points

    def propose(self, ctx: PlanningContext) -> list[Proposal]:
        done = {r.config for r in ctx.history if r.phase == "search"}
        todo = [p for p in self.points if config_id(p.arm, p.params) not in done]
        out = []
        for arm, n in ctx.wanted.items():
            out += [p for p in todo if p.arm == arm][:n]
        return out
