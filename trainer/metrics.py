"""metrics.json: the typed record of one trial, written atomically, read back tolerantly.

The file is what `json.dumps(TrialMetrics.model_dump(), indent=1, allow_nan=True)` gives, so NaN
and inf stay JSON `NaN` / `Infinity`, as they always were. Reading ignores unknown keys, so files
written by older or newer trainers still load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

METRICS_FILE = "metrics.json"


class FinalMetrics(BaseModel):
    """The last evaluation of the trial (None where there was none, e.g. a failed trial)."""

    model_config = ConfigDict(extra="ignore")

    val_loss: float | None = None
    val_accuracy: float | None = None
    val_perplexity: float | None = None
    train_loss: float | None = None


class OptimizerGroup(BaseModel):
    """One optimizer param group: its name, optimizer, peak LR and weight decay, and its size."""

    model_config = ConfigDict(extra="ignore")

    name: str
    optimizer: str
    lr: float
    weight_decay: float
    params: int  # tensors
    numel: int  # elements


class TrialMetrics(BaseModel):
    """Everything one trial reports. `history` and `diagnostics` hold one dict per logged step."""

    model_config = ConfigDict(extra="ignore")

    spec: dict
    status: Literal["completed", "diverged", "failed"]
    reason: str | None = None
    final: FinalMetrics
    history: list[dict] = []
    diagnostics: list[dict] = []
    optimizer_steps: int | None = None  # None: the trial failed before training (nothing counted)
    tokens_seen: int | None = None
    wall_time_s: float | None = None
    tokens_per_s: float | None = None
    peak_memory_mb: float | None = None
    device: str | None = None
    precision: str | None = None
    param_groups: dict[str, int] = {}
    optimizer_groups: list[OptimizerGroup] = []  # each group's LR (the AdamW leg's vs the matrices')
    env: dict = {}
    traceback: str | None = None


def write_metrics(out_dir: str | Path, metrics: TrialMetrics) -> Path:
    """Write out_dir/metrics.json through a temp file and os.replace, so no reader sees half a file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{METRICS_FILE}.tmp"
    tmp.write_text(json.dumps(metrics.model_dump(mode="python"), indent=1, allow_nan=True))
    path = out_dir / METRICS_FILE
    os.replace(tmp, path)
    return path


def read_metrics(run_dir: str | Path) -> TrialMetrics | None:
    """run_dir/metrics.json as a TrialMetrics; None when missing, unreadable, not JSON or invalid."""
    try:
        return TrialMetrics.model_validate(json.loads((Path(run_dir) / METRICS_FILE).read_text()))
    except (OSError, ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
