"""A search space: one searchable knob (`Param`), conditional knobs, and configuration ids.

Parameter names are dotted paths into trainer.TrialSpec (e.g. "momentum_schedule.warmup_steps").
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Two values of a float knob closer than this many grid steps are the same point (a planner that
# proposes it proposes nothing new): for a log-scaled LR a factor 2**0.15, |log(lr/lr')| < 0.104.
NEAR_STEPS = 0.15


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Param(Strict):
    """One searchable knob: a float or int range (optionally log-scaled) or a list of choices.

    `when` makes it conditional: {"momentum_schedule.kind": ["linear"]} means the parameter
    exists only when that other parameter takes one of those values.
    """

    type: Literal["float", "int", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None
    when: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Param:
        if self.type == "choice":
            if not self.choices:
                raise ValueError("a choice parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None:
                raise ValueError("a choice parameter takes 'choices', not 'low'/'high'")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"'low' and 'high' must be finite numbers, got low {self.low}, high {self.high}")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.type == "float" and self.low == self.high:  # no range: no grid step, nothing to search
            raise ValueError(f"low and high are both {self.low:g}: a float parameter needs a range "
                             "(a fixed value goes in the arm's base)")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled parameter needs low > 0")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int parameter needs whole-number bounds")
        return self

    def check(self, value: Any) -> str | None:
        """Why `value` is not allowed here (None when it is). Never clamps."""
        if self.type == "choice":
            return None if value in self.choices else f"{value!r} is not one of {self.choices}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number"
        if self.type == "int" and value != int(value):
            return f"{value!r} is not a whole number"
        if not math.isfinite(value) or value < self.low or value > self.high:
            return f"{value!r} is outside [{self.low:g}, {self.high:g}]"
        return None

    # -- the knob's grid: what "one step" means when a planner brackets an optimum
    @property
    def grid_step(self) -> float:
        """One step on this knob's grid: a factor of 2 on a log scale, else an eighth of the range
        (at least 1 for an int). Brackets and one-knob neighbours are one step away."""
        if self.type == "choice":
            raise ValueError("a choice parameter has no grid step")
        if self.log:
            return 2.0
        step = (self.high - self.low) / 8
        return max(1.0, round(step)) if self.type == "int" else step

    def steps_between(self, a: float, b: float) -> float:
        """How many grid steps apart two values are (>= 0)."""
        if self.log:
            return abs(math.log(b / a)) / math.log(self.grid_step)
        return abs(b - a) / self.grid_step

    def neighbour(self, value: float, direction: int) -> float | int | None:
        """The grid neighbour of `value` one step below (-1) or above (+1), held inside the bounds;
        None when `value` already sits at that bound."""
        bound = self.low if direction < 0 else self.high
        if self.steps_between(value, bound) < 0.05:
            return None
        if self.log:
            new = value * self.grid_step ** direction
        else:
            new = value + direction * self.grid_step
        new = min(self.high, max(self.low, new))
        if self.type == "int":
            return int(round(new))
        return float(f"{new:.4g}")

    def near(self, a: Any, b: Any) -> bool:
        """The same value for planning: equal, or (a float knob) under NEAR_STEPS grid steps apart."""
        if a == b:
            return True
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if self.type != "float" or not numbers or (self.log and min(a, b) <= 0):
            return False
        return self.steps_between(a, b) < NEAR_STEPS

    def describe(self) -> str:
        if self.type == "choice":
            text = f"one of {self.choices}"
        else:
            text = f"{self.type} in [{self.low:g}, {self.high:g}]" + (" (log scale)" if self.log else "")
        if self.when:
            text += " when " + ", ".join(f"{k} in {v}" for k, v in self.when.items())
        return text


def active_params(space: dict[str, Param], values: dict[str, Any]) -> list[str]:
    """Names whose `when` conditions hold for `values`, in space order."""
    return [k for k, p in space.items() if all(values.get(d) in allowed for d, allowed in p.when.items())]


def near_duplicate(space: dict[str, Param], a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same point for planning: the same knobs, discrete values equal, floats `near` each other."""
    if set(a) != set(b):
        return False
    return all(space[k].near(a[k], b[k]) if k in space else a[k] == b[k] for k in a)


def config_id(arm: str, params: dict[str, Any]) -> str:
    """Stable id of a configuration (arm + params, seed excluded): repeats share it."""
    blob = json.dumps({"arm": arm, "params": params}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]
