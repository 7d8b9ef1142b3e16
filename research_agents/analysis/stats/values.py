"""Values that exist or are None: the conversions every statistic shares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def num(x: Any) -> float | None:
    """Float, or None when the value does not exist (None, NaN, +-inf)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def array1d(values: Sequence[float]) -> np.ndarray:
    return np.asarray(list(values), dtype=float).reshape(-1)
