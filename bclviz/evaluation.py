"""Retrieval evaluation (mAP@k, Recall@k) and cross-model compatibility scores.

The metric definitions are written out in ``docs/metrics.md``. In short: features are
L2-normalised, neighbours are ranked by inner product, mAP@k divides by ``min(R, k)``
(GLDv2), Recall@r counts a query as a hit when any of its top-r items shares its label
(In-shop), and queries without any relevant gallery item are not scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

from bclviz._validate import as_features, as_labels, check_positive_int

__all__ = [
    "Backend",
    "evaluate",
    "evaluate_relevance",
    "is_compatible",
    "update_gain",
    "compatibility_gain",
    "compatibility_matrix",
    "average_compatibility",
    "cross_model_table",
]

Backend = Literal["faiss", "torch"]
_BACKENDS = ("faiss", "torch")
# Largest query-by-gallery similarity block the torch backend materialises (elements).
_TORCH_BLOCK_ELEMENTS = 1 << 25


def _unit_rows(x, name: str) -> np.ndarray:
    """Validate ``x`` and return its rows L2-normalised as C-contiguous float32."""
    t = as_features(x, name).detach().cpu().float()
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    if not bool((norms - 1).abs().max() <= 1e-6):  # rows already unit length: no copy
        t = t / norms.clamp_min(1e-12)  # zero rows stay zero
    return np.ascontiguousarray(t.numpy())


def _check_options(k, recall_at, backend) -> tuple[int, tuple[int, ...]]:
    k = check_positive_int(k, "k")
    if isinstance(recall_at, (str, bytes)) or not isinstance(recall_at, Sequence):
        raise ValueError(f"recall_at must be a sequence of positive integers, got {recall_at!r}")
    recall_at = tuple(check_positive_int(r, f"recall_at[{i}]") for i, r in enumerate(recall_at))
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    return k, recall_at


def _check_pair(q: np.ndarray, g: np.ndarray, qname: str, gname: str, exclude_self: bool):
    if q.shape[1] != g.shape[1]:
        raise ValueError(
            f"{qname} has dimension {q.shape[1]} but {gname} has dimension {g.shape[1]}; "
            "queries and gallery must live in the same embedding space"
        )
    if exclude_self and q.shape[0] != g.shape[0]:
        raise ValueError(
            "exclude_self=True means query i and gallery item i are the same image, so "
            f"{qname} and {gname} need the same number of rows; got {q.shape[0]} and "
            f"{g.shape[0]} (pass exclude_self=False for a separate gallery)"
        )


def _knn(q: np.ndarray, g: np.ndarray, depth: int, backend: Backend) -> np.ndarray:
    """Indices ``(n_q, depth)`` of the ``depth`` largest inner products, best first."""
    if backend == "faiss":
        try:
            import faiss
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "backend='faiss' needs faiss; install faiss-cpu or pass backend='torch'"
            ) from err
        # The exhaustive inner-product search that IndexFlatIP.search runs, without
        # copying the gallery into an index first.
        _, idx = faiss.knn(q, g, depth, metric=faiss.METRIC_INNER_PRODUCT)
        return idx.astype(np.int64, copy=False)
    qt, gt = torch.from_numpy(q), torch.from_numpy(g)
    rows = max(1, _TORCH_BLOCK_ELEMENTS // g.shape[0])
    idx = np.empty((q.shape[0], depth), dtype=np.int64)
    for start in range(0, q.shape[0], rows):
        sim = qt[start : start + rows] @ gt.T
        idx[start : start + rows] = sim.topk(depth, dim=1).indices.numpy()
    return idx


def _drop_self(idx: np.ndarray) -> np.ndarray:
    """Remove index ``i`` from row ``i``, or the last column where ``i`` is absent."""
    n, depth = idx.shape
    drop = idx == np.arange(n)[:, None]
    drop[~drop.any(axis=1), depth - 1] = True
    return idx[~drop].reshape(n, depth - 1)


def _relevant_counts(ql: np.ndarray, gl: np.ndarray, exclude_self: bool) -> np.ndarray:
    """``R_q``: number of gallery items sharing each query's label."""
    top = int(gl.max())
    if top <= 4 * (gl.size + ql.size):  # dense enough for bincount
        counts = np.bincount(gl, minlength=top + 1)
        r = np.where(ql <= top, counts[np.minimum(ql, top)], 0)
    else:
        values, counts = np.unique(gl, return_counts=True)
        pos = np.minimum(np.searchsorted(values, ql), values.size - 1)
        r = np.where(values[pos] == ql, counts[pos], 0)
    if exclude_self:
        r = r - (gl == ql)
    return r


