"""What the loop records: trial statuses and origins, one trial's record and the trainer's typed
metrics (the trainer -> loop contract). The research actions a planner proposes are in actions.py.

Every list of statuses the project uses is defined here, once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from research_agents.config.space import config_id
from trainer.metrics import HistoryPoint, TrialMetrics, read_metrics

Origin = Literal["default", "grid", "random", "tpe", "policy", "llm", "confirm", "manual", "mcp", "swap"]
# report order
ORIGINS: tuple[str, ...] = ("default", "grid", "random", "tpe", "policy", "llm", "mcp", "manual", "confirm", "swap")
Phase = Literal["search", "confirm", "swap"]  # swap: a confirmed leader with the other leader's shared settings
Status = Literal["running", "completed", "diverged", "stopped", "failed", "timeout", "interrupted", "rejected"]
# what spends budget; "stopped": ended early at a rung (its spec's stop_above), costing the share
# of the steps it trained; never a result: only completed full-length runs (`ok`) are evidence
COUNTED = ("completed", "diverged", "stopped", "failed", "timeout")
FAILED = ("failed", "timeout")  # the run produced no result
BAD = ("diverged", "failed", "timeout")  # finished without a usable loss
POINT_PREFIX = "point: "  # how a named experiment's runs are shown: "point: NAME"
CURVE_POINTS = (25, 50, 75, 100)  # % of a trial's steps at which its curve summary reads the val loss
EXPECTED_CHARS = 100  # a forecast is kept to this many characters
_EXPECTED = re.compile(r"\[expected: ([^\]]*)\]")  # a forecast as shown (and as stores before fields kept it)


def clip_expected(value: Any) -> str | None:
    """A proposer's forecast as kept: None when it gave none, else at most EXPECTED_CHARS characters
    with no "]" (so the shown "[expected: ...]" stays one bracket)."""
    if not value:
        return None
    return str(value).strip()[:EXPECTED_CHARS].replace("]", ")")


class SwapOf(BaseModel):
    """What a swap run (phase "swap") changed: the compared pair (arm_a, arm_b) whose confirmed leaders
    were swapped, and the other leader's shared settings (dotted key -> value as trained) that this
    run's leader trained with instead of its own (the last layer of its trial spec)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pair: tuple[str, str]
    settings: dict[str, Any]

    @property
    def key(self) -> str:
        """The swap's identity beside a run's config and seed (one run per pair, leader and seed)."""
        return json.dumps([list(self.pair), self.settings], sort_keys=True, default=str)


class TrialRecord(BaseModel):
    """One training run as the loop sees it; metrics come from the trainer's metrics.json.
    `rationale` is the proposer's why, `point` the named experiment the run belongs to, `expected`
    the proposer's forecast; `shown_rationale` is the one line reports show for all three."""

    id: int
    order: int
    arm: str
    params: dict[str, Any]
    seed: int
    origin: Origin
    phase: Phase
    round: int
    rationale: str = ""
    point: str | None = None
    expected: str | None = None
    swap: SwapOf | None = None  # a swap run: the pair and the other leader's settings it trained with
    status: Status
    reason: str | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    val_perplexity: float | None = None
    train_loss: float | None = None
    wall_time_s: float | None = None
    optimizer_steps: int | None = None
    tokens_seen: int | None = None
    run_dir: str = ""
    # the early-stop rule it trained under (step -> the most val loss allowed there; empty: none)
    # and, when it stopped at one, the share of its full length it trained (its cost in runs)
    stop_above: dict[int, float] = {}
    fraction: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _older(cls, data: Any) -> Any:
        """A record from before `point` and `expected` were fields (both absent) has them inside
        its rationale ("point: NAME", "why [expected: 4.9]"): read them from there."""
        if isinstance(data, dict) and "point" not in data and "expected" not in data and data.get("rationale"):
            data = {**data, **split_rationale(data["rationale"])}
        return data

    @property
    def shown_rationale(self) -> str:
        """"point: NAME", the why, then " [expected: ...]": the line reports show (as stores kept
        it before these were fields)."""
        text = self.rationale
        if self.point is not None:
            text = f"{POINT_PREFIX}{self.point}" + (f"; {text}" if text else "")
        if self.expected is not None:
            text = f"{text} [expected: {self.expected}]".strip()
        return text

    @property
    def config(self) -> str:
        """config_id(arm, params), computed once per record (the analysis asks for it many times a
        trial). Kept beside the fields, as a cached_property would be: not compared, not dumped."""
        known = self.__dict__.get("_config_memo")
        if known is None or known[0] != self.arm or known[1] is not self.params:
            known = self.__dict__["_config_memo"] = (self.arm, self.params, config_id(self.arm, self.params))
        return known[2]

    @property
    def ok(self) -> bool:
        """A completed full-length run with a loss: the only kind of run any result is drawn from."""
        return self.status == "completed" and self.val_loss is not None

    @property
    def cost(self) -> float | int:
        """What it spent of the budget, in full-length runs: a stopped run its share, else 1."""
        return self.fraction if self.status == "stopped" and self.fraction is not None else 1

    @property
    def rung(self) -> int | None:
        """The % of its steps a stopped run trained (the rung it stopped at); None otherwise."""
        return round(100 * self.fraction) if self.status == "stopped" and self.fraction is not None else None

    def metrics(self, out: Path) -> TrialMetrics | None:
        """The trainer's metrics.json of this trial (None when it has none or it is unreadable)."""
        return read_metrics(Path(out) / self.run_dir) if self.run_dir else None


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def result_fields(status: str, metrics: TrialMetrics | None, reason: str | None) -> dict[str, Any]:
    """The TrialRecord fields a finished trial sets, from its metrics (non-finite numbers -> None)."""
    final = metrics.final if metrics is not None else None
    return dict(
        status=status, reason=reason,
        val_loss=_finite(final and final.val_loss), val_accuracy=_finite(final and final.val_accuracy),
        val_perplexity=_finite(final and final.val_perplexity), train_loss=_finite(final and final.train_loss),
        wall_time_s=_finite(metrics and metrics.wall_time_s),
        optimizer_steps=metrics.optimizer_steps if metrics is not None else None,
        tokens_seen=metrics.tokens_seen if metrics is not None else None,
        **({"fraction": _fraction(metrics)} if status == "stopped" else {}),
    )


