"""One joint 2-D/3-D projection of the old, pseudo-old and new spaces.

:class:`SpaceProjection` fits a single projection to every block at once (old features,
new features, old / pseudo-old / new prototypes), so that positions are comparable
across the three panels of :func:`bclviz.plots.three_spaces_figure`, and places new
points (pseudo-old prototypes moved by a slider) with :meth:`SpaceProjection.transform`
without refitting. :func:`project_spaces` memoises fitted projections in-process, so a
re-run notebook cell is instant.

At production sizes (10,000 classes: 30,000 prototypes plus the drawn features) the
projection is fitted on a stratified sample of at most ``max_fit_rows`` rows
(:func:`stratified_rows`: every class, seeded) and every other row is placed with
:meth:`SpaceProjection.place`, the same placement the live views use, so that an
unperturbed prototype lands where the live view draws it.

UMAP is imported only when used. Its first fit in a process costs about 11 s of numba
compilation (once per process); later fits of a few thousand points take a second or two.
:func:`warm_up_umap` pays that cost in a background thread, e.g. while models train in
worker processes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Literal

import numpy as np
from sklearn.base import BaseEstimator

from ._validate import as_features, check_positive_int

__all__ = [
    "ProjectionMethod", "SpaceProjection", "project_spaces", "clear_projection_cache", "warm_up_umap",
    "stratified_rows", "FIT_ROWS",
]

ProjectionMethod = Literal["umap", "pca", "raw", "auto"]
_METHODS = ("umap", "pca", "raw", "auto")
# A row whose cosine distance to a fitted row is below this is placed exactly on that
# row's embedding by the UMAP transform (so eps = 0 draws zero-length arrows).
_SNAP_TOL = 1e-9
_CACHE_SIZE = 8
#: default ``max_fit_rows`` of the views (:mod:`bclviz.views`, the explorer): fits on more
#: rows than this use a stratified sample and place the rest
FIT_ROWS = 10_000
#: rows per block when placing rows by their nearest fitted rows (UMAP): (block, fitted) similarities
_PLACE_BLOCK = 1024
_CACHE: OrderedDict[tuple, "SpaceProjection"] = OrderedDict()


def _as_array(x, name: str, dim: int | None = None) -> np.ndarray:
    """``x`` (torch or numpy) as a finite float64 (n, d) array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    elif not isinstance(x, np.ndarray):
        x = np.asarray(x, dtype=float)
    return as_features(x, name, dim=dim).double().numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-300)


