"""Tests for trainer.train / optim / schedules / CLI: every knob changes exactly what it must.

FACTS.md section 2 lists five seed bugs, each a knob that silently did nothing or did something
else: "steps" counted micro-batches (1), the LR schedule never finished its decay (2),
load_balancing_weight never reached the MoE layer (3), Muon had no weight decay (4), and the AdamW
baseline kept PyTorch's default betas (5). Each test below changes one knob against a baseline
and checks the recorded schedule, the optimizer's param groups, or the trajectory.

Everything runs on the CPU with a 1-layer 32-d MoE, a tiny local text corpus and a private token
cache, one torch thread (two threads on two shared cores are ~100x slower for matrices this small).
Expected schedule values are recomputed here from the formulas in trainer/spec.py's docstrings,
never by calling trainer/schedules.py.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

import trainer.train as train_mod
from tests.trainer_corpus import VOLATILE
from trainer.data import get_batch, load_token_data
from trainer.device import resolve_precision, tune_cpu_allocator
from trainer.metrics import TrialMetrics, read_metrics
from trainer.models import build_model
from trainer.muon import Muon
from trainer.optim import build_optimizers
from trainer.schedules import lr_multiplier
from trainer.spec import TrialSpec
from trainer.train import evaluate, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
TINY_MOE = dict(kind="moe", d_model=32, n_heads=2, n_layers=1, d_ff=64, n_experts=4, top_k=2)
TINY_DENSE = dict(kind="dense", d_model=32, n_heads=2, n_layers=1, d_ff=64)


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def base(corpus, cache_dir) -> dict:
    return dict(model=TINY_MOE, seq_len=16, batch_size=4, steps=8, eval_every=4, eval_batches=2,
                device="cpu", data=dict(source=str(corpus), bpe_vocab_size=300))


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def mkspec(base):
    return lambda **over: TrialSpec.model_validate(_merge(base, over))


@pytest.fixture
def trial(mkspec):
    """trial(**overrides) -> TrialMetrics (written to out_dir when given)."""

    def run(out_dir=None, **over):
        return train(mkspec(**over), out_dir)

    return run


def numbers(m: dict) -> dict:
    """metrics (as in metrics.json) without wall-clock fields (top level and per history entry)."""
    out = {k: v for k, v in m.items() if k not in VOLATILE}
    out["history"] = [{k: v for k, v in h.items() if k not in VOLATILE} for h in m["history"]]
    return out


def traj(m: TrialMetrics) -> list[float]:
    """What a knob must move: the per-step train loss and the final val loss."""
    return [h.train_loss for h in m.history] + [m.final.val_loss]


class StepSpy:
    """Records every optimizer.step (any optimizer) with a copy of its groups' options."""

    def __init__(self):
        self.calls: list[tuple[torch.optim.Optimizer, list[dict]]] = []

    def __call__(self, opt, args, kwargs):
        groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        self.calls.append((opt, groups))

    def muon(self) -> list[list[dict]]:
        return [g for o, g in self.calls if isinstance(o, Muon)]

    def adamw(self) -> list[list[dict]]:
        return [g for o, g in self.calls if isinstance(o, torch.optim.AdamW)]


@pytest.fixture
def spy():
    s = StepSpy()
    handle = register_optimizer_step_pre_hook(s)
    yield s
    handle.remove()


def expected_lr_mult(kind: str, t: int, steps: int, warmup_ratio: float, floor: float,
                     milestones=(0.5, 0.75)) -> float:
    """The LR schedule as the spec defines it: linear warmup over round(ratio*steps) updates,
    then decay so that the LAST update (t = steps-1) sits exactly on min_lr_ratio."""
    warm = round(warmup_ratio * steps)
    if t < warm:
        return (t + 1) / warm
    if kind == "constant":
        return 1.0
    p = (t - warm) / (steps - 1 - warm)
    if kind == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    if kind == "linear":
        return 1 - (1 - floor) * p
    assert kind == "step"
    n = sum(p >= m for m in milestones)
    return floor ** (n / len(milestones))


# ---------------------------------------------------------------- 1. determinism


def test_same_spec_same_metrics_and_seed_matters(trial, tmp_path):
    returned = trial(out_dir=tmp_path / "a")
    trial(out_dir=tmp_path / "b")
    trial(out_dir=tmp_path / "c", seed=1)
    assert read_metrics(tmp_path / "a") == returned  # metrics.json holds exactly what train() returned
    a, b, c = (numbers(json.loads((tmp_path / d / "metrics.json").read_text())) for d in "abc")
    assert a["status"] == "completed" and len(a["history"]) == 8
    assert a["final"] == b["final"] and a["history"] == b["history"]
    assert a == b
    assert all(math.isfinite(v) for v in traj(returned))
    assert c["final"]["val_loss"] != a["final"]["val_loss"]
    assert [h["train_loss"] for h in c["history"]] != [h["train_loss"] for h in a["history"]]


