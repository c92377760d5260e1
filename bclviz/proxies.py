"""Cheap proxies of a pseudo-old space, computed without training.

The perturbation explorer shows them live while a slider moves:

- :func:`crowding` -- mean over classes of the largest cosine to another class.
- :func:`drift` -- mean angle (radians) between pseudo-old and old prototypes.
- :func:`recognisability` -- top-1 accuracy of classifying old-model features by their
  nearest (pseudo-old) prototype: whether the old gallery stays recognisable.
- :func:`headroom` -- mean excess crowding ``max(0, S_o - S_n)`` over each class's old-space
  neighbours (NDPP's own weight): how much old-space crowding a new model undoes, i.e.
  whether a perturbation has anything to win, measurable before any NDPP/ODPP run.

:class:`LiveProxies` serves a slider: what depends only on ``P_o``, ``P_n`` and the
features (old-space neighbour lists, old crowding, headroom per ``k``, NDPP's direction) is
computed once, and above :data:`EXACT_CLASSES` classes the proxies of a moving prototype
set are estimated on fixed samples of classes and features over candidate lists from
the old space, so that an update costs O(m K d) for samples of m, never O(C^2 d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import as_features, as_labels, check_positive_int
from .neighbors import class_neighbors
from .perturb import NeighborSearch, _neighbor_lists, check_prototypes, ndpp_direction, old_neighbors

__all__ = ["crowding", "drift", "recognisability", "headroom", "format_headroom", "LiveProxies",
           "EXACT_CLASSES", "CANDIDATES", "SAMPLE_CLASSES", "SAMPLE_FEATURES"]

#: :class:`LiveProxies` above :data:`EXACT_CLASSES`: the classes and the features its
#: crowding and recognisability estimates are taken over (fixed random samples)
SAMPLE_CLASSES = 2000
SAMPLE_FEATURES = 4096
#: classes per block in :func:`headroom`: (block, k, d) temporaries, never (C, C)
_BLOCK = 1024
#: :class:`LiveProxies` computes the proxies of a moving prototype set exactly up to this
#: many classes, over candidate lists above (an exact kNN search of 10,000 classes takes
#: seconds; a slider needs tens of milliseconds)
EXACT_CLASSES = 2000
#: candidate lists of :class:`LiveProxies` above :data:`EXACT_CLASSES`: the old-space nearest
#: classes of each class, and the nearest old prototypes of each feature
CANDIDATES = 16


def _check_candidates(candidates, rows: int, num_classes: int, what: str) -> torch.Tensor:
    if (not isinstance(candidates, torch.Tensor) or candidates.dtype != torch.int64 or candidates.ndim != 2
            or candidates.shape[0] != rows):
        got = tuple(candidates.shape) if isinstance(candidates, torch.Tensor) else type(candidates).__name__
        raise ValueError(f"candidates must be an int64 tensor of shape ({what}={rows}, K), got {got}")
    if candidates.numel() and (int(candidates.min()) < 0 or int(candidates.max()) >= num_classes):
        raise ValueError(f"candidates must index the {num_classes} prototype rows")
    return candidates


def crowding(protos, *, neighbors: torch.Tensor | None = None, candidates: torch.Tensor | None = None) -> float:
    """Mean over classes of ``max_{j != c} <p_c, p_j>`` for normalised rows (C >= 2).

    ``neighbors`` (C, >= 1) int64, optional: nearest-class lists of these ``protos``
    already searched (:func:`bclviz.perturb.old_neighbors`, exact search); their first
    column is used instead of a new search (the same number).

    ``candidates`` (C, K) int64, optional: take the max over ``j`` in ``candidates[c]``
    only (e.g. the old-space neighbour lists, :func:`bclviz.perturb.old_neighbors`, of
    prototypes that moved a little), O(C K d) instead of a kNN search. A lower bound of
    the exact value, equal to it when each class's nearest class is among its candidates.
    """
    p = F.normalize(as_features(protos, "protos", min_rows=2), dim=1)
    if candidates is None:
        nbr = class_neighbors(p, 1)[:, 0] if neighbors is None else _neighbor_lists(p, 1, neighbors)[:, 0]
        return float((p * p[nbr]).sum(1).mean())
    idx = _check_candidates(candidates, p.shape[0], p.shape[0], "C")
    return _candidate_crowding(p, torch.arange(p.shape[0]), idx)


def _candidate_crowding(p: torch.Tensor, classes: torch.Tensor, idx: torch.Tensor) -> float:
    """Mean over ``classes`` (m,) of the largest cosine to their candidates ``idx`` (m, K),
    the class itself excluded; ``p`` normalised (C, d)."""
    best = torch.empty(classes.shape[0], dtype=p.dtype)
    for s in range(0, classes.shape[0], _BLOCK):
        rows, cls = idx[s : s + _BLOCK], classes[s : s + _BLOCK]
        sims = torch.bmm(p.index_select(0, rows.reshape(-1)).view(*rows.shape, -1),
                         p.index_select(0, cls).unsqueeze(2)).squeeze(2)
        best[s : s + _BLOCK] = sims.masked_fill(rows == cls.unsqueeze(1), -torch.inf).amax(1)
    return float(best.mean())


def drift(pseudo_old_protos, old_protos) -> float:
    """Mean angle in radians between matching rows of the two prototype sets."""
    q = F.normalize(as_features(pseudo_old_protos, "pseudo_old_protos"), dim=1)
    p = F.normalize(as_features(old_protos, "old_protos", dim=q.shape[1]), dim=1)
    if p.shape[0] != q.shape[0]:
        raise ValueError(f"prototype sets differ in size: {q.shape[0]} vs {p.shape[0]}")
    return float(torch.arccos((q * p).sum(1).clamp(-1.0, 1.0)).mean())


def recognisability(features, labels, protos, *, block: int = 8192,
                     candidates: torch.Tensor | None = None) -> float:
    """Fraction of features whose nearest prototype (by cosine) is their own class.

    ``features`` (n, d) are old-model features (e.g. of the gallery), ``labels`` (n,)
    index the rows of ``protos`` (C, d). ``candidates`` (n, K) int64, optional: compare
    each feature with its own class and ``candidates[i]`` only (e.g. its nearest old
    prototypes, for prototypes that moved a little), O(n K d) instead of O(n C d); an
    upper bound of the exact value, equal to it when every prototype that beats the own
    class is among the candidates.
    """
    p = F.normalize(as_features(protos, "protos"), dim=1)
    f = F.normalize(as_features(features, "features", dim=p.shape[1]), dim=1).to(p.dtype)
    y = as_labels(labels, "labels", n=f.shape[0], num_classes=p.shape[0])
    if candidates is not None:
        idx = _check_candidates(candidates, f.shape[0], p.shape[0], "n")
        own = (f * p[y]).sum(1)
        other = torch.bmm(p.index_select(0, idx.reshape(-1)).view(*idx.shape, -1), f.unsqueeze(2)).squeeze(2)
        other = other.masked_fill(idx == y.unsqueeze(1), -torch.inf)
        # argmax picks the first of tied rows: a tie with a lower class index is a miss
        lost = (other > own.unsqueeze(1)) | ((other == own.unsqueeze(1)) & (idx < y.unsqueeze(1)))
        return float((~lost.any(1)).sum()) / f.shape[0]
    hits = 0
    for s in range(0, f.shape[0], block):
        hits += int(((f[s : s + block] @ p.T).argmax(1) == y[s : s + block]).sum())
    return hits / f.shape[0]


def headroom(old_protos, new_protos, *, k: int = 5, search: NeighborSearch = "exact",
             neighbors: torch.Tensor | None = None) -> float:
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
    neighbors : (C, >= k) int64, optional
        Old-space neighbour lists already searched (:func:`bclviz.perturb.old_neighbors`
        with ``search``); their first ``k`` columns are used instead of a new search.

    Returns
    -------
    float in ``[0, 2]``. Memory is O(block * k * d), never O(C^2).
    """
    p_o, p_n = check_prototypes(old_protos, new_protos, k=k)
    nbr = old_neighbors(p_o, k, search=search) if neighbors is None else _neighbor_lists(p_o, k, neighbors)
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


