"""What a candidate new model would change, from embeddings alone (``bclviz inspect``).

Pure computation on :class:`~bclviz.features.Embeddings` (old- and new-model embeddings of
the same labelled items), no training:

- :func:`prototypes`: class prototypes ``normalize(mean of L2-normalised rows)``, in row
  blocks, so a memory-mapped gallery of a million rows is never copied whole;
- :func:`crowded_pairs`: each class's nearest old-space neighbour and how close the new
  model places the same pair (where the old space is crowded, whether the new model
  separates it);
- :func:`retrieval`: the self/cross retrieval of the two embedding sets as they are,
  ``M(new, new)``, ``M(new, old)``, ``M(old, old)`` (:func:`bclviz.evaluation.cross_model_table`):
  the independent-model baseline;
- :func:`inspect_embeddings`: all of it plus crowding, headroom and the pseudo-old
  prototypes of one NDPP/ODPP setting (the method object training uses), as an
  :class:`Inspection`.

Definitions in ``docs/metrics.md`` ("Inspecting your own embeddings").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import methods
from ._validate import check_positive_int
from .config import MethodConfig
from .evaluation import Backend, compatibility_gain, cross_model_table, is_compatible
from .features import Embeddings
from .neighbors import class_neighbors
from .perturb import old_neighbors, pseudo_old
from .proxies import crowding, drift, headroom, recognisability

__all__ = ["Inspection", "prototypes", "crowded_pairs", "retrieval", "inspect_embeddings"]

#: rows per block in :func:`prototypes` and in normalising embeddings for retrieval
_BLOCK = 65536
#: items drawn (seeded) for the recognisability proxies: O(items * C * d) each
RECOGNISABILITY_ITEMS = 10_000


def _rows(x, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of a numpy array (or memmap) as a float32 tensor (a block-sized copy)."""
    return torch.from_numpy(np.array(x[start:stop], dtype=np.float32))


def _unit(x, rows: np.ndarray | None = None) -> np.ndarray:
    """``x`` (or its ``rows``) with L2-normalised rows, float32, normalised block by block (one copy)."""
    n = x.shape[0] if rows is None else rows.shape[0]
    out = np.empty((n, x.shape[1]), dtype=np.float32)
    for s in range(0, n, _BLOCK):
        block = x[s : s + _BLOCK] if rows is None else x[rows[s : s + _BLOCK]]
        out[s : s + _BLOCK] = F.normalize(torch.from_numpy(np.array(block, dtype=np.float32)), dim=1).numpy()
    return out


def prototypes(features, labels, num_classes: int, *, block: int = _BLOCK) -> torch.Tensor:
    """Class prototypes ``p[c] = normalize(mean_{i: y_i = c} f[i] / ||f[i]||)`` (C, d), float32.

    The prototypes of ``docs/method.md`` section 1 (rows L2-normalised before the mean),
    computed over blocks of ``block`` rows: memory is O(block * d + C * d), whatever ``n``.
    Equal to :func:`bclviz.train.class_prototypes` of the normalised rows.

    Parameters
    ----------
    features : numpy.ndarray or torch.Tensor, shape (n, d)
        Finite, non-zero rows (a memory map is read block by block).
    labels : array of int, shape (n,)
        Class index of each row, in ``[0, num_classes)``; every class needs a row.
    num_classes : int
    block : int, default 65536

    Returns
    -------
    torch.Tensor, shape (C, d), rows of unit norm.
    """
    num_classes, block = check_positive_int(num_classes, "num_classes"), check_positive_int(block, "block")
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if features.ndim != 2 or y.shape != (features.shape[0],):
        raise ValueError(f"features must be (n, d) and labels (n,), got {features.shape} and {tuple(y.shape)}")
    if y.numel() and int(y.min()) < 0:
        raise ValueError(f"labels contain negative class indices (min {int(y.min())})")
    counts = torch.bincount(y, minlength=num_classes)
    if counts.numel() > num_classes:
        raise ValueError(f"labels contain class {int(y.max())}, out of range for {num_classes} classes")
    empty = torch.nonzero(counts == 0).squeeze(1).tolist()
    if empty:
        raise ValueError(f"class(es) {empty[:10]} have no rows; every class needs at least one")
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64)
    for s in range(0, features.shape[0], block):
        f = F.normalize(_rows(features, s, s + block), dim=1)
        sums.index_add_(0, y[s : s + block], f.double())
    return F.normalize(sums, dim=1).float()


