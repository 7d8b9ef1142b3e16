"""Experiment tracking, opt-in per run (`run --track wandb|tensorboard|mlflow`, several allowed):
each backend is one module on its tool's own client, behind `base.Tracker`; `make_tracking` builds
the chosen ones behind `base.Tracking`, which records a backend that fails and carries on without it.
Tracking sits beside the reports: it reads trial records, metrics.json and summary.json."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from research_agents.tracking.base import MODEL_FILES, TRACKING_DIR, Summary, Tracker, Tracking, Trial

BACKENDS = ("wandb", "tensorboard", "mlflow")


class TrackingOptions(BaseModel):
    """What a run asks of tracking (`run --track ... [--upload-checkpoints]`): the backends, and
    whether W&B uploads each trial's kept model files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backends: tuple[str, ...] = ()
    upload_checkpoints: bool = False


def make_tracker(name: str, out: Path, study: str, upload_checkpoints: bool = False) -> Tracker:
    """One backend by name (ImportError when its client is not installed: `pip install
    'research-agents[track]'`); `upload_checkpoints`: W&B uploads each trial's kept model files."""
    if name == "wandb":
        from research_agents.tracking.wandb import WandbTracker

        return WandbTracker(out, study, upload_checkpoints)
    if name == "tensorboard":
        from research_agents.tracking.tensorboard import TensorBoardTracker

        return TensorBoardTracker(out, study)
    if name == "mlflow":
        from research_agents.tracking.mlflow import MlflowTracker

        return MlflowTracker(out, study)
    raise ValueError(f"--track: unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def make_tracking(options: TrackingOptions, out: Path, study: str,
                  on_error: Callable[[str, str, str], None] = lambda b, h, m: None) -> Tracking:
    """The chosen backends; one that cannot start is recorded through `on_error` and left out."""
    trackers: list[Tracker] = []
    for name in dict.fromkeys(options.backends):
        try:
            trackers.append(make_tracker(name, out, study, options.upload_checkpoints))
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - a backend that cannot start never stops the run
            on_error(name, "start", " ".join(f"{type(e).__name__}: {e}".split())[:400])
    return Tracking(study, Path(out), trackers, on_error)


__all__ = ["BACKENDS", "MODEL_FILES", "TRACKING_DIR", "Summary", "Trial", "Tracker", "Tracking", "TrackingOptions",
           "make_tracker", "make_tracking"]
