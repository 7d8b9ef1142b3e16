"""Which parameter goes to which optimizer, with which hyperparameters.

Hybrid Muon: hidden matrices (attention, MLP, 3D expert stacks) get Muon; the embedding (tied
to the head), norm gains and biases get AdamW. The router is a spec choice. Which parameter goes
where is decided in trainer/params.py only. The AdamW leg (params.in_adamw_leg) takes
`spec.leg_lr` in both arms; the hidden matrices take `spec.lr` (Muon's, or AdamW's in the AdamW
arm). Every torch param group is named (`name`), and `describe()` lists them for metrics.json.
Weight decay reaches Muon's matrices too (seed bug 4),
and AdamW's betas come from the spec (seed bug 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.muon import Muon
from trainer.params import classify, in_adamw_leg
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

    def current_lr(self, *names: str) -> float | None:
        """The current LR of the first of the named groups that exists (None when none does)."""
        by_name = {g["name"]: g["lr"] for g in self.param_groups()}
        return next((by_name[n] for n in names if n in by_name), None)

    def describe(self) -> list[dict]:
        """One entry per param group: name, optimizer, peak LR, weight decay, tensors, elements."""
        return [dict(name=g["name"], optimizer="muon" if opt is self.muon else "adamw", lr=g["peak_lr"],
                     weight_decay=g["weight_decay"], params=len(g["params"]),
                     numel=sum(p.numel() for p in g["params"]))
                for opt in self.optimizers for g in opt.param_groups]

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

    leg_lr = spec.leg_lr
    leg = [p for n, p in decay if in_adamw_leg(n, p, spec.router_optimizer)]
    hidden = [p for n, p in decay if not in_adamw_leg(n, p, spec.router_optimizer)]  # AdamW arm only
    adam_groups = [
        dict(name="adamw_hidden", params=hidden, weight_decay=spec.weight_decay, peak_lr=spec.lr, lr=spec.lr),
        dict(name="adamw_leg", params=leg, weight_decay=spec.weight_decay, peak_lr=leg_lr, lr=leg_lr),
        dict(name="adamw_leg_no_decay", params=[p for _, p in no_decay], weight_decay=0.0,
             peak_lr=leg_lr, lr=leg_lr),
    ]
    adam_groups = [g for g in adam_groups if g["params"]]
    adamw = None
    if adam_groups:
        adamw = torch.optim.AdamW(adam_groups, betas=spec.adamw_betas, eps=spec.adamw_eps,
                                  fused=False, foreach=True)
    muon = None
    if muon_params:
        muon = Muon(
            [dict(name="muon", params=[p for _, p in muon_params], peak_lr=spec.lr)],
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