def _fraction(metrics: TrialMetrics | None) -> float | None:
    """The share of its steps a stopped trial trained (None: unknown, then it costs a whole run)."""
    if metrics is None or metrics.spec is None or not metrics.optimizer_steps:
        return None
    return min(1.0, metrics.optimizer_steps / metrics.spec.steps)


class CurveSummary(BaseModel):
    """A trial's learning curve in a few numbers: the val loss last measured by 25/50/75/100% of its
    steps (None: no eval by then, or not finite) and the step it diverged at (None: it did not)."""

    val_loss: dict[int, float | None]
    diverged_step: int | None = None


def curve_summary(metrics: TrialMetrics) -> CurveSummary:
    """The curve summary of a trial from its metrics.json history."""
    evals = [(h.step, _finite(h.val_loss)) for h in metrics.history if "val_loss" in h.model_fields_set]
    steps = (metrics.spec.steps if metrics.spec is not None else 0) or max((s for s, _ in evals), default=0)
    at: dict[int, float | None] = {}
    for q in CURVE_POINTS:
        upto = [loss for s, loss in evals if s <= steps * q / 100 + 1e-9]
        at[q] = upto[-1] if upto else None
    diverged = None
    if metrics.status == "diverged" and metrics.history:
        diverged = metrics.history[-1].step
    return CurveSummary(val_loss=at, diverged_step=diverged)


def counted(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The records that spent budget."""
    return [r for r in records if r.status in COUNTED]


def without_swaps(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The records the search, its tuning evidence, the leaders and the confirmation statistics read:
    every run but the swap runs (which train a leader with another arm's shared settings)."""
    return [r for r in records if r.phase != "swap"]


def spent(records: Iterable[TrialRecord], phase: str | None = None, arm: str | None = None,
          statuses: tuple[str, ...] = COUNTED) -> int | float:
    """The budget spent, in full-length runs (a stopped run its share: TrialRecord.cost), by the
    records with one of `statuses`, optionally of one phase and one arm. A whole number (int) while
    no run stopped early."""
    return sum(r.cost for r in records if r.status in statuses
               and (phase is None or r.phase == phase) and (arm is None or r.arm == arm))


def whole(runs: int | float) -> int:
    """Runs that fit in what is left of a budget (a fraction left over buys no run)."""
    return math.floor(runs + 1e-9)


def by_config(records: Iterable[TrialRecord]) -> dict[str, list[TrialRecord]]:
    """Records grouped by configuration (arm + params), in first-seen order."""
    groups: dict[str, list[TrialRecord]] = {}
    for r in records:
        groups.setdefault(r.config, []).append(r)
    return groups


def mean_loss(records: list[TrialRecord]) -> float:
    return sum(r.val_loss for r in records) / len(records)


def ranked_configs(records: Iterable[TrialRecord]) -> list[list[TrialRecord]]:
    """Completed runs grouped by configuration, lowest mean val loss first (stable on ties)."""
    return sorted(by_config(r for r in records if r.ok).values(), key=mean_loss)


def split_rationale(text: str) -> dict[str, Any]:
    """A rationale written before `point` and `expected` were record fields, as the fields:
    {"rationale", "point", "expected"} such that shown_rationale gives `text` back."""
    point = expected = None
    m = _EXPECTED.search(text)
    if m is not None and m.end() == len(text):  # it was put last: "why [expected: X]" or "[expected: X]"
        expected, text = m.group(1), text[:m.start()]
        text = text[:-1] if text.endswith(" ") else text
    if text.startswith(POINT_PREFIX):
        name = text[len(POINT_PREFIX):].strip()
        for sep in (";", "\n", " — ", " - ", ": "):
            name = name.split(sep)[0]
        name = name.strip()
        if name:  # the rest, after the "; " shown_rationale puts back (any other separator: dropped)
            point, text = name, text[len(POINT_PREFIX):].strip()[len(name):]
            text = text[2:] if text.startswith("; ") else text.lstrip(";\n —-:").strip()
    return {"rationale": text, "point": point, "expected": expected}


__all__ = ["Origin", "ORIGINS", "Phase", "Status", "COUNTED", "FAILED", "BAD", "POINT_PREFIX", "CURVE_POINTS",
           "CurveSummary", "curve_summary",
           "SwapOf", "without_swaps", "EXPECTED_CHARS", "clip_expected", "split_rationale",
           "TrialRecord", "TrialMetrics", "HistoryPoint", "read_metrics", "result_fields", "counted", "by_config",
           "whole", "mean_loss", "ranked_configs"]
