"""Tuning evidence from the search runs: per arm and per searched knob, is the leader bracketed?

The leader is the arm's configuration with the lowest mean search val loss. For each knob of its
space that is active for the leader, its one-knob neighbours are the measured configurations
identical to the leader but for that knob. A side is closed when the nearest such neighbour on
it lies within BRACKET_REACH grid steps (a factor of about 2 for an LR) and is not better beyond
the noise; a side whose neighbour is farther, or missing, is open (the untested region is named);
a leader at the space's bound has an edge on that side (the space may be too narrow). Wen et al.
2025: a baseline is tuned when no single-knob neighbour helps.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

from research_agents.analysis.stats import noise_floor
from research_agents.config.space import Param, active_params
from research_agents.config.study import Study
from research_agents.evidence import BRACKET_REACH, ArmEvidence, KnobEvidence, Neighbour
from research_agents.fmt import fmt_value
from research_agents.records import TrialRecord, by_config


def _means(records: list[TrialRecord]) -> dict[str, tuple[dict[str, Any], list[float]]]:
    return {cid: (rs[0].params, [r.val_loss for r in rs]) for cid, rs in by_config(records).items()}


def _threshold(sds: dict[str, float], typical: float | None, *configs: str) -> float | None:
    """2 x the larger per-config sd of these configs when each was repeated (seed noise is not
    uniform: an unstable config elsewhere must not blur a quiet comparison); where one was not,
    never less than the arm's typical (median) per-config sd."""
    known = [sds[c] for c in configs if c in sds]
    if len(known) < len(configs) and typical is not None:
        known.append(typical)
    return 2 * max(known) if known else None


def _same_but(a: dict[str, Any], b: dict[str, Any], knob: str, space: dict[str, Param]) -> bool:
    keys = (set(a) | set(b)) - {knob}
    return all(a.get(k) == b.get(k) for k in keys)


def _knob(name: str, p: Param, leader: dict[str, Any], lmean: float, lcid: str,
          groups: dict[str, tuple[dict[str, Any], list[float]]], space: dict[str, Param],
          sds: dict[str, float], typical: float | None) -> KnobEvidence:
    value = leader.get(name)
    others = [(cid, params, losses) for cid, (params, losses) in groups.items()
              if cid != lcid and name in params and _same_but(params, leader, name, space)]
    if p.type == "choice":
        tried = {fmt_value(params[name]) for _, params, _ in others} | {fmt_value(value)}
        untried = [c for c in p.choices if fmt_value(c) not in tried]
        status = "choices untried" if untried else "all choices tried"
        return KnobEvidence(knob=name, status=status, leader_value=value, to_try=untried)
    sides: dict[int, Neighbour | None] = {}
    state: dict[int, str] = {}
    to_try: list[Any] = []
    for direction in (-1, 1):
        near = [(p.steps_between(value, params[name]), cid, params, losses) for cid, params, losses in others
                if (params[name] - value) * direction > 0]
        nb = None
        if near:
            steps, cid, params, losses = min(near, key=lambda t: t[0])
            mean = fmean(losses)
            thr = _threshold(sds, typical, lcid, cid)
            nb = Neighbour(value=params[name], mean=mean, n=len(losses), steps=round(steps, 3), gap=mean - lmean,
                           within_noise=None if thr is None else mean - lmean <= thr)
        sides[direction] = nb
        if p.neighbour(value, direction) is None:
            state[direction] = "edge"
        elif nb is not None and nb.steps <= BRACKET_REACH + 1e-9 and nb.gap >= 0:
            state[direction] = "closed"
        else:
            state[direction] = "open"
            to_try.append(p.neighbour(value, direction))
    lo, hi = state[-1], state[1]
    if lo == "closed" and hi == "closed":
        status = "bracketed"
    elif "open" in (lo, hi):
        status = "open both" if lo == hi == "open" else ("open below" if lo == "open" else "open above")
    else:
        status = "edge low" if lo == "edge" else "edge high"
    return KnobEvidence(knob=name, status=status, leader_value=value, below=sides[-1], above=sides[1],
                        to_try=[v for v in to_try if v is not None], below_state=lo, above_state=hi,
                        low=p.low, high=p.high)


def arm_evidence(study: Study, arm: str, records: list[TrialRecord]) -> ArmEvidence:
    space = study.arms[arm].space
    ok = [r for r in records if r.arm == arm and r.phase == "search" and r.ok]
    groups = _means(ok)
    nf = noise_floor({cid: losses for cid, (_, losses) in groups.items()})
    if not groups:
        knobs = [KnobEvidence(knob=k, status="open both") for k in _order(space)]
        return ArmEvidence(arm=arm, knobs=knobs, close_call=True)
    ranked = sorted(groups, key=lambda cid: fmean(groups[cid][1]))
    lcid = ranked[0]
    leader, losses = groups[lcid]
    lmean = fmean(losses)
    ev = ArmEvidence(arm=arm, leader_config=lcid, leader_params=leader, leader_mean=lmean, leader_n=len(losses),
                     threshold=_threshold(nf.sd_by_config, nf.median_sd, lcid))
    if len(ranked) > 1:
        ev.runner_up_params, runner = groups[ranked[1]]
        ev.runner_up_n = len(runner)
        ev.runner_up_gap = fmean(runner) - lmean
        thr = _threshold(nf.sd_by_config, nf.median_sd, lcid, ranked[1])
        ev.close_call = thr is None or ev.runner_up_gap <= thr
    active = set(active_params(space, leader))
    for name in _order(space):
        if name not in active or name not in leader:
            continue
        ev.knobs.append(_knob(name, space[name], leader, lmean, lcid, groups, space, nf.sd_by_config, nf.median_sd))
    if "lr" not in space:
        ev.knobs.insert(0, KnobEvidence(knob="lr", status="not searched"))
    return ev


def _order(space: dict[str, Param]) -> list[str]:
    return sorted(space, key=lambda k: (k != "lr", list(space).index(k)))


# The last answer and what it answered (the study, the very record objects in order): the loop's
# planning and the round report ask again for the same records, several times a round.
_LAST: tuple | None = None


def tuning_evidence(study: Study, records: list[TrialRecord]) -> dict[str, ArmEvidence]:
    """Every arm's evidence (arms without a search space: their LR "not searched")."""
    global _LAST
    asked = tuple(records)
    last = _LAST
    if (last is not None and last[0] is study and len(last[1]) == len(asked)
            and all(a is b for a, b in zip(last[1], asked))):
        return dict(last[2])
    out = {arm: arm_evidence(study, arm, records) for arm in study.arms}
    _LAST = (study, asked, out)
    return dict(out)


def settle_runs(ev: ArmEvidence, seeds_per_point: int) -> tuple[list[dict[str, Any]], int]:
    """The points that would close the arm's open LR-like sides (params) and the runs they cost:
    every searched LR-like knob (`lr`, `*_lr`) counts for "tuned" (evidence.lr_like)."""
    points = [{**ev.leader_params, k.knob: v} for k in ev.untuned_lrs for v in k.to_try]
    return points, len(points) * seeds_per_point


__all__ = ["tuning_evidence", "arm_evidence", "settle_runs"]
