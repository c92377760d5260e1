"""One joint 2-D/3-D projection of the old, pseudo-old and new spaces.

:class:`SpaceProjection` fits a single projection to every block at once (old features,
new features, old / pseudo-old / new prototypes), so that positions are comparable
across the three panels of :func:`bclviz.plots.three_spaces_figure`, and places new
points (pseudo-old prototypes moved by a slider) with :meth:`SpaceProjection.transform`
without refitting. :func:`project_spaces` memoises fitted projections in-process, so a
re-run notebook cell is instant.

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

__all__ = ["ProjectionMethod", "SpaceProjection", "project_spaces", "clear_projection_cache", "warm_up_umap"]

ProjectionMethod = Literal["umap", "pca", "raw", "auto"]
_METHODS = ("umap", "pca", "raw", "auto")
# A row whose cosine distance to a fitted row is below this is placed exactly on that
# row's embedding by the UMAP transform (so eps = 0 draws zero-length arrows).
_SNAP_TOL = 1e-9
_CACHE_SIZE = 8
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
    """

    def __init__(
        self,
        method: ProjectionMethod = "auto",
        n_components: int = 2,
        random_state: int = 0,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
    ) -> None:
        self.method = method
        self.n_components = n_components
        self.random_state = random_state
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist

    def _check_params(self, dim: int) -> str:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        check_positive_int(self.n_components, "n_components")
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

    def fit(self, blocks: Mapping[str, object]) -> "SpaceProjection":
        """Fit one projection to all blocks stacked.

        Parameters
        ----------
        blocks : mapping of str to array, each (n_i, d)
            Named embeddings (torch tensors or numpy arrays) sharing ``d``, e.g.
            ``{"old_features": ..., "new_features": ..., "old_protos": ...,
            "pseudo_old_protos": ..., "new_protos": ...}``.

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
        if method == "raw":
            model, coords = None, stacked.copy()
        elif method == "pca":
            from sklearn.decomposition import PCA

            model = PCA(n_components=self.n_components, random_state=self.random_state)
            model.fit(_unit(stacked))
            coords = model.transform(_unit(stacked))
        else:
            model = self._fit_umap(stacked)
            coords = np.asarray(model.embedding_, dtype=float)
        self.method_ = method
        self.dim_ = dim
        self.n_components_ = coords.shape[1]
        self.model_ = model
        self._fitted_unit = _unit(stacked)
        self._fitted_coords = coords
        bounds = np.cumsum([0] + [a.shape[0] for a in arrays.values()])
        self.embedding_ = {name: coords[s:e] for name, s, e in zip(arrays, bounds[:-1], bounds[1:])}
        return self

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
        fitted row lands exactly on it.
        """
        if not hasattr(self, "embedding_"):
            raise ValueError("this SpaceProjection is not fitted yet; call fit(blocks) first")
        if self.method_ != "umap":
            return self.transform(x)
        unit = _unit(_as_array(x, "x", dim=self.dim_))
        k = int(min(k, self._fitted_unit.shape[0]))
        sim = unit @ self._fitted_unit.T
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        dist = np.clip(1.0 - np.take_along_axis(sim, nearest, axis=1), 0.0, None)
        weights = 1.0 / (dist + _SNAP_TOL)
        weights /= weights.sum(axis=1, keepdims=True)
        return np.einsum("nk,nkc->nc", weights, self._fitted_coords[nearest])


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
    method, n_components, random_state, n_neighbors, min_dist
        As in :class:`SpaceProjection`.
    """
    proj = SpaceProjection(
        method=method, n_components=n_components, random_state=random_state,
        n_neighbors=n_neighbors, min_dist=min_dist,
    )
    if not isinstance(blocks, Mapping) or not blocks:
        raise ValueError("blocks must be a non-empty mapping of name -> (n, d) array")
    key = (_blocks_key(blocks), tuple(sorted(proj.get_params().items())))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    proj.fit(blocks)
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
