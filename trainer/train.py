"""One trial: build data, model and optimizers from a spec, train, evaluate, write metrics.json.

A step is an OPTIMIZER step: `grad_accum` micro-batches feed each one, and every schedule is
advanced once per step. Divergence is a result (status "diverged"), not an error; so is a stop at
one of `spec.stop_above`'s eval steps (status "stopped": its val loss was above the limit there).
"""

from __future__ import annotations

import math
import platform
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from trainer.checkpoint import MODEL_FILE, Checkpointer, Progress
from trainer.data import get_batch, iter_eval_batches, load_token_data
from trainer.device import describe_device, resolve_device, resolve_precision, tune_cpu_allocator
from trainer.diagnostics import UpdateRMS, entropy_matrices, svd_entropy
from trainer.metrics import FinalMetrics, TrialMetrics, write_metrics
from trainer.models import build_model
from trainer.optim import build_optimizers
from trainer.schedules import MomentumSchedule, lr_multiplier
from trainer.spec import TrialSpec

PERPLEXITY_CAP = 20.0  # perplexity = exp(min(loss, 20)), as the seeds reported it


def perplexity(loss: float) -> float:
    return math.exp(min(loss, PERPLEXITY_CAP)) if math.isfinite(loss) else float("inf")


@torch.no_grad()
def evaluate(model, tokens, spec: TrialSpec, device, autocast) -> dict[str, float]:
    """Token-weighted loss and next-token accuracy on the same val blocks for every trial."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in iter_eval_batches(tokens, spec.batch_size, spec.seq_len, spec.eval_batches):
        x, y = x.to(device), y.to(device)
        with autocast():
            logits, _ = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        count += y.numel()
    model.train()
    loss = loss_sum / count
    return {"val_loss": loss, "val_accuracy": correct / count, "val_perplexity": perplexity(loss)}


def _env(data_fingerprint: dict, n_params: int) -> dict:
    import numpy

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "data": data_fingerprint,
        "n_params": n_params,
    }


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train(spec: TrialSpec, out_dir: str | Path | None = None,
          on_log: Callable[[dict], None] | None = None) -> TrialMetrics:
    """Run one trial and return (and, with out_dir, write to metrics.json) its metrics."""
    started = time.perf_counter()
    tune_cpu_allocator()  # fewer page faults per step; changes no number
    torch.manual_seed(spec.seed)
    device = resolve_device(spec.device)
    precision = resolve_precision(spec.precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cuda.matmul.allow_tf32 = True

    data = load_token_data(spec.data)
    model = build_model(spec.model, data.vocab_size).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    opt = build_optimizers(model, spec)
    forward = torch.compile(model) if spec.compile else model
    scaler = torch.amp.GradScaler("cuda") if precision.use_scaler else None

    def autocast():
        if precision.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=precision.autocast_dtype)

    momentum = MomentumSchedule(spec)
    batch_gen = torch.Generator().manual_seed(spec.seed)
    update_rms = UpdateRMS(model, opt.groups) if spec.diagnostics.update_rms else None
    all_params = [p for p in model.parameters() if p.requires_grad]
    clip = spec.grad_clip if spec.grad_clip is not None else float("inf")

    history: list[dict] = []
    diagnostics: list[dict] = []
    status, reason = "completed", None
    last_eval: dict[str, float] = {}
    train_loss = float("nan")
    steps_done = 0
    ckpt = Checkpointer(spec, Path(out_dir) if out_dir is not None else None, model, opt.optimizers, scaler,
                        momentum._norms, batch_gen, device)
    resumed = ckpt.resume()
    if resumed is not None:
        steps_done, history, diagnostics = resumed.steps_done, resumed.history, resumed.diagnostics
        last_eval, train_loss = resumed.last_eval, resumed.train_loss
        started -= resumed.elapsed_s  # time_s and wall_time_s count the trial's earlier runs too
    model.train()
    for step in range(steps_done, spec.steps):
        lr_factor = lr_multiplier(spec, step)
        opt.set_lr_multiplier(lr_factor)
        m = momentum(step)
        opt.set_momentum(m)

        ce_total = 0.0
        for _ in range(spec.grad_accum):
            x, y = get_batch(data.train, spec.batch_size, spec.seq_len, batch_gen)
            x, y = x.to(device), y.to(device)
            with autocast():
                logits, aux = forward(x)
                ce = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
                loss = (ce + spec.load_balancing_weight * aux) / spec.grad_accum
            (scaler.scale(loss) if scaler else loss).backward()
            ce_total += float(ce.detach())
        train_loss = ce_total / spec.grad_accum

        if scaler:
            for o in opt.optimizers:
                scaler.unscale_(o)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(all_params, clip))
        momentum.observe_grad_norm(grad_norm)

        if not math.isfinite(train_loss) or train_loss > spec.divergence_loss:
            status = "diverged"
            reason = f"train loss {train_loss:.4g} at step {step + 1} (threshold {spec.divergence_loss})"
            opt.zero_grad()
            history.append(_record(step + 1, spec, opt, m, train_loss, grad_norm, time.perf_counter() - started))
            break

        is_eval = (step + 1) % spec.eval_every == 0 or step + 1 == spec.steps
        if update_rms and is_eval:
            update_rms.snapshot()
        opt.step(scaler)
        if scaler:
            scaler.update()
        opt.zero_grad()
        steps_done = step + 1

        if is_eval or steps_done % spec.log_every == 0:
            entry = _record(steps_done, spec, opt, m, train_loss, grad_norm, time.perf_counter() - started)
            if is_eval:
                last_eval = evaluate(model, data.val, spec, device, autocast)
                entry.update(val_loss=last_eval["val_loss"], val_accuracy=last_eval["val_accuracy"])
                if not math.isfinite(last_eval["val_loss"]):
                    status, reason = "diverged", f"val loss {last_eval['val_loss']} at step {steps_done}"
                elif (why := spec.stop_reason(steps_done, last_eval["val_loss"])) is not None:
                    status, reason = "stopped", why
                diag = _diagnostics(spec, model, update_rms, steps_done)
                if diag:
                    diagnostics.append(diag)
            history.append(entry)
            if on_log:
                on_log(entry)
            if status != "completed":  # diverged, or stopped at one of spec.stop_above's steps
                break
        if ckpt.due(steps_done):
            ckpt.save(Progress(steps_done, history, diagnostics, last_eval, train_loss,
                               time.perf_counter() - started))

    if status == "diverged" and steps_done and not last_eval:
        last_eval = evaluate(model, data.val, spec, device, autocast)
    wall = time.perf_counter() - started
    tokens_seen = steps_done * spec.tokens_per_step
    metrics = TrialMetrics(
        spec=spec.model_dump(mode="json"),
        status=status,
        reason=reason,
        final=FinalMetrics(
            val_loss=last_eval.get("val_loss"),
            val_accuracy=last_eval.get("val_accuracy"),
            val_perplexity=last_eval.get("val_perplexity"),
            train_loss=train_loss,
        ),
        history=history,
        diagnostics=diagnostics,
        optimizer_steps=steps_done,
        tokens_seen=tokens_seen,
        wall_time_s=wall,
        tokens_per_s=tokens_seen / wall if wall > 0 else None,
        peak_memory_mb=_peak_memory_mb(device),
        device=describe_device(device),
        precision=precision.name,
        param_groups={g: len(names) for g, names in opt.groups.items()},
        optimizer_groups=opt.describe(),
        env=_env(data.fingerprint, n_params),
        checkpoint=ckpt.record,
    )
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_metrics(out_dir, metrics)
        if spec.save_checkpoint:
            from safetensors.torch import save_model

            save_model(model, str(out_dir / MODEL_FILE))
        ckpt.prune()
    return metrics


def _record(step: int, spec: TrialSpec, opt, momentum: float, train_loss: float, grad_norm: float,
            elapsed_s: float) -> dict:
    return {
        "step": step,
        "time_s": elapsed_s,  # wall time since the trial started (seeds' "loss against time" panel)
        "tokens": step * spec.tokens_per_step,
        "lr": opt.current_lr("muon", "adamw_hidden", "adamw_leg", "adamw_leg_no_decay"),  # hidden matrices
        "adamw_lr": opt.current_lr("adamw_leg", "adamw_leg_no_decay"),  # the AdamW leg
        "momentum": momentum if opt.muon is not None else None,  # Muon's; AdamW's beta1 is its own key
        "adamw_beta1": opt.adamw.param_groups[0]["betas"][0] if opt.adamw is not None else None,
        "train_loss": train_loss,
        "grad_norm": grad_norm,
    }


def _diagnostics(spec: TrialSpec, model, update_rms: UpdateRMS | None, step: int) -> dict:
    out: dict = {}
    if update_rms:
        out["update_rms"] = update_rms.measure()
    if spec.diagnostics.svd_entropy:
        out["svd_entropy"] = {n: svd_entropy(w) for n, w in entropy_matrices(model, spec.diagnostics.svd_max_matrices)}
    return {"step": step, **out} if out else {}
