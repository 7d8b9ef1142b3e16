"""trainer.params: the one rule that puts each parameter into muon / adamw_decay / adamw_no_decay."""

from __future__ import annotations

import pytest
import torch

from trainer.diagnostics import entropy_matrices
from trainer.models import build_model
from trainer.optim import build_optimizers
from trainer.params import check_partition, classify, hidden_matrices, in_adamw_leg
from trainer.spec import ModelConfig, TrialSpec

MOE = ModelConfig(kind="moe", d_model=16, n_heads=2, n_layers=1, d_ff=32, n_experts=4, top_k=2)
DENSE = ModelConfig(kind="dense", d_model=16, n_heads=2, n_layers=1, d_ff=32)
NORMS = ["layers.0.attn_norm.weight", "layers.0.mlp_norm.weight", "norm.weight"]
ATTN = ["layers.0.attn.qkv.weight", "layers.0.attn.proj.weight"]
EXPERTS = ["layers.0.mlp.w_up", "layers.0.mlp.w_down"]
ROUTER = ["layers.0.mlp.router.weight"]
EMB = ["tok_embeddings.weight"]


def names(groups) -> dict[str, list[str]]:
    return {g: [n for n, _ in members] for g, members in groups.items()}


@pytest.mark.parametrize("optimizer,router,expected", [
    ("muon", "adamw", {"muon": ATTN + EXPERTS, "adamw_decay": EMB + ROUTER, "adamw_no_decay": NORMS}),
    ("muon", "muon", {"muon": ATTN + EXPERTS + ROUTER, "adamw_decay": EMB, "adamw_no_decay": NORMS}),
    ("adamw", "muon", {"muon": [], "adamw_decay": EMB + ATTN + EXPERTS + ROUTER, "adamw_no_decay": NORMS}),
])
def test_moe_groups_and_their_order(optimizer, router, expected):
    model = build_model(MOE, 50)
    assert names(classify(model, optimizer, router)) == expected
    spec = TrialSpec(model=MOE, optimizer=optimizer, router_optimizer=router)
    assert build_optimizers(model, spec).groups == expected  # the optimizers use exactly this


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
@pytest.mark.parametrize("router,leg", [("adamw", EMB + ROUTER + NORMS), ("muon", EMB + NORMS)])
def test_the_adamw_leg_is_the_same_in_both_arms(optimizer, router, leg):
    """What AdamW trains in every arm takes adamw_lr; everything else (the hidden matrices) takes lr."""
    model = build_model(MOE, 50)
    assert sorted(n for n, p in model.named_parameters() if in_adamw_leg(n, p, router)) == sorted(leg)
    spec = TrialSpec(model=MOE, optimizer=optimizer, router_optimizer=router, lr=0.02, adamw_lr=0.004)
    opt = build_optimizers(model, spec)
    lr_of = {id(p): g["peak_lr"] for g in opt.param_groups() for p in g["params"]}
    assert {n: lr_of[id(p)] for n, p in model.named_parameters()} == \
        {n: 0.004 if n in leg else 0.02 for n, _ in model.named_parameters()}


def test_dense_groups_and_hidden_matrices():
    model = build_model(DENSE, 50)
    mlp = ["layers.0.mlp.up.weight", "layers.0.mlp.down.weight"]
    assert names(classify(model)) == {"muon": ATTN + mlp, "adamw_decay": EMB, "adamw_no_decay": NORMS}
    assert [n for n, _ in hidden_matrices(model)] == ATTN + mlp


def test_hidden_matrices_never_include_the_router():
    model = build_model(MOE, 50)
    assert [n for n, _ in hidden_matrices(model)] == ATTN + EXPERTS


def test_frozen_parameters_join_no_group():
    model = build_model(MOE, 50)
    model.layers[0].mlp.router.weight.requires_grad_(False)
    groups = names(classify(model, "muon", "muon"))
    assert ROUTER[0] not in sum(groups.values(), [])


def test_check_partition_rejects_a_parameter_in_two_groups_or_in_none():
    model = build_model(MOE, 50)
    groups = classify(model)
    twice = {**groups, "adamw_decay": groups["adamw_decay"] + groups["muon"][:1]}
    with pytest.raises(ValueError, match="in two groups .'layers.0.attn.qkv.weight'"):
        check_partition(model, twice)
    none = {**groups, "adamw_no_decay": groups["adamw_no_decay"][1:]}
    with pytest.raises(ValueError, match="in none .'layers.0.attn_norm.weight'"):
        check_partition(model, none)


def test_entropy_matrices_are_the_first_hidden_matrices():
    model = build_model(MOE.model_copy(update={"n_layers": 2}), 50)
    chosen = entropy_matrices(model, 5)
    assert [n for n, _ in chosen] == ["layers.0.attn.qkv.weight", "layers.0.attn.proj.weight",
                                      "layers.0.mlp.w_up[0]", "layers.0.mlp.w_down[0]",
                                      "layers.1.attn.qkv.weight"]
    assert all(w.ndim == 2 for _, w in chosen)
    assert torch.equal(chosen[2][1], model.layers[0].mlp.w_up[0])
