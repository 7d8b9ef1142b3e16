"""Runs trained ahead of their round, on workers that would otherwise sit idle.

A round's runs are fixed before any of them trains (so any number of workers gives the same
study), and its last runs leave workers idle while they finish. The loop fills such a worker with
a run the next round will likely make (its planner's answer for an arm with no trial running) and
trains it here, in a scratch directory. When a round makes the same run (the same trial spec:
training is deterministic, so the same numbers), the run is adopted: its trial record starts then,
in the round's order, and its files move into the trial's directory when it ends. A run no round
makes is stopped when its worker is needed, or at the end, and thrown away: it never becomes a
trial and never spends budget.
"""

from __future__ import annotations

import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from research_agents.execution.base import BaseExecutor, Outcome
from trainer.spec import TrialSpec

SCRATCH = ".speculative"  # under the run directory; never read as a trial, emptied at every start


def _ignore(event: dict) -> None:
    pass


@dataclass
class Ahead:
    """One run trained ahead: where it trains, its pending outcome, and who hears its progress."""

    key: str
    scratch: Path
    future: Future
    progress: Callable[[dict], None] = _ignore  # set when a round adopts it
    stopped: bool = False

    def hear(self, event: dict) -> None:
        self.progress(event)


@dataclass
class Speculation:
    executor: BaseExecutor
    out: Path
    timeout_s: float
    runs: dict[str, Ahead] = field(default_factory=dict)  # not adopted yet, by spec
    started: int = 0
    used: int = 0

    def __post_init__(self):
        shutil.rmtree(self.out / SCRATCH, ignore_errors=True)  # a killed driver's leftovers

    @staticmethod
    def key(spec: TrialSpec) -> str:
        return spec.model_dump_json()

    def busy(self) -> int:
        """Workers these runs hold (a stopped one holds its worker until its call returns)."""
        return sum(1 for a in self.runs.values() if not a.future.done())

    def live(self) -> int:
        """Runs training that nobody stopped."""
        return sum(1 for a in self.runs.values() if not a.stopped and not a.future.done())

    def has(self, spec: TrialSpec) -> bool:
        a = self.runs.get(self.key(spec))
        return a is not None and not a.stopped

    def start(self, spec: TrialSpec, pool: ThreadPoolExecutor) -> None:
        key = self.key(spec)
        # a name no run of this executor had (a cancel that came too late for an earlier run must
        # never stop a new one)
        scratch = self.out / SCRATCH / f"{self.started + 1:04d}-{uuid.uuid4().hex[:12]}"
        ahead = Ahead(key, scratch, None)  # type: ignore[arg-type]  (the future comes next)
        ahead.future = pool.submit(self.executor.run, spec, scratch, self.timeout_s, ahead.hear)
        self.runs[key] = ahead
        self.started += 1

    def take(self, spec: TrialSpec, progress: Callable[[dict], None]) -> Ahead | None:
        """The run trained ahead for `spec`, now a round's (None if there is none)."""
        ahead = self.runs.get(self.key(spec))
        if ahead is None or ahead.stopped:
            return None
        del self.runs[ahead.key]
        ahead.progress = progress
        self.used += 1
        return ahead

    def land(self, ahead: Ahead, run_dir: Path) -> Outcome:
        """Its outcome, its files moved into the trial's directory (waits for it to end)."""
        outcome = ahead.future.result()
        if ahead.scratch.exists():
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            ahead.scratch.rename(run_dir)
        if outcome.log_path is not None:
            outcome = outcome.model_copy(update={"log_path": run_dir / outcome.log_path.name})
        return outcome

    def make_room(self, needed: int, keep: set[str], workers: int, running: int) -> None:
        """Stop runs no spec in `keep` asks for until `needed` runs can start beside `running`."""
        short = needed - (workers - running - self.live())  # (stopped ones free their workers soon)
        for ahead in reversed(list(self.runs.values())):  # the newest first: the least trained
            if short <= 0:
                return
            if ahead.key not in keep and not ahead.stopped and not ahead.future.done():
                ahead.stopped = True
                self.executor.cancel(ahead.scratch)
                short -= 1

    def reap(self) -> None:
        """Throw away stopped runs whose calls have returned."""
        for key, ahead in list(self.runs.items()):
            if ahead.stopped and ahead.future.done():
                del self.runs[key]
                shutil.rmtree(ahead.scratch, ignore_errors=True)

    def close(self) -> None:
        """Stop and throw away every run not adopted (the study has ended, or stopped)."""
        for ahead in self.runs.values():
            ahead.stopped = True
            if not ahead.future.done():
                self.executor.cancel(ahead.scratch)
        for ahead in self.runs.values():
            try:
                ahead.future.result()
            except BaseException:  # its result is thrown away, whatever it was
                pass
        self.runs.clear()
        shutil.rmtree(self.out / SCRATCH, ignore_errors=True)

    def summary(self) -> dict:
        return {"started": self.started, "used": self.used, "discarded": self.started - self.used}


__all__ = ["Ahead", "SCRATCH", "Speculation"]