def crowded_pairs(old_protos, new_protos, *, top: int | None = 10,
                  class_names: tuple[str, ...] | None = None, neighbors: torch.Tensor | None = None) -> list[dict]:
    """Each class's nearest old-space neighbour, most crowded first, with the new model's view of the pair.

    For class ``c`` with nearest old-space neighbour ``j`` (exact kNN, no C x C matrix):
    ``cos_old = <p_o[c], p_o[j]>``, ``cos_new = <p_n[c], p_n[j]>`` and ``excess =
    max(0, cos_old - cos_new)``, NDPP's weight of the pair. Pairs that are each other's
    nearest neighbour are listed once. Sorted by ``cos_old``, largest first.

    Parameters
    ----------
    old_protos, new_protos : (C, d) prototypes ``P_o``, ``P_n`` (rows normalised here), C >= 2.
    top : int or None, default 10
        Keep the ``top`` most crowded pairs; ``None`` keeps all.
    class_names : tuple of str, optional
        Names of the classes (default ``"0"``, ``"1"``, ...).
    neighbors : (C, >= 1) int64, optional
        Exact old-space neighbour lists already searched (:func:`bclviz.perturb.old_neighbors`);
        the first column is used instead of a new search.

    Returns
    -------
    list of dict with ``class``, ``neighbor`` (indices), ``class_name``, ``neighbor_name``,
    ``cos_old``, ``cos_new`` and ``excess``.
    """
    from .perturb import _neighbor_lists, check_prototypes

    p_o, p_n = check_prototypes(old_protos, new_protos, k=1)
    nbr = class_neighbors(p_o, 1)[:, 0] if neighbors is None else _neighbor_lists(p_o, 1, neighbors)[:, 0]
    cos_old = (p_o * p_o[nbr]).sum(1)
    cos_new = (p_n * p_n[nbr]).sum(1)
    names = class_names if class_names is not None else tuple(str(c) for c in range(p_o.shape[0]))
    rows, seen = [], set()
    for c in torch.argsort(cos_old, descending=True, stable=True).tolist():
        j = int(nbr[c])
        if (min(c, j), max(c, j)) in seen:
            continue
        seen.add((min(c, j), max(c, j)))
        rows.append({"class": c, "neighbor": j, "class_name": names[c], "neighbor_name": names[j],
                     "cos_old": float(cos_old[c]), "cos_new": float(cos_new[c]),
                     "excess": max(0.0, float(cos_old[c] - cos_new[c]))})
        if top is not None and len(rows) >= top:
            break
    return rows


def retrieval(emb: Embeddings, *, k: int = 100, recall_at: tuple[int, ...] = (1, 5, 10),
              backend: Backend = "faiss") -> dict:
    """Self/cross retrieval of the two embedding sets as they are: the independent-model baseline.

    ``M(new, new)``, ``M(new, old)`` (new queries against the old gallery) and
    ``M(old, old)`` by :func:`bclviz.evaluation.cross_model_table`: mAP@k with the divisor
    ``min(R, k)`` and Recall@r (``docs/metrics.md``). With ``emb.query`` the queries are
    those items and the gallery the others; without, every item is a query against all
    items, its own excluded by index (leave-one-out, also across models).

    Returns
    -------
    dict with ``new_new``, ``new_old``, ``old_old`` (each :func:`bclviz.evaluation.evaluate`'s
    dict), ``metric`` (``"mAP@k"``), ``k``, ``protocol`` (``"leave-one-out"`` or
    ``"query/gallery"``), ``compatible`` (``M(new, old) > M(old, old)`` on ``metric``,
    strict) and ``compatibility_gain``.
    """
    q_rows, g_rows = emb.split()
    if q_rows is None:
        feats = {name: (_unit(x),) * 2 for name, x in (("new", emb.new), ("old", emb.old))}
        q_labels = g_labels = emb.labels
    else:
        feats = {name: (_unit(x, q_rows), _unit(x, g_rows)) for name, x in (("new", emb.new), ("old", emb.old))}
        q_labels, g_labels = emb.labels[q_rows], emb.labels[g_rows]
    table = cross_model_table(feats, q_labels, g_labels, pairs=[("new", "new"), ("new", "old"), ("old", "old")],
                              k=k, exclude_self=q_rows is None, recall_at=recall_at, backend=backend)
    out = {"new_new": table["new->new"], "new_old": table["new->old"], "old_old": table["old->old"]}
    key = f"mAP@{k}"
    return {**out, "metric": key, "k": k, "protocol": "leave-one-out" if q_rows is None else "query/gallery",
            "compatible": is_compatible(out["new_old"][key], out["old_old"][key]),
            "compatibility_gain": compatibility_gain(out["new_old"][key], out["old_old"][key])}


@dataclass(frozen=True, eq=False)
class Inspection:
    """What :func:`inspect_embeddings` found.

    Attributes
    ----------
    old_protos, new_protos : torch.Tensor (C, d)
        Class prototypes of the old and the new embeddings (:func:`prototypes`).
    delta, pseudo_old : torch.Tensor (C, d)
        The perturbation of ``method`` and the pseudo-old prototypes ``normalize(p_o + delta)``.
    method : MethodConfig
        The NDPP/ODPP setting previewed (``k`` resolved).
    results : dict
        JSON-ready numbers: ``items``, ``dim``, ``classes``, ``queries``, ``gallery``,
        ``sources``, ``class_names``, ``crowding`` (``old``, ``new``, ``pseudo_old``),
        ``headroom`` (``value``, ``k``, ``crowding_old``, ``crowding_new``: the record
        :func:`bclviz.proxies.format_headroom` reads), ``crowded_pairs``
        (:func:`crowded_pairs`), ``retrieval`` (:func:`retrieval`) and ``perturbation``
        (the setting and its proxies: ``delta_mean``, ``drift_deg``,
        ``recognisability_old``, ``recognisability_pseudo_old``: the share of
        ``recognisability_items`` items, drawn with ``seed``, whose old embedding is nearest
        to its own class's old / pseudo-old prototype).
    """

    old_protos: torch.Tensor
    new_protos: torch.Tensor
    delta: torch.Tensor
    pseudo_old: torch.Tensor
    method: MethodConfig
    results: dict


