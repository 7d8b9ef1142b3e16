"""LR and momentum schedules, indexed by OPTIMIZER step (0-based), never by micro-batch.

The seeds defined their cosine over micro-steps but advanced it per update, so it reached only
21% of its decay. Here `step` is the index of the update about to be taken, `total` the number of
updates, and the last update (step total-1) is exactly where a schedule says it ends.
"""

from __future__ import annotations

import math
from collections import deque

from trainer.spec import TrialSpec


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


class MomentumSchedule:
    """Momentum for update `step`: the schedule config's own formula (trainer/spec.py).

    Keeps the gradient-norm window that `adaptive` reads; the other kinds ignore it.
    """

    def __init__(self, spec: TrialSpec):
        self.cfg = spec.momentum_schedule
        self.target = spec.momentum
        window = getattr(self.cfg, "window", 1)
        self._norms: deque[float] = deque(maxlen=window)

    def observe_grad_norm(self, norm: float) -> None:
        if math.isfinite(norm):
            self._norms.append(norm)

    def __call__(self, step: int) -> float:
        return self.cfg.value(step, self.target, self._norms)
