"""Classical planners on Optuna samplers (TPE, random) through ask-and-tell.

The sampler state is rebuilt each round from the store's history (an in-memory Optuna study per
arm), so the store stays the single source of truth and a resumed study plans from everything
that ran. Diverged and failed trials are told as FAIL, never as a made-up penalty value that
would poison the model (FACTS section 3).
"""

from __future__ import annotations

import warnings

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState, create_trial

from research_agents.actions import Proposal
from research_agents.planners.base import BasePlanner, PlanningContext, suggest
from research_agents.store.optuna import distributions


class SamplerPlanner(BasePlanner):
    pure = True  # (seeded per round and arm; the copy shares only a cache of finished trials)

    def __init__(self, kind: str = "tpe", seed: int = 0, startup_trials: int = 3):
        if kind not in ("tpe", "random"):
            raise ValueError(f"unknown sampler planner {kind!r}")
        self.name = kind
        self.seed = seed
        self.startup_trials = startup_trials
        self._made: dict[tuple, optuna.trial.FrozenTrial] = {}  # finished records as Optuna trials
        self._made_for = None  # ... of this study

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        if self.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        with warnings.catch_warnings():  # multivariate/group/constant_liar are "experimental" in Optuna
            warnings.simplefilter("ignore", ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials,
                                              multivariate=True, group=True, constant_liar=True)

    def study_for(self, ctx: PlanningContext, arm: str, seed_offset: int = 0) -> optuna.Study:
        """An in-memory study holding the arm's search history, ready to ask."""
        space = ctx.study.arms[arm].space
        arm_index = list(ctx.study.arms).index(arm)
        study = optuna.create_study(direction="minimize",
                                    sampler=self._sampler(self.seed + 1000 * ctx.round + arm_index + seed_offset))
        for r in ctx.search_trials(arm):
            if r.status == "running":
                continue
            study.add_trial(self._frozen(ctx, r, space))
        return study

    def _frozen(self, ctx: PlanningContext, r, space) -> optuna.trial.FrozenTrial:
        """A finished record as an Optuna trial, made once per record and study (add_trial copies it)."""
        if self._made_for is not ctx.study:
            self._made, self._made_for = {}, ctx.study
        key = (r.id, r.arm, r.status, r.val_loss)
        cache = self._made
        if key not in cache:
            params = {k: v for k, v in r.params.items() if k in space}
            done = r.ok
            cache[key] = create_trial(params=params, distributions=distributions(space, params),
                                      state=TrialState.COMPLETE if done else TrialState.FAIL,
                                      value=r.val_loss if done else None)
        return cache[key]

    def propose(self, ctx: PlanningContext) -> list[Proposal]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        out = []
        for arm, n in ctx.wanted.items():
            if n <= 0:
                continue
            if self.name == "random":  # its samples do not depend on the history: an empty study
                history = sum(1 for r in ctx.search_trials(arm) if r.status != "running")
                study = optuna.create_study(direction="minimize", sampler=self._sampler(
                    self.seed + 1000 * ctx.round + list(ctx.study.arms).index(arm) + len(ctx.rejections)))
            else:
                history = 0
                study = self.study_for(ctx, arm, seed_offset=len(ctx.rejections))
            space = ctx.study.arms[arm].space
            for _ in range(n):
                trial = study.ask()
                params = suggest(trial, space)  # left RUNNING: constant_liar steers the next ask away
                # (trial.number: the trials before it; study.trials would deep-copy them all)
                out.append(Proposal(arm=arm, params=params, origin=self.name,
                                    rationale=f"{self.name} sample ({history + trial.number} trials of history)"))
        return out
