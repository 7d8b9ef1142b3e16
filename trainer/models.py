"""The seeds' language models, nanoGPT-style: MinimalLLM (dense) and MoEMinimalLLM (MoE).

One class covers both (`LanguageModel`); `cfg.kind` picks the feed-forward of every block:

    tok_embeddings * sqrt(d_model) -> dropout
    -> n_layers x [ x + drop(attn(attn_norm(x)));  x + drop(mlp(mlp_norm(x))) ]
    -> norm -> dropout -> logits = h @ tok_embeddings.weight.T        (tied head, no own parameter)

Parameter names (trainer/params.py splits them into optimizer groups):
    tok_embeddings.weight                      embedding and output head (AdamW)
    layers.{i}.attn.qkv.weight  (3d, d)        fused q, k, v projection
    layers.{i}.attn.proj.weight (d, d)         attention output projection
    layers.{i}.mlp.up.weight    (d_ff, d)      dense SiLU MLP
    layers.{i}.mlp.down.weight  (d, d_ff)
    layers.{i}.mlp.router.weight (E, d)        MoE gate
    layers.{i}.mlp.w_up   (E, d_ff, d)         MoE experts, one 3D stack each; dim 0 is the expert
    layers.{i}.mlp.w_down (E, d, d_ff)         axis (orthogonalise per expert, never across it)
    layers.{i}.attn_norm.weight, layers.{i}.mlp_norm.weight, norm.weight   RMSNorm gains

Differences from the seeds' code, all deliberate:
- aux loss is the MEAN over MoE layers and unweighted (the seeds summed per-layer losses that were
  already multiplied by a hard-wired 0.01); the trainer multiplies by `load_balancing_weight`.
- residual output projections (proj, down, w_down) start at std 0.02 / sqrt(2 n_layers) (GPT-2).
- experts are two 3D tensors instead of 8 x 2 nn.Linear; same maths, same parameter count.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.params import hidden_matrices, param_group  # noqa: F401  (hidden_matrices: re-exported)
from trainer.spec import ModelConfig

INIT_STD = 0.02


# ---------------------------------------------------------------- rotary position embedding


def rope_tables(seq_len: int, head_dim: int, base: float, device=None):
    """(cos, sin), each [seq_len, head_dim // 2] in float32."""
    dims = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32)
    inv_freq = 1.0 / (base ** (dims / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2i], x[2i+1]) of x [B, H, T, D] (torchtune's layout, as seeds).

    The reference formula; the model runs the same arithmetic through `rotate_pairs`."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)
    return out.flatten(-2).to(x.dtype)


def rope_pair_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[T, D/2] cos, sin -> C = (cos, cos) and S = (-sin, sin) interleaved, each [T, D]."""
    return torch.stack((cos, cos), -1).flatten(-2), torch.stack((-sin, sin), -1).flatten(-2)


def rotate_pairs(x: torch.Tensor, C: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """apply_rope's rotation as x * C + swap(x) * S, swap(x) = (x[2i+1], x[2i]); C, S broadcast.

    Bit-identical to apply_rope: per output element it is the same two products and one sum
    (x0*cos + x1*(-sin) == x0*cos - x1*sin exactly), in 4 kernels instead of 7."""
    xf = x.float()
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (xf * C + swapped * S).to(x.dtype)


class RopeCache:
    """C, S of rope_pair_tables per (seq_len, device), computed once, shaped [T, 1, 1, D] to
    broadcast over the fused qkv output [B, T, 2 (q, k), H, D]."""

    def __init__(self, head_dim: int, base: float):
        self.head_dim, self.base = head_dim, base
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (seq_len, torch.device(device))
        if key not in self._tables:
            with torch.inference_mode(False), torch.no_grad():  # plain tensors, whatever the mode
                C, S = rope_pair_tables(*rope_tables(seq_len, self.head_dim, self.base, device))
            self._tables[key] = (C[:, None, None, :], S[:, None, None, :])
        return self._tables[key]


# ---------------------------------------------------------------- blocks


class Attention(nn.Module):
    """Causal multi-head self-attention with RoPE and a fused qkv projection, no biases."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x [B, T, C]; rope = RopeCache's (C, S) for T, each [T, 1, 1, head_dim]."""
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads)
        q, k = rotate_pairs(qkv[:, :, :2], *rope).permute(2, 0, 3, 1, 4)  # q and k in one go
        v = qkv[:, :, 2].transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    """Dense SiLU MLP: down(dropout(silu(up(x))))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.dropout(F.silu(self.up(x)), self.dropout, self.training))


class MoE(nn.Module):
    """Top-k routed mixture of SiLU-MLP experts with a Switch-style load-balancing loss.

    forward(x [..., d], noise=None) -> (out [..., d], aux_loss 0-dim float32).

    Router: logits = router(x) (+ noise); top_k of the logits; softmax over those k logits gives
    the combine weights. In training, noise ~ N(0, router_noise^2) is drawn from torch's global
    RNG; pass `noise` (same shape as the logits, [N, n_experts], added as-is, in any mode) to
    inject it. aux_loss = n_experts * sum_e f_e * P_e, with f_e the fraction of the N*top_k
    assignments that went to expert e and P_e the mean softmax probability (over all experts, of
    the same noisy logits, as the seeds) of e; it is exactly 1.0 when P is uniform, and ranges up
    to n_experts when everything collapses onto one expert.

    Dispatch: assignments are sorted by expert id (argsort) so each expert's tokens form one
    contiguous slice of a gathered buffer; the experts run as one torch._grouped_mm over those
    slices (CPU) or as a loop over the slices (elsewhere / `dispatch="loop"`), and the weighted
    outputs are scattered back with index_add_. `moe_reference_forward` is the naive version.
    """

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int,
                 router_noise: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        self.router_noise, self.dropout = router_noise, dropout
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.w_up = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
        self.w_down = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        for w in (self.router.weight, self.w_up, self.w_down):  # LanguageModel re-inits these
            nn.init.normal_(w, 0.0, INIT_STD)
        self.dispatch = "auto"  # "auto" | "grouped_mm" | "loop"
        self.last_counts: torch.Tensor | None = None  # assignments per expert, last forward

    def route(self, x2: torch.Tensor, noise: torch.Tensor | None = None):
        """x2 [N, d] -> (gates [N, k] combine weights, idx [N, k] expert ids, counts [E], aux)."""
        logits = self.router(x2).float()
        if noise is not None:
            logits = logits + noise
        elif self.training and self.router_noise > 0:
            logits = logits + torch.randn_like(logits) * self.router_noise
        top_logits, idx = logits.topk(self.top_k, dim=-1)
        gates = F.softmax(top_logits, dim=-1)
        counts = torch.bincount(idx.flatten(), minlength=self.n_experts)
        self.last_counts = counts.detach()
        frac = counts.float() / idx.numel()
        mean_prob = F.softmax(logits, dim=-1).mean(dim=0)
        aux = self.n_experts * (frac * mean_prob).sum()
        return gates, idx, counts, aux

    def _experts(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Run expert e on rows [offs[e-1], offs[e]) of the expert-sorted buffer xs [N*k, d].

        Measured on the 2-core CPU, `tiny` preset MoE layer (1,024 tokens, 4 experts, top-2),
        fwd+bwd, best of 40: grouped_mm 4.7 ms, loop over slices 5.4 ms, naive masks 5.6 ms;
        padded torch.bmm was slower than both at tiny dims. torch._grouped_mm has no float64, is
        not autocast-aware (it runs in the buffer's dtype) and needs row strides that are
        multiples of 16 bytes (d_model, d_ff multiples of 4 in fp32), hence the CPU-only default
        where those hold."""
        w_up, w_down = self.w_up.to(xs.dtype), self.w_down.to(xs.dtype)
        use_grouped = self.dispatch == "grouped_mm" or (
            self.dispatch == "auto" and hasattr(torch, "_grouped_mm") and xs.device.type == "cpu"
            and xs.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and all(n * xs.element_size() % 16 == 0 for n in w_up.shape[1:])  # 16-byte strides
        )
        if use_grouped:
            offs = counts.cumsum(0).to(torch.int32)
            h = F.dropout(F.silu(torch._grouped_mm(xs, w_up.transpose(1, 2), offs=offs)),
                          self.dropout, self.training)
            return torch._grouped_mm(h, w_down.transpose(1, 2), offs=offs)
        outs, start = [], 0
        for e, n in enumerate(counts.tolist()):  # one host sync per layer, not per expert
            if n:
                h = F.dropout(F.silu(xs[start:start + n] @ w_up[e].T), self.dropout, self.training)
                outs.append(h @ w_down[e].T)
            start += n
        return torch.cat(outs) if outs else xs.new_zeros(0, w_down.shape[1])

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        gates, idx, counts, aux = self.route(x2, noise)
        order = idx.flatten().argsort(stable=True)  # assignment a is token a // k, slot a % k
        token = order // self.top_k                 # sorted by expert: one contiguous run each
        ys = self._experts(x2.index_select(0, token), counts)  # backward: one index_add_
        ys = ys * gates.flatten().index_select(0, order).unsqueeze(-1).to(ys.dtype)
        out = torch.zeros(x2.shape, dtype=ys.dtype, device=x.device).index_add_(0, token, ys)
        return out.to(x.dtype).reshape(shape), aux


