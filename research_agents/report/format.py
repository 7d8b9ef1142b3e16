"""Report-only formatting of analysis objects (confidence intervals) and JSON that is always strict."""

from __future__ import annotations

import math
from typing import Any

from research_agents.analysis.stats import Summary


def ci(s: Summary | None) -> str:
    if s is None or s.ci_low is None or s.ci_high is None:
        return "n/a"
    return f"[{s.ci_low:.4f}, {s.ci_high:.4f}]"


def mean_ci(s: Summary | None) -> str:
    if s is None or s.mean is None:
        return "no completed run"
    if s.ci_low is None:
        return f"{s.mean:.4f} (n={s.n}, no CI)"
    return f"{s.mean:.4f} ± {(s.ci_high - s.ci_low) / 2:.4f} (95% CI {ci(s)}, n={s.n})"


def json_safe(x: Any) -> Any:
    """NaN and inf become null, so every file we write is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if x is None or isinstance(x, (str, int, bool)):
        return x
    return str(x)
