"""Tests for trainer/muon.py: agreement with torch.optim.Muon, batching, experts, blocks, dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.optim._muon as torch_muon_module

from trainer.muon import (
    POLAR_EXPRESS_COEFFS,
    QUINTIC_COEFFS,
    Muon,
    zeropower_via_newtonschulz,
)

SHAPES = [(24, 8), (8, 24), (16, 16), (12, 20)]  # tall, wide, square, mildly wide


def _torch_ns_fp32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim.Muon's Newton-Schulz, line for line, but in fp32 instead of bf16.

    torch casts to bf16 unconditionally (even on CPU) and divides by ||X||.clamp(min=eps) after
    the cast; we normalise in fp32 and divide by ||X|| + eps. Both differences are below fp32
    noise for non-degenerate inputs, so with the bf16 cast removed the two must agree tightly.
    """
    a, b, c = ns_coefficients
    X = grad.float()
    if grad.size(0) > grad.size(1):
        X = X.T
    X = X.div(X.norm().clamp(min=eps))
    for _ in range(ns_steps):
        A = X @ X.T
        B = torch.addmm(A, A, A, beta=b, alpha=c)
        X = torch.addmm(X, B, X, beta=a)
    if grad.size(0) > grad.size(1):
        X = X.T
    return X


def _params(shapes, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float32).to(dtype) for s in shapes]


def _grads(shapes, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) for s in shapes] for _ in range(steps)]