def test_data_order_comes_from_seed(trial, mkspec, monkeypatch):
    """The training batches are get_batch draws from torch.Generator().manual_seed(spec.seed)."""
    seen: list[torch.Tensor] = []
    real_get_batch = train_mod.get_batch

    def recording_get_batch(*args, **kwargs):  # records, changes nothing
        x, y = real_get_batch(*args, **kwargs)
        seen.append(x.clone())
        return x, y

    monkeypatch.setattr(train_mod, "get_batch", recording_get_batch)
    runs = {}
    for seed in (0, 1, 1):
        seen.clear()
        trial(seed=seed, steps=3, eval_every=3, grad_accum=2)
        runs.setdefault(seed, []).append(list(seen))
    assert len(runs[0][0]) == 6
    assert all(torch.equal(a, b) for a, b in zip(runs[1][0], runs[1][1]))  # same seed, same batches
    assert not any(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))  # seeds differ: all differ
    spec = mkspec()
    train_tokens = load_token_data(spec.data).train
    for seed in (0, 1):
        gen = torch.Generator().manual_seed(seed)
        expected = [get_batch(train_tokens, spec.batch_size, spec.seq_len, gen)[0] for _ in range(6)]
        assert all(torch.equal(a, b) for a, b in zip(runs[seed][0], expected)), seed


