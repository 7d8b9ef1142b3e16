"""Seed 003's optional measurements: update RMS per parameter group and SVD entropy of weights.

SVD entropy is the Shannon entropy of the normalised singular values, divided by log(rank):
1.0 means all directions carry equal weight (what orthogonalised updates push towards), 0 means
one direction dominates.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.params import hidden_matrices


def svd_entropy(matrix: torch.Tensor) -> float:
    s = torch.linalg.svdvals(matrix.detach().float())
    p = s / s.sum().clamp_min(1e-12)
    h = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return float(h / torch.log(torch.tensor(float(len(s))))) if len(s) > 1 else 0.0


def entropy_matrices(model: nn.Module, limit: int) -> list[tuple[str, torch.Tensor]]:
    """The first `limit` hidden matrices (params.hidden_matrices; an expert stack gives expert 0)."""
    return [(name, p) if p.ndim == 2 else (f"{name}[0]", p[0]) for name, p in hidden_matrices(model)[:limit]]


class UpdateRMS:
    """RMS of the parameter change made by one optimizer step, per named group."""

    def __init__(self, model: nn.Module, groups: dict[str, list[str]]):
        params = dict(model.named_parameters())
        self.groups = {g: [params[n] for n in names] for g, names in groups.items() if names}
        self._before: dict[str, list[torch.Tensor]] = {}

    def snapshot(self) -> None:
        self._before = {g: [p.detach().clone() for p in ps] for g, ps in self.groups.items()}

    def measure(self) -> dict[str, float]:
        out = {}
        for g, ps in self.groups.items():
            sq = sum(float((p.detach().float() - b.float()).pow(2).sum()) for p, b in zip(ps, self._before[g]))
            n = sum(p.numel() for p in ps)
            out[g] = (sq / n) ** 0.5
        self._before = {}
        return out
