"""What the search has shown, as data the planners read (models only, no sentences).

Tuning evidence: is each arm's optimum bracketed on each searched knob? analysis/tuning.py
computes it from the trial records; the reports render it, the planners read it (the default
policy brackets what is open), and the recommendation's confidence follows it: an arm is tuned
when every LR-like knob it searches (`lr`, or a name ending in `_lr` such as `adamw_lr`) is
bracketed; an untuned loser caps a comparison at "low", an untuned winner's advantage is a lower bound.

Open questions: what the search has not settled yet (analysis/questions.py computes them, the
round report and the LLM prompt render them with report/words.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

KnobStatus = Literal["bracketed", "open below", "open above", "open both", "edge low", "edge high",
                     "all choices tried", "choices untried", "not searched"]
SideState = Literal["closed", "open", "edge"]  # measured and not better / untested / the space's bound
BRACKET_REACH = 1.5  # a measured neighbour counts when at most 1.5 grid steps away (a factor 2.8 in LR)


def lr_like(knob: str) -> bool:
    """A learning rate: `lr` (the main optimizer's) or any knob named `*_lr` (e.g. `adamw_lr`, the AdamW leg's)."""
    return knob == "lr" or knob.endswith("_lr")


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
    below_state: SideState | None = None  # None: a choice knob, nothing measured, or not searched
    above_state: SideState | None = None
    low: Any = None  # the space's bounds (what an open side reaches to)
    high: Any = None


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
    def untuned_lrs(self) -> list[KnobEvidence]:
        """The LR-like knobs this arm searches whose leader is not bracketed (open or at an edge)."""
        return [k for k in self.knobs if lr_like(k.knob) and k.status not in ("bracketed", "not searched")]

    @property
    def tuned(self) -> bool | None:
        """True when every searched LR-like knob is bracketed, False when one is not, None when none is searched."""
        if not any(lr_like(k.knob) and k.status != "not searched" for k in self.knobs):
            return None
        return not self.untuned_lrs

    @property
    def open_knobs(self) -> list[KnobEvidence]:
        return [k for k in self.knobs if k.status not in ("bracketed", "all choices tried", "not searched")]


QuestionCode = Literal[
    "fewer runs",  # arm has fewer completed runs (n) than the best-covered arm (most)
    "lr smallest",  # the best lr is the smallest tried (at_bound: and the space's lower bound)
    "lr largest",  # ... the largest tried (at_bound: and the space's upper bound)
    "lr range at edge",  # the near-optimal lr range [lo, hi] (margin) reaches the edges tried
    "lr unmeasured",  # n distinct lr values completed, 3 needed
    "few values",  # knobs tried at few values: (knob, n)
    "single-run leader",  # the leader (a configuration's description) rests on one run
    "top two close",  # the arm's top two configs differ by gap, within threshold
    "leaders noise unknown",  # the arm leaders differ by gap (best: arm); the noise is not measured
    "leaders close",  # the arm leaders (arms) differ by gap, within threshold
]


class OpenQuestion(BaseModel):
    """One thing the search has not settled yet: a code and its numbers (report/words.py words it)."""

    code: QuestionCode
    arm: str | None = None
    n: int | None = None
    most: int | None = None
    lr: float | None = None
    at_bound: bool = False
    lo: float | None = None
    hi: float | None = None
    margin: float | None = None
    edges: list[Literal["lowest", "highest"]] = Field(default_factory=list)
    knobs: list[tuple[str, int]] = Field(default_factory=list)
    leader: str | None = None
    gap: float | None = None
    threshold: float | None = None
    arms: list[str] = Field(default_factory=list)


__all__ = ["KnobStatus", "SideState", "Neighbour", "KnobEvidence", "ArmEvidence", "BRACKET_REACH", "lr_like",
           "QuestionCode", "OpenQuestion"]