# ---------------------------------------------------------------- 2. LR schedule (seed bug 2)


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
@pytest.mark.parametrize("kind", ["cosine", "linear", "step"])
def test_lr_schedule_ends_at_min_lr_on_last_optimizer_step(trial, kind, optimizer):
    peak, floor, steps = 0.03, 0.1, 10
    m = trial(optimizer=optimizer, lr=peak, lr_schedule=kind, warmup_ratio=0.2, min_lr_ratio=floor,
              steps=steps, eval_every=10, log_every=1)
    lrs = [h.lr for h in m.history]
    assert [h.step for h in m.history] == list(range(1, steps + 1))
    assert lrs[0] == pytest.approx(peak / 2, abs=1e-12)  # warmup_steps = round(0.2 * 10) = 2
    assert lrs[-1] == pytest.approx(floor * peak, abs=1e-12)
    expected = [peak * expected_lr_mult(kind, t, steps, 0.2, floor) for t in range(steps)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    if kind == "step":  # both milestones fire: peak -> peak*sqrt(floor) -> floor*peak
        assert len({round(x, 12) for x in lrs[2:]}) == 3


def test_constant_schedule_stays_at_peak_after_warmup(trial):
    m = trial(lr=0.03, lr_schedule="constant", warmup_ratio=0.25, steps=8)
    lrs = [h.lr for h in m.history]
    assert lrs[:2] == pytest.approx([0.015, 0.03], abs=1e-12)
    assert lrs[2:] == [0.03] * 6


def test_lr_schedule_counts_optimizer_steps_not_micro_batches(trial):
    one = trial(lr_schedule="cosine", warmup_ratio=0.2, steps=10, eval_every=5, log_every=1)
    four = trial(lr_schedule="cosine", warmup_ratio=0.2, steps=10, eval_every=5, log_every=1,
                 grad_accum=4)
    assert len(four.history) == 10 and four.optimizer_steps == 10
    assert [h.lr for h in four.history] == [h.lr for h in one.history]
    assert four.history[-1].lr == pytest.approx(0.1 * 0.02, abs=1e-12)


@pytest.mark.parametrize("steps,warmup_ratio", [(10, 0.95), (4, 0.9), (1, 0.5)])
def test_long_warmup_still_ends_at_min_lr(trial, steps, warmup_ratio):
    """The contract holds even when round(warmup_ratio * steps) would cover every step."""
    m = trial(lr=0.03, lr_schedule="cosine", warmup_ratio=warmup_ratio, min_lr_ratio=0.1,
              steps=steps, eval_every=steps)
    assert m.history[-1].lr == pytest.approx(0.003, abs=1e-12)


@pytest.mark.parametrize("milestones,drops_at", [((0.2, 0.4, 0.8), (2, 4, 8)), ((0.6,), (6,))])
def test_step_schedule_drops_by_gamma_at_each_milestone(mkspec, trial, milestones, drops_at):
    """11 updates, no warmup: progress = t / 10, so milestone f fires at update t = 10 f."""
    spec = mkspec(lr_schedule="step", warmup_ratio=0.0, min_lr_ratio=0.1, steps=11, eval_every=11,
                  lr_step_milestones=milestones)
    gamma = 0.1 ** (1 / len(milestones))  # each drop multiplies by gamma; the last lands on 0.1
    expected = [gamma ** sum(t >= d for d in drops_at) for t in range(11)]
    assert [lr_multiplier(spec, t) for t in range(11)] == pytest.approx(expected, abs=1e-12)
    assert lr_multiplier(spec, 10) == pytest.approx(0.1, abs=1e-12)
    assert lr_multiplier(spec, drops_at[0] - 1) == 1.0
    m = trial(lr_schedule="step", warmup_ratio=0.0, min_lr_ratio=0.1, steps=11, eval_every=11,
              lr=0.02, lr_step_milestones=milestones)
    assert [h.lr for h in m.history] == pytest.approx([0.02 * e for e in expected], abs=1e-12)


# ---------------------------------------------------------------- 2. adamw_lr (the AdamW leg)
# The AdamW leg is what AdamW trains in every arm: the embedding (tied head), norm gains and the
# router (unless router_optimizer is "muon"). It takes adamw_lr in BOTH arms; the hidden matrices
# keep lr. Expected membership is spelled out from parameter names here, not from trainer/params.py.


def _is_leg(name: str, router_optimizer: str = "adamw") -> bool:
    return "tok_embeddings" in name or "norm" in name or ("router" in name and router_optimizer == "adamw")


def test_adamw_lr_follows_the_same_multiplier(trial):
    kw = dict(lr=0.03, adamw_lr=0.005, lr_schedule="cosine", warmup_ratio=0.2, steps=10,
              eval_every=10)
    for optimizer in ("muon", "adamw"):
        m = trial(**kw, optimizer=optimizer)
        for t, h in enumerate(m.history):
            mult = expected_lr_mult("cosine", t, 10, 0.2, 0.1)
            assert h.lr == pytest.approx(0.03 * mult, abs=1e-12)
            assert h.adamw_lr == pytest.approx(0.005 * mult, abs=1e-12)
        assert traj(trial(**{**kw, "optimizer": optimizer, "adamw_lr": 0.001})) != traj(m)

    # optimizer=adamw without adamw_lr: one LR (spec.lr) for every parameter.
    ad = trial(**{k: v for k, v in kw.items() if k != "adamw_lr"}, optimizer="adamw")
    for t, h in enumerate(ad.history):
        assert h.lr == h.adamw_lr == pytest.approx(0.03 * expected_lr_mult("cosine", t, 10, 0.2, 0.1),
                                                         abs=1e-12)


@pytest.mark.parametrize("router_optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_adamw_lr_reaches_exactly_the_leg_in_both_arms(mkspec, optimizer, router_optimizer):
    spec = mkspec(optimizer=optimizer, lr=0.02, adamw_lr=0.005, router_optimizer=router_optimizer)
    model = build_model(spec.model, 300)
    opt = build_optimizers(model, spec)
    peak = {id(p): (g["name"], g["peak_lr"], g["lr"]) for g in opt.param_groups() for p in g["params"]}
    assert len(peak) == len(list(model.parameters()))  # every parameter in exactly one group
    hidden_group = "muon" if optimizer == "muon" else "adamw_hidden"
    n_leg = 0
    for n, p in model.named_parameters():
        name, peak_lr, lr = peak[id(p)]
        if _is_leg(n, router_optimizer):
            n_leg += 1
            assert (peak_lr, lr) == (0.005, 0.005), n
            assert name == ("adamw_leg_no_decay" if p.ndim == 1 else "adamw_leg"), n
        else:  # hidden matrices keep lr, in Muon (Muon arm) or AdamW (AdamW arm)
            assert (name, peak_lr, lr) == (hidden_group, 0.02, 0.02), n
    assert n_leg == 4 + (router_optimizer == "adamw")  # embedding, 3 norm gains (+ router)
    assert [(g["name"], g["optimizer"], g["lr"]) for g in opt.describe()] == [
        (hidden_group, optimizer, 0.02), ("adamw_leg", "adamw", 0.005), ("adamw_leg_no_decay", "adamw", 0.005)]
    assert TrialSpec(optimizer=optimizer).leg_lr == (0.003 if optimizer == "muon" else TrialSpec().lr)


def test_adamw_arm_trains_its_leg_at_adamw_lr(trial, spy, tmp_path):
    """Each AdamW step in the AdamW arm sees the leg at adamw_lr x schedule, the matrices at lr x schedule;
    metrics.json lists each group's LR."""
    m = trial(out_dir=tmp_path, optimizer="adamw", lr=0.02, adamw_lr=0.005, steps=5, eval_every=5,
              warmup_ratio=0.2)
    steps = spy.adamw()
    assert len(steps) == 5
    for t, groups in enumerate(steps):
        mult = expected_lr_mult("cosine", t, 5, 0.2, 0.1)
        lrs = {g["name"]: g["lr"] for g in groups}
        assert lrs == pytest.approx({"adamw_hidden": 0.02 * mult, "adamw_leg": 0.005 * mult,
                                     "adamw_leg_no_decay": 0.005 * mult}, abs=1e-12)
    raw = json.loads((tmp_path / "metrics.json").read_text())
    groups = [(g["name"], g["optimizer"], g["lr"], g["weight_decay"]) for g in raw["optimizer_groups"]]
    assert groups == [("adamw_hidden", "adamw", 0.02, 0.1), ("adamw_leg", "adamw", 0.005, 0.1),
                      ("adamw_leg_no_decay", "adamw", 0.005, 0.0)]
    assert sum(g["numel"] for g in raw["optimizer_groups"]) == m.env["n_params"]
    assert [g["params"] for g in raw["optimizer_groups"]] == [4, 2, 3]  # qkv, proj, w_up, w_down | emb, router | norms
    assert raw["param_groups"] == {"muon": 0, "adamw_decay": 6, "adamw_no_decay": 3}  # as before


def _optimizers_before_the_leg(model, spec):
    """trainer/optim.py's AdamW arm as it was (81a0212): one LR for two groups, decay and no decay."""
    from trainer.optim import Optimizers
    from trainer.params import classify

    groups = classify(model, spec.optimizer, spec.router_optimizer)
    adamw = torch.optim.AdamW(
        [dict(name="adamw_hidden", params=[p for _, p in groups["adamw_decay"]], weight_decay=spec.weight_decay,
              peak_lr=spec.lr, lr=spec.lr),
         dict(name="adamw_leg_no_decay", params=[p for _, p in groups["adamw_no_decay"]], weight_decay=0.0,
              peak_lr=spec.lr, lr=spec.lr)],
        betas=spec.adamw_betas, eps=spec.adamw_eps, fused=False, foreach=True)
    return Optimizers([adamw], None, adamw, {g: [n for n, _ in m] for g, m in groups.items()})


def test_unset_adamw_lr_in_adamw_arm_trains_bit_for_bit_as_before(trial, monkeypatch):
    """5 steps of the tiny model: no adamw_lr == adamw_lr equal to lr == the one-LR AdamW of before."""
    kw = dict(model="tiny", optimizer="adamw", lr=0.004, steps=5, eval_every=5)
    unset = trial(**kw)
    assert unset.spec.adamw_lr is None and unset.history[0].adamw_lr == unset.history[0].lr
    explicit = trial(**kw, adamw_lr=0.004)
    with monkeypatch.context() as mp:
        mp.setattr(train_mod, "build_optimizers", _optimizers_before_the_leg)
        before = trial(**kw)
    same = ("status", "final", "history")
    strip = lambda m: {k: numbers(m.model_dump())[k] for k in same}  # noqa: E731
    assert strip(unset) == strip(explicit) == strip(before)
    assert strip(trial(**kw, adamw_lr=0.008)) != strip(unset)  # the leg's LR does move the numbers


# ---------------------------------------------------------------- 2. momentum schedules

MOMENTUM = 0.9
SCHEDULES = {
    "fixed": {},
    "linear": dict(start=0.5, warmup_steps=6),
    "cosine": dict(start=0.3, warmup_steps=6),
    "exponential": dict(start=0.1, warmup_steps=6),
    "step": dict(values=[0.5, 0.7, 0.85], boundaries=[2, 4, 7]),
    "sigmoid": dict(start=0.2, warmup_steps=6, steepness=8.0),
    "delayed": dict(start=0.4, delay_steps=3, warmup_steps=4),
    "adaptive": dict(start=0.5, window=3, cv_scale=0.1),
}


def expected_momentum(kind: str, c: dict, t: int, m: float, past_norms: list[float]) -> float:
    """spec.py's docstrings, step t 0-based; every schedule ends at the target m."""
    if kind == "fixed":
        return m
    if kind == "linear":  # start -> m linearly over warmup_steps
        return c["start"] + (m - c["start"]) * min(1.0, t / c["warmup_steps"])
    if kind == "cosine":  # start -> m along a half cosine
        frac = min(1.0, t / c["warmup_steps"])
        return c["start"] + (m - c["start"]) * (1 - math.cos(math.pi * frac)) / 2
    if kind == "exponential":  # m - (m - start) exp(-5 t / W), then m after warmup
        if t >= c["warmup_steps"]:
            return m
        return m - (m - c["start"]) * math.exp(-5 * t / c["warmup_steps"])
    if kind == "step":  # values[i] from boundaries[i-1] on, m after the last
        for v, b in zip(c["values"], c["boundaries"]):
            if t < b:
                return v
        return m
    if kind == "sigmoid":  # logistic centred at W/2 with the given steepness, then m
        if t >= c["warmup_steps"]:
            return m
        z = c["steepness"] * (t / c["warmup_steps"] - 0.5)
        return c["start"] + (m - c["start"]) / (1 + math.exp(-z))
    if kind == "delayed":  # hold start until delay_steps, then linear over warmup_steps
        frac = min(1.0, max(0.0, (t - c["delay_steps"]) / c["warmup_steps"]))
        return c["start"] + (m - c["start"]) * frac
    assert kind == "adaptive"  # start until `window` norms seen; then by their coefficient of variation
    if len(past_norms) < c["window"]:
        return c["start"]
    last = past_norms[-c["window"]:]
    cv = statistics.stdev(last) / statistics.fmean(last)
    return c["start"] + (m - c["start"]) / (1 + cv / c["cv_scale"])


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_momentum_schedule_is_recorded_and_reaches_muon(trial, spy, kind):
    cfg = SCHEDULES[kind]
    steps = 10
    m = trial(momentum=MOMENTUM, momentum_schedule=dict(kind=kind, **cfg), steps=steps,
              eval_every=steps)
    hist = m.history
    assert len(hist) == steps
    norms = [h.grad_norm for h in hist]
    expected = [expected_momentum(kind, cfg, t, MOMENTUM, norms[:t]) for t in range(steps)]
    assert [h.momentum for h in hist] == pytest.approx(expected, abs=1e-12)
    seen = spy.muon()
    assert len(seen) == steps
    assert [groups[0]["momentum"] for groups in seen] == pytest.approx(expected, abs=1e-12)
    if kind != "fixed":  # the window above really exercises the schedule
        assert len({round(x, 9) for x in expected}) >= 3
        assert expected[-1] != expected[0]


def test_momentum_schedule_changes_the_trajectory(trial):
    fixed = trial(momentum=MOMENTUM)
    linear = trial(momentum=MOMENTUM, momentum_schedule=dict(kind="linear", start=0.5, warmup_steps=6))
    assert traj(fixed) != traj(linear)


# ---------------------------------------------------------------- 2. load balancing (seed bug 3)


def test_load_balancing_weight_reaches_the_moe_loss(trial):
    a = trial(load_balancing_weight=0.01)
    assert traj(trial(load_balancing_weight=0.5)) != traj(a)
    assert traj(trial(load_balancing_weight=0.0)) != traj(a)


def test_load_balancing_weight_is_inert_for_dense_models(trial):
    a = trial(model=TINY_DENSE, load_balancing_weight=0.0)
    b = trial(model=TINY_DENSE, load_balancing_weight=5.0)
    assert numbers(a.model_dump())["history"] == numbers(b.model_dump())["history"] and a.final == b.final


# ---------------------------------------------------------------- 2. weight decay (seed bug 4)


def _sq_norm(tensors) -> float:
    return sum(float(t.float().pow(2).sum()) for t in tensors)


def test_weight_decay_shrinks_muon_matrices_and_embedding(trial, tmp_path):
    kw = dict(lr_schedule="constant", warmup_ratio=0.0, steps=10, eval_every=10, save_checkpoint=True)
    trial(out_dir=tmp_path / "wd0", weight_decay=0.0, **kw)
    trial(out_dir=tmp_path / "wd", weight_decay=10.0, **kw)
    w0, w = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("wd0", "wd"))
    muon_names = [n for n in w0 if any(s in n for s in ("attn.qkv", "attn.proj", "mlp.w_up", "mlp.w_down"))]
    assert len(muon_names) == 4
    assert _sq_norm(w[n] for n in muon_names) < 0.5 * _sq_norm(w0[n] for n in muon_names)
    assert _sq_norm([w["tok_embeddings.weight"]]) < _sq_norm([w0["tok_embeddings.weight"]])


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_weight_decay_exact_on_zero_gradients(mkspec, optimizer):
    """With zero gradients an update is pure decay: p *= 1 - lr * wd, except norm gains."""
    spec = mkspec(optimizer=optimizer, lr=0.02, adamw_lr=0.01, weight_decay=0.5)
    torch.manual_seed(0)
    model = build_model(spec.model, 300)
    opt = build_optimizers(model, spec)
    opt.set_lr_multiplier(1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    muon_names = set(opt.groups["muon"])
    assert (len(muon_names) == 4) == (optimizer == "muon")
    for n, p in model.named_parameters():
        if "norm" in n:
            factor = 1.0  # norm gains are never decayed
        elif _is_leg(n):  # embedding, router: the AdamW leg's LR in both arms
            factor = 1 - 0.01 * 0.5
        else:  # hidden matrices: lr, in Muon or (adamw) AdamW
            factor = 1 - 0.02 * 0.5
        torch.testing.assert_close(p.detach(), before[n] * factor, rtol=1e-6, atol=0, msg=n)
    assert opt.groups["adamw_no_decay"] and all("norm" in n for n in opt.groups["adamw_no_decay"])
    if opt.muon is not None:
        assert opt.muon.param_groups[0]["weight_decay"] == 0.5


# ---------------------------------------------------------------- 2. AdamW betas (seed bug 5)


def test_adamw_betas_reach_adamw_and_change_the_trajectory(mkspec, trial):
    assert TrialSpec().adamw_betas == (0.9, 0.95)  # not torch's (0.9, 0.999)
    for optimizer in ("muon", "adamw"):
        spec = mkspec(optimizer=optimizer, adamw_betas=(0.8, 0.99), adamw_eps=1e-6)
        opt = build_optimizers(build_model(spec.model, 300), spec)
        assert all(g["betas"] == (0.8, 0.99) and g["eps"] == 1e-6 for g in opt.adamw.param_groups)
    a = trial(optimizer="adamw", lr=3e-3, adamw_betas=(0.9, 0.95))
    b = trial(optimizer="adamw", lr=3e-3, adamw_betas=(0.9, 0.999))
    c = trial(optimizer="adamw", lr=3e-3, adamw_betas=(0.8, 0.95))
    assert traj(a) != traj(b) and traj(a) != traj(c)
    # beta1 is logged as the AdamW leg's own setting, never as a momentum (AdamW has none)
    assert {h.adamw_beta1 for h in c.history} == {0.8} and {h.momentum for h in c.history} == {None}


# ---------------------------------------------------------------- 2. grad_accum (seed bug 1)


def test_grad_accum_scales_tokens_not_optimizer_steps(trial, spy, monkeypatch):
    calls = []
    real_get_batch = train_mod.get_batch

    def counting_get_batch(*args, **kwargs):
        calls.append(1)
        return real_get_batch(*args, **kwargs)

    monkeypatch.setattr(train_mod, "get_batch", counting_get_batch)
    steps, accum, batch, seq = 6, 3, 4, 16
    m = trial(steps=steps, eval_every=3, grad_accum=accum, batch_size=batch, seq_len=seq)
    assert len(calls) == steps * accum
    assert len(spy.muon()) == steps and len(spy.adamw()) == steps
    assert m.optimizer_steps == steps and len(m.history) == steps
    assert [h.tokens for h in m.history] == [s * batch * accum * seq for s in range(1, steps + 1)]
    assert m.tokens_seen == steps * batch * accum * seq
    one = trial(steps=steps, eval_every=3, grad_accum=1)
    assert one.tokens_seen == steps * batch * seq and one.optimizer_steps == steps
    assert traj(one) != traj(m)


# ---------------------------------------------------------------- 2. Muon knobs


@pytest.mark.parametrize(
    "knob,value,default",
    [
        ("ns_steps", 2, 5),
        ("ns_variant", "polar_express", "quintic"),
        ("update_scale", "match_rms_adamw", "original"),
        ("block_size", 16, None),
        ("nesterov", False, True),
    ],
)
def test_muon_knob_reaches_muon_and_changes_the_trajectory(trial, spy, knob, value, default):
    base = trial()
    base_groups = spy.muon()
    spy.calls.clear()
    over = {knob: value, **({"ns_steps": 5} if knob == "ns_variant" else {})}
    changed = trial(**over)
    groups = spy.muon()
    assert len(base_groups) == len(groups) == 8
    assert all(g[0][knob] == default for g in base_groups)
    assert all(g[0][knob] == value for g in groups)
    assert traj(changed) != traj(base)


def test_router_optimizer_moves_the_router(mkspec, trial):
    router = "layers.0.mlp.router.weight"
    for choice in ("muon", "adamw"):
        spec = mkspec(router_optimizer=choice)
        model = build_model(spec.model, 300)
        opt = build_optimizers(model, spec)
        router_param = dict(model.named_parameters())[router]
        in_muon = any(p is router_param for p in opt.muon.param_groups[0]["params"])
        assert (router in opt.groups["muon"]) == in_muon == (choice == "muon")
        assert (router in opt.groups["adamw_decay"]) == (choice == "adamw")
    a, m = trial(router_optimizer="adamw"), trial(router_optimizer="muon")
    assert m.param_groups["muon"] == a.param_groups["muon"] + 1
    assert traj(a) != traj(m)


# ---------------------------------------------------------------- 2. clipping, eval, divergence


def test_grad_clip_clips_but_records_the_pre_clip_norm(trial):
    free = trial(grad_clip=None)
    clipped = trial(grad_clip=1e-3)
    assert clipped.history[0].grad_norm == free.history[0].grad_norm  # same init, same batch
    assert all(h.grad_norm > 1e-2 for h in clipped.history)
    assert traj(clipped) != traj(free)


def test_eval_every_and_log_every(trial):
    m = trial(steps=10, eval_every=3, log_every=1)
    assert [h.step for h in m.history] == list(range(1, 11))
    assert [h.step for h in m.history if "val_loss" in h.model_fields_set] == [3, 6, 9, 10]
    assert all(("val_accuracy" in h.model_fields_set) == ("val_loss" in h.model_fields_set) for h in m.history)
    assert m.final.val_loss == m.history[-1].val_loss
    sparse = trial(steps=10, eval_every=3, log_every=4)
    assert [h.step for h in sparse.history] == [3, 4, 6, 8, 9, 10]
    assert sparse.final == m.final


def test_eval_batches_changes_val_not_training(trial):
    a, b = trial(eval_batches=1), trial(eval_batches=2)
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert a.final.val_loss != b.final.val_loss


def test_final_val_loss_is_scored_on_the_val_split(trial, mkspec, tmp_path):
    """Reload the trained weights: final.val_loss is evaluate() on data.val, not on data.train."""
    spec = mkspec(steps=4, eval_every=4, save_checkpoint=True)
    m = trial(out_dir=tmp_path, steps=4, eval_every=4, save_checkpoint=True)
    data = load_token_data(spec.data)
    model = build_model(spec.model, data.vocab_size)
    model.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    on_val = evaluate(model, data.val, spec, torch.device("cpu"), nullcontext)
    on_train = evaluate(model, data.train, spec, torch.device("cpu"), nullcontext)
    assert abs(on_val["val_loss"] - on_train["val_loss"]) > 1e-3  # the splits are told apart
    assert m.final.val_loss == pytest.approx(on_val["val_loss"], rel=1e-9, abs=0)
    assert m.final.val_accuracy == pytest.approx(on_val["val_accuracy"], rel=1e-9, abs=0)


def test_val_loss_is_token_weighted_when_the_last_batch_is_short(mkspec):
    """6 blocks of 16 tokens in batches of 4: [4, 2]. The loss is sum over 96 tokens / 96."""
    spec = mkspec(batch_size=4, seq_len=16, eval_batches=3)
    torch.manual_seed(0)
    model = build_model(spec.model, 300)
    with torch.no_grad():
        model.tok_embeddings.weight.mul_(40.0)  # peaked predictions: per-token losses spread widely
    tokens = torch.randint(0, 300, (16 * 6 + 1,), generator=torch.Generator().manual_seed(1))
    got = evaluate(model, tokens, spec, torch.device("cpu"), nullcontext)
    model.eval()
    losses, hits = [], []
    with torch.no_grad():
        for b in range(6):  # one block at a time, by hand
            x, y = tokens[16 * b:16 * b + 16], tokens[16 * b + 1:16 * b + 17]
            logits = model(x[None])[0][0]
            losses.append(torch.nn.functional.cross_entropy(logits, y, reduction="none"))
            hits.append(logits.argmax(-1) == y)
    per_token = torch.cat(losses).double()
    weighted = float(per_token.mean())
    mean_of_batch_means = (float(per_token[:64].mean()) + float(per_token[64:].mean())) / 2
    assert abs(weighted - mean_of_batch_means) > 1e-3  # the short batch really matters here
    assert got["val_loss"] == pytest.approx(weighted, rel=1e-6)
    assert got["val_accuracy"] == float(torch.cat(hits).float().mean())


def test_divergence_ends_the_trial_early(trial):
    m = trial(divergence_loss=0.5)
    assert m.status == "diverged" and "train loss" in m.reason and "0.5" in m.reason
    assert m.optimizer_steps == 0 and len(m.history) == 1
    big = trial(optimizer="adamw", lr=5.0, grad_clip=None, lr_schedule="constant", warmup_ratio=0.0,
                steps=20, eval_every=10)
    assert big.status == "diverged" and big.reason
    assert big.optimizer_steps < 20 and len(big.history) < 20
    assert big.final.val_loss is not None  # the model that diverged was still evaluated


def test_diagnostics_at_eval_steps(trial):
    m = trial(steps=8, eval_every=4, diagnostics=dict(update_rms=True, svd_entropy=True, svd_max_matrices=3))
    diags = m.diagnostics
    assert [d["step"] for d in diags] == [4, 8]
    for d in diags:
        assert set(d["update_rms"]) == {"muon", "adamw_decay", "adamw_no_decay"}
        assert all(0 < v < 1 and math.isfinite(v) for v in d["update_rms"].values())
        assert len(d["svd_entropy"]) == 3
        assert all(0 < v <= 1 for v in d["svd_entropy"].values())
    assert trial().diagnostics == []


def test_save_checkpoint_round_trips(trial, mkspec, tmp_path):
    trial(out_dir=tmp_path / "ck", save_checkpoint=True)
    tensors = load_file(str(tmp_path / "ck" / "model.safetensors"))
    reference = build_model(mkspec().model, 300).state_dict()
    assert set(tensors) == set(reference)
    assert all(tensors[k].shape == reference[k].shape for k in reference)
    model = build_model(mkspec().model, 300)
    model.load_state_dict(tensors)  # strict: every key, every shape
    trial(out_dir=tmp_path / "no")
    assert not (tmp_path / "no" / "model.safetensors").exists()


# ---------------------------------------------------------------- 3. CLI


def _cli(spec_path: Path, out: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRAINER_CACHE_DIR": str(cache_dir),
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "trainer", "run", "--spec", str(spec_path),
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)


def _write_spec(path: Path, spec) -> Path:
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


def test_cli_run_writes_every_promised_key(base, cache_dir, tmp_path):
    spec = _merge(base, dict(steps=4, eval_every=2))
    res = _cli(_write_spec(tmp_path / "s.json", spec), tmp_path / "out", cache_dir)
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["status"] == "completed"
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(m) >= {"spec", "status", "reason", "final", "history", "diagnostics", "optimizer_steps",
                      "tokens_seen", "wall_time_s", "tokens_per_s", "peak_memory_mb", "device",
                      "precision", "param_groups", "env"}  # the keys readers of metrics.json know
    assert m["spec"] == TrialSpec.model_validate(spec).model_dump(mode="json")
    assert m["status"] == "completed"
    for key in ("val_loss", "val_accuracy", "val_perplexity", "train_loss"):
        assert isinstance(m["final"][key], float), key
    assert m["final"]["val_perplexity"] == pytest.approx(math.exp(m["final"]["val_loss"]))
    assert len(m["history"]) == 4
    for h in m["history"]:
        assert {"step", "tokens", "lr", "momentum", "train_loss", "grad_norm"} <= set(h)
        assert ({"val_loss", "val_accuracy"} <= set(h)) == (h["step"] % 2 == 0)
    assert m["optimizer_steps"] == 4 and m["tokens_seen"] == 4 * 4 * 16
    for key in ("wall_time_s", "tokens_per_s", "peak_memory_mb"):
        assert m[key] > 0, key
    assert m["device"] == "cpu"
    env = m["env"]
    assert env["python"] and env["torch"] == torch.__version__ and env["numpy"]
    assert {"data_hash", "tokens_sha256", "n_train_tokens", "vocab_size"} <= set(env["data"])


@pytest.mark.parametrize(
    "defect,needle",
    [
        (dict(lrr=0.1), "lrr"),
        (dict(momentum=1.5), "momentum"),
        (dict(momentum_schedule=dict(kind="bogus")), "momentum_schedule"),
        (dict(ns_variant="polar_express", ns_steps=3), "ns_steps"),
        ("{not json", "JSON"),
        (None, "cannot read"),
    ],
    ids=["unknown-field", "out-of-range", "bad-schedule-kind", "polar-ns-steps", "bad-json", "missing"],
)
def test_cli_invalid_spec_exits_2_with_one_line(base, cache_dir, tmp_path, defect, needle):
    path = tmp_path / "s.json"
    if isinstance(defect, dict):
        _write_spec(path, _merge(base, defect))
    elif isinstance(defect, str):
        _write_spec(path, defect)
    out = tmp_path / "out"
    res = _cli(path, out, cache_dir)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert not out.exists()


@pytest.mark.parametrize("kind", ["empty-data-dir", "bf16-on-cpu"])
def test_cli_failure_exits_with_one_line_and_the_reason_recorded(base, cache_dir, tmp_path, kind):
    # a data source that gives nothing is bad input (2); a failure inside training is internal (1)
    if kind == "empty-data-dir":
        (tmp_path / "empty").mkdir()
        spec, needle, code = _merge(base, dict(data=dict(source=str(tmp_path / "empty")))), "no files", 2
    else:
        spec, needle, code = _merge(base, dict(precision="bf16")), "bf16", 1
    res = _cli(_write_spec(tmp_path / "s.json", spec), tmp_path / "out", cache_dir)
    assert res.returncode == code
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["status"] == "failed" and needle in m["reason"]
    assert {"spec", "status", "reason", "traceback", "final", "history"} <= set(m)  # what readers knew
    failed = read_metrics(tmp_path / "out")  # a valid TrialMetrics, not an ad-hoc dict
    assert failed.status == "failed" and "Traceback" in failed.traceback and failed.history == []
    assert failed.final.val_loss is None and failed.spec.model_dump(mode="json") == m["spec"]  # typed, as written


def test_cli_divergence_is_a_result(base, cache_dir, tmp_path):
    spec = _merge(base, dict(divergence_loss=0.5))
    res = _cli(_write_spec(tmp_path / "s.json", spec), tmp_path / "out", cache_dir)
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["status"] == "diverged" and m["reason"]


# ---------------------------------------------------------------- 4. precision


@pytest.mark.parametrize("capability,name,dtype,scaler", [
    ((7, 5), "fp16", torch.float16, True),
    ((8, 0), "bf16", torch.bfloat16, False),
    ((9, 0), "bf16", torch.bfloat16, False),
])
def test_resolve_precision_by_compute_capability(monkeypatch, capability, name, dtype, scaler):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    p = resolve_precision("auto", torch.device("cuda"))
    assert (p.name, p.autocast_dtype, p.use_scaler) == (name, dtype, scaler)
    assert resolve_precision("fp32", torch.device("cuda")).autocast_dtype is None


def test_resolve_precision_on_cpu():
    p = resolve_precision("auto", torch.device("cpu"))
    assert (p.name, p.autocast_dtype, p.use_scaler) == ("fp32", None, False)
    with pytest.raises(RuntimeError, match="bf16"):
        resolve_precision("bf16", torch.device("cpu"))


def test_tune_cpu_allocator_is_idempotent_and_applies_on_glibc():
    first = tune_cpu_allocator()
    assert tune_cpu_allocator() is first
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert first is True