def _run(opt_factory, init, grads):
    """Copy `init` into leaf params, run one optimizer step per entry of `grads`, return params."""
    params = [torch.nn.Parameter(t.clone()) for t in init]
    opt = opt_factory(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone().to(p.dtype)
        opt.step()
    return [p.detach() for p in params], opt


def _svals(X):
    return torch.linalg.svdvals(X.float())


# ---------------------------------------------------------------- 1. oracle: torch.optim.Muon


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("scale", ["original", "match_rms_adamw"])
def test_matches_torch_muon(monkeypatch, nesterov, scale):
    monkeypatch.setattr(torch_muon_module, "_zeropower_via_newtonschulz", _torch_ns_fp32)
    init, grads = _params(SHAPES), _grads(SHAPES, steps=4)
    kw = dict(lr=0.03, weight_decay=0.1, momentum=0.9, nesterov=nesterov)
    ours, _ = _run(lambda ps: Muon(ps, update_scale=scale, **kw), init, grads)
    ref, _ = _run(
        lambda ps: torch.optim.Muon(
            ps, ns_coefficients=QUINTIC_COEFFS, ns_steps=5, eps=1e-7, adjust_lr_fn=scale, **kw
        ),
        init,
        grads,
    )
    for o, r, i in zip(ours, ref, init):
        assert not torch.equal(o, i)
        torch.testing.assert_close(o, r, atol=1e-5, rtol=0)


def test_close_to_unpatched_torch_muon_in_bf16():
    """Unpatched torch iterates in bf16; ours in fp32 on CPU: updates agree to bf16 accuracy."""
    init, grads = _params(SHAPES), _grads(SHAPES, steps=1)
    ours, _ = _run(lambda ps: Muon(ps, lr=1.0), init, grads)
    ref, _ = _run(lambda ps: torch.optim.Muon(ps, lr=1.0, weight_decay=0.0), init, grads)
    for o, r, i in zip(ours, ref, init):
        d_ours, d_ref = o - i, r - i
        assert (d_ours - d_ref).norm() / d_ref.norm() < 0.03


# ---------------------------------------------------------------- 2. Block Muon


def test_block_size_at_least_matrix_is_full_muon():
    init, grads = _params(SHAPES), _grads(SHAPES, steps=3)
    full, _ = _run(lambda ps: Muon(ps, weight_decay=0.1), init, grads)
    for block in (24, 100):
        blocked, _ = _run(lambda ps, block=block: Muon(ps, weight_decay=0.1, block_size=block), init, grads)
        for f, b in zip(full, blocked):
            assert torch.equal(f, b)


@pytest.mark.parametrize("shape,block", [((24, 20), 8), ((20, 24), 8), ((16, 16), 8)])
def test_small_blocks_orthogonalise_each_tile(shape, block):
    init, grads = [torch.zeros(shape)], _grads([shape], steps=1)
    lr = 0.1
    full, _ = _run(lambda ps: Muon(ps, lr=lr, update_scale="original"), init, grads)
    blocked, _ = _run(
        lambda ps: Muon(ps, lr=lr, update_scale="original", block_size=block), init, grads
    )
    assert not torch.allclose(full[0], blocked[0], atol=1e-3)
    update = -blocked[0] / lr
    m, n = shape
    for r in range(0, m, block):
        for c in range(0, n, block):
            tile = update[r : r + block, c : c + block]
            rows, cols = tile.shape
            tile = tile / max(1.0, rows / cols) ** 0.5  # undo the tile's own "original" scale
            sv = _svals(tile)
            assert sv.min() > 0.5 and sv.max() < 1.5, (r, c, sv)
            # Each tile is exactly Muon applied to that tile of the gradient alone.
            expected = zeropower_via_newtonschulz(grads[0][0][r : r + block, c : c + block], 5)
            torch.testing.assert_close(tile, expected, atol=1e-5, rtol=0)


def test_block_scale_uses_tile_shape():
    """match_rms_adamw with blocks scales by the tile's max dim, not the matrix's."""
    shape, block = (32, 16), 8
    init, grads = [torch.zeros(shape)], _grads([shape], steps=1)
    out, _ = _run(
        lambda ps: Muon(ps, lr=1.0, update_scale="match_rms_adamw", block_size=block), init, grads
    )
    tile = -out[0][:block, :block]
    expected = 0.2 * block**0.5 * zeropower_via_newtonschulz(grads[0][0][:block, :block], 5)
    torch.testing.assert_close(tile, expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- 3. experts, 4. batching


def test_3d_expert_stack_equals_separate_matrices():
    E, m, n = 4, 12, 20
    init3 = _params([(E, m, n)])
    g = torch.Generator().manual_seed(5)
    grads3 = [[torch.randn(E, m, n, generator=g)] for _ in range(3)]
    grads3[1][0][0] *= 1000.0  # one huge expert must not leak into the others
    kw = dict(lr=0.05, weight_decay=0.1, block_size=None)
    out3, _ = _run(lambda ps: Muon(ps, **kw), init3, grads3)

    init2 = list(init3[0].unbind(0))
    grads2 = [list(s[0].unbind(0)) for s in grads3]
    together, _ = _run(lambda ps: Muon(ps, **kw), init2, grads2)
    assert torch.equal(out3[0], torch.stack(together))
    for e in range(E):  # each expert alone, in its own optimizer
        alone, _ = _run(lambda ps: Muon(ps, **kw), [init2[e]], [[s[e]] for s in grads2])
        torch.testing.assert_close(out3[0][e], alone[0], atol=1e-6, rtol=0)


def test_3d_expert_stack_with_blocks():
    E, m, n = 3, 16, 24
    init3, g = _params([(E, m, n)]), _grads([(E, m, n)], steps=2)
    out3, _ = _run(lambda ps: Muon(ps, block_size=8), init3, g)
    init2, grads2 = list(init3[0].unbind(0)), [list(s[0].unbind(0)) for s in g]
    out2, _ = _run(lambda ps: Muon(ps, block_size=8), init2, grads2)
    assert torch.equal(out3[0], torch.stack(out2))


def test_batched_same_shape_equals_one_at_a_time():
    shapes = [(16, 8)] * 3 + [(8, 16)] * 2 + [(12, 12)]
    init, grads = _params(shapes), _grads(shapes, steps=3)
    kw = dict(lr=0.02, weight_decay=0.05, momentum=0.9)
    batched, _ = _run(lambda ps: Muon(ps, **kw), init, grads)
    for i in range(len(shapes)):
        single, _ = _run(lambda ps: Muon(ps, **kw), [init[i]], [[s[i]] for s in grads])
        torch.testing.assert_close(batched[i], single[0], atol=1e-6, rtol=0)


def test_batched_call_is_one_ns_call_per_shape(monkeypatch):
    import trainer.muon as muon_module

    calls = []
    real = muon_module.zeropower_via_newtonschulz

    def spy(G, *a, **k):
        calls.append(tuple(G.shape))
        return real(G, *a, **k)

    monkeypatch.setattr(muon_module, "zeropower_via_newtonschulz", spy)
    shapes = [(16, 8)] * 3 + [(2, 16, 8)] + [(8, 16)] * 2
    _run(lambda ps: Muon(ps), _params(shapes), _grads(shapes, steps=1))
    assert sorted(calls) == [(2, 8, 16), (5, 16, 8)]


def test_params_without_grad_are_skipped():
    a, b = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(8, 4))
    b0 = b.detach().clone()
    opt = Muon([a, b], weight_decay=0.1)
    a.grad = torch.randn(8, 4)
    opt.step()
    assert torch.equal(b.detach(), b0)
    assert b not in opt.state


# ---------------------------------------------------------------- 5. Newton-Schulz variants


def test_more_ns_steps_changes_result_and_approaches_one():
    G = torch.randn(32, 16, generator=torch.Generator().manual_seed(3))
    x1 = zeropower_via_newtonschulz(G, 1)
    x5 = zeropower_via_newtonschulz(G, 5)
    assert not torch.allclose(x1, x5, atol=1e-3)
    sv1, sv5 = _svals(x1), _svals(x5)
    assert (sv5 - 1).abs().max() < (sv1 - 1).abs().max()
    assert sv5.min() > 0.5 and sv5.max() < 1.5
    # Through the optimizer too: ns_steps is not a silent no-op.
    init, grads = _params([(32, 16)]), [[G]]
    a, _ = _run(lambda ps: Muon(ps, ns_steps=2), init, grads)
    b, _ = _run(lambda ps: Muon(ps, ns_steps=5), init, grads)
    assert not torch.allclose(a[0], b[0], atol=1e-4)


@pytest.mark.parametrize("shape", [(32, 16), (16, 32), (4, 8, 8)])
def test_polar_express_is_near_orthogonal(shape):
    G = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    X = zeropower_via_newtonschulz(G, 5, variant="polar_express")
    assert X.shape == G.shape
    sv = _svals(X)
    assert sv.min() > 0.7 and sv.max() < 1.3
    quintic = _svals(zeropower_via_newtonschulz(G, 5))
    assert (sv - 1).abs().max() < (quintic - 1).abs().max()


def test_polar_express_needs_five_steps():
    assert len(POLAR_EXPRESS_COEFFS) == 5
    G = torch.randn(8, 4)
    for steps in (4, 6):
        with pytest.raises(ValueError, match="polar_express"):
            zeropower_via_newtonschulz(G, steps, variant="polar_express")
        with pytest.raises(ValueError, match="polar_express"):
            Muon([torch.nn.Parameter(G)], ns_variant="polar_express", ns_steps=steps)
    with pytest.raises(ValueError, match="ns_variant"):
        zeropower_via_newtonschulz(G, 5, variant="cubic")


def test_batch_matrices_normalised_independently():
    G = torch.randn(3, 8, 6, generator=torch.Generator().manual_seed(6))
    G[1] *= 1e4
    X = zeropower_via_newtonschulz(G, 5)
    for i in range(3):
        torch.testing.assert_close(X[i], zeropower_via_newtonschulz(G[i], 5), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- 6. weight decay, group knobs


def test_weight_decay_scales_param_exactly():
    lr, wd = 0.05, 0.2
    init = _params([(8, 12), (2, 6, 4)])
    zero_grads = [[torch.zeros(8, 12), torch.zeros(2, 6, 4)]]
    out, _ = _run(lambda ps: Muon(ps, lr=lr, weight_decay=wd), init, zero_grads)
    for o, i in zip(out, init):
        torch.testing.assert_close(o, i * (1 - lr * wd), atol=0, rtol=1e-6)


def test_lr_and_momentum_read_from_group_at_step_time():
    p = torch.nn.Parameter(torch.zeros(6, 4))
    opt = Muon([p], lr=0.1, momentum=0.9, nesterov=False)
    g1, g2 = torch.randn(6, 4), torch.randn(6, 4)
    p.grad = g1
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    torch.testing.assert_close(buf, 0.1 * g1)
    opt.param_groups[0]["momentum"] = 0.5
    opt.param_groups[0]["lr"] = 0.0
    before = p.detach().clone()
    p.grad = g2
    opt.step()
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], 0.5 * 0.1 * g1 + 0.5 * g2)
    assert torch.equal(p.detach(), before)  # lr 0 from the group: no move


