"""metrics.json: the typed record of one trial, written atomically, read back tolerantly.

The file is what `json.dumps(TrialMetrics.model_dump(), indent=1, allow_nan=True)` gives, so NaN
and inf stay JSON `NaN` / `Infinity`, as they always were. Reading ignores unknown keys, so files
written by older or newer trainers still load; a history entry keeps keys it does not declare
(e.g. a newer trainer's extra logs), read as attributes. `read_metrics` reads a file once: the
same unchanged file gives the same (cached) TrialMetrics, so a finished trial is parsed once.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_serializer

from trainer.checkpoint import CheckpointRecord
from trainer.spec import TrialSpec

METRICS_FILE = "metrics.json"
CACHED_FILES = 512  # metrics.json files kept parsed (least recently read dropped first)


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


class HistoryPoint(BaseModel):
    """One logged optimizer step (val_* only at eval steps). `momentum` is Muon's momentum (None
    for an AdamW run); `adamw_beta1` is the AdamW leg's beta1. Keys not declared here are kept
    (extra="allow") and written back; unset fields are not written, so the file stays as logged."""

    model_config = ConfigDict(extra="allow")

    step: int
    time_s: float | None = None  # wall time since the trial started
    tokens: int | None = None
    lr: float | None = None  # the main optimizer's LR
    adamw_lr: float | None = None  # the AdamW leg's LR (None: no AdamW leg)
    momentum: float | None = None
    adamw_beta1: float | None = None
    train_loss: float | None = None
    grad_norm: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None

    @model_serializer(mode="wrap")
    def _as_logged(self, handler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None or k in self.model_fields_set}


class TrialMetrics(BaseModel):
    """Everything one trial reports: its spec (None when the file's spec is not a valid TrialSpec
    of this trainer, e.g. a failure before the spec loaded), `history` one entry per logged step,
    `diagnostics` one dict per eval step that measured any."""

    model_config = ConfigDict(extra="ignore")

    spec: TrialSpec | None = None
    status: Literal["completed", "diverged", "stopped", "failed"]
    reason: str | None = None
    final: FinalMetrics
    history: list[HistoryPoint] = []
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
    checkpoint: CheckpointRecord | None = None  # save_checkpoint_every: where it resumed, what it ignored

    @field_validator("spec", mode="before")
    @classmethod
    def _spec(cls, value: Any) -> Any:
        if isinstance(value, TrialSpec) or value is None:
            return value
        if not value:  # "spec": {} (an old failure file): no spec
            return None
        try:
            return TrialSpec.model_validate(value)
        except ValidationError:  # a spec of another trainer version: the rest still loads
            return None


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
    """run_dir/metrics.json as a TrialMetrics; None when missing, unreadable, not JSON or invalid.
    Parsed once per file version (path, modification time, size): callers share the result and
    must not change it."""
    path = Path(run_dir) / METRICS_FILE
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        with _LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
        metrics = TrialMetrics.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    with _LOCK:
        _CACHE[key] = metrics
        while len(_CACHE) > CACHED_FILES:
            _CACHE.popitem(last=False)
    return metrics


_CACHE: OrderedDict[tuple[str, int, int], TrialMetrics] = OrderedDict()
_LOCK = threading.Lock()
