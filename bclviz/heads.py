"""Cosine-margin classifier heads (CosFace / ArcFace)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .losses import HeadKind, margin_cross_entropy

__all__ = ["MarginHead"]


class MarginHead(nn.Module):
    """Cosine classifier with a margin on the target class.

    ``weight`` (C, d) holds one learnable row per class; cosines use its normalised
    rows. ``forward(f, y)`` returns the margin cross-entropy of normalised features.
    The weights are drawn from ``generator`` so that seeding is explicit.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        *,
        kind: HeadKind = "cosface",
        scale: float = 30.0,
        margin: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.kind, self.scale, self.margin = kind, scale, margin
        self.weight = nn.Parameter(torch.randn(num_classes, dim, generator=generator) / dim**0.5)

    def cosines(self, f: torch.Tensor) -> torch.Tensor:
        return f @ F.normalize(self.weight, dim=1).T

    def forward(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return margin_cross_entropy(self.cosines(f), y, scale=self.scale, margin=self.margin, kind=self.kind)