def test_param_group_overrides():
    a, b = torch.nn.Parameter(torch.zeros(8, 8)), torch.nn.Parameter(torch.zeros(8, 8))
    opt = Muon([{"params": [a]}, {"params": [b], "lr": 0.0}], lr=0.1)
    a.grad, b.grad = torch.randn(8, 8), torch.randn(8, 8)
    opt.step()
    assert a.abs().sum() > 0 and b.abs().sum() == 0


# ---------------------------------------------------------------- 7. low precision, 8. bad shapes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_large_low_precision_inputs_stay_finite(dtype):
    G = (1e4 * torch.randn(64, 32, generator=torch.Generator().manual_seed(7))).to(dtype)
    if dtype == torch.float16:  # ||G|| itself is beyond fp16's range: normalising in fp16 breaks
        assert G.float().norm() > torch.finfo(torch.float16).max
    for iter_dtype in (None, dtype):  # default (fp32 on CPU) and the low-precision iteration
        X = zeropower_via_newtonschulz(G, 5, dtype=iter_dtype)
        assert torch.isfinite(X).all()
        sv = _svals(X)
        assert sv.min() > 0.4 and sv.max() < 1.6
    p = torch.nn.Parameter(torch.randn(64, 32).to(dtype))
    opt = Muon([p], lr=0.02, weight_decay=0.1)
    for _ in range(2):
        p.grad = G.clone()
        opt.step()
    assert p.dtype == dtype and torch.isfinite(p).all()


@pytest.mark.parametrize("shape", [(8,), (2, 3, 4, 5)])
def test_bad_ndim_raises(shape):
    with pytest.raises(ValueError, match="2D"):
        Muon([torch.nn.Parameter(torch.randn(shape))])
    opt = Muon([torch.nn.Parameter(torch.randn(4, 4))])
    with pytest.raises(ValueError, match="2D"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(shape))]})


def test_bad_options_raise():
    p = torch.nn.Parameter(torch.randn(4, 4))
    with pytest.raises(ValueError):
        Muon([p], update_scale="spectral")
    with pytest.raises(ValueError):
        Muon([p], ns_variant="cubic")
    with pytest.raises(ValueError):
        Muon([p], block_size=0)
