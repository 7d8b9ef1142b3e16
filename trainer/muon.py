"""Muon: momentum orthogonalised by Newton-Schulz, for hidden weight matrices.

Maths as in KellerJordan/Muon and torch.optim.Muon (see FACTS.md section 1), with three additions:
same-shape matrices are orthogonalised in one batched call (torch.optim.Muon loops one by one),
3D (experts, out, in) weights are orthogonalised per expert, and an optional `block_size` splits
each matrix into tiles that are orthogonalised independently ("Block Muon").
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor

# Keller Jordan's quintic: maximises the slope at zero; singular values end in roughly [0.5, 1.5].
QUINTIC_COEFFS = (3.4445, -4.7750, 2.0315)

# Polar Express (Amsel et al. 2025, arXiv 2505.16932), one (a, b, c) per iteration, exactly as
# shipped in modded-nanogpt and nanochat: computed for 5 iterations with a 2% safety factor and
# cushion 2 baked in, and paired with normalising by ||X||_F * 1.02 (POLAR_EXPRESS_SAFETY).
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
POLAR_EXPRESS_SAFETY = 1.02

NS_VARIANTS = ("quintic", "polar_express")
UPDATE_SCALES = ("original", "match_rms_adamw")


def _ns_schedule(variant: str, steps: int) -> tuple[list[tuple[float, float, float]], float]:
    """Coefficient tuple per iteration and the normalisation safety factor of a variant."""
    if variant == "quintic":
        if steps < 0:
            raise ValueError(f"ns_steps must be >= 0, got {steps}")
        return [QUINTIC_COEFFS] * steps, 1.0
    if variant == "polar_express":
        if steps != len(POLAR_EXPRESS_COEFFS):
            raise ValueError(
                f"polar_express has exactly {len(POLAR_EXPRESS_COEFFS)} coefficient tuples, "
                f"so ns_steps must be {len(POLAR_EXPRESS_COEFFS)}, got {steps}"
            )
        return list(POLAR_EXPRESS_COEFFS), POLAR_EXPRESS_SAFETY
    raise ValueError(f"unknown ns_variant {variant!r}; expected one of {NS_VARIANTS}")


def zeropower_via_newtonschulz(
    G: Tensor,
    steps: int,
    variant: str = "quintic",
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Approximately orthogonalise each trailing (m, n) matrix of G independently.

    Leading dims are a batch (parameters, experts or tiles) and are never mixed: the Frobenius
    normalisation and every matmul act per matrix. Normalisation happens in fp32 before the cast
    to the iteration dtype, so large fp16/bf16 inputs cannot overflow. The iteration runs in bf16
    on CUDA (as the reference does) and fp32 elsewhere unless `dtype` says otherwise. Returns the
    result in the iteration dtype.
    """
    if G.ndim < 2:
        raise ValueError(f"expected a (..., m, n) tensor, got shape {tuple(G.shape)}")
    coeffs, safety = _ns_schedule(variant, steps)
    if dtype is None:
        dtype = torch.bfloat16 if G.is_cuda else torch.float32
    X = G.float()
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * safety + eps)
    X = X.to(dtype)
    transposed = G.size(-2) > G.size(-1)
    if transposed:  # keep the Gram matrix X X^T on the small side
        X = X.mT
    for a, b, c in coeffs:
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if transposed:
        X = X.mT
    return X


def update_scale_factor(rows: int, cols: int, kind: str) -> float:
    """Per-matrix multiplier of the orthogonalised update.

    "original" (Keller Jordan) keeps the update's RMS-to-RMS gain consistent for tall matrices;
    "match_rms_adamw" (Moonlight) matches AdamW's update RMS so AdamW's lr and wd can be reused.
    """
    if kind == "original":
        return math.sqrt(max(1.0, rows / cols))
    if kind == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"unknown update_scale {kind!r}; expected one of {UPDATE_SCALES}")


def _spans(size: int, block: int) -> list[tuple[int, int, int, int]]:
    """Split range(size) into (start, stop, tile, count): a run of full tiles, then the rest."""
    full, rest = divmod(size, block)
    spans = []
    if full:
        spans.append((0, full * block, block, full))
    if rest:
        spans.append((full * block, size, rest, 1))
    return spans


