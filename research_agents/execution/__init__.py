"""How trials run: the interface (`BaseExecutor`, `Outcome`) and the executors, by name."""

from __future__ import annotations

from research_agents.execution.base import BaseExecutor, Outcome, ProgressFn, TrialInterrupted
from research_agents.execution.local import LocalExecutor

EXECUTORS = ("local",)


def make_executor(name: str = "local") -> BaseExecutor:
    """The executor called `name` (ValueError with one line for an unknown one)."""
    if name == "local":
        return LocalExecutor()
    raise ValueError(f"--executor: unknown {name!r}; choose from {', '.join(EXECUTORS)}")


__all__ = ["BaseExecutor", "EXECUTORS", "LocalExecutor", "Outcome", "ProgressFn", "TrialInterrupted",
           "make_executor"]