def _evaluate_arrays(q, ql, g, gl, *, k, recall_at, exclude_self, backend) -> dict[str, float]:
    """:func:`evaluate` on validated unit-row float32 features and int64 labels."""
    available = g.shape[0] - int(exclude_self)
    depth = min(max((k, *recall_at)), available)
    idx = np.empty((q.shape[0], 0), dtype=np.int64)
    if depth > 0:
        idx = _knn(q, g, depth + int(exclude_self), backend)
        if exclude_self:
            idx = _drop_self(idx)
    n_rel = _relevant_counts(ql, gl, exclude_self)
    scored = n_rel > 0
    if not scored.any():
        nan = float("nan")
        return {f"mAP@{k}": nan, **{f"R@{r}": nan for r in recall_at}, "n_queries": 0}
    rel = gl[idx[scored]] == ql[scored, None]  # (n_scored, depth), best match first
    top_k = rel[:, :k]
    precision = np.cumsum(top_k, axis=1) / np.arange(1, top_k.shape[1] + 1)
    ap = (precision * top_k).sum(axis=1) / np.minimum(n_rel[scored], k)
    recall = {f"R@{r}": float(rel[:, :r].any(axis=1).mean()) for r in recall_at}
    return {f"mAP@{k}": float(ap.mean()), **recall, "n_queries": int(rel.shape[0])}

def evaluate(
    query,
    query_labels,
    gallery,
    gallery_labels,
    *,
    k: int = 100,
    exclude_self: bool = False,
    recall_at: tuple[int, ...] = (1, 5, 10),
    backend: Backend = "faiss",
) -> dict[str, float]:
    """Score retrieval of ``query`` against ``gallery`` by cosine similarity.

    Parameters
    ----------
    query, gallery : torch.Tensor or numpy.ndarray, shape (n_q, d) and (n_g, d)
        Embeddings; any norm (rows are L2-normalised here, all-zero rows stay zero).
    query_labels, gallery_labels : torch.Tensor or numpy.ndarray, shape (n_q,) and (n_g,)
        Non-negative integer class ids; a gallery item is relevant to a query when the
        ids are equal.
    k : int, default 100
        Cut-off of mAP@k (divisor ``min(R_q, k)``, GLDv2 convention).
    exclude_self : bool, default False
        Query ``i`` and gallery item ``i`` are the same image: drop gallery item ``i``
        from query ``i``'s ranking (by index) and from its relevant count ``R_q``.
        Needs ``n_q == n_g``.
    recall_at : tuple of int, default (1, 5, 10)
        Cut-offs ``r`` of Recall@r (In-shop convention); ``R@1`` is top-1 accuracy.
    backend : {"faiss", "torch"}, default "faiss"
        Exact nearest-neighbour search by faiss, or by chunked torch matmul + topk
        (memory bounded by ``_TORCH_BLOCK_ELEMENTS`` similarities at a time).

    Returns
    -------
    dict
        ``"mAP@{k}"``, ``"R@{r}"`` for each ``r`` in ``recall_at`` (floats in [0, 1],
        averaged over scored queries) and ``"n_queries"`` (int), the number of queries
        with at least one relevant gallery item. Queries without one are left out of
        every metric; when no query is scored every metric is NaN.

    Raises
    ------
    ValueError
        Bad ``k``/``recall_at``/``backend``, empty, non-finite or mismatched inputs.
    """
    k, recall_at = _check_options(k, recall_at, backend)
    q, g = _unit_rows(query, "query"), _unit_rows(gallery, "gallery")
    _check_pair(q, g, "query", "gallery", exclude_self)
    ql = as_labels(query_labels, "query_labels", n=q.shape[0]).numpy()
    gl = as_labels(gallery_labels, "gallery_labels", n=g.shape[0]).numpy()
    return _evaluate_arrays(
        q, ql, g, gl, k=k, recall_at=recall_at, exclude_self=exclude_self, backend=backend
    )


