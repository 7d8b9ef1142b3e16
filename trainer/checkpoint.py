"""Periodic checkpoints and mid-trial resume (`save_checkpoint_every` in the trial spec).

Every N optimizer steps the trainer writes <trial dir>/checkpoint.pt (a temp file, fsync, then
os.replace: a reader or a kill never sees half a file) holding everything the next step depends
on: the model, every optimizer's state (Muon's momentum buffers, AdamW's moments and step
counts, the param groups' LRs), the grad scaler, the momentum schedule's gradient-norm window, the
data order (the batch generator's state), every RNG state (torch CPU and CUDA, python, numpy),
and what was logged so far (history, diagnostics, the last evaluation, the elapsed time). The LR
and momentum schedules are functions of the step, so the step is their position.

A trial started in a directory holding a checkpoint resumes from it when the checkpoint was written
by the same spec (`spec_hash`: the spec without the fields that change no number) and reaches
exactly the numbers of an uninterrupted run. A checkpoint of another spec, or a damaged one, is
ignored with one warning line in the trial's log and in metrics.json (`checkpoint.warnings`); it
never stops the trial. A finished trial's checkpoint is removed unless `save_checkpoint`
(--save-model) keeps it. Loading uses torch.load(weights_only=True): no pickled code runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from trainer.spec import TrialSpec

CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.safetensors"  # the trained model a trial keeps with save_checkpoint (--save-model)
FORMAT = 1
# spec fields that change no number of the run, so a checkpoint written under other values resumes
NOT_NUMBERS = ("save_checkpoint", "save_checkpoint_every")


def spec_hash(spec: TrialSpec) -> str:
    """sha256 of the spec's JSON without NOT_NUMBERS: equal hashes train identically."""
    tree = {k: v for k, v in spec.model_dump(mode="json").items() if k not in NOT_NUMBERS}
    return hashlib.sha256(json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class CheckpointRecord(BaseModel):
    """What metrics.json says about checkpoints: the interval, the step a trial resumed from (None:
    it started at step 0) and each checkpoint it ignored, with why."""

    model_config = ConfigDict(extra="ignore")

    every: int
    resumed_from_step: int | None = None
    warnings: list[str] = []


@dataclass
class Progress:
    """The training loop's own running values at the end of step `steps_done`."""

    steps_done: int
    history: list[dict]
    diagnostics: list[dict]
    last_eval: dict[str, float]
    train_loss: float
    elapsed_s: float


@dataclass
class Checkpointer:
    """Saves and restores one trial's state; does nothing when the spec asks for no checkpoints or
    the trial has no directory. It holds the trial's live objects and saves or restores their state."""

    spec: TrialSpec
    out_dir: Path | None
    model: torch.nn.Module
    optimizers: list[torch.optim.Optimizer]
    scaler: Any  # torch.amp.GradScaler or None
    norms: Any  # the momentum schedule's gradient-norm deque
    batch_gen: torch.Generator
    device: torch.device
    say: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    record: CheckpointRecord | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        every = self.spec.save_checkpoint_every
        if every is not None and self.out_dir is not None:
            self.record = CheckpointRecord(every=every)

    @property
    def enabled(self) -> bool:
        return self.spec.save_checkpoint_every is not None and self.out_dir is not None

    @property
    def path(self) -> Path:
        assert self.out_dir is not None
        return Path(self.out_dir) / CHECKPOINT_FILE

    # -- saving
    def due(self, steps_done: int) -> bool:
        every = self.spec.save_checkpoint_every
        return self.enabled and every is not None and steps_done % every == 0 and steps_done < self.spec.steps

    def save(self, progress: Progress) -> Path:
        """Write the checkpoint atomically (temp file, fsync, os.replace)."""
        payload = {
            "format": FORMAT,
            "spec_hash": spec_hash(self.spec),
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "momentum_norms": list(self.norms),
            "batch_gen": self.batch_gen.get_state(),
            "rng": _rng_states(self.device),
            "progress": {"steps_done": progress.steps_done, "history": progress.history,
                         "diagnostics": progress.diagnostics, "last_eval": progress.last_eval,
                         "train_loss": progress.train_loss, "elapsed_s": progress.elapsed_s},
        }
        tmp = self.path.with_name(f".{CHECKPOINT_FILE}.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        return self.path

    def prune(self) -> None:
        """A finished trial's checkpoint goes, unless save_checkpoint (--save-model) keeps it."""
        if self.enabled and not self.spec.save_checkpoint:
            self.path.unlink(missing_ok=True)

    # -- resuming
    def resume(self) -> Progress | None:
        """Restore the live objects from the directory's checkpoint and return the loop's values;
        None (and the live objects untouched) when there is none, or it is ignored (a warning)."""
        if not self.enabled or not self.path.is_file():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict) or payload.get("format") != FORMAT:
                raise ValueError("not a checkpoint of this trainer")
        except Exception as err:  # truncated, damaged, another format: a warning, never a traceback
            return self._ignore(f"unreadable ({_one_line(err)})")
        if payload.get("spec_hash") != spec_hash(self.spec):
            return self._ignore("written by a different trial spec")
        try:
            progress = self._check(payload)
        except Exception as err:  # a key missing, a tensor of another shape...
            return self._ignore(f"does not fit this trial ({_one_line(err)})")
        self._apply(payload)
        assert self.record is not None
        self.record.resumed_from_step = progress.steps_done
        self.say(f"checkpoint: resumed from step {progress.steps_done} of {self.spec.steps} ({self.path})")
        return progress

    def _ignore(self, why: str) -> Progress | None:
        line = f"ignored {CHECKPOINT_FILE}: {why}; training from step 0"
        assert self.record is not None
        self.record.warnings.append(line)
        self.say(f"warning: checkpoint: {line}")
        return None

    def _check(self, payload: dict) -> Progress:
        """Everything applying the checkpoint relies on, checked before anything is changed."""
        state = payload["model"]
        mine = self.model.state_dict()
        if set(state) != set(mine):
            raise ValueError("model parameters differ")
        for name, tensor in mine.items():
            if not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape \
                    or state[name].dtype != tensor.dtype:
                raise ValueError(f"model tensor {name} differs")
        saved = payload["optimizers"]
        if not isinstance(saved, list) or len(saved) != len(self.optimizers):
            raise ValueError("optimizers differ")
        for opt, sd in zip(self.optimizers, saved):
            groups = sd["param_groups"]
            if [len(g["params"]) for g in groups] != [len(g["params"]) for g in opt.param_groups]:
                raise ValueError("optimizer param groups differ")
            params = [p for g in opt.param_groups for p in g["params"]]
            for index, st in sd["state"].items():
                for key, value in st.items():
                    if isinstance(value, torch.Tensor) and value.ndim and value.shape != params[index].shape:
                        raise ValueError(f"optimizer state {key} differs")
        if (payload["scaler"] is None) != (self.scaler is None):
            raise ValueError("grad scaler differs")
        p = payload["progress"]
        steps = int(p["steps_done"])
        if not 0 < steps <= self.spec.steps:
            raise ValueError(f"step {steps} out of range")
        if not isinstance(payload["batch_gen"], torch.Tensor):
            raise ValueError("no data position")
        _check_rng(payload["rng"], self.device)
        return Progress(steps, list(p["history"]), list(p["diagnostics"]), dict(p["last_eval"]),
                        float(p["train_loss"]), float(p["elapsed_s"]))

    def _apply(self, payload: dict) -> None:
        for opt, sd in zip(self.optimizers, payload["optimizers"]):
            opt.load_state_dict(sd)  # moves state to the params' device and dtype
        self.model.load_state_dict(payload["model"])
        if self.scaler is not None:
            self.scaler.load_state_dict(payload["scaler"])
        self.norms.clear()
        self.norms.extend(float(x) for x in payload["momentum_norms"])
        self.batch_gen.set_state(payload["batch_gen"])
        _set_rng_states(payload["rng"], self.device)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def _rng_states(device: torch.device) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "python": [version, list(internal), py_gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys).copy()), int(pos), int(has_gauss), float(gauss)],
    }


def _check_rng(rng: dict, device: torch.device) -> None:
    if not isinstance(rng["torch"], torch.Tensor) or len(rng["python"]) != 3 or len(rng["numpy"]) != 5:
        raise ValueError("RNG states missing")
    if device.type == "cuda" and len(rng["cuda"]) != torch.cuda.device_count():
        raise ValueError("CUDA devices differ")


def _set_rng_states(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda"])
    version, internal, py_gauss = rng["python"]
    random.setstate((version, tuple(internal), py_gauss))
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))


def carry_checkpoint(src_dir: Path, dst_dir: Path) -> bool:
    """Move src_dir's checkpoint into dst_dir (a re-run of an interrupted trial resumes from it):
    hard-linked, else copied, into place atomically, then removed from src_dir. False when
    src_dir has none."""
    src = Path(src_dir) / CHECKPOINT_FILE
    if not src.is_file():
        return False
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(dst_dir) / f".{CHECKPOINT_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or no hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, Path(dst_dir) / CHECKPOINT_FILE)
    src.unlink()
    return True
