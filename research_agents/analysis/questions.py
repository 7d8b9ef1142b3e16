"""The open questions of a study so far, as data: the round report and the LLM prompt word them
(report/words.py); the loop hands them to the planners."""

from __future__ import annotations

import json
from typing import Literal

from research_agents.analysis.findings import analyze
from research_agents.analysis.models import ConfigRow, Findings
from research_agents.config.plan import Plan
from research_agents.config.space import active_params
from research_agents.config.study import Study
from research_agents.evidence import OpenQuestion
from research_agents.records import TrialRecord


def _distinct(value) -> tuple:
    """A key that two values share exactly when their JSON (sort_keys, default=str) is the same,
    without writing JSON for the usual scalars (this runs for every knob of every run, each round)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, float):
        return ("f", float.__repr__(value))  # (what json writes for a float)
    if isinstance(value, int):
        return ("i", int.__repr__(value))
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("n",)
    return ("j", json.dumps(value, sort_keys=True, default=str))


def _mean(c: ConfigRow) -> float:
    """A measured configuration's mean loss (fnd.configs rows with n > 0 have one)."""
    assert c.summary.mean is not None, f"{c.config}: measured, yet no mean"
    return c.summary.mean


def open_questions(study: Study, records: list[TrialRecord], fnd: Findings) -> list[OpenQuestion]:
    """What the search has not settled yet: untested LR regions, knobs tried at few values, leaders
    resting on one run, rankings within the noise (the round report's "Open questions")."""
    qs: list[OpenQuestion] = []
    ok_by_arm = {a: sum(1 for r in records if r.arm == a and r.ok) for a in study.arms}
    most = max(ok_by_arm.values(), default=0)
    for arm, n in ok_by_arm.items():
        if len(study.arms) > 1 and n < most:
            qs.append(OpenQuestion(code="fewer runs", arm=arm, n=n, most=most))
    for arm, spec in study.arms.items():
        search_ok = [r for r in records if r.arm == arm and r.phase == "search" and r.ok]
        rng = fnd.lr_sensitivity.get(arm)
        if rng is not None and rng.best_lr is not None and rng.lrs:
            bound = spec.space.get("lr")
            if rng.best_lr == rng.lrs[0]:
                at_bound = bound is not None and bound.low is not None and rng.best_lr <= bound.low
                qs.append(OpenQuestion(code="lr smallest", arm=arm, lr=rng.best_lr, at_bound=at_bound))
            elif rng.best_lr == rng.lrs[-1]:
                at_bound = bound is not None and bound.high is not None and rng.best_lr >= bound.high
                qs.append(OpenQuestion(code="lr largest", arm=arm, lr=rng.best_lr, at_bound=at_bound))
            sides: tuple[tuple[Literal["lowest", "highest"], bool], ...] = (("lowest", rng.lo_at_edge),
                                                                             ("highest", rng.hi_at_edge))
            edges = [side for side, hit in sides if hit]
            if edges:
                qs.append(OpenQuestion(code="lr range at edge", arm=arm, lo=rng.lr_lo, hi=rng.lr_hi,
                                       margin=rng.margin, edges=edges))
        elif "lr" in spec.space:
            n_lr = len({r.params.get("lr") for r in search_ok if "lr" in r.params})
            qs.append(OpenQuestion(code="lr unmeasured", arm=arm, n=n_lr))
        little = []
        tried: dict[str, set[tuple]] = {key: set() for key in spec.space}  # each knob's values, where active
        for r in search_ok:
            for key in active_params(spec.space, r.params):
                if key in r.params and key in tried:
                    tried[key].add(_distinct(r.params[key]))
        for key in spec.space:
            vals = tried[key]
            p = spec.space[key]
            enough = min(3, len(p.choices or [])) if p.type == "choice" else 3
            if len(vals) < enough:
                little.append((key, len(vals)))
        if little:
            qs.append(OpenQuestion(code="few values", arm=arm, knobs=little))
        arm_rows = [c for c in fnd.configs if c.arm == arm and c.n]
        if arm_rows:
            top = arm_rows[0]
            if top.n == 1:
                qs.append(OpenQuestion(code="single-run leader", arm=arm, leader=top.describe()))
            if len(arm_rows) > 1:
                second = arm_rows[1]
                gap = _mean(second) - _mean(top)
                thr = fnd.noise.threshold_for(top.config, second.config)
                if thr is not None and gap <= thr:
                    qs.append(OpenQuestion(code="top two close", arm=arm, gap=gap, threshold=thr))
    leaders = {a: rows[0] for a in study.arms if (rows := [c for c in fnd.configs if c.arm == a and c.n])}
    if len(leaders) >= 2:
        ordered = sorted(leaders.values(), key=_mean)
        gap = _mean(ordered[1]) - _mean(ordered[0])
        thr = fnd.noise.threshold_for(ordered[0].config, ordered[1].config)
        if thr is None:
            qs.append(OpenQuestion(code="leaders noise unknown", arm=ordered[0].arm, gap=gap))
        elif gap <= thr:
            qs.append(OpenQuestion(code="leaders close", arms=[ordered[0].arm, ordered[1].arm], gap=gap, threshold=thr))
    return qs


def round_questions(study: Study, records: list[TrialRecord], plan: Plan | None) -> list[OpenQuestion] | None:
    """The open questions the latest round report shows (None before any trial: no round reported yet)."""
    if not records:
        return None
    return open_questions(study, records, analyze(study, records, plan))
