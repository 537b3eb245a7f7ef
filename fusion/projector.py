"""Projectors from encoder tokens (B, n, d) to the LLM's hidden size (B, n, hidden)."""

from __future__ import annotations

import torch
from torch import nn

PROJECTORS = ("meit", "linear", "mlp")


class TokenBatchNorm(nn.Module):
    """BatchNorm1d over the feature axis of (B, n, d) tokens (tokens of all samples are one batch)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.reshape(-1, x.shape[-1])).view_as(x)


class Projector(nn.Module):
    """Maps encoder tokens to the LLM's hidden size.

    Kinds:
        "meit": Linear-BN-ReLU-Linear-BN to the head dimension, L2-normalised, tiled over the heads (MEIT).
        "linear": one Linear to the hidden size.
        "mlp": Linear-GELU-Linear to the hidden size (LLaVA-1.5).

    Args:
        kind: one of `PROJECTORS`.
        in_dim: encoder output width.
        hidden_size: LLM hidden size.
        head_dim: LLM per-head width ("meit" projects to it and tiles `hidden_size // head_dim` times).
        mid_dim: width of the intermediate layer ("meit", "mlp"; default `hidden_size`).
        normalize: L2-normalise the output (default: True for "meit", False otherwise).
        eps: added to the norm, so that an all-zero embedding (the no-ECG baseline) stays finite.
    """

    def __init__(
        self,
        kind: str,
        in_dim: int,
        hidden_size: int,
        head_dim: int | None = None,
        mid_dim: int | None = None,
        normalize: bool | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if kind not in PROJECTORS:
            raise ValueError(f"unknown projector: {kind}; choose from {', '.join(PROJECTORS)}")
        mid = mid_dim or hidden_size
        self.kind, self.eps = kind, eps
        self.normalize = kind == "meit" if normalize is None else normalize
        if kind == "meit":
            head_dim = head_dim or hidden_size
            if hidden_size % head_dim:
                raise ValueError(f"hidden size {hidden_size} is not a multiple of head_dim {head_dim}")
            self.repeats = hidden_size // head_dim
            self.net = nn.Sequential(
                nn.Linear(in_dim, mid),
                TokenBatchNorm(mid),
                nn.ReLU(),
                nn.Linear(mid, head_dim),
                TokenBatchNorm(head_dim),
            )
        else:
            self.repeats = 1
            layers = [nn.Linear(in_dim, hidden_size)]
            if kind == "mlp":
                layers = [nn.Linear(in_dim, mid), nn.GELU(), nn.Linear(mid, hidden_size)]
            self.net = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n, in_dim) -> (B, n, hidden_size)."""
        x = self.net(tokens)
        if self.normalize:
            x = x / (x.norm(dim=-1, keepdim=True) + self.eps)
        return x.repeat(1, 1, self.repeats) if self.repeats > 1 else x
