"""The store interface: the durable record of every trial and of the run's metadata.

A store is the single source of truth of a run. `BaseStore` names what every backend implements
(start, finish, records, get_meta, set_meta) and gives default hooks built on those (recover,
spent, append_meta). tests/test_conformance.py holds the suite every store passes.
"""

from __future__ import annotations

import abc
from typing import Any

from research_agents.records import Origin, Phase, Status, SwapOf, TrialMetrics, TrialRecord, spent


class StoreError(Exception):
    """The store cannot be opened as asked (missing, damaged, read-only, unreachable): one line."""


class BaseStore(abc.ABC):
    """Trials are written as "running" before they train and finished the moment they end."""

    @abc.abstractmethod
    def start(self, arm: str, params: dict[str, Any], seed: int, origin: Origin, phase: Phase,
              round: int, rationale: str, run_dir: str, point: str | None = None,
              expected: str | None = None, swap: SwapOf | None = None,
              stop_above: dict[int, float] | None = None) -> TrialRecord:
        """Record a trial about to run; its `order` counts every trial so far, this one included (from 1).
        `point`: the named experiment it runs; `expected`: its proposer's forecast (kept beside the
        rationale, each in its own field); `swap`: a swap run's pair and swapped settings;
        `stop_above`: its early-stop rule (a resume re-runs it under the same rule)."""

    @abc.abstractmethod
    def finish(self, record: TrialRecord, status: Status, metrics: TrialMetrics | None,
               reason: str | None) -> TrialRecord:
        """Record how a trial ended; returns the updated record."""

    @abc.abstractmethod
    def records(self) -> list[TrialRecord]:
        """Every trial, in order."""

    @abc.abstractmethod
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A run-level JSON value (planner state, rejections, LLM calls)."""

    @abc.abstractmethod
    def set_meta(self, key: str, value: Any) -> None: ...

    # -- default hooks
    def recover(self) -> list[TrialRecord]:
        """Trials left "running" by a process that died: mark them interrupted and return them."""
        stale = [r for r in self.records() if r.status == "running"]
        for r in stale:
            self.finish(r, "interrupted", None, "process ended while the trial was running")
        return stale

    def spent(self, phase: str | None = None, arm: str | None = None) -> int | float:
        """The budget spent in full-length runs (records.spent), optionally of one phase and one arm."""
        return spent(self.records(), phase, arm)

    def append_meta(self, key: str, entries: list[Any]) -> None:
        """Extend a list-valued metadata entry."""
        if entries:
            self.set_meta(key, [*self.get_meta(key, []), *entries])
