"""trainer.models: shapes, MoE dispatch vs the naive reference, causality, tied head, aux loss,
seed-moe parameter counts (on the meta device), router noise, determinism. CPU, tiny dims."""

from __future__ import annotations

import pytest
import torch

from trainer.models import (
    LanguageModel,
    MoE,
    RopeCache,
    apply_rope,
    build_model,
    count_parameters,
    hidden_matrices,
    moe_reference_forward,
    rope_tables,
    rotate_pairs,
)
from trainer.presets import MODEL_PRESETS
from trainer.spec import ModelConfig

V = 97  # distinct from every other dim, so a (V, d) parameter can only be the embedding


def tiny(kind="moe", **kw) -> ModelConfig:
    base = dict(kind=kind, d_model=32, n_heads=2, n_layers=2, d_ff=64, n_experts=4, top_k=2,
                router_noise=0.1, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def make(cfg: ModelConfig, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return build_model(cfg, V)


def moe_layers(model):
    return [m for m in model.modules() if isinstance(m, MoE)]


# ---------------------------------------------------------------- 1. shapes


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_forward_shapes(kind):
    model = make(tiny(kind))
    ids = torch.randint(0, V, (3, 7))
    logits, aux = model(ids)
    assert logits.shape == (3, 7, V)
    assert aux.ndim == 0 and aux.dtype == torch.float32
    if kind == "dense":
        assert aux.item() == 0.0
        assert not moe_layers(model)
    else:
        assert aux.item() > 0.0
        assert len(moe_layers(model)) == 2


def test_vocab_from_config_wins_and_missing_vocab_raises():
    assert build_model(tiny(vocab_size=50), V).tok_embeddings.num_embeddings == 50
    assert build_model(tiny(), V).tok_embeddings.num_embeddings == V
    with pytest.raises(ValueError):
        build_model(tiny(), None)


def test_param_names_and_shapes():
    model = make(tiny(n_experts=3, d_ff=48))
    names = dict(model.named_parameters())
    assert names["layers.0.attn.qkv.weight"].shape == (96, 32)
    assert names["layers.0.attn.proj.weight"].shape == (32, 32)
    assert names["layers.0.mlp.router.weight"].shape == (3, 32)
    assert names["layers.0.mlp.w_up"].shape == (3, 48, 32)
    assert names["layers.0.mlp.w_down"].shape == (3, 32, 48)
    for n, p in names.items():
        if p.ndim == 1:
            assert "norm" in n
    dense = dict(make(tiny("dense")).named_parameters())
    assert dense["layers.1.mlp.up.weight"].shape == (64, 32)
    assert dense["layers.1.mlp.down.weight"].shape == (32, 64)


# ---------------------------------------------------------------- 2. grouped dispatch == naive


def _moe_grads(moe, x, noise, fn):
    moe.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y, aux = fn(moe, x, noise)
    # A loss that touches every output element with different weights, plus the aux loss.
    torch.manual_seed(123)
    (y * torch.randn_like(y)).sum().add(aux).backward()
    grads = {n: p.grad.clone() for n, p in moe.named_parameters()}
    return y.detach(), aux.detach(), grads, x.grad.clone()


@pytest.mark.parametrize("dispatch", ["grouped_mm", "loop"])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("empty_expert", [False, True])
def test_grouped_dispatch_matches_naive(dispatch, top_k, empty_expert):
    if dispatch == "grouped_mm" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm not available")
    torch.manual_seed(1)
    E = 4
    moe = MoE(d_model=16, d_ff=24, n_experts=E, top_k=top_k, router_noise=0.1).train()
    for p in moe.parameters():
        torch.nn.init.normal_(p, 0.0, 0.3)
    moe.dispatch = dispatch
    x = torch.randn(3, 5, 16)
    noise = torch.randn(15, E) * 0.1
    if empty_expert:
        noise[:, 2] = -1e4  # expert 2 never wins a slot
    out_g, aux_g, grads_g, xg_g = _moe_grads(moe, x, noise, lambda m, x, n: m(x, noise=n))
    counts = moe.last_counts
    assert int(counts.sum()) == 15 * top_k
    if empty_expert:
        assert counts[2] == 0
    out_n, aux_n, grads_n, xg_n = _moe_grads(moe, x, noise, moe_reference_forward)
    torch.testing.assert_close(out_g, out_n, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(aux_g, aux_n)
    torch.testing.assert_close(xg_g, xg_n, atol=1e-5, rtol=1e-5)
    for name in grads_n:
        torch.testing.assert_close(grads_g[name], grads_n[name], atol=1e-5, rtol=1e-5, msg=name)
    if empty_expert:
        assert grads_g["w_up"][2].abs().max() == 0 and grads_g["w_down"][2].abs().max() == 0


@pytest.mark.parametrize("d_model, d_ff", [(16, 22), (18, 24)])
def test_auto_dispatch_handles_dims_grouped_mm_cannot_take(d_model, d_ff):
    """torch._grouped_mm needs 16-byte row strides; other dims fall back to the slice loop."""
    torch.manual_seed(0)
    moe = MoE(d_model=d_model, d_ff=d_ff, n_experts=4, top_k=2).train()
    x = torch.randn(2, 5, d_model)
    noise = torch.randn(10, 4) * 0.1
    out, aux, grads, xg = _moe_grads(moe, x, noise, lambda m, x, n: m(x, noise=n))
    out_n, aux_n, grads_n, xg_n = _moe_grads(moe, x, noise, moe_reference_forward)
    torch.testing.assert_close(out, out_n, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(xg, xg_n, atol=1e-6, rtol=1e-6)
    for name in grads_n:
        torch.testing.assert_close(grads[name], grads_n[name], atol=1e-6, rtol=1e-6, msg=name)


def test_sampled_noise_is_reproducible_by_reseeding():
    moe = MoE(16, 24, 4, 2, router_noise=1.0).train()
    x = torch.randn(10, 16)
    torch.manual_seed(7)
    out_g, aux_g = moe(x)
    torch.manual_seed(7)
    out_n, aux_n = moe_reference_forward(moe, x)
    torch.testing.assert_close(out_g, out_n, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(aux_g, aux_n)


@pytest.mark.parametrize("dispatch", ["grouped_mm", "loop"])
def test_top_k_from_the_config_sets_experts_per_token(dispatch):
    if dispatch == "grouped_mm" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm not available")
    ids = torch.randint(0, V, (2, 8))
    outs = {}
    for k in (1, 2, 3):
        model = make(tiny(top_k=k)).eval()  # same seed: same weights for every k
        for m in moe_layers(model):
            m.dispatch = dispatch
        with torch.no_grad():
            outs[k] = model(ids)[0]
        for m in moe_layers(model):
            assert m.top_k == k and int(m.last_counts.sum()) == 2 * 8 * k
    assert not torch.allclose(outs[1], outs[2]) and not torch.allclose(outs[2], outs[3])


@pytest.mark.parametrize("dispatch", ["grouped_mm", "loop"])
def test_expert_dropout_acts_in_training_only(dispatch):
    """MoE.dropout drops expert hidden units in train mode; eval mode is exactly dropout-free."""
    if dispatch == "grouped_mm" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm not available")
    torch.manual_seed(0)
    drop = MoE(16, 24, n_experts=4, top_k=2, router_noise=0.0, dropout=0.5)
    plain = MoE(16, 24, n_experts=4, top_k=2, router_noise=0.0, dropout=0.0)
    plain.load_state_dict(drop.state_dict())
    drop.dispatch = plain.dispatch = dispatch
    x = torch.randn(12, 16)
    with torch.no_grad():
        drop.train(), plain.train()
        a, b, ref = drop(x)[0], drop(x)[0], plain(x)[0]
        assert not torch.equal(a, b) and not torch.allclose(a, ref)
        drop.eval(), plain.eval()
        assert torch.equal(drop(x)[0], drop(x)[0])
        torch.testing.assert_close(drop(x)[0], plain(x)[0], rtol=0, atol=0)
    assert {m.dropout for m in moe_layers(make(tiny(dropout=0.3)))} == {0.3}  # the config reaches it


# ---------------------------------------------------------------- 3. causality


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_causal(kind):
    model = make(tiny(kind)).eval()
    ids = torch.randint(0, V, (2, 10))
    t = 4
    changed = ids.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
    with torch.no_grad():
        a, _ = model(ids)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1])
    assert (a[:, t + 1] - b[:, t + 1]).abs().max() > 1e-4


def test_rope_tables_use_the_base():
    for base in (10000.0, 37.0):
        cos, sin = rope_tables(5, 8, base)
        angles = torch.tensor([[t * base ** (-i / 8) for i in (0, 2, 4, 6)] for t in range(5)])
        torch.testing.assert_close(cos, angles.cos())
        torch.testing.assert_close(sin, angles.sin())


def test_rotate_pairs_is_apply_rope_bit_for_bit():
    """The model rotates q and k together on the fused qkv output (RopeCache + rotate_pairs);
    values and gradients must equal the reference apply_rope on [B, H, T, D] exactly."""
    torch.manual_seed(0)
    B, T, H, D = 3, 11, 2, 8
    qkv = (torch.randn(B, T, 3, H, D) * 3).requires_grad_()
    cos, sin = rope_tables(T, D, 500.0)
    C, S = RopeCache(D, 500.0)(T, "cpu")
    q_new, k_new = rotate_pairs(qkv[:, :, :2], C, S).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4)
    q_ref, k_ref = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    assert torch.equal(q_new, q_ref) and torch.equal(k_new, k_ref)
    g = torch.randn(2, B, H, T, D)
    (grad_new,) = torch.autograd.grad((q_new, k_new), qkv, (g[0], g[1]))
    (grad_ref,) = torch.autograd.grad((q_ref, k_ref), qkv, (g[0], g[1]))
    assert torch.equal(grad_new, grad_ref)
    assert grad_new[:, :, 2].abs().max() == 0  # v is not rotated


def test_rope_cache_is_per_length_and_usable_after_inference_mode():
    cache = RopeCache(8, 10000.0)
    with torch.inference_mode():
        C, S = cache(5, "cpu")
    assert not C.is_inference() and C.shape == (5, 1, 1, 8) and cache(5, "cpu")[0] is C
    assert cache(7, "cpu")[0].shape == (7, 1, 1, 8)
    model = make(tiny())
    with torch.inference_mode():
        model(torch.randint(0, V, (1, 6)))
    model(torch.randint(0, V, (1, 6)))[0].sum().backward()  # cached tables feed autograd


def test_rope_base_changes_the_logits():
    ids = torch.randint(0, V, (2, 8))
    logits = []
    for base in (10000.0, 100.0):
        model = make(tiny(rope_base=base)).eval()  # same seed: same weights, other rotation
        with torch.no_grad():
            for layer in model.layers:
                layer.attn.qkv.weight.mul_(30.0)  # sharp attention, so positions matter
            logits.append(model(ids)[0])
    a, b = logits
    assert torch.equal(a[:, 0], b[:, 0])  # position 0 is never rotated
    assert (a[:, 1:] - b[:, 1:]).abs().max() > 0.05


# ---------------------------------------------------------------- 4. tied embedding


def test_tied_head():
    model = make(tiny())
    big = [n for n, p in model.named_parameters() if V in p.shape]
    assert big == ["tok_embeddings.weight"]
    ids = torch.randint(0, 8, (2, 6))  # only rows 0..7 are looked up
    logits, aux = model(ids)
    logits.logsumexp(-1).mean().backward()
    grad = model.tok_embeddings.weight.grad
    # Rows never looked up get gradient only through the tied output head.
    assert grad[8:].abs().sum(dim=1).gt(0).all()


# ---------------------------------------------------------------- 5. load-balancing loss


def test_load_balancing_uniform_router_is_one():
    moe = MoE(16, 24, n_experts=4, top_k=2, router_noise=0.1).eval()
    torch.nn.init.zeros_(moe.router.weight)
    _, aux = moe(torch.randn(20, 16))
    # P_e = 1/E for every e, so E * sum_e f_e * P_e = sum_e f_e = 1 whatever the assignment.
    assert aux.item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("top_k, low", [(1, 3.9), (2, 1.9)])
def test_load_balancing_skewed_router_is_larger(top_k, low):
    E = 4
    moe = MoE(16, 24, n_experts=E, top_k=top_k).eval()
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 5.0
    x = torch.rand(20, 16) + 0.5  # positive inputs: expert 0's logit dominates everywhere
    _, aux = moe(x)
    # Expert 0 takes every slot-0 assignment (f_0 = 1/k) with P_0 ~ 1: aux ~ E / k.
    assert low < aux.item() <= E + 1e-5
    assert aux.item() > 1.0


def test_model_aux_is_mean_over_moe_layers():
    model = make(tiny(n_layers=3)).eval()
    seen = []
    for m in moe_layers(model):
        m.register_forward_hook(lambda mod, inp, out: seen.append(out[1].detach()))
    _, aux = model(torch.randint(0, V, (2, 6)))
    assert len(seen) == 3
    torch.testing.assert_close(aux.detach(), torch.stack(seen).mean())


# ---------------------------------------------------------------- 6. seed-moe parameter count


def test_seed_moe_parameter_count():
    cfg = ModelConfig(**MODEL_PRESETS["seed-moe"])
    with torch.device("meta"):
        model = build_model(cfg, 49152)
    total, groups = count_parameters(model)
    # 49152*384 embedding (tied head) + 6 x (qkv 3*384^2 + proj 384^2 + 8 experts * 2*384*1536
    # + router 8*384 + 2 norms) + final norm = 79,059,840: the seeds' ~79M exactly.
    assert total == 79_059_840
    assert abs(total - 79e6) / 79e6 < 0.03
    assert groups == {"embedding": 18_874_368, "attention": 3_538_944, "experts": 56_623_104,
                      "router": 18_432, "norm": 4_992}
    # Muon-eligible here: 2D/3D hidden weights minus embedding and router = 24 tensors
    # (per layer qkv, proj, w_up, w_down) = 108 matrices once the 3D stacks are split per expert
    # (6 x (2 + 8 + 8)), 60,162,048 params. The seeds' 114 matrices / 60.2M are these plus the 6
    # router gates (their Muon took every 2D non-embedding non-norm weight, routers included, and
    # stored experts as separate nn.Linear): 114 = 6 x (qkv + w_o + 16 expert linears + gate),
    # 60,162,048 + 6 * 3,072 = 60,180,480. Both round to 60.2M.
    hidden = hidden_matrices(model)
    assert len(hidden) == 24
    assert sum(p.shape[0] if p.ndim == 3 else 1 for _, p in hidden) == 108
    assert sum(p.numel() for _, p in hidden) == 60_162_048
    assert sum(p.numel() for _, p in hidden) + groups["router"] == 60_180_480
    # The seeds' "28.4% active" was everything whose name lacks "expert" over the total.
    assert round((total - groups["experts"]) / total, 3) == 0.284


# ---------------------------------------------------------------- 7. router noise, determinism


def test_router_noise_only_in_training():
    model = make(tiny(router_noise=1.0))
    ids = torch.randint(0, V, (2, 8))
    model.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        a, aux_a = model(ids)
        torch.manual_seed(2)
        b, aux_b = model(ids)
    assert torch.equal(a, b) and torch.equal(aux_a, aux_b)
    model.train()  # dropout is 0, so only the router noise can differ between the calls
    with torch.no_grad():
        torch.manual_seed(1)
        c, _ = model(ids)
        torch.manual_seed(2)
        d, _ = model(ids)
        torch.manual_seed(1)
        e, _ = model(ids)
    assert not torch.allclose(c, d)
    assert torch.equal(c, e)


def test_no_noise_training_forward_is_deterministic():
    model = make(tiny(router_noise=0.0)).train()
    ids = torch.randint(0, V, (2, 8))
    torch.manual_seed(1)
    a, _ = model(ids)
    torch.manual_seed(2)
    b, _ = model(ids)
    assert torch.equal(a, b)


def test_dropout_active_only_in_training():
    model = make(tiny("dense", dropout=0.5))
    ids = torch.randint(0, V, (2, 8))
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(ids)[0], model(ids)[0])
        model.train()
        assert not torch.equal(model(ids)[0], model(ids)[0])


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_deterministic_given_seed_and_all_params_get_grads(kind):
    ids = torch.randint(0, V, (2, 8))
    runs = []
    for _ in range(2):
        model = make(tiny(kind, dropout=0.1), seed=3).train()
        torch.manual_seed(9)
        logits, aux = model(ids)
        (logits.logsumexp(-1).mean() + 0.01 * aux).backward()
        runs.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert torch.equal(runs[0][0], runs[1][0])
    for n, g in runs[0][1].items():
        assert torch.equal(g, runs[1][1][n]), n
        assert g.abs().sum() > 0, f"no gradient reaches {n}"


def test_init_scales():
    cfg = tiny(n_layers=8, d_model=64, d_ff=256, n_experts=8)
    model = make(cfg)
    p = dict(model.named_parameters())
    assert p["tok_embeddings.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert p["layers.0.attn.qkv.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert p["layers.0.mlp.w_up"].std().item() == pytest.approx(0.02, rel=0.1)
    resid = 0.02 / 4.0  # 1 / sqrt(2 * 8 layers)
    assert p["layers.0.attn.proj.weight"].std().item() == pytest.approx(resid, rel=0.1)
    assert p["layers.0.mlp.w_down"].std().item() == pytest.approx(resid, rel=0.1)
    assert torch.equal(p["norm.weight"], torch.ones(64))


def test_bf16_autocast_runs():
    model = make(tiny())
    ids = torch.randint(0, V, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, aux = model(ids)
    assert logits.shape == (2, 8, V) and torch.isfinite(logits.float()).all()
    (logits.float().logsumexp(-1).mean() + aux).backward()
    assert all(p.grad is not None for p in model.parameters())
