"""The open questions of a study so far, for the round report (what the next planning round reads)."""

from __future__ import annotations

import json

from research_agents.analysis.models import Findings
from research_agents.config.space import active_params
from research_agents.config.study import Study
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


def open_questions(study: Study, records: list[TrialRecord], fnd: Findings) -> list[str]:
    """What the search has not settled yet: untested LR regions, knobs tried at few values, leaders
    resting on one run, rankings within the noise (the round report's "Open questions")."""
    qs: list[str] = []
    ok_by_arm = {a: sum(1 for r in records if r.arm == a and r.ok) for a in study.arms}
    most = max(ok_by_arm.values(), default=0)
    for arm, n in ok_by_arm.items():
        if len(study.arms) > 1 and n < most:
            qs.append(f"{arm} has fewer completed runs ({n}) than the best-covered arm ({most}).")
    for arm, spec in study.arms.items():
        search_ok = [r for r in records if r.arm == arm and r.phase == "search" and r.ok]
        rng = fnd.lr_sensitivity.get(arm)
        if rng is not None and rng.best_lr is not None and rng.lrs:
            bound = spec.space.get("lr")
            if rng.best_lr == rng.lrs[0]:
                at_bound = bound is not None and bound.low is not None and rng.best_lr <= bound.low
                qs.append(f"{arm}: the best lr {rng.best_lr:.4g} is the SMALLEST tried"
                          + (" and sits at the space's lower bound (the optimum may lie outside the space)."
                             if at_bound else "; lower lrs are untested."))
            elif rng.best_lr == rng.lrs[-1]:
                at_bound = bound is not None and bound.high is not None and rng.best_lr >= bound.high
                qs.append(f"{arm}: the best lr {rng.best_lr:.4g} is the LARGEST tried"
                          + (" and sits at the space's upper bound (the optimum may lie outside the space)."
                             if at_bound else "; higher lrs are untested."))
            edges = [side for side, hit in (("lowest", rng.lo_at_edge), ("highest", rng.hi_at_edge)) if hit]
            if edges:
                qs.append(f"{arm}: the near-optimal lr range [{rng.lr_lo:.4g}, {rng.lr_hi:.4g}] (within "
                          f"{rng.margin:g} nats of the best) reaches the {' and '.join(edges)} lr tried; "
                          "its true width is unknown.")
        elif "lr" in spec.space:
            n_lr = len({r.params.get("lr") for r in search_ok if "lr" in r.params})
            qs.append(f"{arm}: lr sensitivity not measurable yet ({n_lr} distinct lr value(s) completed, 3 needed).")
        little = []
        tried: dict[str, set[str]] = {key: set() for key in spec.space}  # each knob's values, where active
        for r in search_ok:
            for key in active_params(spec.space, r.params):
                if key in r.params and key in tried:
                    tried[key].add(_distinct(r.params[key]))
        for key in spec.space:
            vals = tried[key]
            p = spec.space[key]
            enough = min(3, len(p.choices)) if p.type == "choice" else 3
            if len(vals) < enough:
                little.append(f"{key} ({len(vals)} value{'s' if len(vals) != 1 else ''})")
        if little:
            qs.append(f"{arm}: still uncertain, tried at few values: {', '.join(little)}.")
        arm_rows = [c for c in fnd.configs if c.arm == arm and c.n]
        if arm_rows:
            top = arm_rows[0]
            if top.n == 1:
                qs.append(f"{arm}: the leader ({top.describe()}) rests on a single run.")
            if len(arm_rows) > 1:
                second = arm_rows[1]
                gap = second.summary.mean - top.summary.mean
                thr = fnd.noise.threshold_for(top.config, second.config)
                if thr is not None and gap <= thr:
                    qs.append(f"{arm}: the top two configs differ by {gap:.4f}, within the noise threshold "
                              f"{thr:.4f}: which is better is unknown.")
    leaders = {a: rows[0] for a in study.arms if (rows := [c for c in fnd.configs if c.arm == a and c.n])}
    if len(leaders) >= 2:
        ordered = sorted(leaders.values(), key=lambda c: c.summary.mean)
        gap = ordered[1].summary.mean - ordered[0].summary.mean
        thr = fnd.noise.threshold_for(ordered[0].config, ordered[1].config)
        if thr is None:
            qs.append(f"The arm leaders differ by {gap:.4f} (best: {ordered[0].arm}); the noise floor is not "
                      "measured yet, so whether that is real is unknown until confirmation.")
        elif gap <= thr:
            qs.append(f"The arm leaders ({ordered[0].arm}, {ordered[1].arm}) differ by {gap:.4f}, within the "
                      f"noise threshold {thr:.4f}.")
    return qs
