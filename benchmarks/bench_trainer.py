"""Speed figures for the trainer, printed as numbers (CPU or CUDA).

    python benchmarks/bench_trainer.py              # all
    python benchmarks/bench_trainer.py muon moe     # some

muon:   one optimizer step over the seed-moe hidden matrices: this project's batched Muon vs
        torch.optim.Muon (2D only, so experts are split into 2D views for it).
moe:    forward+backward of one MoE layer: grouped dispatch vs the naive per-expert mask loop.
trial:  wall time of a 100-step `tiny` trial (the CPU default) and its tokens/s.

The comparison with transformers' MixtralForCausalLM lives in benchmarks/train_throughput.py: a
full training step (forward, backward, optimizer, zero_grad) at equal parameter count and equal
FLOPs per token. (The old `peer` mode here timed forward+backward only, against a SwiGLU Mixtral
at equal d_ff, i.e. 1.5x our expert FLOPs: not like for like, so it was removed.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _time(fn, repeats: int, warmup: int = 2, sync=lambda: None) -> float:
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def _sync(device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def bench_muon(device, scale: str) -> None:
    from trainer.models import build_model, hidden_matrices
    from trainer.muon import Muon
    from trainer.presets import MODEL_PRESETS
    from trainer.spec import ModelConfig

    cfg = ModelConfig(**MODEL_PRESETS["seed-moe" if scale == "seed" else "tiny"])
    model = build_model(cfg, 49152 if scale == "seed" else 1024).to(device)
    mats = [p for _, p in hidden_matrices(model)]
    for p in mats:
        p.grad = torch.randn_like(p)
    ours = Muon(mats, lr=0.02, momentum=0.95, ns_steps=5)
    # torch.optim.Muon only takes 2D tensors: give it every expert as its own 2D parameter
    flat = [torch.nn.Parameter(m.detach().clone()) for p in mats for m in (p if p.ndim == 3 else [p])]
    for p in flat:
        p.grad = torch.randn_like(p)
    ref = torch.optim.Muon(flat, lr=0.02, momentum=0.95, ns_steps=5, weight_decay=0.0)
    sync = _sync(device)
    t_ours = _time(ours.step, 5, sync=sync)
    t_ref = _time(ref.step, 5, sync=sync)
    n = sum(p.numel() for p in mats)
    print(f"muon[{scale}, {device.type}]: {len(flat)} matrices, {n / 1e6:.1f}M params | "
          f"ours (batched) {t_ours * 1e3:.1f} ms/step | torch.optim.Muon {t_ref * 1e3:.1f} ms/step | "
          f"speed-up {t_ref / t_ours:.2f}x")


def bench_moe(device, scale: str) -> None:
    from trainer.models import MoE, moe_reference_forward

    d, ff, e, tokens = (384, 1536, 8, 24 * 512) if scale == "seed" else (64, 256, 4, 16 * 64)
    moe = MoE(d, ff, e, top_k=2).to(device)
    x = torch.randn(1, tokens, d, device=device, requires_grad=True)
    sync = _sync(device)

    def grouped():
        out, aux = moe(x)
        (out.square().mean() + aux).backward()

    def naive():
        out, aux = moe_reference_forward(moe, x)
        (out.square().mean() + aux).backward()

    t_g, t_n = _time(grouped, 10, sync=sync), _time(naive, 10, sync=sync)
    print(f"moe[{scale}, {device.type}]: {tokens} tokens, {e} experts top-2, d {d}, ff {ff} | "
          f"grouped {t_g * 1e3:.1f} ms | naive masks {t_n * 1e3:.1f} ms | speed-up {t_n / t_g:.2f}x")


def bench_trial(device) -> None:
    from trainer.presets import RUN_PRESETS
    from trainer.spec import TrialSpec
    from trainer.train import train

    spec = TrialSpec.model_validate({**RUN_PRESETS["tiny"], "device": device.type})
    train(spec)  # builds the token cache if needed
    t = time.perf_counter()
    m = train(spec)
    wall = time.perf_counter() - t
    print(f"trial[tiny, {device.type}, {torch.get_num_threads()} threads]: 100 optimizer steps in {wall:.1f} s "
          f"({m.tokens_per_s:.0f} tokens/s, final val loss {m.final.val_loss:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", default=["muon", "moe", "trial"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", choices=("tiny", "seed"), default="tiny",
                        help="matrix sizes for muon/moe: the tiny preset or seed-moe's")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    for what in args.what:
        {"muon": lambda: bench_muon(device, args.scale), "moe": lambda: bench_moe(device, args.scale),
         "trial": lambda: bench_trial(device)}[what]()


if __name__ == "__main__":
    main()
