"""Train-step throughput, like for like: our MoE LM (trainer/) vs transformers' MixtralForCausalLM.

    OMP_NUM_THREADS=1 python -m benchmarks.train_throughput                  # both sizes, CPU
    python -m benchmarks.train_throughput --device cuda --sizes seed-moe --reps 20 --json out.json

One timed sample is one FULL training step as trainer/train.py runs it: forward (under the
trainer's autocast, if any), loss = cross_entropy(logits.float()) + load_balancing_weight * aux,
backward, clip_grad_norm_ (spec.grad_clip), optimizer step, zero_grad(set_to_none=True), and the
float(loss) host read of every step. Models per size:

  ours/adamw     trainer.models.build_model(spec.model) with the AdamW that trainer.optim builds
                 for that spec with optimizer="adamw" (the trainer's own code, untouched).
  mixtral/adamw  transformers.MixtralForCausalLM at equal parameter count and equal FLOPs per
                 token: our experts are SiLU MLPs (2 matrices of d_ff), Mixtral's are SwiGLU (3
                 matrices), so its intermediate_size = round(2/3 d_ff); same vocab (tied head),
                 d_model, layers, heads (no GQA), experts, top-k, seq len, batch, RoPE base,
                 attention dropout, aux-loss weight. Its optimizer is a torch.optim.AdamW with
                 exactly our AdamW's options and the same decay / no-decay split (trainer.params),
                 so the ratio is about the model code only. Mixtral runs with its defaults
                 (sdpa attention, grouped_mm experts), no router jitter noise.
  ours/muon      for information: our model with the trainer's real optimizer setup (Muon for
                 hidden matrices + AdamW), exactly as trainer.optim builds it for the preset.

Sizes: `tiny` is the CPU default run preset (batch 16 x 64 tokens, vocab 1024 = its BPE size);
`seed-moe` is the seed-moe model (79M params, vocab 49152 = SmolLM's tokenizer, seq 512). Its run
preset's micro-batch (24 x 512, logits alone 2.4 GB) takes about a minute per step on one CPU
core, so on CPU it defaults to batch 2 (1,024 tokens per step); on CUDA the preset's 24. A step is
one micro-batch (grad_accum 1); --batch-size overrides the batch for every size.

The process runs with the trainer's process settings (trainer.device.tune_cpu_allocator, which
trainer.train applies), so they hold for every model alike. Repetitions are interleaved (A, B,
C, A, B, C, ...) after warm-up steps, so load drift on a shared machine hits every model alike;
reported: median tokens/s per model and the median of the
per-repetition ratios ours/mixtral (tokens/s). Parameter counts and FLOPs per token (matmul
FLOPs of a training step = 3 x forward; attention scores counted for the full T x T square) are
printed for both models to show the match, and GFLOP/s = tokens/s x FLOPs/token next to the
machine's matmul peak (machine_info), which bounds what any implementation can reach.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from trainer.device import describe_device, resolve_device, resolve_precision, tune_cpu_allocator
from trainer.models import build_model
from trainer.optim import build_optimizers
from trainer.params import decays
from trainer.presets import RUN_PRESETS
from trainer.spec import TrialSpec

SIZES = {
    # size: (run preset, vocab size the trainer would get from that preset's tokenizer, CPU batch)
    "tiny": ("tiny", 1024, None),
    "seed-moe": ("seed-moe", 49152, 2),
}
ARMS = ("ours/adamw", "mixtral/adamw", "ours/muon")


# ---------------------------------------------------------------- setup


def make_spec(size: str, device: torch.device, batch_size: int | None) -> TrialSpec:
    preset, _, cpu_batch = SIZES[size]
    fields = {**RUN_PRESETS[preset], "device": device.type, "grad_accum": 1}
    if batch_size is not None:
        fields["batch_size"] = batch_size
    elif device.type == "cpu" and cpu_batch is not None:
        fields["batch_size"] = cpu_batch
    return TrialSpec.model_validate(fields)


def mixtral_config(spec: TrialSpec, vocab: int):
    from transformers import MixtralConfig

    m = spec.model
    return MixtralConfig(
        vocab_size=vocab, hidden_size=m.d_model, intermediate_size=round(2 * m.d_ff / 3),
        num_hidden_layers=m.n_layers, num_attention_heads=m.n_heads, num_key_value_heads=m.n_heads,
        head_dim=m.d_model // m.n_heads, num_local_experts=m.n_experts, num_experts_per_tok=m.top_k,
        max_position_embeddings=spec.seq_len, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": m.rope_base},
        attention_dropout=m.dropout, router_jitter_noise=0.0, output_router_logits=True,
        router_aux_loss_coef=spec.load_balancing_weight, use_cache=False, sliding_window=None,
        attn_implementation="sdpa",
    )


def adamw_like(reference: torch.optim.AdamW, model: torch.nn.Module) -> torch.optim.AdamW:
    """torch.optim.AdamW over `model`: `reference`'s options, trainer.params' decay split."""
    wd = max(g["weight_decay"] for g in reference.param_groups)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        dict(params=[p for n, p in named if decays(n, p)], weight_decay=wd),
        dict(params=[p for n, p in named if not decays(n, p)], weight_decay=0.0),
    ]
    lr = reference.param_groups[0]["lr"]
    accepted = set(inspect.signature(torch.optim.AdamW).parameters) - {"params", "lr",
                                                                      "weight_decay"}
    opts = {k: v for k, v in reference.defaults.items() if k in accepted}
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, **opts)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


def flops_per_token(spec: TrialSpec, vocab: int, expert_mats: int, expert_ff: int) -> float:
    """Matmul FLOPs of one training step per token (3 x forward: forward + two backward matmuls)."""
    m = spec.model
    d, L = m.d_model, m.n_layers
    per_layer = 4 * d * d + m.n_experts * d + m.top_k * expert_mats * d * expert_ff
    forward = 2 * (L * per_layer + vocab * d) + L * 2 * 2 * spec.seq_len * d  # + QK^T and AV
    return 3.0 * forward


class Arm:
    """One model + optimizer + step function; step() runs one full training step."""

    def __init__(self, name, model, optimizers, forward_loss, params_total, flops, clip, scaler):
        self.name, self.model, self.optimizers = name, model, optimizers
        self.forward_loss, self.params, self.flops = forward_loss, params_total, flops
        self.clip, self.scaler = clip, scaler
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.samples: list[float] = []

    def step(self, x, y, phase=lambda name: nullcontext()) -> float:
        """One training step; `phase(name)` wraps each part (a profiler label when profiling)."""
        with phase("forward+loss"):
            loss, ce = self.forward_loss(x, y)
        with phase("backward"):
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            value = float(ce.detach())
        with phase("clip_grad_norm"):
            if self.scaler:
                for o in self.optimizers:
                    self.scaler.unscale_(o)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.clip)
        with phase("optimizer.step"):
            for o in self.optimizers:
                self.scaler.step(o) if self.scaler else o.step()
            if self.scaler:
                self.scaler.update()
        with phase("zero_grad"):
            for o in self.optimizers:
                o.zero_grad(set_to_none=True)
        return value


EXPERTS_AUTO = ("grouped_mm", "eager")  # batched_mm copies the expert weights per token-slot


def pick_experts_implementation(peer, spec: TrialSpec, vocab: int, device: torch.device,
                                requested: str, autocast) -> str:
    """Set Mixtral's experts implementation: `requested`, or with "auto" the fastest of
    EXPERTS_AUTO that runs (its default grouped_mm needs 16-byte strides on CPU, which
    intermediate_size 171 of `tiny` does not have, and bf16 weights on CUDA). Probed with three
    forward+backward passes each (the first untimed); the gradients are dropped afterwards."""
    if requested != "auto":
        peer.set_experts_implementation(requested)
        return requested
    x = torch.randint(0, vocab, (spec.batch_size, spec.seq_len), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best, best_t = None, math.inf
    for impl in EXPERTS_AUTO:
        try:
            peer.set_experts_implementation(impl)
            times = []
            for _ in range(3):
                sync()
                t = time.perf_counter()
                with autocast():
                    out = peer(input_ids=x)
                out.logits.float().mean().backward()
                sync()
                times.append(time.perf_counter() - t)
        except Exception as err:  # noqa: BLE001 - any failure means: not usable here
            print(f"  mixtral experts_implementation={impl!r} does not run here: {err}")
            continue
        finally:
            peer.zero_grad(set_to_none=True)
        if min(times[1:]) < best_t:
            best, best_t = impl, min(times[1:])
    if best is None:
        raise RuntimeError("no Mixtral experts implementation runs here")
    peer.set_experts_implementation(best)
    return best


def build_arms(spec: TrialSpec, vocab: int, device: torch.device, arms: list[str],
               mixtral_experts: str = "auto") -> dict[str, Arm]:
    from transformers import MixtralForCausalLM

    precision = resolve_precision(spec.precision, device)

    def autocast():
        if precision.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=precision.autocast_dtype)

    def scaler():
        return torch.amp.GradScaler("cuda") if precision.use_scaler else None

    lbw = spec.load_balancing_weight
    clip = spec.grad_clip if spec.grad_clip is not None else float("inf")
    m = spec.model
    ours_flops = flops_per_token(spec, vocab, 2, m.d_ff)

    def ours(optimizer: str) -> Arm:
        torch.manual_seed(spec.seed)
        model = build_model(m, vocab).to(device).train()
        opt = build_optimizers(model, spec.model_copy(update={"optimizer": optimizer}))

        def forward_loss(x, y):  # trainer/train.py's micro-batch, verbatim
            with autocast():
                logits, aux = model(x)
                ce = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
                loss = ce + lbw * aux
            return loss, ce

        return Arm(f"ours/{optimizer}", model, opt.optimizers, forward_loss, n_params(model),
                   ours_flops, clip, scaler())

    built: dict[str, Arm] = {}
    if "ours/adamw" in arms or "mixtral/adamw" in arms:
        built["ours/adamw"] = ours("adamw")
    if "mixtral/adamw" in arms:
        torch.manual_seed(spec.seed)
        cfg = mixtral_config(spec, vocab)
        peer = MixtralForCausalLM(cfg).to(device).train()
        assert peer.lm_head.weight is peer.model.embed_tokens.weight, "head must be tied"
        impl = pick_experts_implementation(peer, spec, vocab, device, mixtral_experts, autocast)
        opt = adamw_like(built["ours/adamw"].optimizers[0], peer)

        def peer_loss(x, y):  # transformers' own training path: its loss function + aux loss
            with autocast():  # shift_labels=y: the same targets as ours (no shift, no padding)
                out = peer(input_ids=x, labels=y, shift_labels=y)
            return out.loss, out.loss  # = cross_entropy(logits.float()) + coef * aux_loss

        built["mixtral/adamw"] = Arm(
            "mixtral/adamw", peer, [opt], peer_loss, n_params(peer),
            flops_per_token(spec, vocab, 3, cfg.intermediate_size), clip, scaler())
        built["mixtral/adamw"].info = {  # type: ignore[attr-defined]
            "intermediate_size": cfg.intermediate_size,
            "attn_implementation": peer.config._attn_implementation,
            "experts_implementation": impl,
        }
    if "ours/muon" in arms:
        built["ours/muon"] = ours("muon")
    return {a: built[a] for a in arms}


# ---------------------------------------------------------------- timing


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "trainer", "benchmarks"],
                                    capture_output=True, text=True, cwd=Path(__file__).parent,
                                    check=False).stdout.strip())
    except OSError:
        commit, dirty = None, None
    import transformers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": describe_device(device),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.train_throughput",
                             *sys.argv[1:]]),
        "git_commit": commit,
        "git_dirty": dirty,
    }


def matmul_peak_gflops(device: torch.device) -> float:
    """Best of 30 (2048 x 1024) @ (1024 x 1024) matmuls in the trainer's compute dtype, GFLOP/s:
    what this device sustains on a matmul-friendly shape, to read the table's GFLOP/s against
    (main() takes the larger of a measurement before and one after the models ran)."""
    dtype = resolve_precision("auto", device).autocast_dtype or torch.float32
    a = torch.randn(2048, 1024, device=device, dtype=dtype)
    b = torch.randn(1024, 1024, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = math.inf
    for i in range(33):
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        if i >= 3:
            best = min(best, time.perf_counter() - t)
    return 2 * 2048 * 1024 * 1024 / best / 1e9


def run_size(size: str, device: torch.device, reps: int, warmup: int, batch_size: int | None,
             arms_wanted: list[str], mixtral_experts: str = "auto", profile_steps: int = 0,
             log=print) -> dict:
    spec = make_spec(size, device, batch_size)
    vocab = SIZES[size][1]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as trainer/train.py
    arms = build_arms(spec, vocab, device, arms_wanted, mixtral_experts)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tokens = spec.batch_size * spec.seq_len
    gen = torch.Generator().manual_seed(1234)
    batches = []
    for _ in range(4):  # the same few random batches for every model, in the same order
        seq = torch.randint(0, vocab, (spec.batch_size, spec.seq_len + 1), generator=gen)
        batches.append((seq[:, :-1].contiguous().to(device), seq[:, 1:].contiguous().to(device)))

    log(f"[{size}] batch {spec.batch_size} x seq {spec.seq_len} = {tokens} tokens/step, "
        f"vocab {vocab}, {warmup} warm-up + {reps} timed steps per model, interleaved "
        f"({', '.join(arms)}); torch threads {torch.get_num_threads()}")
    for i in range(warmup):
        for arm in arms.values():
            arm.step(*batches[i % len(batches)])
    sync()
    if profile_steps:
        return {"size": size, "profile": profile_arms(arms, batches, profile_steps, log=log)}
    for r in range(reps):
        for arm in arms.values():
            x, y = batches[r % len(batches)]
            sync()
            t = time.perf_counter()
            arm.step(x, y)
            sync()
            arm.samples.append(time.perf_counter() - t)

    out = {"size": size, "tokens_per_step": tokens, "batch_size": spec.batch_size,
           "seq_len": spec.seq_len, "vocab_size": vocab, "model": spec.model.model_dump(),
           "reps": reps, "warmup": warmup, "arms": {}}
    for name, arm in arms.items():
        tps = [tokens / s for s in arm.samples]
        entry = {"params": arm.params, "flops_per_token": arm.flops,
                 "tokens_per_s_median": statistics.median(tps),
                 "gflops_median": statistics.median(tps) * arm.flops / 1e9,
                 "step_s_median": statistics.median(arm.samples),
                 "step_s": arm.samples,
                 "optimizers": [type(o).__name__ for o in arm.optimizers]}
        entry.update(getattr(arm, "info", {}))
        out["arms"][name] = entry
    if "mixtral/adamw" in arms:
        ref = arms["mixtral/adamw"].samples
        for name in arms:
            if name != "mixtral/adamw":
                ratios = [b / a for a, b in zip(arms[name].samples, ref)]  # tokens/s ours / mixtral
                out["arms"][name]["ratio_vs_mixtral_per_rep"] = ratios
                out["arms"][name]["ratio_vs_mixtral_median"] = statistics.median(ratios)
        p_ours, p_mix = out["arms"]["ours/adamw"]["params"], out["arms"]["mixtral/adamw"]["params"]
        out["param_mismatch"] = p_mix / p_ours - 1.0
    return out


PHASES = ("forward+loss", "backward", "clip_grad_norm", "optimizer.step", "zero_grad")


def profile_arms(arms: dict[str, Arm], batches, steps: int, top: int = 15, log=print) -> dict:
    """torch.profiler over `steps` steps of each arm: time per phase and the top ops (self time)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU]
    if batches[0][0].device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    out = {}
    for name, arm in arms.items():
        with profile(activities=activities) as prof:
            for i in range(steps):
                arm.step(*batches[i % len(batches)], phase=record_function)
        events = prof.key_averages()
        phases = {e.key: e.cpu_time_total / 1e3 / steps for e in events if e.key in PHASES}
        step_ms = sum(phases.values())
        ops = sorted((e for e in events if e.key not in PHASES),
                     key=lambda e: -e.self_cpu_time_total)
        self_total = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
        top_ops = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
                    "share": e.self_cpu_time_total / 1e3 / steps / self_total,
                    "calls_per_step": e.count / steps} for e in ops[:top]]
        out[name] = {"steps": steps, "step_ms_profiled": step_ms, "phases_ms": phases,
                     "top_ops": top_ops}
        log(f"  profile {name}: {step_ms:.1f} ms/step under the profiler | " + ", ".join(
            f"{k} {v:.1f} ms ({v / step_ms:.0%})" for k, v in phases.items()))
        for op in top_ops:
            log(f"    {op['self_ms_per_step']:8.2f} ms {op['share']:6.1%} "
                f"{op['calls_per_step']:7.1f}x  {op['op'][:70]}")
    return out


