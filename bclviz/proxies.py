"""Cheap proxies of a pseudo-old space, computed without training.

The perturbation explorer shows them live while a slider moves:

- :func:`crowding` -- mean over classes of the largest cosine to another class.
- :func:`drift` -- mean angle (radians) between pseudo-old and old prototypes.
- :func:`recognisability` -- top-1 accuracy of classifying old-model features by their
  nearest (pseudo-old) prototype: whether the old gallery stays recognisable.
- :func:`headroom` -- mean excess crowding ``max(0, S_o - S_n)`` over each class's old-space
  neighbours (NDPP's own weight): how much old-space crowding a new model undoes, i.e.
  whether a perturbation has anything to win, measurable before any NDPP/ODPP run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import as_features, as_labels
from .neighbors import class_neighbors
from .perturb import NeighborSearch, check_prototypes, old_neighbors

__all__ = ["crowding", "drift", "recognisability", "headroom", "format_headroom"]

#: classes per block in :func:`headroom`: (block, k, d) temporaries, never (C, C)
_BLOCK = 1024


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


def headroom(old_protos, new_protos, *, k: int = 5, search: NeighborSearch = "exact") -> float:
    """Mean excess crowding of the old space over the new one, on old-space neighbours.

    ``headroom = (1 / (C k)) sum_c sum_{j in N_k(c)} max(0, S_o[c, j] - S_n[c, j])``,
    with ``S = P P^T`` the cosine similarities of the L2-normalised prototypes and
    ``N_k(c)`` the ``k`` classes most similar to ``c`` in the OLD space (``c``
    excluded). The summand is NDPP's weight ``w[c, j]`` (``docs/method.md``): how much
    closer a pair sits in the old space than the new model places it. 0 means the new
    model separates no old-space neighbours more than the old model does (a
    perturbation has nothing to relax); the upper bound is 2. Definition and reading
    in ``docs/metrics.md``.

    Parameters
    ----------
    old_protos, new_protos : (C, d) prototypes ``P_o`` and ``P_n`` (rows need not be
        normalised; no zero rows), one row per class in the same order, C >= 2.
    k : int, default 5 (NDPP's default)
        Old-space neighbours per class, ``1 <= k < C``.
    search : {"exact", "ivf"}, default "exact"
        Old-neighbour search, as in :func:`bclviz.perturb.old_neighbors`.

    Returns
    -------
    float in ``[0, 2]``. Memory is O(block * k * d), never O(C^2).
    """
    p_o, p_n = check_prototypes(old_protos, new_protos, k=k)
    nbr = old_neighbors(p_o, k, search=search)
    total = 0.0
    for s in range(0, p_o.shape[0], _BLOCK):
        idx = nbr[s : s + _BLOCK]
        s_o = (p_o[s : s + _BLOCK].unsqueeze(1) * p_o[idx]).sum(-1)
        s_n = (p_n[s : s + _BLOCK].unsqueeze(1) * p_n[idx]).sum(-1)
        total += float((s_o - s_n).clamp_min(0).double().sum())
    return total / nbr.numel()


def format_headroom(record: dict | None) -> str:
    """One-line text of a headroom record (``results["headroom"]``: ``value``, ``k``,
    ``crowding_old``, ``crowding_new``), e.g. ``"0.041 (k = 5; crowding old 0.612, new 0.401)"``."""
    if not record or record.get("value") is None:
        return f"n/a ({(record or {}).get('reason', 'not computed')})"
    text = f"{record['value']:.3f} (k = {record['k']}"
    if "crowding_old" in record and "crowding_new" in record:
        text += f"; crowding old {record['crowding_old']:.3f}, new {record['crowding_new']:.3f}"
    return text + ")"
