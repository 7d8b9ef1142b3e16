"""LR and momentum schedules, indexed by OPTIMIZER step (0-based), never by micro-batch.

The seeds defined their cosine over micro-steps but advanced it per update, so it reached only
21% of its decay. Here `step` is the index of the update about to be taken, `total` the number of
updates, and the last update (step total-1) is exactly where a schedule says it ends.
"""

from __future__ import annotations

import math
from collections import deque

from trainer.spec import (
    AdaptiveMomentum,
    CosineMomentum,
    DelayedMomentum,
    ExponentialMomentum,
    FixedMomentum,
    LinearMomentum,
    SigmoidMomentum,
    StepMomentum,
    TrialSpec,
)


def warmup_steps(spec: TrialSpec) -> int:
    # Capped at steps - 1: a warmup covering every step (e.g. ratio 0.95 of 10 steps rounds to 10)
    # would leave the last update at the peak instead of min_lr_ratio (tests/test_trainer.py).
    return min(int(round(spec.warmup_ratio * spec.steps)), spec.steps - 1)


def lr_multiplier(spec: TrialSpec, step: int) -> float:
    """Factor on the peak LR for update `step` (0-based): linear warmup, then decay to min_lr_ratio."""
    warm = warmup_steps(spec)
    if step < warm:
        return (step + 1) / warm
    if spec.lr_schedule == "constant":
        return 1.0
    decay_len = spec.steps - 1 - warm
    progress = 1.0 if decay_len <= 0 else min(1.0, (step - warm) / decay_len)
    floor = spec.min_lr_ratio
    if spec.lr_schedule == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if spec.lr_schedule == "linear":
        return 1.0 - (1.0 - floor) * progress
    # step: multiply by gamma at each milestone so that the last milestone lands on min_lr_ratio
    milestones = spec.lr_step_milestones
    gamma = floor ** (1.0 / len(milestones))
    passed = sum(progress >= m for m in milestones)
    return gamma**passed


def _ramp(start: float, end: float, frac: float) -> float:
    return start + (end - start) * min(1.0, max(0.0, frac))


class MomentumSchedule:
    """Momentum for update `step`. Stateful only for `adaptive`, which watches gradient norms."""

    def __init__(self, spec: TrialSpec):
        self.cfg = spec.momentum_schedule
        self.target = spec.momentum
        window = getattr(self.cfg, "window", 1)
        self._norms: deque[float] = deque(maxlen=window)

    def observe_grad_norm(self, norm: float) -> None:
        if math.isfinite(norm):
            self._norms.append(norm)

    def __call__(self, step: int) -> float:
        c, m = self.cfg, self.target
        if isinstance(c, FixedMomentum):
            return m
        if isinstance(c, LinearMomentum):
            return _ramp(c.start, m, step / c.warmup_steps)
        if isinstance(c, CosineMomentum):
            frac = min(1.0, step / c.warmup_steps)
            return c.start + (m - c.start) * 0.5 * (1.0 - math.cos(math.pi * frac))
        if isinstance(c, ExponentialMomentum):
            if step >= c.warmup_steps:
                return m
            return m - (m - c.start) * math.exp(-5.0 * step / c.warmup_steps)
        if isinstance(c, StepMomentum):
            for value, boundary in zip(c.values, c.boundaries):
                if step < boundary:
                    return value
            return m
        if isinstance(c, SigmoidMomentum):
            if step >= c.warmup_steps:
                return m
            z = c.steepness * (step / c.warmup_steps - 0.5)
            return c.start + (m - c.start) / (1.0 + math.exp(-z))
        if isinstance(c, DelayedMomentum):
            return _ramp(c.start, m, (step - c.delay_steps) / c.warmup_steps)
        if isinstance(c, AdaptiveMomentum):
            if len(self._norms) < c.window:
                return c.start
            mean = sum(self._norms) / len(self._norms)
            var = sum((x - mean) ** 2 for x in self._norms) / (len(self._norms) - 1)
            cv = math.sqrt(var) / mean if mean > 0 else float("inf")
            return c.start + (m - c.start) / (1.0 + cv / c.cv_scale)
        raise TypeError(f"unknown momentum schedule {type(c).__name__}")
