"""Index splits for backward-compatible learning (method reference, section 7).

Pure functions on a 1-D integer label array ``y``. Every index array returned is
``int64`` and sorted ascending, so ``x[index]`` keeps the original sample order.
Randomness comes only from ``np.random.default_rng(seed)``: the same seed gives the same
split.

Fractions are turned into counts with :func:`math.ceil` after rounding away float noise
(``0.3 * 10`` is 3, not 4), so "a fraction ``r`` of n" means at least ``r * n``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

__all__ = [
    "extended_class",
    "relabel",
    "extended_data",
    "open_set",
    "closed_set",
    "sequential",
    "stratified_subsample",
]

SequentialMode = Literal["class", "data"]
_MODES = ("class", "data")


# ----------------------------------------------------------------------------- checks
def _as_label_array(y, name: str = "y") -> np.ndarray:
    """Return ``y`` as a non-empty 1-D int64 numpy array."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} must not be empty")
    return y.astype(np.int64, copy=False)


def _check_ratio(value, name: str, *, allow_one: bool) -> float:
    """Check ``value`` lies in (0, 1] (``allow_one``) or (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    upper_ok = value <= 1 if allow_one else value < 1
    if not (np.isfinite(value) and value > 0 and upper_ok):
        interval = "(0, 1]" if allow_one else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def _check_seed(seed, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def _count(ratio: float, n: int, *, low: int, high: int) -> int:
    """``ceil(ratio * n)`` (float noise removed) clipped to ``[low, high]``."""
    return int(min(max(math.ceil(round(ratio * n, 9)), low), high))


def _class_members(y: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted class ids and, for each, the sorted indices of its samples."""
    classes, inverse = np.unique(y, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse, minlength=len(classes)))[:-1]
    return classes, np.split(order.astype(np.int64), bounds)


def _indices_of(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(y, classes)).astype(np.int64)


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


# ----------------------------------------------------------------------------- splits
def relabel(y, class_order) -> np.ndarray:
    """Map class ``class_order[i]`` to label ``i``.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        Labels to map; every value must occur in ``class_order``.
    class_order : array-like of int, shape (C,)
        Distinct class ids, in the order of their new labels.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        Labels in ``[0, C)``.
    """
    y = _as_label_array(y)
    class_order = _as_label_array(class_order, "class_order")
    if len(np.unique(class_order)) != len(class_order):
        raise ValueError("class_order must hold distinct class ids")
    sorter = np.argsort(class_order, kind="stable")
    pos = np.searchsorted(class_order, y, sorter=sorter)
    pos = np.minimum(pos, len(class_order) - 1)
    found = class_order[sorter[pos]] == y
    if not found.all():
        missing = np.unique(y[~found])[:10].tolist()
        raise ValueError(f"y contains class ids not in class_order: {missing}")
    return sorter[pos].astype(np.int64)


def extended_class(y, *, ratio: float, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Extended-class split: the old model sees only the first classes.

    Parameters
    ----------
    y : array-like of int, shape (n,)
        Class labels of the new training set.
    ratio : float in (0, 1)
        Fraction of classes the old model trains on: ``ceil(ratio * C)`` classes, at
        least 1 and, when ``C > 1``, at most ``C - 1``.
    seed : int or None, default None
        ``None`` takes the smallest class ids; an integer shuffles the classes first.

    Returns
    -------
    old_index : numpy.ndarray of int64
        Sorted indices of the samples of the old classes.
    class_order : numpy.ndarray of int64, shape (C,)
        The old classes (ascending) followed by the other classes (ascending), so that
        ``relabel(y, class_order)`` gives the old classes labels ``0..C_old-1``.
    """
    y = _as_label_array(y)
    ratio = _check_ratio(ratio, "ratio", allow_one=False)
    classes = np.unique(y)
    n_classes = len(classes)
    n_old = _count(ratio, n_classes, low=1, high=max(n_classes - 1, 1))
    if seed is None:
        shuffled = classes
    else:
        shuffled = np.random.default_rng(_check_seed(seed)).permutation(classes)
    old, rest = np.sort(shuffled[:n_old]), np.sort(shuffled[n_old:])
    return _indices_of(y, old), np.concatenate([old, rest]).astype(np.int64)


def extended_data(y, *, ratio: float, seed: int) -> np.ndarray:
    """Extended-data split: the old model sees a fraction of every class.

    Parameters
    ----------
    y : array-like of int, shape (n,)
    ratio : float in (0, 1]
        Fraction of each class's samples kept: ``ceil(ratio * n_c)``, at least 1.
    seed : int

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices of the old training samples.
    """
    y = _as_label_array(y)
    ratio = _check_ratio(ratio, "ratio", allow_one=True)
    rng = np.random.default_rng(_check_seed(seed))
    _, members = _class_members(y)
    parts = [rng.permutation(m)[: _count(ratio, len(m), low=1, high=len(m))] for m in members]
    return _sorted(parts)


def open_set(y, *, train_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-disjoint split (GLDv2 / In-shop protocol).

    Parameters
    ----------
    y : array-like of int, shape (n,)
        Needs at least two classes.
    train_ratio : float in (0, 1)
        Fraction of classes used for training: ``ceil(train_ratio * C)`` clipped to
        ``[1, C - 1]``; the remaining classes form the test set.
    seed : int
        Which classes go to training.

    Returns
    -------
    train_index, test_index : numpy.ndarray of int64
        Sorted; together they cover every sample and share no class.
    """
    y = _as_label_array(y)
    train_ratio = _check_ratio(train_ratio, "train_ratio", allow_one=False)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"open_set needs at least 2 classes in y, got {len(classes)}")
    n_train = _count(train_ratio, len(classes), low=1, high=len(classes) - 1)
    shuffled = np.random.default_rng(_check_seed(seed)).permutation(classes)
    train = _indices_of(y, shuffled[:n_train])
    return train, _indices_of(y, shuffled[n_train:])