def _sample_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted row indices: all ``n`` rows, or ``max_rows`` of them drawn with ``seed``."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))


def inspect_embeddings(
    emb: Embeddings,
    *,
    method: MethodConfig = MethodConfig(),
    retrieval_k: int | None = 100,
    top_pairs: int | None = 10,
    backend: Backend = "faiss",
    seed: int = 0,
) -> Inspection:
    """Prototypes, crowding, headroom, retrieval baseline and a pseudo-old preview of ``emb``.

    Parameters
    ----------
    emb : Embeddings
        From :func:`bclviz.features.load`.
    method : MethodConfig, default NDPP with its defaults (eps 0.4)
        A perturbing method (``ndpp`` or ``odpp``): its ``eps``, ``k`` (``None``: the
        method's default, at most C - 1), ``eps_mode``, ``gamma``, ... The perturbation is
        computed by the registered method object training uses
        (:func:`bclviz.methods.create_method`), from the prototypes of ``emb``; the
        headroom uses the same ``k``.
    retrieval_k : int or None, default 100
        Cut-off of mAP@k in :func:`retrieval`; ``None`` skips the retrieval (it is the
        expensive part: ``O(n_q n_g d)``), ``results["retrieval"]`` is then ``None``.
    top_pairs : int or None, default 10
        Crowded pairs to keep (:func:`crowded_pairs`).
    backend : {"faiss", "torch"}
        Nearest-neighbour search of the retrieval.
    seed : int, default 0
        Seed of the items drawn for the recognisability proxies (at most
        :data:`RECOGNISABILITY_ITEMS`; all of them when there are fewer).

    Returns
    -------
    Inspection
        Same inputs and seed, same numbers.
    """
    if method.name not in methods.perturbing_methods():
        raise ValueError(f"method.name must be one of {methods.perturbing_methods()}, got {method.name!r}")
    if retrieval_k is not None:
        retrieval_k = check_positive_int(retrieval_k, "retrieval_k")
    c = emb.num_classes
    k = method.k if method.k is not None else min(methods.default_k(method.name), c - 1)
    method = dataclasses.replace(method, k=k)
    p_o = prototypes(emb.old, emb.labels, c)
    p_n = prototypes(emb.new, emb.labels, c)
    # one old-space kNN search (O(C^2 d), the expensive part at 10,000 classes) serves the
    # perturbation, the headroom and, when exact, the old crowding and the crowded pairs
    nbr = old_neighbors(p_o, k, search=method.neighbor_search)
    exact_nbr = nbr if method.neighbor_search == "exact" else None
    perturbing = methods.create_method(method)
    perturbing.use_neighbors(p_o, nbr)
    delta = perturbing.perturb(p_o, p_n, None)
    q = pseudo_old(p_o, delta)
    n_q = emb.n if emb.query is None else int(emb.query.sum())
    crowd_old, crowd_new = crowding(p_o, neighbors=exact_nbr), crowding(p_n)
    rows = _sample_rows(emb.n, RECOGNISABILITY_ITEMS, seed)
    f_old, y = _rows(emb.old[rows], 0, rows.size), emb.labels[rows]
    results = {
        "items": emb.n, "dim": emb.dim, "classes": c, "queries": n_q,
        "gallery": emb.n if emb.query is None else emb.n - n_q,
        "sources": dict(emb.sources or {}), "class_names": list(emb.class_names),
        "crowding": {"old": crowd_old, "new": crowd_new, "pseudo_old": crowding(q)},
        "headroom": {"value": headroom(p_o, p_n, k=k, search=method.neighbor_search, neighbors=nbr), "k": k,
                     "crowding_old": crowd_old, "crowding_new": crowd_new},
        "crowded_pairs": crowded_pairs(p_o, p_n, top=top_pairs, class_names=emb.class_names,
                                       neighbors=exact_nbr),
        "retrieval": None if retrieval_k is None else retrieval(emb, k=retrieval_k, backend=backend),
        "perturbation": {
            "method": method.name, "eps": method.eps, "k": k, "eps_mode": method.eps_mode,
            **({"gamma": method.gamma} if "gamma" in methods.method_class(method.name).knobs else {}),
            "delta_mean": float(delta.norm(dim=1).mean()),
            "drift_deg": math.degrees(drift(q, p_o)),
            "recognisability_items": int(rows.size),
            "recognisability_old": recognisability(f_old, y, p_o),
            "recognisability_pseudo_old": recognisability(f_old, y, q),
        },
    }
    return Inspection(old_protos=p_o, new_protos=p_n, delta=delta, pseudo_old=q, method=method, results=results)