class LiveProxies:
    """The explorer's proxies for one ``P_o``, ``P_n`` and feature set, as a slider moves.

    What depends only on the fixed inputs is computed once and kept: the old-space
    neighbour lists per search mode (at least :data:`CANDIDATES` wide; also handed to
    the perturbation, :func:`bclviz.explorer_state`), the old crowding, the headroom
    per ``k`` and NDPP's step per unit of eps (:meth:`ndpp_direction`). The proxies of a
    moving (pseudo-old) prototype set ``q`` are exact up to ``exact_classes`` classes.
    Above, they are estimated so that an update costs O(m K d) with m fixed, never a
    C x C or n x C product:

    - crowding: the mean over a fixed random sample of ``sample_classes`` classes of
      each one's max cosine over its ``candidates`` old-space nearest classes;
    - recognisability: a fixed random sample of ``sample_features`` features, each
      compared with its own class and its ``candidates`` nearest old prototypes
      (searched once).

    ``q`` stays close to ``P_o`` (``||delta|| <= eps``), so the candidates hold the
    answer except for moves large enough to bring a far class nearest; the samples add
    a standard error of at most ``0.5 / sqrt(m)`` to recognisability (a fraction).
    ``bench/inspect_scale.py`` measures the difference to the exact values at 10,000
    classes.

    Parameters
    ----------
    old_protos, new_protos : (C, d) prototypes, C >= 2.
    features, labels : optional old-model features (n, d) and their classes (n,) for
        :func:`recognisability`.
    exact_classes : int, default :data:`EXACT_CLASSES`
    candidates : int, default :data:`CANDIDATES` (capped at C - 1)
    sample_classes, sample_features : int, defaults :data:`SAMPLE_CLASSES`,
        :data:`SAMPLE_FEATURES` (every class / feature when there are fewer)
    seed : int, default 0, of the two samples

    Attributes
    ----------
    exact : bool
        Whether the proxies of ``q`` are exact (C <= exact_classes).
    """

    def __init__(self, old_protos, new_protos, features=None, labels=None, *,
                 exact_classes: int = EXACT_CLASSES, candidates: int = CANDIDATES,
                 sample_classes: int = SAMPLE_CLASSES, sample_features: int = SAMPLE_FEATURES,
                 seed: int = 0) -> None:
        p_o, _ = check_prototypes(old_protos, new_protos, k=1)  # validation; the functions normalise
        self.old_protos, self.new_protos = torch.as_tensor(old_protos), torch.as_tensor(new_protos)
        num_classes = p_o.shape[0]
        self.exact = num_classes <= exact_classes
        self.width = min(check_positive_int(candidates, "candidates"), num_classes - 1)
        self.features, self.labels = features, labels
        gen = torch.Generator().manual_seed(int(seed))
        m = min(check_positive_int(sample_classes, "sample_classes"), num_classes)
        self.class_sample = torch.randperm(num_classes, generator=gen)[:m].sort().values
        self.feature_sample: torch.Tensor | None = None
        if features is not None:
            n = len(features)
            m = min(check_positive_int(sample_features, "sample_features"), n)
            self.feature_sample = torch.randperm(n, generator=gen)[:m].sort().values
        self._neighbors: dict[str, torch.Tensor] = {}
        self._headroom: dict[tuple[int, str], float] = {}
        self._directions: dict[tuple[int, str, str], torch.Tensor] = {}
        self._crowding_old: float | None = None
        self._sampled_features: tuple | None = None

    def neighbors(self, k: int, search: NeighborSearch = "exact") -> torch.Tensor:
        """Old-space neighbour lists (C, >= k) of ``search``, searched once per mode (wider when k grows)."""
        nbr = self._neighbors.get(search)
        if nbr is None or nbr.shape[1] < k:
            nbr = old_neighbors(self.old_protos, max(k, self.width), search=search)
            self._neighbors[search] = nbr
        return nbr

    def ndpp_direction(self, k: int, eps_mode: str = "absolute", search: NeighborSearch = "exact") -> torch.Tensor:
        """:func:`bclviz.perturb.ndpp_direction` over the cached neighbour lists, once per
        ``(k, eps_mode, search)``: NDPP at any eps is then ``eps`` times it, the very
        number :func:`bclviz.ndpp` computes."""
        key = (int(k), eps_mode, search)
        if key not in self._directions:
            self._directions[key] = ndpp_direction(self.old_protos, self.new_protos, k=k, eps_mode=eps_mode,
                                                   neighbors=self.neighbors(k, search))
        return self._directions[key]

    def crowding_old(self) -> float:
        """:func:`crowding` of ``P_o`` (exact), computed once."""
        if self._crowding_old is None:
            exact = self._neighbors.get("exact")
            self._crowding_old = crowding(self.old_protos, neighbors=exact)
        return self._crowding_old

    def headroom(self, k: int, search: NeighborSearch = "exact") -> float:
        """:func:`headroom` of ``P_o``, ``P_n`` over the cached neighbour lists, once per ``(k, search)``."""
        key = (int(k), search)
        if key not in self._headroom:
            self._headroom[key] = headroom(self.old_protos, self.new_protos, k=k, search=search,
                                           neighbors=self.neighbors(k, search))
        return self._headroom[key]

    def crowding(self, protos) -> float:
        """:func:`crowding` of a moved prototype set (C, d): exact, or over the class sample and candidates."""
        if self.exact:
            return crowding(protos)
        p = F.normalize(as_features(protos, "protos", dim=self.old_protos.shape[1]), dim=1)
        if p.shape[0] != self.old_protos.shape[0]:
            raise ValueError(f"protos has {p.shape[0]} rows, expected {self.old_protos.shape[0]}")
        cls = self.class_sample
        return _candidate_crowding(p, cls, self.neighbors(self.width, "exact").index_select(0, cls)[:, : self.width])

    def recognisability(self, protos) -> float:
        """:func:`recognisability` of the features against ``protos`` (C, d): exact, or over
        the feature sample and candidates."""
        if self.features is None:
            raise ValueError("recognisability needs features and labels; pass them to LiveProxies")
        if self.exact:
            return recognisability(self.features, self.labels, protos)
        if self._sampled_features is None:
            (p_o,) = check_prototypes(self.old_protos)
            rows = self.feature_sample
            f = F.normalize(as_features(torch.as_tensor(self.features)[rows], "features", dim=p_o.shape[1]), dim=1)
            f = f.to(p_o.dtype)
            y = torch.as_tensor(self.labels)[rows]
            near = torch.cat([(f[s : s + _BLOCK] @ p_o.T).topk(self.width, dim=1).indices
                              for s in range(0, f.shape[0], _BLOCK)])  # (block, C) similarities at a time
            self._sampled_features = (f, y, near)
        f, y, near = self._sampled_features
        return recognisability(f, y, protos, candidates=near)