def closed_set(y, *, test_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class stratified hold-out (closed-set protocol).

    Parameters
    ----------
    y : array-like of int, shape (n,)
    test_ratio : float in (0, 1)
        Fraction of each class held out: ``ceil(test_ratio * n_c)`` clipped to
        ``[1, n_c - 1]``. A class with a single sample stays in training only.
    seed : int

    Returns
    -------
    train_index, test_index : numpy.ndarray of int64
        Sorted and disjoint; every class keeps at least one training sample and, when
        it has at least two samples, at least one test sample.
    """
    y = _as_label_array(y)
    test_ratio = _check_ratio(test_ratio, "test_ratio", allow_one=False)
    rng = np.random.default_rng(_check_seed(seed))
    _, members = _class_members(y)
    train, test = [], []
    for m in members:
        m = rng.permutation(m)
        k = 0 if len(m) < 2 else _count(test_ratio, len(m), low=1, high=len(m) - 1)
        test.append(m[:k])
        train.append(m[k:])
    return _sorted(train), _sorted(test)


def sequential(
    y, *, fractions: Sequence[float], mode: SequentialMode, seed: int
) -> list[np.ndarray]:
    """Nested training sets for a sequence of model updates.

    Parameters
    ----------
    y : array-like of int, shape (n,)
    fractions : sequence of float
        Strictly increasing values in (0, 1], e.g. ``(0.3, 0.6, 1.0)``.
    mode : {"class", "data"}
        ``"class"``: step t holds all samples of the first ``ceil(f_t * C)`` classes of
        one random class order. ``"data"``: step t holds the first
        ``ceil(f_t * n_c)`` samples (at least 1) of one random order within each class.
    seed : int

    Returns
    -------
    list of numpy.ndarray of int64
        One sorted index array per fraction; each contains the previous one. In
        ``"class"`` mode the classes in order of appearance give the class order to use
        with :func:`relabel` so that earlier classes keep their labels.
    """
    y = _as_label_array(y)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    fractions = [
        _check_ratio(f, f"fractions[{i}]", allow_one=True) for i, f in enumerate(fractions)
    ]
    if not fractions:
        raise ValueError("fractions must hold at least one value, got an empty sequence")
    if any(b <= a for a, b in zip(fractions, fractions[1:])):
        raise ValueError(f"fractions must be strictly increasing, got {tuple(fractions)}")
    rng = np.random.default_rng(_check_seed(seed))
    if mode == "class":
        shuffled = rng.permutation(np.unique(y))
        counts = [_count(f, len(shuffled), low=1, high=len(shuffled)) for f in fractions]
        return [_indices_of(y, shuffled[:k]) for k in counts]
    _, members = _class_members(y)
    orders = [rng.permutation(m) for m in members]
    return [
        _sorted([m[: _count(f, len(m), low=1, high=len(m))] for m in orders])
        for f in fractions
    ]


def stratified_subsample(y, *, size: int | None, seed: int) -> np.ndarray:
    """At most ``size`` samples with class proportions kept (within one per class).

    Each class is shuffled; sample ``r`` of class ``c`` (0-based rank) gets the key
    ``(r + 0.5) / n_c``, and the ``size`` smallest keys are kept, so every class is
    represented in proportion to its size.

    Parameters
    ----------
    y : array-like of int, shape (n,)
    size : int or None
        Number of samples to keep; ``None`` or ``size >= n`` keeps everything.
    seed : int

    Returns
    -------
    numpy.ndarray of int64
        Sorted indices.
    """
    y = _as_label_array(y)
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1
    ):
        raise ValueError(f"size must be a positive integer or None, got {size!r}")
    if size is None or size >= len(y):
        return np.arange(len(y), dtype=np.int64)
    rng = np.random.default_rng(_check_seed(seed))
    _, members = _class_members(y)
    index = np.concatenate([rng.permutation(m) for m in members])
    keys = np.concatenate([(np.arange(len(m)) + 0.5) / len(m) for m in members])
    tie = rng.random(len(keys))
    chosen = index[np.lexsort((tie, keys))[:size]]
    return np.sort(chosen).astype(np.int64)
