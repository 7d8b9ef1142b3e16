"""Run forms of a study: which scale, which named experiments, and the plan of a point run.

`run --scale NAME` applies one of the study's scales (default: "seed" on CUDA, "cpu" otherwise).
`--quick`, `-e NAME ...` and `--all` select named points; a point run trains each selected point
on every seed in `seeds.search` and has no confirmation phase (the points are fixed in advance,
not chosen by a search, so the statistics across their seeds are what decides). A study without
a search space and no selection runs all its points.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from research_agents.config.plan import Plan
from research_agents.config.study import Point, Study
from research_agents.fmt import params_text
from trainer.spec import TrialSpec, format_validation_error

DEFAULT_BUDGET = 20  # runs, when neither --budget nor a point selection says otherwise


def default_scale(study: Study) -> str | None:
    """"seed" on a CUDA machine, "cpu" otherwise; None when the study has no such scale."""
    if not study.scales:
        return None
    import torch

    wanted = "seed" if torch.cuda.is_available() else "cpu"
    return wanted if wanted in study.scales else None


def selected_points(study: Study, quick: bool = False, experiments: list[str] | None = None,
                    run_all: bool = False) -> list[Point] | None:
    """The points a run selects, or None for the study's search (ValueError on a bad name)."""
    if quick:
        if not study.quick:
            raise ValueError(f"--quick: study {study.name} names no quick experiments")
        return study.select_points(study.quick)
    if experiments:
        return study.select_points(experiments)
    if run_all or (study.points and not any(arm.space for arm in study.arms.values())):
        if not study.points:
            raise ValueError(f"--all: study {study.name} has no named experiments")
        return list(study.points)
    return None


def point_budget(study: Study, points: list[Point]) -> int:
    return len(points) * len(study.seeds.search)


def point_plan(study: Study, points: list[Point], budget: int) -> Plan:
    """Each point on every search seed, in study order, while the budget lasts; no confirmation."""
    n_seeds = len(study.seeds.search)
    if budget < n_seeds:
        raise ValueError(f"--budget {budget} is too small: each named experiment runs on the {n_seeds} "
                         f"seeds {study.seeds.search}")
    share = {a: 0 for a in study.arms}
    left = budget
    for p in points:
        if left < n_seeds:
            break
        share[p.arm] += n_seeds
        left -= n_seeds
    return Plan(budget=budget, confirm_seeds=[], search_budget=budget - left, search_share=share)


def check_specs(study: Study, points: list[Point] | None, preset: str, overrides: dict[str, Any]) -> list[TrialSpec]:
    """Every run of the run must make a valid trial spec: each arm's fixed settings and start
    point, or each selected experiment (ValueError with one line otherwise). Returns the specs."""
    where = f"scale {study.scale}, preset {preset}" if study.scale else f"preset {preset}"
    todo: list[tuple[str, str, dict[str, Any]]]
    if points is None:
        todo = [(f"arm {a}", a, {}) for a in study.arms]
        todo += [(f"arm {a} start point", a, arm.start) for a, arm in study.arms.items() if arm.start is not None]
    else:
        todo = [(f"experiment {p.name}", p.arm, p.params) for p in points]
    specs = []
    for what, arm, params in todo:
        try:
            specs.append(study.trial_spec(arm, params, seed=0, preset=preset, overrides=overrides))
        except ValidationError as e:
            raise ValueError(f"{what} ({where}): {format_validation_error(e)}") from None
    return specs


def check_devices(specs: list[TrialSpec]) -> None:
    """Every device the specs ask for exists on this machine (ValueError with one line otherwise:
    `--device cuda` without CUDA would fail every trial)."""
    for device in sorted({s.device for s in specs} - {"auto", "cpu"}):
        from trainer.device import resolve_device

        try:
            resolve_device(device)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"--device {device}: {e}; use --device cpu (or auto)") from None


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`--set KEY=VALUE ...` -> spec overrides; VALUE is JSON when it parses (10, 0.5, true, [1,2])."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def listing(study: Study) -> str:
    """`run --study S --list`: the named experiments, their groups, the quick set and the scales."""
    lines = [f"{study.name}: {study.question}", ""]
    if not study.points:
        lines.append("No named experiments (the study is a search; run it with --budget N).")
    groups_of: dict[str, list[str]] = {}
    for g, names in study.groups.items():
        for n in names:
            groups_of.setdefault(study.point_index()[n].name, []).append(g)
    width = max((len(p.name) for p in study.points), default=0)
    for p in study.points:
        tags = [*(["quick"] if p.name in {study.point_index()[n].name for n in study.quick} else []),
                *groups_of.get(p.name, [])]
        alias = f" (also: {', '.join(p.aliases)})" if p.aliases else ""
        lines.append(f"  {p.name:<{width}}  {p.arm:<6} {params_text(p.params)}{alias}"
                     + (f"  [{', '.join(tags)}]" if tags else ""))
    if study.groups:
        lines += ["", "Groups (-e GROUP): " + ", ".join(f"{g} ({len(v)})" for g, v in study.groups.items())]
    if study.quick:
        lines.append("Quick (--quick): " + ", ".join(study.quick))
    if study.scales:
        lines += ["", "Scales (--scale NAME):"]
        lines += [f"  {n}: {sc.description or sc.preset or study.preset}" for n, sc in study.scales.items()]
    lines.append(f"Seeds per experiment: {study.seeds.search}")
    return "\n".join(lines)


__all__ = ["default_scale", "selected_points", "point_budget", "point_plan", "check_specs", "check_devices",
           "parse_set", "listing", "DEFAULT_BUDGET"]
