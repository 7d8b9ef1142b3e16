"""How trials run: the interface (`BaseExecutor`, `Outcome`) and the executors, by name."""

from __future__ import annotations

from research_agents.execution.base import BaseExecutor, Outcome, ProgressFn, TrialInterrupted
from research_agents.execution.local import LocalExecutor, visible_gpus

EXECUTORS = ("local", "local-cold", "ray", "replay:TABLE")


def make_executor(name: str = "local", seed: int = 0, device: str = "auto",
                  ray_address: str | None = None, study=None) -> BaseExecutor:
    """The executor `name` names (ValueError with one line otherwise): "local" (warm fork server),
    "local-cold" (a new interpreter per trial), "ray" or "replay:TABLE". `device` is where the
    trials train (auto, cpu, cuda): on CUDA each trial gets a GPU of its own. `study` (a config.Study)
    tells replay which knobs its trials search (default: the default study's)."""
    if ray_address is not None and name != "ray":
        raise ValueError("--ray-address applies to --executor ray only")
    gpus = visible_gpus() if device != "cpu" else []
    if name == "ray":  # a cluster's GPUs may be on other nodes than this one
        from research_agents.execution.ray import RayExecutor

        return RayExecutor(address=ray_address, gpus_per_trial=1.0 if gpus or device == "cuda" else 0.0)
    if name in ("local", "local-cold"):
        return LocalExecutor(gpus=gpus or None, warm=name == "local")
    kind, _, arg = name.partition(":")
    if kind == "replay":
        from research_agents.execution.replay import ReplayExecutor

        if not arg:
            raise ValueError("--executor replay needs a table: replay:PATH.csv")
        return ReplayExecutor(arg, seed=seed, study=study)
    raise ValueError(f"--executor: unknown {name!r}; choose from {', '.join(EXECUTORS)}")


__all__ = ["BaseExecutor", "EXECUTORS", "LocalExecutor", "Outcome", "ProgressFn", "TrialInterrupted",
           "make_executor", "visible_gpus"]