def evaluate_relevance(
    query,
    gallery,
    relevant,
    *,
    k: int = 100,
    recall_at: tuple[int, ...] = (1, 5, 10),
    backend: Backend = "faiss",
) -> dict[str, float]:
    """Retrieval scores when relevance is given per query, not by labels (GLDv2).

    Parameters
    ----------
    query, gallery : array, shapes (n_q, d) and (n_g, d)
    relevant : sequence of n_q int arrays
        The gallery positions relevant to each query.
    k, recall_at, backend : as in :func:`evaluate`.

    Returns
    -------
    dict with ``mAP@k`` (the official GLDv2 definition,
    :func:`bclviz.data.gldv2.map_at_k_relevance`), ``R@r`` (a relevant item among the
    top r) and ``n_queries``.
    """
    from .data.gldv2 import map_at_k_relevance

    k, recall_at = _check_options(k, recall_at, backend)
    q, g = _unit_rows(query, "query"), _unit_rows(gallery, "gallery")
    _check_pair(q, g, "query", "gallery", False)
    if len(relevant) != q.shape[0]:
        raise ValueError(f"relevant has {len(relevant)} entries but there are {q.shape[0]} queries")
    idx = _knn(q, g, min(max(k, *recall_at), g.shape[0]), backend)
    hits = np.stack([np.isin(row, rel) for row, rel in zip(idx, relevant)])
    recall = {f"R@{r}": float(hits[:, :r].any(axis=1).mean()) for r in recall_at}
    return {f"mAP@{k}": map_at_k_relevance(idx, relevant, k=k), **recall, "n_queries": len(relevant)}


def is_compatible(cross: float, old: float) -> bool:
    """BCT criterion ``M(new, old) > M(old, old)``; strict, so a tie is not compatible."""
    return bool(float(cross) > float(old))


def update_gain(new_new: float, old_old: float, ind_ind: float) -> float:
    """``(M(n,n) - M(o,o)) / (M(ind,ind) - M(o,o))``; NaN when the denominator is 0.

    The share of the improvement an independently trained new model achieves that the
    compatible new model keeps (1 = all of it). A bclviz summary score.
    """
    span = float(ind_ind) - float(old_old)
    return float("nan") if span == 0 else (float(new_new) - float(old_old)) / span


def compatibility_gain(new_old: float, old_old: float) -> float:
    """``(M(n,o) - M(o,o)) / M(o,o)``; NaN when ``old_old`` is 0. A bclviz summary score."""
    old_old = float(old_old)
    return float("nan") if old_old == 0 else (float(new_old) - old_old) / old_old


def _metric_name(metric: str | None, k: int, recall_at: tuple[int, ...]) -> str:
    allowed = [f"mAP@{k}", *(f"R@{r}" for r in recall_at)]
    metric = allowed[0] if metric is None else metric
    if metric not in allowed:
        raise ValueError(f"metric must be one of {allowed}, got {metric!r}")
    return metric


def compatibility_matrix(
    query_features: Sequence,
    gallery_features: Sequence,
    query_labels,
    gallery_labels,
    *,
    k: int = 100,
    exclude_self: bool = False,
    metric: str | None = None,
    recall_at: tuple[int, ...] = (1, 5, 10),
    backend: Backend = "faiss",
) -> np.ndarray:
    """Lower-triangular matrix of one metric over a sequence of T models.

    Parameters
    ----------
    query_features, gallery_features : sequence of T arrays, shapes (n_q, d_t), (n_g, d_t)
        Model ``t``'s embeddings of the same query images and the same gallery images.
    query_labels, gallery_labels : array, shape (n_q,) and (n_g,)
        Shared by every model.
    k, exclude_self, recall_at, backend
        As in :func:`evaluate`.
    metric : str, optional
        Key of :func:`evaluate`'s result to report; default ``f"mAP@{k}"``.

    Returns
    -------
    numpy.ndarray, shape (T, T)
        ``M[i, j]`` = metric of model ``i``'s queries against model ``j``'s gallery for
        ``i >= j``; NaN above the diagonal.
    """
    k, recall_at = _check_options(k, recall_at, backend)
    metric = _metric_name(metric, k, recall_at)
    n_models = len(query_features)
    if n_models < 1 or len(gallery_features) != n_models:
        raise ValueError(
            "query_features and gallery_features must list the same models (at least one); "
            f"got {n_models} and {len(gallery_features)} entries"
        )
    qs = [_unit_rows(x, f"query_features[{t}]") for t, x in enumerate(query_features)]
    gs = [_unit_rows(x, f"gallery_features[{t}]") for t, x in enumerate(gallery_features)]
    ql = as_labels(query_labels, "query_labels", n=qs[0].shape[0]).numpy()
    gl = as_labels(gallery_labels, "gallery_labels", n=gs[0].shape[0]).numpy()
    matrix = np.full((n_models, n_models), np.nan)
    for i in range(n_models):
        for j in range(i + 1):
            qname, gname = f"query_features[{i}]", f"gallery_features[{j}]"
            _check_pair(qs[i], gs[j], qname, gname, exclude_self)
            if qs[i].shape[0] != ql.size or gs[j].shape[0] != gl.size:
                raise ValueError(
                    f"{qname} has {qs[i].shape[0]} rows and {gname} {gs[j].shape[0]}; "
                    f"query_labels and gallery_labels have {ql.size} and {gl.size}"
                )
            scores = _evaluate_arrays(
                qs[i], ql, gs[j], gl, k=k, recall_at=recall_at, exclude_self=exclude_self,
                backend=backend,
            )
            matrix[i, j] = scores[metric]
    return matrix