def moe_reference_forward(moe: MoE, x: torch.Tensor, noise: torch.Tensor | None = None):
    """The naive per-expert boolean-mask MoE (the seeds' loop); for tests only.

    Same routing and aux loss as MoE.forward (pass the same `noise`, or reseed torch's RNG).
    Expert-hidden dropout is applied per expert, so it matches MoE.forward only with dropout 0
    (or in eval mode).
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    gates, idx, _, aux = moe.route(x2, noise)
    out = torch.zeros_like(x2)
    for e in range(moe.n_experts):
        hit = idx == e                        # [N, k]
        rows = hit.any(dim=-1)                # tokens that chose e in any slot
        if not rows.any():
            continue
        weight = (gates * hit).sum(dim=-1)[rows]
        h = F.dropout(F.silu(x2[rows] @ moe.w_up[e].T), moe.dropout, moe.training)
        y = weight.unsqueeze(-1) * (h @ moe.w_down[e].T)
        out = out.index_add(0, rows.nonzero().squeeze(1), y)
    return out.reshape(shape), aux


class Block(nn.Module):
    """Pre-norm transformer block; `mlp` is an MLP (dense) or a MoE."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model)
        if cfg.kind == "moe":
            self.mlp = MoE(cfg.d_model, cfg.d_ff, cfg.n_experts, cfg.top_k, cfg.router_noise,
                           cfg.dropout)
        else:
            self.mlp = MLP(cfg)
        self.dropout = cfg.dropout

    def forward(self, x, rope):
        x = x + F.dropout(self.attn(self.attn_norm(x), rope), self.dropout, self.training)
        if isinstance(self.mlp, MoE):
            y, aux = self.mlp(self.mlp_norm(x))
        else:
            y, aux = self.mlp(self.mlp_norm(x)), None
        return x + F.dropout(y, self.dropout, self.training), aux


