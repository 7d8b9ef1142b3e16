"""Which optimizer group each trainable parameter joins: one rule, used by optim, models, diagnostics.

Groups, each in named_parameters() order:
    muon            hidden matrices: 2D/3D attention, MLP and expert weights (the router too when
                    router_optimizer is "muon"); only when the optimizer is "muon"
    adamw_decay     every other matrix: the embedding (tied head), the router, and, with the AdamW
                    optimizer, all hidden matrices
    adamw_no_decay  norm gains and any other vector (never decayed)

The AdamW leg (`in_adamw_leg`): what AdamW trains in every arm, whichever optimizer the hidden
matrices get (the embedding and tied head, norm gains and other vectors, the router unless it goes
to Muon). It takes `adamw_lr` in both arms; in the AdamW arm the hidden matrices keep `lr`.
"""

from __future__ import annotations

from collections import Counter

from torch import nn

GROUPS = ("muon", "adamw_decay", "adamw_no_decay")
Named = list[tuple[str, nn.Parameter]]


def param_group(name: str) -> str:
    """embedding | norm | router | experts | attention | mlp, from a parameter's name."""
    if "tok_embeddings" in name:
        return "embedding"
    if "norm" in name:
        return "norm"
    if "router" in name:
        return "router"
    if "w_up" in name or "w_down" in name:
        return "experts"
    if ".attn." in name:
        return "attention"
    return "mlp"


def muon_eligible(name: str, p: nn.Parameter, router_to_muon: bool = False) -> bool:
    """A 2D/3D weight that is not the embedding or a norm gain; the router only on request."""
    kind = param_group(name)
    if p.ndim not in (2, 3) or kind in ("embedding", "norm"):
        return False
    return router_to_muon if kind == "router" else True


def decays(name: str, p: nn.Parameter) -> bool:
    """Weight decay applies to matrices, never to norm gains or other vectors."""
    return p.ndim >= 2 and param_group(name) != "norm"


def group_of(name: str, p: nn.Parameter, optimizer: str = "muon", router_optimizer: str = "adamw") -> str:
    """The one group (of GROUPS) that parameter `name` joins under a spec's optimizer choices."""
    if optimizer == "muon" and muon_eligible(name, p, router_optimizer == "muon"):
        return "muon"
    return "adamw_decay" if decays(name, p) else "adamw_no_decay"


def in_adamw_leg(name: str, p: nn.Parameter, router_optimizer: str = "adamw") -> bool:
    """Trained by AdamW in every arm: not a matrix the Muon arm gives to Muon."""
    return group_of(name, p, "muon", router_optimizer) != "muon"


def classify(model: nn.Module, optimizer: str = "muon", router_optimizer: str = "adamw") -> dict[str, Named]:
    """{group: [(name, parameter), ...]} for every trainable parameter, in model order."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups: dict[str, Named] = {g: [] for g in GROUPS}
    for n, p in named:
        groups[group_of(n, p, optimizer, router_optimizer)].append((n, p))
    check_partition(model, groups)
    return groups


def check_partition(model: nn.Module, groups: dict[str, Named]) -> None:
    """Raise ValueError unless every trainable parameter sits in exactly one group."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    placed = Counter(n for members in groups.values() for n, _ in members)
    twice = sorted(n for n, times in placed.items() if times > 1)
    missing = sorted(trainable - set(placed))
    extra = sorted(set(placed) - trainable)
    if twice or missing or extra:
        raise ValueError(f"parameter groups are not a partition: in two groups {twice}, "
                         f"in none {missing}, not trainable {extra}")


def hidden_matrices(model: nn.Module) -> Named:
    """Muon-eligible hidden weights (router excluded): 2D/3D attention, MLP and expert weights."""
    return classify(model, "muon", "adamw")["muon"]
