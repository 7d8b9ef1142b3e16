"""The executor interface: run one trial in isolation and say how it ended.

`BaseExecutor.run(spec, run_dir, timeout_s, on_progress)` returns an `Outcome`; a Ctrl-C during
a trial raises `TrialInterrupted`. tests/test_conformance.py holds the suite every executor passes.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict

from research_agents.records import TrialMetrics
from trainer.spec import TrialSpec

ProgressFn = Callable[[dict], None]
OutcomeStatus = Literal["completed", "diverged", "stopped", "failed", "timeout"]  # stopped: at a spec.stop_above step


class Outcome(BaseModel):
    """How one trial ended: its status, the trainer's metrics (when it wrote any), and why."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    status: OutcomeStatus
    metrics: TrialMetrics | None
    reason: str | None
    log_path: Path | None
    wall_time_s: float


class TrialInterrupted(Exception):
    """Ctrl-C during a trial: the trial is recorded as interrupted and the loop stops cleanly."""


class BaseExecutor(abc.ABC):
    name: str = "base"
    # trials train on this machine: the CLI prepares the data cache and checks the device first
    trains_locally: bool = True
    # a trial takes long enough that an idle worker is worth filling with a run the next round will
    # likely make (the loop's speculation); an executor that answers at once says False
    worth_speculating: bool = True

    @abc.abstractmethod
    def run(self, spec: TrialSpec, run_dir: Path, timeout_s: float,
            on_progress: ProgressFn | None = None) -> Outcome:
        """Train `spec`, writing its files under `run_dir`; never raises for a failed trial."""

    def connect(self) -> None:
        """Reach what runs the trials before the run starts (RuntimeError with one line if it cannot)."""

    def default_workers(self) -> int:
        """Trials to run at once when the user does not say (`--workers`)."""
        return 1

    def cancel(self, run_dir: Path | None = None) -> None:
        """Stop the trial writing `run_dir`, or (None) every trial this executor is running (Ctrl-C
        in the driver, which then records them as interrupted); the `run` calls concerned return
        soon. Default: nothing to stop (a trial runs to its end)."""

    def describe(self) -> str:
        """One line for the console and the report's set-up."""
        return self.name
