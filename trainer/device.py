"""Device and precision choice, made once per trial and recorded in metrics.json.

Pre-Ampere GPUs (T4: compute capability 7.5) have fp16 tensor cores but no fast bf16, so they
get fp16 autocast with a loss scaler; Ampere and newer get bf16; the CPU trains in fp32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
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


# glibc mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20
_TRIM_THRESHOLD = 2**30
_allocator_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Let glibc keep freed blocks up to 32 MiB in the process instead of unmapping them.

    A training step frees and re-allocates the same activations every time. glibc serves blocks
    over 128 KiB (its start value) with mmap and returns them on free, and trims the heap top, so
    each step page-faults its memory in again: about 2,000 minor faults a step at the `tiny`
    preset and 270,000 at seed-moe (1 GiB of fresh, kernel-zeroed pages). With the mmap threshold
    at its maximum and a 1 GiB trim threshold, tiny takes about 50. Where memory comes from
    changes no number. Process-wide and idempotent; glibc (Linux) only, a no-op elsewhere.
    Returns whether the settings are in effect.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _allocator_tuned = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                                    and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _allocator_tuned