def stratified_rows(labels, max_rows: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified sample: every class, at most ``max_rows`` rows when possible.

    Each class gets the same quota ``q`` (all its rows when it has fewer), with ``q`` the
    largest quota whose total fits ``max_rows``; the rows left over go, one each, to
    classes with rows to spare, drawn with ``seed``. Every class keeps at least one row,
    so with more classes than ``max_rows`` the sample has one row per class. The rows
    inside a class are drawn with ``seed``: same labels and seed, same sample.

    Parameters
    ----------
    labels : array of int, shape (n,)
        Stratum (class) of each row; any integers.
    max_rows : int
        Rows wanted (at least 1).
    seed : int, default 0

    Returns
    -------
    numpy.ndarray of int64, sorted: ``arange(n)`` when ``n <= max_rows``.
    """
    max_rows = check_positive_int(max_rows, "max_rows")
    y = np.asarray(labels).ravel()
    n = y.size
    if n <= max_rows:
        return np.arange(n)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    # largest q with sum(min(counts, q)) <= max_rows (at least 1: every class is kept)
    lo, hi = 1, int(counts.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if np.minimum(counts, mid).sum() <= max_rows:
            lo = mid
        else:
            hi = mid - 1
    take = np.minimum(counts, lo)
    rng = np.random.default_rng(seed)
    spare = np.flatnonzero(counts > take)
    extra = max_rows - int(take.sum())
    if extra > 0 and spare.size:
        take[rng.choice(spare, min(extra, spare.size), replace=False)] += 1
    # a random key per row, ranked within its class: the `take` smallest keys are drawn
    order = np.lexsort((rng.random(n), inverse))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, counts)
    return np.flatnonzero(rank < take[inverse])


class SpaceProjection(BaseEstimator):
    """Joint low-dimensional projection of named blocks of embeddings.

    Parameters
    ----------
    method : {"umap", "pca", "raw", "auto"}, default "auto"
        ``"umap"``: UMAP with the cosine metric. ``"pca"``: scikit-learn PCA on
        L2-normalised rows (fast, deterministic). ``"raw"``: the coordinates as they
        are, for ``d <= 3`` (points on the circle / sphere); ``n_components`` is then
        ``d``. ``"auto"``: ``"raw"`` when ``d <= 3``, else ``"umap"``.
    n_components : int, default 2
        Output dimension for ``"umap"`` and ``"pca"`` (2 or 3 for plotting).
    random_state : int, default 0
        Seed of UMAP's and PCA's randomness; same seed and inputs, same coordinates.
    n_neighbors : int, default 15
        UMAP neighbourhood size; clipped to ``n - 1`` for ``n`` stacked rows.
    min_dist : float, default 0.1
        UMAP ``min_dist``.
    max_fit_rows : int or None, default None
        Fit on at most this many rows, a stratified sample (:func:`stratified_rows` of
        the ``labels`` given to :meth:`fit`, seeded with ``random_state``), and place the
        other rows with :meth:`place`; ``None`` fits on every row.

    Attributes
    ----------
    method_ : str
        The method actually used (``"auto"`` resolved).
    n_components_ : int
        Output dimension.
    dim_ : int
        Input dimension ``d``.
    embedding_ : dict[str, numpy.ndarray]
        Block name -> coordinates ``(n_i, n_components_)``, in the order of ``fit``.
    model_ : object or None
        The fitted ``umap.UMAP`` or ``sklearn.decomposition.PCA``; ``None`` for raw.
    fit_rows_ : numpy.ndarray
        Indices, into the blocks stacked in ``fit`` order, of the rows the projection was
        fitted on (every row unless ``max_fit_rows`` cut it).
    """

    def __init__(
        self,
        method: ProjectionMethod = "auto",
        n_components: int = 2,
        random_state: int = 0,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        max_fit_rows: int | None = None,
    ) -> None:
        self.method = method
        self.n_components = n_components
        self.random_state = random_state
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.max_fit_rows = max_fit_rows

    def _check_params(self, dim: int) -> str:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        check_positive_int(self.n_components, "n_components")
        if self.max_fit_rows is not None:
            check_positive_int(self.max_fit_rows, "max_fit_rows")
        method = self.method
        if method == "auto":
            method = "raw" if dim <= 3 else "umap"
        if method == "raw" and dim > 3:
            raise ValueError(
                f"method='raw' shows coordinates as they are and needs d <= 3, got d={dim}; "
                "use 'pca' or 'umap'"
            )
        if method in ("pca", "umap") and self.n_components > dim:
            raise ValueError(
                f"n_components={self.n_components} exceeds the embedding dimension d={dim}"
            )
        return method

    def fit(self, blocks: Mapping[str, object], labels: Mapping[str, object] | None = None) -> "SpaceProjection":
        """Fit one projection to all blocks stacked (or to a stratified sample of them).

        Parameters
        ----------
        blocks : mapping of str to array, each (n_i, d)
            Named embeddings (torch tensors or numpy arrays) sharing ``d``, e.g.
            ``{"old_features": ..., "new_features": ..., "old_protos": ...,
            "pseudo_old_protos": ..., "new_protos": ...}``.
        labels : mapping of str to array of int (n_i,), optional
            Class of each row of a block, the strata of the ``max_fit_rows`` sample
            (prototype blocks: ``arange(C)``). A block without labels is one stratum.
            Unused when every row is fitted.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            No blocks, unknown ``method``, blocks of different dimensions, NaN/Inf,
            ``d > 3`` with ``"raw"``, ``n_components > d``.
        """
        if not isinstance(blocks, Mapping) or not blocks:
            raise ValueError("blocks must be a non-empty mapping of name -> (n, d) array")
        arrays: dict[str, np.ndarray] = {}
        for name, x in blocks.items():
            arrays[name] = _as_array(x, f"blocks[{name!r}]")
        dims = {name: a.shape[1] for name, a in arrays.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"all blocks must share the embedding dimension, got {dims}")
        dim = next(iter(dims.values()))
        method = self._check_params(dim)
        stacked = np.concatenate(list(arrays.values()))
        rows = self._fit_rows(arrays, labels)
        fitted = stacked if rows.size == stacked.shape[0] else stacked[rows]
        if method == "raw":
            model, coords = None, fitted.copy()
        elif method == "pca":
            from sklearn.decomposition import PCA

            model = PCA(n_components=self.n_components, random_state=self.random_state)
            model.fit(_unit(fitted))
            coords = model.transform(_unit(fitted))
        else:
            model = self._fit_umap(fitted)
            coords = np.asarray(model.embedding_, dtype=float)
        self.method_ = method
        self.dim_ = dim
        self.n_components_ = coords.shape[1]
        self.model_ = model
        self.fit_rows_ = rows
        self._fitted_unit = _unit(fitted)
        self._fitted_coords = coords
        if rows.size < stacked.shape[0]:  # the rest placed as the live views place rows
            rest = np.ones(stacked.shape[0], dtype=bool)
            rest[rows] = False
            placed = np.empty((stacked.shape[0], coords.shape[1]))
            placed[rows] = coords
            placed[rest] = self._place(stacked[rest], k=8)
            coords = placed
        bounds = np.cumsum([0] + [a.shape[0] for a in arrays.values()])
        self.embedding_ = {name: coords[s:e] for name, s, e in zip(arrays, bounds[:-1], bounds[1:])}
        return self

    def _fit_rows(self, arrays: dict[str, np.ndarray], labels: Mapping[str, object] | None) -> np.ndarray:
        """Rows of the stacked blocks to fit: all, or a stratified sample of ``max_fit_rows``."""
        n = sum(a.shape[0] for a in arrays.values())
        if self.max_fit_rows is None or n <= self.max_fit_rows:
            return np.arange(n)
        labels = dict(labels or {})
        unknown = sorted(set(labels) - set(arrays))
        if unknown:
            raise ValueError(f"labels name blocks that are not in blocks: {unknown}; blocks: {list(arrays)}")
        strata = []
        for i, (name, a) in enumerate(arrays.items()):
            if name in labels:
                y = np.asarray(labels[name]).ravel().astype(np.int64)
                if y.shape != (a.shape[0],):
                    raise ValueError(f"labels[{name!r}] has shape {y.shape}, expected ({a.shape[0]},)")
                if y.size and y.min() < 0:
                    raise ValueError(f"labels[{name!r}] has negative classes (min {int(y.min())})")
            else:  # an unlabelled block is one stratum of its own (negative ids never clash)
                y = np.full(a.shape[0], -1 - i, dtype=np.int64)
            strata.append(y)
        return stratified_rows(np.concatenate(strata), self.max_fit_rows, seed=self.random_state)

    def _fit_umap(self, stacked: np.ndarray):
        try:
            import umap
        except ImportError as err:  # pragma: no cover - umap-learn is a dependency
            raise ImportError("method='umap' needs umap-learn: pip install umap-learn") from err
        n = stacked.shape[0]
        if n < 4:
            raise ValueError(f"UMAP needs at least 4 points in all blocks together, got {n}")
        warm_up = _WARM_UP
        if warm_up is not None and warm_up is not threading.current_thread():
            warm_up.join()  # the compilation in progress serves this fit too
        model = umap.UMAP(
            n_components=self.n_components,
            n_neighbors=int(min(self.n_neighbors, n - 1)),
            min_dist=self.min_dist,
            metric="cosine",
            random_state=self.random_state,
            n_jobs=1,
            n_epochs=200,  # UMAP's own choice above 10,000 points; it takes 500 below (2.5x the time)
        )
        return model.fit(stacked)

    def transform(self, x) -> np.ndarray:
        """Place points in the fitted projection without refitting.

        Parameters
        ----------
        x : array, shape (n, d)

        Returns
        -------
        numpy.ndarray, shape (n, n_components_)
            Raw: ``x`` itself. PCA: the fitted PCA of the normalised rows (the fitted
            points map onto their ``embedding_``). UMAP: ``model_.transform``, except
            that rows coinciding (cosine distance < 1e-9) with a fitted row are placed
            exactly on that row's embedding.
        """
        if not hasattr(self, "embedding_"):
            raise ValueError("this SpaceProjection is not fitted yet; call fit(blocks) first")
        x = _as_array(x, "x", dim=self.dim_)
        if self.method_ == "raw":
            return x
        if self.method_ == "pca":
            return self.model_.transform(_unit(x))
        out = np.asarray(self.model_.transform(x), dtype=float)
        unit = _unit(x)
        for s in range(0, unit.shape[0], 1024):
            sim = unit[s : s + 1024] @ self._fitted_unit.T
            best = sim.argmax(axis=1)
            hit = 1.0 - sim[np.arange(best.size), best] < _SNAP_TOL
            out[s : s + 1024][hit] = self._fitted_coords[best[hit]]
        return out

    def place(self, x, *, k: int = 8) -> np.ndarray:
        """Fast placement for live views: exact for raw and PCA, interpolated for UMAP.

        UMAP's ``transform`` runs a small optimisation per call (hundreds of ms), too slow
        for a slider. ``place`` puts each row at the inverse-cosine-distance weighted mean
        of the embeddings of its ``k`` most similar fitted rows, the same neighbour
        interpolation UMAP uses to initialise ``transform``; a row that coincides with a
        fitted row lands exactly on it. ``fit`` places the rows outside its
        ``max_fit_rows`` sample the same way, so that a prototype left unperturbed lands
        where ``embedding_`` put it. Rows are handled in blocks of 1,024:
        O(block x fitted rows) memory.
        """
        if not hasattr(self, "embedding_"):
            raise ValueError("this SpaceProjection is not fitted yet; call fit(blocks) first")
        return self._place(x, k=k)

    def _place(self, x, *, k: int) -> np.ndarray:
        """:meth:`place` without the fitted check (``fit`` places the rows it did not fit on)."""
        x = _as_array(x, "x", dim=self.dim_)
        if self.method_ == "raw":
            return x
        if self.method_ == "pca":
            return self.model_.transform(_unit(x))
        unit = _unit(x)
        k = int(min(k, self._fitted_unit.shape[0]))
        out = np.empty((unit.shape[0], self._fitted_coords.shape[1]))
        for s in range(0, unit.shape[0], _PLACE_BLOCK):  # (block, fitted) similarities at a time
            sim = unit[s : s + _PLACE_BLOCK] @ self._fitted_unit.T
            nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            dist = np.clip(1.0 - np.take_along_axis(sim, nearest, axis=1), 0.0, None)
            weights = 1.0 / (dist + _SNAP_TOL)
            weights /= weights.sum(axis=1, keepdims=True)
            out[s : s + _PLACE_BLOCK] = np.einsum("nk,nkc->nc", weights, self._fitted_coords[nearest])
        return out


def _blocks_key(blocks: Mapping[str, object]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for name, x in blocks.items():
        a = _as_array(x, f"blocks[{name!r}]")
        h.update(repr((str(name), a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def project_spaces(
    blocks: Mapping[str, object],
    *,
    method: ProjectionMethod = "auto",
    n_components: int = 2,
    random_state: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    max_fit_rows: int | None = None,
    labels: Mapping[str, object] | None = None,
) -> SpaceProjection:
    """A fitted :class:`SpaceProjection` of ``blocks``, memoised in this process.

    The cache key is a hash of the block names, shapes and values plus every
    hyperparameter, so equal inputs return the very same fitted object (treat it as
    read-only) and any change fits a new one. The last 8 projections are kept. The
    first UMAP fit of a process costs about 11 s of numba compilation.

    Parameters
    ----------
    blocks : mapping of str to array (n_i, d)
        As in :meth:`SpaceProjection.fit`.
    method, n_components, random_state, n_neighbors, min_dist, max_fit_rows
        As in :class:`SpaceProjection`.
    labels : mapping of str to array (n_i,), optional
        Strata of the ``max_fit_rows`` sample, as in :meth:`SpaceProjection.fit` (part
        of the cache key when a sample is drawn).
    """
    proj = SpaceProjection(
        method=method, n_components=n_components, random_state=random_state,
        n_neighbors=n_neighbors, min_dist=min_dist, max_fit_rows=max_fit_rows,
    )
    if not isinstance(blocks, Mapping) or not blocks:
        raise ValueError("blocks must be a non-empty mapping of name -> (n, d) array")
    key = (_blocks_key(blocks), tuple(sorted(proj.get_params().items())))
    if max_fit_rows is not None and labels:
        key += (_blocks_key({name: np.asarray(y, dtype=float).reshape(-1, 1) for name, y in labels.items()}),)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    proj.fit(blocks, labels)
    _CACHE[key] = proj
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return proj


def clear_projection_cache() -> None:
    """Forget every projection memoised by :func:`project_spaces`."""
    _CACHE.clear()


_WARM_UP: threading.Thread | None = None
_WARM_UP_LOCK = threading.Lock()


def warm_up_umap(*, wait: bool = False) -> threading.Thread | None:
    """Import UMAP and compile its numba code in a background thread (once per process).

    The first UMAP fit of a process spends about 11 s compiling; a notebook that calls
    this before training (whose new models train in worker processes, leaving this
    process idle) gets its first projection that much sooner. A later fit waits for the
    compilation instead of repeating it. Returns the thread (``None`` when umap-learn
    is not installed); ``wait=True`` joins it. The warm-up fits random points and
    changes no result.
    """
    global _WARM_UP
    import importlib.util

    if importlib.util.find_spec("umap") is None:
        return None
    with _WARM_UP_LOCK:
        if _WARM_UP is None:
            def fit_random_points():  # the code paths of a real fit (same parameters, < 4,096 points)
                points = np.random.default_rng(0).normal(size=(300, 16))
                SpaceProjection(method="umap").fit({"warm_up": points})

            _WARM_UP = threading.Thread(target=fit_random_points, name="bclviz-umap-warm-up", daemon=True)
            _WARM_UP.start()
    if wait:
        _WARM_UP.join()
    return _WARM_UP
