"""The default policy (`--planner auto` without an LLM): spend the budget on tuning evidence.

Per arm, each round, in this order of need (FACTS section 7; Wen et al. 2025):
1. the LRs first (every LR-like knob the arm searches: `lr`, then e.g. the AdamW leg's
   `adamw_lr`; one step of each open one per round, interleaved), each coarse to fine: a factor of 4 from the start point, then on towards whichever
   side has nothing measured yet, until the optimum is inside, then the factor-2 neighbours that
   bracket it; where a parabola through the leader and its two nearest points along the knob puts
   the minimum between the leader and a measured point (a leader barely ahead of its coarse
   neighbour), the point between them comes first and the move away from both waits;
2. measure the noise: once an arm has two configs and no repeat, replicate its leader on one more
   seed (the adaptive plan sizes the confirmation from the arms' noise, and assumes 3x the measured
   noise for an arm with none: on benchmarks/data/replay_fair.csv one repeat per arm instead of
   one in all took Muon within 2 noise sd of its best at budget 40 from 70% to 100% of 30
   repetitions and AdamW at budget 20 from 0% to 83%, since the confirmation then needs 3 seeds,
   not 5, and the runs saved go to the search; measured before the replay shared table seeds
   across configs, which took AdamW at budget 20 to 100%);
3. replicate the leader while the runner-up is within the noise of it and the leader rests on
   fewer than 3 runs (single-seed noise could flip the ranking);
4. the leader's other knobs: a first coarse look halfway to the farther bound, then the same
   coarse-to-fine sweep as the LR on each numeric knob; each untried choice once. Once an arm's
   search runs left are no more than its knobs never measured around the leader plus LOOK_MARGIN,
   those first looks come right after the LRs' coarse (factor-4) moves and before their factor-2
   refinement (a knob never looked at can be worth more than a factor 2 of LR: on
   benchmarks/data/replay_fair.csv Muon's momentum 0.85 against 0.95 is worth 0.03 nats, two
   noise sd. Muon within 2 sd of its best in 30 repetitions at budgets 20/24/28/32/40: LRs always
   first 0/0/0/0/100%; margin 0 100/100/37/100/100% (at 28 the swap reserve left one run after
   the LR refinement); margin 2 100% at every one of them);
5. with all that settled, TPE proposes around the leader (each LR within a factor of 2 of it).
Steps 4 and 5 run while the arm has a search run left beyond this round's LR work
(EXPLORE_RESERVE more kept back; 0: measured on benchmarks/data/replay_fair.csv, keeping one run
back to re-bracket a new leader's LR left Muon's momentum unexplored at budget 40, within 2 noise
sd of its best in 17% of 30 repetitions, against 100% with none kept back (with the replay's
earlier seed offsets; since the replay shares table seeds across configs both give 100% at
budgets 20 to 40); a leader the last run finds may then be untuned, which the confidence rules
state); otherwise the last runs replicate
the leader and its runner-up.
A run stopped early at a rung counts as a look (a sweep goes on past it, never back to the same
point) but never as a measurement: only full runs bracket, lead or compare.
The loop validates every action against the space, the budget and the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from statistics import fmean
from typing import Any

from research_agents import rungs
from research_agents.actions import Proposal, Replicate
from research_agents.config.space import Param, active_params
from research_agents.evidence import ArmEvidence, KnobEvidence, lr_like
from research_agents.planners.base import BasePlanner, PlanningContext
from research_agents.planners.sampler import SamplerPlanner
from research_agents.records import by_config

REPLICATE_UNTIL = 3  # a leader within the noise of its runner-up is replicated up to this many runs
EXPLORE_RESERVE = 0  # search runs kept back when exploring another knob (0: the last run may explore; see above)
LOOK_MARGIN = 2  # first looks move ahead of LR refinement once runs left <= knobs never looked at + this (see above)


def _mid(p: Param) -> Any:
    if p.type == "choice":
        return p.choices[0]
    value = (p.low * p.high) ** 0.5 if p.log else (p.low + p.high) / 2
    return int(round(value)) if p.type == "int" else float(f"{value:.4g}")


class PolicyPlanner(BasePlanner):
    name = "policy"
    sizes_confirmation = True  # it measures the noise early so the plan can size the confirmation
    pure = True  # (its TPE is seeded per round and arm)

    def __init__(self, seed: int = 0, startup_trials: int = 3):
        self.sampler = SamplerPlanner("tpe", seed, startup_trials)

    def propose(self, ctx: PlanningContext) -> list:
        out: list = []
        for arm, n in ctx.wanted.items():
            if n > 0:
                out += self._arm(ctx, arm, n)
        return out

    # -- one arm
    def _arm(self, ctx: PlanningContext, arm: str, n: int) -> list:
        ev = ctx.evidence.get(arm)
        space = ctx.study.arms[arm].space
        if ev is None or ev.leader_config is None:
            return self._first(ctx, arm, n) or self._fill(ctx, arm, n, ev)
        actions: list = []
        lrs = [k for k in (ev.knob(key) for key in space if lr_like(key)) if k is not None]
        open_lrs = [k for k in lrs if k.status.startswith("open")]
        search = [r for r in ctx.history if r.arm == arm and r.phase == "search" and r.ok]
        # where the arm has looked: its full runs and those stopped at a rung (hopeless there: a sweep
        # goes on from them, never back to the same point; only full runs bracket)
        stopped = [r for r in ctx.history if r.arm == arm and r.phase == "search" and r.status == "stopped"]
        looked = search + stopped
        guesses = self._projected(ctx, arm, stopped)
        repeated = len(search) > len({r.config for r in search})
        if not repeated and len({r.config for r in search}) >= 2:
            # first of all (one run per arm): the adaptive plan sizes the confirmation from this noise
            actions.append(Replicate(arm=arm, params=ev.leader_params, seeds=1, origin="policy",
                                     rationale="measure the seed noise: the leader on one more seed"))
        sweeps = [self._sweep(ev, space[k.knob], arm, k.knob, search, looked, guesses) for k in open_lrs]
        lr_steps = [s for step in zip(*[sw + [None] * (2 - len(sw)) for sw in sweeps]) for s in step if s is not None]
        looks = self._late_looks(ctx, arm, ev, looked)
        if looks:  # few runs left: the LRs' coarse moves, then a first look at each knob, then LR refinement
            actions += [a for a, coarse in lr_steps if coarse] + looks + [a for a, coarse in lr_steps if not coarse]
        else:
            actions += [a for a, _ in lr_steps]
        if repeated and ev.close_call and ev.runner_up_gap is not None:
            why = (f"the runner-up is {ev.runner_up_gap:.4f} behind, within the noise: one more seed before "
                   "trusting the ranking")
            # one run a round, to the less-measured of the two (the runner-up on a tie)
            params, n_runs = min(((ev.runner_up_params, ev.runner_up_n), (ev.leader_params, ev.leader_n)),
                                 key=lambda t: t[1])
            if params is not None and n_runs < REPLICATE_UNTIL:
                actions.append(Replicate(arm=arm, params=params, seeds=1, origin="policy", rationale=why))
        # a new leader on another knob needs its LR bracketed again (2 runs): explore only with room
        room = ctx.search_left.get(arm, n * len(ctx.study.seeds.search)) - len(actions) >= 1 + EXPLORE_RESERVE
        room = room and not open_lrs  # the LRs first
        for k in ev.open_knobs if room else []:
            if lr_like(k.knob) or len(actions) >= n:
                continue
            p = space[k.knob]
            # a choice knob: each untried choice; a numeric one with nothing measured around the
            # leader yet: a coarse look first, then the sweep goes on from whatever leads
            if p.type == "choice" or (k.below is None and k.above is None):
                look = self._first_looks(ctx, arm, ev, k, looked)
                if look or p.type == "choice":
                    actions += look
                    continue
            actions += [a for a, _ in self._sweep(ev, p, arm, k.knob, search, looked, guesses)[:1]]
        for k in lrs:
            if k.status == "bracketed":
                actions += self._refine(ev, space[k.knob], arm, k, only_close=True)
        actions = actions[:n]  # every action here costs one run
        used = len(actions)
        if actions and open_lrs:
            return actions  # the LR sweeps go on next round, from their results: keep the runs for that
        if used < n and len(space) > 1 and room:  # other knobs to explore: TPE around the leader
            actions += self._fill(ctx, arm, n - used, ev)
        elif used < n:  # settled, or no room to explore: more seeds where the ranking could still flip
            extra = [Replicate(arm=arm, params=params, seeds=1, origin="policy",
                               rationale="the LR is bracketed: more seeds for the leader and its runner-up")
                     for params, n_runs in sorted(((ev.runner_up_params, ev.runner_up_n), (ev.leader_params, ev.leader_n)),
                                                  key=lambda t: t[1])
                     if params is not None and n_runs < REPLICATE_UNTIL
                     and not any(isinstance(a, Replicate) and a.params == params for a in actions)]
            for k in lrs:
                extra += self._refine(ev, space[k.knob], arm, k, only_close=False)
            actions += extra[: n - used]
        return actions

    def _first(self, ctx: PlanningContext, arm: str, n: int) -> list:
        """Before any result: the start point's LR x4 (the start itself is the loop's), so the first
        round already looks a coarse step away."""
        start = ctx.study.arms[arm].start
        space = ctx.study.arms[arm].space
        if not start or "lr" not in start or "lr" not in space:
            return []
        p = space["lr"]
        up = self._coarse(p, start["lr"], 1) or self._coarse(p, start["lr"], -1)
        if up is None:
            return []
        return [Proposal(arm=arm, params={**start, "lr": up}, origin="policy",
                         rationale="start the lr sweep: a coarse step up from the start point")][:n]

    @staticmethod
    def _tried(search: list, knob: str) -> set:
        return {r.params[knob] for r in search if isinstance(r.params.get(knob), (int, float))}

    @staticmethod
    def _coarse(p: Param, value: float, direction: int):
        """Two grid steps (a factor of 4 for an LR) that way, or one where the bound is nearer."""
        one = p.neighbour(value, direction)
        return None if one is None else (p.neighbour(one, direction) or one)

    @staticmethod
    def _projected(ctx: PlanningContext, arm: str, stopped: list) -> list[tuple[dict, float]]:
        """Where each run stopped at a rung would have ended had it gained from there what the arm's
        leader gained from the same rung to its end: (params, guess). A guess for the sweep's
        parabola only (where to look next), never evidence."""
        if not stopped:
            return []
        leader = rungs.leader_curve(ctx.history, arm, ctx.curve_of)
        out = []
        for r in stopped:
            if r.val_loss is None or r.fraction is None or 100 not in leader:
                continue
            # the rung it stopped at: the first whose eval step it reached (a rung's eval step is at
            # or before its share of the steps)
            q = next((q for q in rungs.RUNGS if q >= 100 * r.fraction - 1e-9), None)
            if q is not None and q in leader:
                out.append((r.params, r.val_loss - (leader[q] - leader[100])))
        return out

    @staticmethod
    def _line(search: list, leader: dict, knob: str, guesses: Sequence[tuple[dict, float]] = ()) -> dict:
        """The means along one knob through the leader: {value: mean} of the configs that differ
        from the leader in that knob only (the leader's own included); where only a stopped run
        looked, its projected end (`guesses`)."""
        def on_line(params: dict) -> bool:
            return set(params) == set(leader) and all(params[q] == leader[q] for q in leader if q != knob)
        line: dict = {params[knob]: guess for params, guess in guesses if on_line(params)}
        for rs in by_config(search).values():
            if on_line(rs[0].params):
                line[rs[0].params[knob]] = fmean(r.val_loss for r in rs)
        return line

    @staticmethod
    def _vertex(p: Param, value: float, line: dict) -> float | None:
        """Where a parabola through the leader and its two nearest measured points along the knob
        has its minimum, in signed grid steps from the leader (successive parabolic interpolation,
        as in Brent's line search); None without three points or when the fit is not convex."""
        pts = sorted(((p.steps_between(value, v) * (1 if v > value else -1), m) for v, m in line.items()),
                     key=lambda t: abs(t[0]))[:3]
        if len(pts) < 3:
            return None
        (x0, y0), (x1, y1), (x2, y2) = pts
        denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
        if abs(denom) < 1e-12:
            return None
        a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
        b = (x2 ** 2 * (y0 - y1) + x1 ** 2 * (y2 - y0) + x0 ** 2 * (y1 - y2)) / denom
        return -b / (2 * a) if a > 0 else None

    def _late_looks(self, ctx: PlanningContext, arm: str, ev: ArmEvidence, looked: list) -> list:
        """A first look at each of the arm's other knobs never measured around the leader, once its
        search runs left are no more than those knobs (step 4 early; see the module's docstring);
        [] before that."""
        unlooked = [k for k in ev.open_knobs if not lr_like(k.knob) and k.below is None and k.above is None]
        left = ctx.search_left.get(arm)
        if not unlooked or left is None or left > len(unlooked) + LOOK_MARGIN:
            return []
        return [a for k in unlooked for a in self._first_looks(ctx, arm, ev, k, looked, choices=1)]

    def _first_looks(self, ctx: PlanningContext, arm: str, ev: ArmEvidence, k: KnobEvidence, looked: list,
                     choices: int | None = None) -> list[Proposal]:
        """A first look at one of the arm's other knobs: its untried choices (the first `choices` of
        them), or for a numeric knob the point halfway to its farther bound ([]: near both bounds, or
        looked at already)."""
        p = ctx.study.arms[arm].space[k.knob]
        if p.type == "choice":
            return [self._choice_point(ctx, arm, ev, k.knob, choice) for choice in k.to_try[:choices]]
        look = self._first_look(ev, p, arm, k.knob, looked)
        return [look] if look is not None else []

    def _first_look(self, ev: ArmEvidence, p: Param, arm: str, knob: str, looked: list) -> Proposal | None:
        """Halfway from the leader's value to the knob's farther bound (None: near both bounds, or
        that point was looked at already and stopped early)."""
        jump = self._jump(p, ev.leader_params[knob])
        params = {**ev.leader_params, knob: jump}
        if jump is None or any(r.params == params for r in looked):
            return None
        return Proposal(arm=arm, params=params, origin="policy",
                        rationale=f"first look at {knob}: halfway to its farther bound")

    def _sweep(self, ev: ArmEvidence, p: Param, arm: str, knob: str, search: list, looked: list,
               guesses: Sequence[tuple[dict, float]] = ()) -> list[tuple[Proposal, bool]]:
        """Coarse to fine on one numeric knob, as (proposal, coarse) pairs: a side where the arm never
        measured anything beyond the leader's value (at any settings of its other knobs) gets a
        two-step move (a factor of 4 for an LR; coarse); otherwise the one-step neighbour. Which side first: where a parabola through
        the leader and its two nearest points along the knob puts the minimum (a leader barely
        ahead of a coarse neighbour most likely has the optimum between them: the point between
        comes before a move away from both); without a convex fit, the side without one-knob
        neighbours (a measured one is worse: the leader has the lowest mean), then the closer call.
        A side with a measured neighbour is tried alone: its result decides what comes next."""
        value = ev.leader_params[knob]
        k = ev.knob(knob)
        tried = self._tried(looked, knob)
        vertex = self._vertex(p, value, self._line(search, ev.leader_params, knob, guesses))
        sides = sorted(((1, k.above), (-1, k.below)),
                       key=lambda t: (vertex is None or vertex * t[0] <= 0, t[1] is not None, t[1].gap if t[1] else 0))
        out = []
        for direction, side in sides:
            fine = p.neighbour(value, direction)
            if fine is None or fine not in k.to_try:
                continue
            explored = any((v - value) * direction > 0 for v in tried)
            new = fine if side is not None or explored else self._coarse(p, value, direction)
            why = f"bracket {knob}" if new == fine else f"sweep {knob} {'up' if direction > 0 else 'down'}"
            if vertex is not None and vertex * direction > 0:
                side_word = "above" if direction > 0 else "below"
                why += f" (a parabola through the nearest points has its minimum {side_word})"
            out.append((Proposal(arm=arm, params={**ev.leader_params, knob: new}, origin="policy",
                                 rationale=f"{why}: {k.status} around {value:.4g}"),
                        p.steps_between(value, new) > 1.5))
            if side is not None:
                break  # refining between measured points: the closer call first, the other side may not be needed
        return out

    @staticmethod
    def _jump(p: Param, value: float) -> float | int | None:
        far = p.low if p.steps_between(value, p.low) > p.steps_between(value, p.high) else p.high
        if p.steps_between(value, far) < 2:
            return None  # close to both bounds: the grid neighbours are the look
        mid = (value * far) ** 0.5 if p.log else (value + far) / 2
        return int(round(mid)) if p.type == "int" else float(f"{mid:.4g}")

    def _refine(self, ev: ArmEvidence, p: Param, arm: str, k: KnobEvidence, only_close: bool) -> list:
        """Between the leader's value of an LR-like knob and a neighbour (within the noise of it,
        with only_close): the geometric midpoint."""
        lr = ev.leader_params[k.knob]
        out = []
        for side in sorted((x for x in (k.below, k.above) if x is not None), key=lambda x: x.gap):
            if (not only_close or side.within_noise is not False) and p.steps_between(lr, side.value) > 0.6:
                mid = float(f"{(lr * side.value) ** 0.5 if p.log else (lr + side.value) / 2:.4g}")
                noise = {True: ", within the noise", False: ", beyond the noise", None: ", noise not measured"}
                out.append(Proposal(arm=arm, params={**ev.leader_params, k.knob: mid}, origin="policy",
                                    rationale=f"refine {k.knob} between {lr:.4g} and {side.value:.4g} "
                                              f"({side.gap:+.4f}{noise[side.within_noise]})"))
        return out

    def _choice_point(self, ctx: PlanningContext, arm: str, ev: ArmEvidence, knob: str, choice: Any) -> Proposal:
        space = ctx.study.arms[arm].space
        params = {k: v for k, v in ev.leader_params.items()}
        params[knob] = choice
        active = active_params(space, params)
        params = {k: params.get(k, _mid(space[k])) for k in active}
        return Proposal(arm=arm, params=params, origin="policy",
                        rationale=f"try {knob}={choice} with the leader's other settings")

    def _fill(self, ctx: PlanningContext, arm: str, n: int, ev: ArmEvidence | None) -> list:
        """TPE's points (it sees the whole history); once the arm has a leader, each LR-like knob is
        held within a factor of 2 of the leader's, so the other knobs are explored around it."""
        got = self.sampler.propose(replace(ctx, wanted={arm: n}))
        if ev is not None and ev.leader_config is not None:
            lrs = {k: v for k, v in ev.leader_params.items() if lr_like(k) and isinstance(v, (int, float))}
            for g in got:
                for key, lr in lrs.items():
                    if key in g.params:
                        g.params[key] = float(f"{min(lr * 2, max(lr / 2, g.params[key])):.6g}")
                if lrs:
                    g.rationale = ("tpe around the leader's " + ", ".join(f"{k} {v:.4g}" for k, v in lrs.items())
                                   + f": {g.rationale}")
        return got


__all__ = ["PolicyPlanner"]
