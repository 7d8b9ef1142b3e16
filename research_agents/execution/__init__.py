"""How trials run: the interface (`BaseExecutor`, `Outcome`) and the executors, by name."""

from __future__ import annotations

from research_agents.execution.base import BaseExecutor, Outcome, ProgressFn, TrialInterrupted
from research_agents.execution.local import LocalExecutor

EXECUTORS = ("local", "replay:TABLE")


def make_executor(name: str = "local", seed: int = 0) -> BaseExecutor:
    """The executor `name` names: "local", or "replay:TABLE" (ValueError with one line otherwise)."""
    if name == "local":
        return LocalExecutor()
    kind, _, arg = name.partition(":")
    if kind == "replay":
        from research_agents.execution.replay import ReplayExecutor

        if not arg:
            raise ValueError("--executor replay needs a table: replay:PATH.csv")
        return ReplayExecutor(arg, seed=seed)
    raise ValueError(f"--executor: unknown {name!r}; choose from {', '.join(EXECUTORS)}")


__all__ = ["BaseExecutor", "EXECUTORS", "LocalExecutor", "Outcome", "ProgressFn", "TrialInterrupted",
           "make_executor"]
