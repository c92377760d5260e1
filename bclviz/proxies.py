"""Cheap proxies of a pseudo-old space, computed without training.

The perturbation explorer shows them live while a slider moves:

- :func:`crowding` -- mean over classes of the largest cosine to another class.
- :func:`drift` -- mean angle (radians) between pseudo-old and old prototypes.
- :func:`recognisability` -- top-1 accuracy of classifying old-model features by their
  nearest (pseudo-old) prototype: whether the old gallery stays recognisable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import as_features, as_labels
from .neighbors import class_neighbors

__all__ = ["crowding", "drift", "recognisability"]


def crowding(protos) -> float:
    """Mean over classes of ``max_{j != c} <p_c, p_j>`` for normalised rows (C >= 2)."""
    p = F.normalize(as_features(protos, "protos", min_rows=2), dim=1)
    nbr = class_neighbors(p, 1)[:, 0]
    return float((p * p[nbr]).sum(1).mean())


def drift(pseudo_old_protos, old_protos) -> float:
    """Mean angle in radians between matching rows of the two prototype sets."""
    q = F.normalize(as_features(pseudo_old_protos, "pseudo_old_protos"), dim=1)
    p = F.normalize(as_features(old_protos, "old_protos", dim=q.shape[1]), dim=1)
    if p.shape[0] != q.shape[0]:
        raise ValueError(f"prototype sets differ in size: {q.shape[0]} vs {p.shape[0]}")
    return float(torch.arccos((q * p).sum(1).clamp(-1.0, 1.0)).mean())


def recognisability(features, labels, protos, *, block: int = 8192) -> float:
    """Fraction of features whose nearest prototype (by cosine) is their own class.

    ``features`` (n, d) are old-model features (e.g. of the gallery), ``labels`` (n,)
    index the rows of ``protos`` (C, d).
    """
    p = F.normalize(as_features(protos, "protos"), dim=1)
    f = F.normalize(as_features(features, "features", dim=p.shape[1]), dim=1).to(p.dtype)
    y = as_labels(labels, "labels", n=f.shape[0], num_classes=p.shape[0])
    hits = 0
    for s in range(0, f.shape[0], block):
        hits += int(((f[s : s + block] @ p.T).argmax(1) == y[s : s + block]).sum())
    return hits / f.shape[0]
