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
    "lce_boundaries",
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
    *,
    align_weight: float = 1.0,
) -> torch.Tensor:
    """LCE-style loss: boundary hinge plus weighted classifier alignment.

    ``mean_i max(0, theta[y_i] - cos(f_i, p_o[y_i])) + align_weight * mean_i (1 - cos(w_n[y_i], p_o[y_i]))``
    where ``theta`` (C,) is each class's old-space boundary (a cosine, see
    :func:`lce_boundaries`).
    """
    p = old_protos.detach()[y]
    hinge = (theta.detach()[y] - (f_new * p).sum(1)).clamp_min(0)
    align = 1 - F.cosine_similarity(new_weights[y], p, dim=1)
    return hinge.mean() + align_weight * align.mean()


BoundaryRule = Literal["min", "mean"]


def lce_boundaries(
    cos: torch.Tensor, labels: torch.Tensor, num_classes: int, *, rule: BoundaryRule = "min", outliers: float = 0.05
) -> torch.Tensor:
    """LCE's per-class boundaries ``theta`` (C,) from old-model cosines.

    Parameters
    ----------
    cos : (n,) cosine of each training sample's old feature to its class's old prototype.
    labels : (n,) int64 class ids in ``[0, num_classes)``.
    num_classes : C.
    rule : ``"min"``: the smallest cosine of the class after dropping its
        ``floor(outliers * n_c)`` lowest ones, i.e. the largest angle to the old class
        centre among the class's inliers (LCE takes the plain minimum, AdvBCT drops
        outliers first); ``"mean"``: the class's mean cosine (bclviz's earlier choice).
    outliers : fraction in ``[0, 1)`` of each class's lowest cosines dropped by ``"min"``.

    Classes without samples get ``-1`` (a boundary no feature violates).
    """
    if rule not in ("min", "mean"):
        raise ValueError(f"rule must be 'min' or 'mean', got {rule!r}")
    if isinstance(outliers, bool) or not isinstance(outliers, (int, float)) or not 0 <= outliers < 1:
        raise ValueError(f"outliers must be a fraction in [0, 1), got {outliers!r}")
    if cos.ndim != 1 or labels.shape != cos.shape:
        raise ValueError(f"cos and labels must be 1-D of the same length, got {tuple(cos.shape)} and {tuple(labels.shape)}")
    counts = torch.bincount(labels, minlength=num_classes)
    theta = torch.full((num_classes,), -1.0, dtype=cos.dtype, device=cos.device)
    present = counts > 0
    if rule == "mean":
        sums = torch.zeros(num_classes, dtype=cos.dtype, device=cos.device).index_add_(0, labels, cos)
        theta[present] = sums[present] / counts[present].to(cos.dtype)
        return theta
    # sort by cosine, then (stably) by class: each class's cosines ascending, classes in order
    order = torch.argsort(cos, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]
    start = torch.cumsum(counts, 0) - counts
    drop = torch.floor(outliers * counts.to(torch.float64)).to(torch.int64)
    theta[present] = cos[order][(start + drop)[present]]
    return theta


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
    logits = torch.cat([pos, f_new @ f_old.T, f_new @ f_new.T], dim=1) / tau
    keep = torch.cat([torch.ones_like(other[:, :1]), other, other], dim=1)
    # log-sum-exp over the kept entries without exponentiating -inf or values far below
    # the row maximum: both take a slow path in the CPU exp kernel (7x and up to 60x at
    # tau = 0.01), and terms below e^-80 of the largest change nothing in float32
    top = logits.detach().masked_fill(~keep, float("-inf")).amax(dim=1, keepdim=True)
    shifted = logits - top
    shifted = shifted.masked_fill(~keep | (shifted.detach() < -80.0), -80.0)  # e^-80: nothing in float32
    lse = top.squeeze(1) + torch.log(torch.exp(shifted).sum(dim=1))
    return (lse - logits[:, 0]).mean()
