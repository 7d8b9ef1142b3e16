"""LR sensitivity: the contiguous range of learning rates within a margin of the best."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from research_agents.analysis.stats.values import num


class LRRange(BaseModel):
    """The contiguous LR range whose mean loss is within a margin of the best."""

    model_config = ConfigDict(frozen=True)

    best_lr: float | None
    best_loss: float | None
    lr_lo: float | None
    lr_hi: float | None
    width_ratio: float | None  # lr_hi / lr_lo (1.0 when only the best LR qualifies)
    n_lrs: int  # distinct LRs tried
    n_in_range: int  # distinct LRs inside [lr_lo, lr_hi]
    margin: float
    relative: bool
    loss_cutoff: float | None  # best_loss + margin (absolute) or best_loss + margin*|best_loss|
    lo_at_edge: bool  # range reaches the smallest LR tried: true range may extend further
    hi_at_edge: bool  # range reaches the largest LR tried
    lrs: list[float]  # sorted distinct LRs
    mean_losses: list[float | None]  # per-LR mean loss (None if any run was non-finite)


def lr_sensitivity(
    points: Sequence[tuple[float, float]], margin: float = 0.05, relative: bool = False
) -> LRRange:
    """How wide a range of learning rates is near-optimal.

    ``points``: (lr, final_loss) pairs, possibly several per LR (averaged per LR
    first; an LR with any non-finite loss counts as failed, mean None).  The
    range grows outward from the best LR over the sorted LRs while each mean
    loss is <= cutoff (inclusive, 1e-9 relative float tolerance), and stops at the first LR that is not (contiguous).
    cutoff = best + margin (absolute nats), or best + margin*|best| if relative.
    ``width_ratio`` = lr_hi / lr_lo makes widths comparable across optimizers
    whose LRs differ by orders of magnitude.  ``lo_at_edge``/``hi_at_edge`` flag
    a range that hits the end of the sweep (the true range may be wider).
    """
    by_lr: dict[float, list[float]] = {}
    for lr, loss in points:
        by_lr.setdefault(float(lr), []).append(float(loss))
    lrs = sorted(by_lr)
    means: list[float | None] = []
    for lr in lrs:
        vals = by_lr[lr]
        if len(vals) == 1:  # (most LRs, in a long search: numpy's mean of one value is that value)
            means.append(vals[0] if math.isfinite(vals[0]) else None)
            continue
        v = np.array(vals)
        means.append(float(np.mean(v)) if np.all(np.isfinite(v)) else None)
    empty = dict(
        best_lr=None, best_loss=None, lr_lo=None, lr_hi=None, width_ratio=None, n_lrs=len(lrs),
        n_in_range=0, margin=margin, relative=relative, loss_cutoff=None, lo_at_edge=False,
        hi_at_edge=False, lrs=lrs, mean_losses=means,
    )
    finite = [i for i, m in enumerate(means) if m is not None]
    if not finite:
        return LRRange(**empty)
    ib = min(finite, key=lambda i: means[i])
    best = means[ib]
    cutoff = best + (margin * abs(best) if relative else margin)

    tol = 1e-9 * max(1.0, abs(cutoff))  # inclusive boundary, robust to float rounding

    def ok(i: int) -> bool:
        return means[i] is not None and means[i] <= cutoff + tol

    lo = ib
    while lo - 1 >= 0 and ok(lo - 1):
        lo -= 1
    hi = ib
    while hi + 1 < len(lrs) and ok(hi + 1):
        hi += 1
    lr_lo, lr_hi = lrs[lo], lrs[hi]
    ratio = num(lr_hi / lr_lo) if lr_lo > 0 else None
    return LRRange(
        **{
            **empty,
            "best_lr": lrs[ib],
            "best_loss": best,
            "lr_lo": lr_lo,
            "lr_hi": lr_hi,
            "width_ratio": ratio,
            "n_in_range": hi - lo + 1,
            "loss_cutoff": cutoff,
            "lo_at_edge": lo == 0,
            "hi_at_edge": hi == len(lrs) - 1,
        }
    )