def average_compatibility(matrix) -> float:
    """AC: fraction of pairs ``i > j`` with ``M[i, j] > M[j, j]`` (strict).

    Parameters
    ----------
    matrix : array_like, shape (T, T), T >= 2
        A :func:`compatibility_matrix`; only the diagonal and the part below it are read,
        and those entries must be finite.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"matrix must be square (T, T) with T >= 2, got shape {m.shape}")
    rows, cols = np.tril_indices(m.shape[0], k=-1)
    used = np.concatenate([m[rows, cols], np.diag(m)])
    if not np.isfinite(used).all():
        raise ValueError("matrix has NaN or Inf on or below the diagonal")
    return float(np.mean(m[rows, cols] > m[cols, cols]))


def cross_model_table(
    features: Mapping[str, tuple],
    query_labels,
    gallery_labels,
    *,
    pairs: Sequence[tuple[str, str]],
    k: int = 100,
    exclude_self: bool = False,
    recall_at: tuple[int, ...] = (1, 5, 10),
    backend: Backend = "faiss",
) -> dict[str, dict[str, float]]:
    """:func:`evaluate` for named (query model, gallery model) pairs.

    Parameters
    ----------
    features : mapping of str to (query_features, gallery_features)
        Each model's embeddings of the same query images and the same gallery images.
    query_labels, gallery_labels : array, shape (n_q,) and (n_g,)
    pairs : sequence of (str, str)
        ``(q, g)``: model ``q`` embeds the queries, model ``g`` the gallery, e.g.
        ``[("new", "new"), ("new", "old"), ("old", "old"), ("ind", "ind")]``.
    k, exclude_self, recall_at, backend
        As in :func:`evaluate`.

    Returns
    -------
    dict
        ``f"{q}->{g}"`` maps to :func:`evaluate`'s result for that pair.
    """
    k, recall_at = _check_options(k, recall_at, backend)
    cache: dict[tuple[str, int], np.ndarray] = {}

    def prepared(name: str, side: int) -> np.ndarray:
        if name not in features:
            raise ValueError(f"pairs names model {name!r}; features has {sorted(features)}")
        if (name, side) not in cache:
            pair = features[name]
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"features[{name!r}] must be (query_features, gallery_features)")
            role = ("query", "gallery")[side]
            cache[name, side] = _unit_rows(pair[side], f"{role} features of {name!r}")
        return cache[name, side]

    table: dict[str, dict[str, float]] = {}
    for q_name, g_name in pairs:
        q, g = prepared(q_name, 0), prepared(g_name, 1)
        qname, gname = f"query features of {q_name!r}", f"gallery features of {g_name!r}"
        _check_pair(q, g, qname, gname, exclude_self)
        ql = as_labels(query_labels, "query_labels", n=q.shape[0]).numpy()
        gl = as_labels(gallery_labels, "gallery_labels", n=g.shape[0]).numpy()
        table[f"{q_name}->{g_name}"] = _evaluate_arrays(
            q, ql, g, gl, k=k, recall_at=recall_at, exclude_self=exclude_self, backend=backend
        )
    return table
