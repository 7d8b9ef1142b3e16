"""Tuning evidence: is each arm's optimum bracketed on each searched knob? (models only)

analysis/tuning.py computes it from the trial records; the reports render it, the planners read
it (the default policy brackets what is open), and the recommendation's confidence is capped by
it: an arm whose LR is not bracketed is not tuned, and a comparison with it cannot be "moderate"
or "high".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

KnobStatus = Literal["bracketed", "open below", "open above", "open both", "edge low", "edge high",
                     "all choices tried", "choices untried", "not searched"]
BRACKET_REACH = 1.5  # a measured neighbour counts when at most 1.5 grid steps away (a factor 2.8 in LR)


class Neighbour(BaseModel):
    """The nearest measured configuration that differs from the leader in this knob only."""

    value: Any
    mean: float
    n: int
    steps: float  # grid steps from the leader's value
    gap: float  # its mean minus the leader's (>= 0: the leader has the lowest mean)
    within_noise: bool | None  # gap <= the noise threshold (None: noise not measured)


class KnobEvidence(BaseModel):
    knob: str
    status: KnobStatus
    leader_value: Any = None
    below: Neighbour | None = None
    above: Neighbour | None = None
    to_try: list[Any] = Field(default_factory=list)  # the grid values that would close the open sides
    text: str = ""


class ArmEvidence(BaseModel):
    arm: str
    leader_config: str | None = None
    leader_params: dict[str, Any] = Field(default_factory=dict)
    leader_mean: float | None = None
    leader_n: int = 0
    threshold: float | None = None  # 2 x the noise sd used to judge neighbours (None: not measured)
    knobs: list[KnobEvidence] = Field(default_factory=list)  # LR first
    runner_up_params: dict[str, Any] | None = None
    runner_up_n: int = 0
    runner_up_gap: float | None = None  # second-best config's mean minus the leader's
    close_call: bool = False  # the runner-up is within the noise of the leader (or the noise is unknown)

    def knob(self, name: str) -> KnobEvidence | None:
        return next((k for k in self.knobs if k.knob == name), None)

    @property
    def lr_bracketed(self) -> bool | None:
        """True/False when the arm searches its LR, None when the study fixes it."""
        k = self.knob("lr")
        return None if k is None or k.status == "not searched" else k.status == "bracketed"

    @property
    def open_knobs(self) -> list[KnobEvidence]:
        return [k for k in self.knobs if k.status not in ("bracketed", "all choices tried", "not searched")]


__all__ = ["KnobStatus", "Neighbour", "KnobEvidence", "ArmEvidence", "BRACKET_REACH"]
