"""Device and precision choice, made once per trial and recorded in metrics.json.

Pre-Ampere GPUs (T4: compute capability 7.5) have fp16 tensor cores but no fast bf16, so they
get fp16 autocast with a loss scaler; Ampere and newer get bf16; the CPU trains in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32", "bf16" or "fp16"
    autocast_dtype: torch.dtype | None  # None: no autocast
    use_scaler: bool  # fp16 needs a GradScaler so small gradients do not underflow


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            raise RuntimeError(f"precision {requested} needs CUDA; this trial runs on {device}")
        return Precision("fp32", None, False)
    if requested == "auto":
        major, _ = torch.cuda.get_device_capability(device)
        requested = "bf16" if major >= 8 else "fp16"
    table = {
        "fp32": Precision("fp32", None, False),
        "bf16": Precision("bf16", torch.bfloat16, False),
        "fp16": Precision("fp16", torch.float16, True),
    }
    return table[requested]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda:{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
    return "cpu"