def orthogonalise(
    U: Tensor,
    steps: int,
    variant: str = "quintic",
    update_scale: str = "original",
    block_size: int | None = None,
    eps: float = 1e-7,
) -> Tensor:
    """Scaled orthogonalised update for a batch U of shape (k, m, n), in fp32 or bf16.

    With `block_size`, each matrix is cut into tiles of at most block_size x block_size. The
    matrix splits into at most four regions of equal-shape tiles; each region is reshaped into one
    batch of tiles and orthogonalised in a single call, and the scale uses the tile's shape (the
    matrix actually orthogonalised). block_size >= max(m, n) is one region of one tile: full Muon.
    """
    k, m, n = U.shape
    if block_size is None or (block_size >= m and block_size >= n):
        O = zeropower_via_newtonschulz(U, steps, variant, eps)
        return O * update_scale_factor(m, n, update_scale)
    out = None
    for r0, r1, br, nr in _spans(m, block_size):
        for c0, c1, bc, nc in _spans(n, block_size):
            region = U[:, r0:r1, c0:c1]
            # (k, nr*br, nc*bc) -> (k*nr*nc, br, bc): one batch of independent tiles.
            tiles = region.reshape(k, nr, br, nc, bc).permute(0, 1, 3, 2, 4).reshape(-1, br, bc)
            O = zeropower_via_newtonschulz(tiles, steps, variant, eps)
            O = O * update_scale_factor(br, bc, update_scale)
            if out is None:
                out = U.new_empty(U.shape, dtype=O.dtype)
            out[:, r0:r1, c0:c1] = O.reshape(k, nr, nc, br, bc).permute(0, 1, 3, 2, 4).reshape(
                k, nr * br, nc * bc
            )
    return out


class Muon(torch.optim.Optimizer):
    """Muon for 2D matrices and 3D (experts, out, in) stacks of matrices.

    Per parameter: buf = lerp(buf, G, 1 - momentum); U = lerp(G, buf, momentum) with Nesterov,
    else buf; p *= 1 - lr * weight_decay (decoupled, before the update); p -= lr * scale * NS(U).
    lr, momentum and every other option are read from the param group at step time, so schedules
    that rewrite group["lr"] / group["momentum"] take effect on the next step.
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_variant: str = "quintic",
        update_scale: str = "original",
        weight_decay: float = 0.0,
        block_size: int | None = None,
        eps: float = 1e-7,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_variant=ns_variant,
            update_scale=update_scale,
            weight_decay=weight_decay,
            block_size=block_size,
            eps=eps,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """Validate every group (the constructor's and later ones) so bad input fails early."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            if p.ndim not in (2, 3):
                raise ValueError(
                    f"Muon takes 2D (out, in) or 3D (experts, out, in) parameters, got shape "
                    f"{tuple(p.shape)}; give 1D/4D+ parameters to another optimizer (e.g. AdamW)"
                )
            if torch.is_complex(p):
                raise ValueError("Muon does not support complex parameters")
        if group["lr"] < 0:
            raise ValueError(f"lr must be >= 0, got {group['lr']}")
        if not 0.0 <= group["momentum"] < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {group['momentum']}")
        if group["weight_decay"] < 0:
            raise ValueError(f"weight_decay must be >= 0, got {group['weight_decay']}")
        if group["update_scale"] not in UPDATE_SCALES:
            raise ValueError(
                f"update_scale must be one of {UPDATE_SCALES}, got {group['update_scale']!r}"
            )
        if group["block_size"] is not None and group["block_size"] < 1:
            raise ValueError(f"block_size must be >= 1 or None, got {group['block_size']}")
        _ns_schedule(group["ns_variant"], group["ns_steps"])  # raises on a bad variant/steps pair

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Bucket by trailing matrix shape so 2D params and 3D expert stacks of the same (m, n)
            # share one batched Newton-Schulz call.
            buckets: dict[tuple, list[Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        raise RuntimeError("Muon does not support sparse gradients")
                    buckets[(tuple(p.shape[-2:]), p.dtype, p.device)].append(p)
            for params in buckets.values():
                self._update(params, group)
        return loss

    def _update(self, params: list[Tensor], group: dict) -> None:
        """One Muon step for params that share (m, n), dtype and device."""
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["momentum_buffer"])
        torch._foreach_lerp_(bufs, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs

        m, n = params[0].shape[-2:]
        U = torch.cat([u.reshape(-1, m, n) for u in updates])  # (sum of matrices, m, n)
        O = orthogonalise(
            U,
            group["ns_steps"],
            group["ns_variant"],
            group["update_scale"],
            group["block_size"],
            group["eps"],
        ).to(params[0].dtype)
        counts = [u.numel() // (m * n) for u in updates]
        deltas = [o.reshape_as(p) for o, p in zip(O.split(counts), params)]

        if wd != 0:
            torch._foreach_mul_(params, 1 - lr * wd)
        torch._foreach_add_(params, deltas, alpha=-lr)
