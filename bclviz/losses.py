"""Classification and compatibility losses as pure functions of tensors.

Shapes: a batch of ``B`` samples, ``d`` dimensions, ``C`` classes. Features are
L2-normalised by the caller (model outputs are). Every loss returns a scalar mean over
the batch; ``tests/test_losses.py`` rebuilds each with a per-sample loop.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "margin_logits",
    "margin_cross_entropy",
    "prototype_alignment_loss",
    "influence_loss",
    "l2_loss",
    "lce_loss",
    "hot_refresh_loss",
]

HeadKind = Literal["cosface", "arcface"]


def margin_logits(
    cos: torch.Tensor, y: torch.Tensor, *, scale: float, margin: float, kind: HeadKind = "cosface"
) -> torch.Tensor:
    """Scaled margin logits from cosines (B, C).

    CosFace: ``s * (cos - m * onehot(y))``. ArcFace: ``s * cos(theta + m * onehot(y))``
    with ``theta = arccos(cos)``, computed on the target column only.
    """
    target = cos.gather(1, y.unsqueeze(1))
    if kind == "cosface":
        adjusted = target - margin
    elif kind == "arcface":
        adjusted = torch.cos(torch.arccos(target.clamp(-1 + 1e-7, 1 - 1e-7)) + margin)
    else:
        raise ValueError(f"kind must be 'cosface' or 'arcface', got {kind!r}")
    return scale * cos.scatter(1, y.unsqueeze(1), adjusted)


def margin_cross_entropy(
    cos: torch.Tensor, y: torch.Tensor, *, scale: float, margin: float, kind: HeadKind = "cosface"
) -> torch.Tensor:
    """Cross-entropy of :func:`margin_logits`."""
    return F.cross_entropy(margin_logits(cos, y, scale=scale, margin=margin, kind=kind), y)


def prototype_alignment_loss(
    f_new: torch.Tensor, y: torch.Tensor, protos: torch.Tensor, *, scale: float, margin: float
) -> torch.Tensor:
    """``CE(s * (Q f - m onehot(y)), y)`` with (pseudo-)old prototypes Q (C, d) as constants."""
    return margin_cross_entropy(f_new @ protos.detach().T, y, scale=scale, margin=margin)


def influence_loss(
    f_new: torch.Tensor, y: torch.Tensor, old_weights: torch.Tensor, *, scale: float, margin: float
) -> torch.Tensor:
    """BCT influence loss: the frozen old classifier (rows normalised) applied to new features."""
    w = F.normalize(old_weights.detach(), dim=1)
    return margin_cross_entropy(f_new @ w.T, y, scale=scale, margin=margin)


def l2_loss(f_new: torch.Tensor, f_old: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``||f_n - f_o||^2`` (old features of the same inputs)."""
    return ((f_new - f_old.detach()) ** 2).sum(1).mean()


def lce_loss(
    f_new: torch.Tensor,
    y: torch.Tensor,
    new_weights: torch.Tensor,
    old_protos: torch.Tensor,
    theta: torch.Tensor,
) -> torch.Tensor:
    """LCE-style loss: boundary hinge plus classifier alignment.

    ``mean_i max(0, theta[y_i] - cos(f_i, p_o[y_i])) + mean_i (1 - cos(w_n[y_i], p_o[y_i]))``
    where ``theta`` (C,) is each class's old-space boundary (a cosine).
    """
    p = old_protos.detach()[y]
    hinge = (theta.detach()[y] - (f_new * p).sum(1)).clamp_min(0)
    align = 1 - F.cosine_similarity(new_weights[y], p, dim=1)
    return hinge.mean() + align.mean()


def hot_refresh_loss(
    f_new: torch.Tensor, f_old: torch.Tensor, y: torch.Tensor, *, tau: float = 0.01
) -> torch.Tensor:
    """InfoNCE with positive ``<f_n(x), f_o(x)>`` and other-class negatives.

    Negatives of sample i are the old and the new features of batch samples whose class
    differs from ``y_i``; same-class samples other than i's own old feature are ignored.
    """
    f_old = f_old.detach()
    pos = (f_new * f_old).sum(1, keepdim=True)
    other = y.unsqueeze(0) != y.unsqueeze(1)  # (B, B)
    neg_old = (f_new @ f_old.T).masked_fill(~other, float("-inf"))
    neg_new = (f_new @ f_new.T).masked_fill(~other, float("-inf"))
    logits = torch.cat([pos, neg_old, neg_new], dim=1) / tau
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
