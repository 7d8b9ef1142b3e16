"""Number, parameter and table formatting shared by reports, prompts, statistics and the console:
the one home of formatting.

A leaf module: it imports nothing of the project, so every layer may use it (a summary is read by
its fields: `mean`, `n`, `ci_low`, `ci_high`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any


def fruns(x: float) -> str:
    """A budget in full-length runs: a whole number as one ("21"), a share of runs (early stops) to
    two decimals ("21.25")."""
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}"


def fmt_value(v: Any) -> str:
    """A parameter value for people: floats to 4 significant digits, containers as JSON."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (int, str)):
        return str(v)
    return json.dumps(v, sort_keys=True, default=str)


def params_text(params: dict[str, Any]) -> str:
    """`lr=0.02 kind=linear`: the last part of each dotted key (reports)."""
    return " ".join(f"{k.split('.')[-1]}={fmt_value(v)}" for k, v in params.items()) or "(arm defaults)"


def _prompt_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v) if isinstance(v, str) else str(v)


def params_line(params: dict[str, Any]) -> str:
    """`lr=0.02 momentum_schedule.kind="linear"`: full dotted keys, strings quoted (LLM prompts)."""
    return " ".join(f"{k}={_prompt_value(v)}" for k, v in params.items()) or "(arm defaults)"


def f4(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def fp(p: float | None) -> str:
    """p-values to 3 significant digits."""
    return "n/a" if p is None else f"{p:.3g}"


def fp4(p: float | None) -> str:
    """p-values to 4 decimals, tiny ones in exponent form (the statistics' own sentences)."""
    if p is None:
        return "n/a"
    if p == 0:
        return "0"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.4f}".rstrip("0").rstrip(".") if p < 1 else "1"


def fs(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def fd(x: float | None) -> str:
    """A signed difference to 4 decimals."""
    return "n/a" if x is None else f"{x:+.4f}"


def setup_value(v: Any) -> str:
    """A set-up value in the report: floats as fmt_value, containers as inline JSON code."""
    if isinstance(v, float):
        return fmt_value(v)
    if isinstance(v, (dict, list, tuple)):
        return "`" + json.dumps(v, sort_keys=True, default=str) + "`"
    return str(v)


def ci(s: Any) -> str:
    """A summary's 95% CI of the mean: `[4.0123, 4.0456]`."""
    if s is None or s.ci_low is None or s.ci_high is None:
        return "n/a"
    return f"[{s.ci_low:.4f}, {s.ci_high:.4f}]"


def mean_ci(s: Any) -> str:
    """A summary's mean with its CI half-width, the CI and n."""
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


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["fruns",
           "fmt_value", "params_text", "params_line", "f4", "fp", "fp4", "fs", "fd", "setup_value", "ci", "mean_ci",
           "json_safe", "cell", "table"]