def print_table(results: list[dict], peak_gflops: float | None = None, log=print) -> None:
    header = (f"{'size':<9} {'model':<14} {'params':>12} {'GFLOP/token':>12} {'tokens/s':>10} "
              f"{'ms/step':>9} {'GFLOP/s':>8} {'vs mixtral':>11}")
    log(header)
    log("-" * len(header))
    for res in results:
        for name, a in res["arms"].items():
            ratio = a.get("ratio_vs_mixtral_median")
            log(f"{res['size']:<9} {name:<14} {a['params']:>12,} "
                f"{a['flops_per_token'] / 1e9:>12.4f} "
                f"{a['tokens_per_s_median']:>10.0f} {a['step_s_median'] * 1e3:>9.1f} "
                f"{a['gflops_median']:>8.1f} "
                f"{(f'{ratio:.2f}x' if ratio is not None else '-'):>11}")
        if "param_mismatch" in res:
            log(f"{'':<9} params mixtral/ours - 1 = {res['param_mismatch'] * 100:+.2f}%; "
                f"{res['tokens_per_step']} tokens/step; ratio = median over reps of "
                f"(ours tokens/s) / (mixtral tokens/s) in the same repetition")
            mix = res["arms"]["mixtral/adamw"]
            need = 2 * mix["gflops_median"]
            log(f"{'':<9} 2.0x mixtral means {need:.1f} GFLOP/s of training matmuls"
                + (f" (matmul peak here: {peak_gflops:.1f} GFLOP/s)" if peak_gflops else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=list(SIZES))
    parser.add_argument("--reps", type=int, default=10, help="timed steps per model (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="override the batch (default: the run preset's; seed-moe on CPU: 2)")
    parser.add_argument("--models", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--mixtral-experts", default="auto",
                        choices=("auto", "grouped_mm", "eager", "batched_mm"),
                        help="Mixtral's experts_implementation (auto: fastest of grouped_mm/eager)")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="instead of timing: torch.profiler over STEPS steps per model, "
                             "time per phase and top ops")
    parser.add_argument("--json", type=Path, default=None,
                        help="write machine info and all numbers")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    info = machine_info(device)
    info["cpu_allocator_tuned"] = tune_cpu_allocator()  # as trainer.train does; for every model
    info["matmul_peak_gflops"] = matmul_peak_gflops(device)
    print(f"{info['device']} | {info['cpu']} | {info['cores']} cores, torch threads "
          f"{info['torch_threads']} (OMP_NUM_THREADS={info['OMP_NUM_THREADS']}) | torch "
          f"{info['torch']}, transformers {info['transformers']} | matmul peak "
          f"{info['matmul_peak_gflops']:.1f} GFLOP/s")
    results = []
    for size in args.sizes:
        results.append(run_size(size, device, args.reps, args.warmup, args.batch_size, args.models,
                                args.mixtral_experts, args.profile))
    info["matmul_peak_gflops"] = max(info["matmul_peak_gflops"], matmul_peak_gflops(device))
    if not args.profile:
        print()
        print_table(results, info["matmul_peak_gflops"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
