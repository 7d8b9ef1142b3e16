"""Number, parameter and table formatting shared by reports, prompts and the console.

A leaf module: it imports nothing of the project, so every layer may use it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any


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


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["fmt_value", "params_text", "params_line", "f4", "fp", "fp4", "fs", "fd", "cell", "table"]
