"""Which parameter goes to which optimizer, with which hyperparameters.

Hybrid Muon: hidden matrices (attention, MLP, 3D expert stacks) get Muon; the embedding (tied
to the head), norm gains and biases get AdamW. The router is a spec choice. Which parameter goes
where is decided in trainer/params.py only. Weight decay reaches Muon's matrices too (seed bug 4),
and AdamW's betas come from the spec (seed bug 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.muon import Muon
from trainer.params import classify
from trainer.spec import TrialSpec


@dataclass
class Optimizers:
    """The optimizers of one trial; every group remembers its peak LR in `peak_lr`."""

    optimizers: list[torch.optim.Optimizer]
    muon: Muon | None
    adamw: torch.optim.AdamW | None
    groups: dict[str, list[str]]  # group name -> parameter names, recorded in metrics.json

    def param_groups(self):
        for opt in self.optimizers:
            yield from opt.param_groups

    def set_lr_multiplier(self, factor: float) -> None:
        for group in self.param_groups():
            group["lr"] = group["peak_lr"] * factor

    def set_momentum(self, momentum: float) -> None:
        if self.muon is not None:
            for group in self.muon.param_groups:
                group["momentum"] = momentum

    def step(self, scaler=None) -> None:
        for opt in self.optimizers:
            if scaler is not None:
                scaler.step(opt)
            else:
                opt.step()

    def zero_grad(self) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)


def build_optimizers(model: nn.Module, spec: TrialSpec) -> Optimizers:
    groups = classify(model, spec.optimizer, spec.router_optimizer)
    muon_params, decay, no_decay = groups["muon"], groups["adamw_decay"], groups["adamw_no_decay"]
    use_muon = spec.optimizer == "muon"

    adam_lr = spec.adamw_lr if use_muon else spec.lr
    adam_groups = [
        dict(params=[p for _, p in decay], weight_decay=spec.weight_decay, peak_lr=adam_lr, lr=adam_lr),
        dict(params=[p for _, p in no_decay], weight_decay=0.0, peak_lr=adam_lr, lr=adam_lr),
    ]
    adam_groups = [g for g in adam_groups if g["params"]]
    adamw = None
    if adam_groups:
        adamw = torch.optim.AdamW(adam_groups, betas=spec.adamw_betas, eps=spec.adamw_eps,
                                  fused=False, foreach=True)
    muon = None
    if muon_params:
        muon = Muon(
            [dict(params=[p for _, p in muon_params], peak_lr=spec.lr)],
            lr=spec.lr,
            momentum=spec.momentum,
            nesterov=spec.nesterov,
            ns_steps=spec.ns_steps,
            ns_variant=spec.ns_variant,
            update_scale=spec.update_scale,
            weight_decay=spec.weight_decay,
            block_size=spec.block_size,
        )
    names = {g: [n for n, _ in members] for g, members in groups.items()}
    return Optimizers([o for o in (muon, adamw) if o is not None], muon, adamw, names)