# ---------------------------------------------------------------- the model


class LanguageModel(nn.Module):
    """Decoder-only LM. forward(input_ids [B, T]) -> (logits [B, T, V], aux_loss 0-dim).

    aux_loss is the load-balancing loss AVERAGED over the MoE layers, unweighted (the trainer
    multiplies it by spec.load_balancing_weight); a 0-dim zero for dense models.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.tok_embeddings = nn.Embedding(vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.rope = RopeCache(cfg.d_model // cfg.n_heads, cfg.rope_base)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """normal(0.02) everywhere; residual output projections / sqrt(2 n_layers); norm gains 1."""
        resid_std = INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if "norm" in name:
                nn.init.ones_(p)
            elif name.endswith(("proj.weight", "down.weight", "w_down")):
                nn.init.normal_(p, 0.0, resid_std)
            else:
                nn.init.normal_(p, 0.0, INIT_STD)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        T = input_ids.shape[1]
        rope = self.rope(T, input_ids.device)
        x = self.tok_embeddings(input_ids) * math.sqrt(cfg.d_model)
        x = F.dropout(x, cfg.dropout, self.training)
        aux_losses = []
        for layer in self.layers:
            x, aux = layer(x, rope)
            if aux is not None:
                aux_losses.append(aux)
        h = F.dropout(self.norm(x), cfg.dropout, self.training)
        logits = F.linear(h, self.tok_embeddings.weight)
        if aux_losses:
            aux_loss = torch.stack(aux_losses).mean()
        else:
            aux_loss = torch.zeros((), device=input_ids.device)
        return logits, aux_loss


def build_model(cfg: ModelConfig, vocab_size: int | None = None) -> LanguageModel:
    """The model for `cfg`; `vocab_size` (the tokenizer's) is used when cfg.vocab_size is None."""
    vocab = cfg.vocab_size if cfg.vocab_size is not None else vocab_size
    if vocab is None:
        raise ValueError("vocab_size is None in both the config and the call")
    return LanguageModel(cfg, vocab)


# ---------------------------------------------------------------- parameter accounting


def count_parameters(model: nn.Module) -> tuple[int, dict[str, int]]:
    """(total, {group: count}); the tied head is counted once (as the embedding)."""
    groups: dict[str, int] = {}
    for name, p in model.named_parameters():
        groups[param_group(name)] = groups.get(param_group(name), 0) + p.numel()
    return sum(groups.values()), groups


def active_parameters(model: nn.Module) -> int:
    """Parameters a token touches: all but the experts, plus top_k / n_experts of the experts."""
    total = 0
    for name, p in model.named_parameters():
        if param_group(name) == "experts":
            total += p.numel() * model.cfg.top_k // model.cfg.n_experts
        else:
            total += p.numel()
    return total
