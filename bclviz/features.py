"""Bring your own embeddings: load and validate old- and new-model embeddings of the same items.

A production retrieval system has an old model, a gallery of its embeddings and a
candidate new model. :func:`load` reads the two models' embeddings of the same labelled
items (``.npy`` memory-mapped, ``.npz``, ``.pt`` with ``weights_only=True``, arrays in
memory, or a folder written by ``bclviz extract``), checks them and returns an
:class:`Embeddings`; :func:`bclviz.inspection.inspect_embeddings` turns that into
prototypes, crowding, headroom, the self/cross retrieval baseline and a pseudo-old
preview (``bclviz inspect``). Nothing is ever unpickled, and every problem raises an
error that names the file (or the array) and what is wrong with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Embeddings", "load", "BUNDLE_KEYS", "FOLDER_FILES"]

#: keys of an ``.npz`` / ``.pt`` bundle (the first three required)
BUNDLE_KEYS = ("old", "new", "labels", "query", "old_ids", "new_ids")
#: files of a features folder (``bclviz extract`` writes the first three; ``query.npy`` is optional)
FOLDER_FILES = {"old": "old_features.npy", "new": "new_features.npy", "labels": "labels.npy",
                "query": "query.npy"}
_SUFFIXES = (".npy", ".npz", ".pt")
_NPY_MAGIC = b"\x93NUMPY"
#: rows per block when scanning embeddings (NaN/Inf, zero rows): (block, d) temporaries
_BLOCK = 65536


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Old- and new-model embeddings of the same labelled items, as :func:`load` returns them.

    Attributes
    ----------
    old, new : numpy.ndarray, shape (n, d)
        Row ``i`` of both is item ``i``, embedded by the old and by the new model; real
        numbers of any dtype, not normalised (a read-only memory map for ``.npy`` files:
        nothing is copied). Every row is finite and non-zero.
    labels : numpy.ndarray of int64, shape (n,)
        Class index of each item, in ``[0, C)``; every index has at least one item.
    class_names : tuple of str, length C
        The label each class index stands for, as given (``str`` of the original value;
        classes are numbered in sorted order of the original labels).
    query : numpy.ndarray of bool, shape (n,), or None
        Items that are queries; the others form the gallery. ``None``: every item is a
        query against all the others (leave-one-out, own item excluded by index).
    sources : dict of str to str
        Where ``old``, ``new``, ``labels`` (and ``query``) came from: a file, a bundle
        entry such as ``emb.npz['old']``, or e.g. ``"old (in-memory array)"``.
    """

    old: np.ndarray
    new: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    query: np.ndarray | None = None
    sources: Mapping[str, str] | None = None

    @property
    def n(self) -> int:
        """Number of items."""
        return int(self.old.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension ``d``."""
        return int(self.old.shape[1])

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)

    def split(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(query_rows, gallery_rows)`` as int64 row indices, or ``(None, None)`` for
        leave-one-out (every item a query against all items, own item excluded)."""
        if self.query is None:
            return None, None
        return np.flatnonzero(self.query), np.flatnonzero(~self.query)


# ----------------------------------------------------------------------------- reading
def _read_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        magic = fh.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        raise ValueError(f"{path} is not a .npy file (no NumPy header); write it with numpy.save")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "Python objects" in str(err) or "pickled" in str(err):
            raise ValueError(f"{path} holds Python objects (dtype object), which bclviz never unpickles; "
                             "save a numeric array (or, for labels, integers or strings)") from err
        if "mmap length" in str(err):
            raise ValueError(f"{path} is truncated: its header promises more data than the file holds") from err
        raise ValueError(f"{path} is not a readable .npy file: {err}") from err


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "pickled" in str(err):
            raise ValueError(f"{path} holds Python objects (dtype object), which bclviz never unpickles; "
                             "save numeric arrays (or, for labels, integers or strings)") from err
        raise ValueError(f"{path} is not a readable .npz file: {err}") from err
    except Exception as err:  # zipfile.BadZipFile, EOFError, OSError from a damaged archive
        raise ValueError(f"{path} is not a readable .npz file (truncated or corrupt?): {err}") from err


def _tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def _read_pt(path: Path):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} cannot be read with torch.load(weights_only=True): it is not a torch file, or it holds "
            "objects other than tensors and plain containers (bclviz never unpickles code); save tensors only, "
            "e.g. torch.save({'old': old, 'new': new, 'labels': labels}, path)"
        ) from err
    if isinstance(obj, torch.Tensor):
        return _tensor_to_numpy(obj)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, expected a tensor")
            out[str(key)] = _tensor_to_numpy(value)
        return out
    raise ValueError(f"{path} holds a {type(obj).__name__}; expected a tensor or a dict of tensors "
                     f"with keys {list(BUNDLE_KEYS[:3])}")


def _read_file(path: Path, what: str):
    """A file's array, or its dict of arrays (``.npz`` / ``.pt`` with several entries)."""
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{what}: {path} is a folder; pass a .npy, .npz or .pt file (a features folder "
                         "written by bclviz extract is passed alone, as load(folder))")
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"{path}: unknown file type {path.suffix or '(none)'!r}; {what} must be a .npy, "
                         ".npz or .pt file")
    if suffix == ".npy":
        return _read_npy(path)
    if suffix == ".npz":
        return _read_npz(path)
    return _read_pt(path)


def _one_array(source, what: str, key: str) -> tuple[np.ndarray, str]:
    """``source`` (path, numpy array or torch tensor) as one array, and where it came from."""
    if isinstance(source, torch.Tensor):
        return _tensor_to_numpy(source), f"{what} (in-memory array)"
    if isinstance(source, np.ndarray):
        return source, f"{what} (in-memory array)"
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path, a numpy.ndarray or a torch.Tensor, got {type(source).__name__}")
    path = Path(source)
    got = _read_file(path, what)
    if not isinstance(got, dict):
        return got, str(path)
    if len(got) == 1:
        (name, arr), = got.items()
        return arr, f"{path}[{name!r}]"
    if key in got:
        return got[key], f"{path}[{key!r}]"
    raise ValueError(f"{path} holds several arrays {sorted(got)} but none named {key!r}; save one array "
                     f"per file, or all of them under the keys {list(BUNDLE_KEYS)} and pass the file alone")


def _bundle(source) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays of a features folder or an ``.npz`` / ``.pt`` bundle, by :data:`BUNDLE_KEYS`."""
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError("pass old, new and labels (three arrays or files), or a single folder, .npz or .pt "
                         f"file holding all three; got only old ({type(source).__name__})")
    path = Path(source)
    if path.is_dir():
        present = {key: path / name for key, name in FOLDER_FILES.items() if (path / name).is_file()}
        missing = [FOLDER_FILES[key] for key in ("old", "new", "labels") if key not in present]
        if missing:
            hint = (" (bclviz extract writes new_features.npy since it also embeds with the new model; "
                    "run `bclviz extract --config RUN.yaml` again)") if missing == ["new_features.npy"] else ""
            raise FileNotFoundError(f"features folder {path} lacks {missing}; it needs "
                                    f"{[FOLDER_FILES[k] for k in ('old', 'new', 'labels')]}{hint}")
        return ({key: _read_npy(p) for key, p in present.items()}, {key: str(p) for key, p in present.items()})
    got = _read_file(path, "embeddings")
    if not isinstance(got, dict):
        raise ValueError(f"{path} holds a single array; pass old, new and labels separately, or save all three "
                         f"in one file under the keys {list(BUNDLE_KEYS[:3])}")
    unknown = sorted(set(got) - set(BUNDLE_KEYS))
    missing = [key for key in BUNDLE_KEYS[:3] if key not in got]
    if missing or unknown:
        raise ValueError(f"{path} holds {sorted(got)}; a bundle needs the keys {list(BUNDLE_KEYS[:3])} "
                         f"(optional: {list(BUNDLE_KEYS[3:])})"
                         + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    return got, {key: f"{path}[{key!r}]" for key in got}


# ----------------------------------------------------------------------------- checks
def _check_embeddings(x: np.ndarray, where: str, what: str) -> None:
    """Shape, dtype, finite values and non-zero rows, scanned in row blocks (no full copy)."""
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{where}: {what} must hold real numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{where}: {what} must be 2-D (items, dim), got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{where}: {what} is empty, shape {x.shape}")
    first_bad = first_zero = None
    n_bad = n_zero = 0
    for s in range(0, x.shape[0], _BLOCK):
        block = np.asarray(x[s : s + _BLOCK])
        bad = ~np.isfinite(block).all(axis=1)
        zero = ~(block != 0).any(axis=1)
        if bad.any():
            first_bad = s + int(np.flatnonzero(bad)[0]) if first_bad is None else first_bad
            n_bad += int(bad.sum())
        if zero.any():
            first_zero = s + int(np.flatnonzero(zero)[0]) if first_zero is None else first_zero
            n_zero += int(zero.sum())
    if n_bad:
        raise ValueError(f"{where}: {what} contain NaN or Inf values in {n_bad} row(s) (first: row {first_bad})")
    if n_zero:
        raise ValueError(f"{where}: {what} have {n_zero} all-zero row(s) (first: row {first_zero}); a zero "
                         "embedding has no direction (an item the model failed to embed?): drop those items "
                         "from both sides")


def _check_labels(y: np.ndarray, where: str, n: int, rows_of: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Contiguous int64 class indices and the original labels they stand for."""
    integer = np.issubdtype(y.dtype, np.integer) and y.dtype != bool
    if not (integer or y.dtype.kind in "US"):
        hint = "; if they are whole numbers, convert with labels.astype(np.int64)" if y.dtype.kind == "f" else ""
        raise TypeError(f"{where}: labels must be integer class ids or strings, got dtype {y.dtype}{hint}")
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must be 1-D (one per item), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{where}: {y.shape[0]} labels for {n} items ({rows_of} has {n} rows); give one label per item")
    y = np.asarray(y)
    if integer and y.size and int(y.min()) < 0:
        raise ValueError(f"{where}: labels contain negative values (min {int(y.min())}); every item needs a "
                         "class id (drop unlabelled items from all three inputs)")
    values, index = np.unique(y, return_inverse=True)
    if values.size < 2:
        raise ValueError(f"{where}: every item has the label {values.tolist()[0]!r}; crowding, headroom and retrieval "
                         "need at least 2 classes")
    return index.astype(np.int64).reshape(-1), tuple(str(v) for v in values.tolist())


def _check_query(q: np.ndarray, where: str, n: int) -> np.ndarray:
    """A boolean query mask (n,) from a mask or from row indices."""
    if q.ndim != 1:
        raise ValueError(f"{where}: query must be 1-D (a boolean mask or row indices), got shape {q.shape}")
    if q.dtype == bool:
        if q.shape[0] != n:
            raise ValueError(f"{where}: the query mask has {q.shape[0]} entries but there are {n} items")
        mask = np.asarray(q, dtype=bool)
    elif np.issubdtype(q.dtype, np.integer):
        if q.size and (int(q.min()) < 0 or int(q.max()) >= n):
            raise ValueError(f"{where}: query row indices must lie in [0, {n}), got range "
                             f"[{int(q.min())}, {int(q.max())}]")
        if np.unique(q).size != q.size:
            raise ValueError(f"{where}: query row indices repeat; list each query row once")
        mask = np.zeros(n, dtype=bool)
        mask[q] = True
    else:
        raise TypeError(f"{where}: query must be a boolean mask or integer row indices, got dtype {q.dtype}")
    if not mask.any() or mask.all():
        side = "no query" if not mask.any() else "no gallery item"
        raise ValueError(f"{where}: the query/gallery split leaves {side}; mark some items (not all) as queries, "
                         "or pass no query for leave-one-out")
    return mask


def _align_by_ids(old_ids: np.ndarray, new_ids: np.ndarray, where: tuple[str, str], n_old: int,
                  n_new: int) -> np.ndarray | None:
    """Rows of ``new`` in the order of ``old``'s items (None when already aligned)."""
    for ids, w, rows in ((old_ids, where[0], n_old), (new_ids, where[1], n_new)):
        if ids.ndim != 1 or ids.shape[0] != rows:
            raise ValueError(f"{w}: item ids must be 1-D with one id per row ({rows}), got shape {ids.shape}")
        if np.unique(ids).size != ids.size:
            raise ValueError(f"{w}: item ids repeat; each item needs a unique id")
    only_old = np.setdiff1d(old_ids, new_ids)
    only_new = np.setdiff1d(new_ids, old_ids)
    if only_old.size or only_new.size:
        raise ValueError(
            f"items missing from one side: {only_old.size} id(s) of {where[0]} are not in {where[1]} "
            f"(first: {only_old[:5].tolist()}) and {only_new.size} id(s) of {where[1]} are not in {where[0]} "
            f"(first: {only_new[:5].tolist()}); embed the same items with both models")
    if np.array_equal(old_ids, new_ids):
        return None
    order = np.argsort(new_ids, kind="stable")
    return order[np.searchsorted(new_ids[order], old_ids)]


# ----------------------------------------------------------------------------- load
def load(old, new=None, labels=None, *, query=None, old_ids=None, new_ids=None) -> Embeddings:
    """Load and validate old- and new-model embeddings of the same labelled items.

    Parameters
    ----------
    old, new : path, numpy.ndarray or torch.Tensor
        Embeddings (n, d) of the same n items by the old and by the new model, row ``i``
        the same item on both sides (or aligned by ``old_ids``/``new_ids``). Files:
        ``.npy`` (memory-mapped), ``.npz`` or ``.pt`` (one array, or a bundle holding it
        under the key ``"old"``/``"new"``). Any norm; rows are normalised where used.
    labels : path or array, shape (n,)
        Class of each item (in ``old``'s row order): integers >= 0 or strings.
    query : path or array, optional
        The query/gallery split: a boolean mask (n,) of query items or their row indices;
        the other items form the gallery. Default: every item is a query against all
        others, its own item excluded (leave-one-out).
    old_ids, new_ids : path or array, optional
        Unique item ids of the rows of ``old`` and ``new`` (both or neither): the new
        rows are put in the old order (a copy of ``new``), and an item present on one
        side only is an error.

    With ``new`` and ``labels`` omitted, ``old`` is a single source holding everything:
    a folder written by ``bclviz extract`` (:data:`FOLDER_FILES`), or an ``.npz`` / ``.pt``
    file with the keys of :data:`BUNDLE_KEYS` (``old``, ``new``, ``labels`` and optionally
    ``query``, ``old_ids``, ``new_ids``).

    Returns
    -------
    Embeddings

    Raises
    ------
    FileNotFoundError
        A file (or a folder's file) does not exist.
    TypeError
        Embeddings that are not real numbers, labels that are neither integers nor
        strings, a query that is neither a mask nor indices.
    ValueError
        Unreadable, truncated or pickled files, wrong shapes, NaN/Inf or all-zero rows,
        mismatched row counts or dimensions, items missing from one side, fewer than 2
        classes, a split without queries or gallery. Each message names the file (or
        bundle entry, or e.g. ``old (in-memory array)``) and the problem.
    """
    if new is None and labels is None:
        arrays, sources = _bundle(old)
        for key, value in (("query", query), ("old_ids", old_ids), ("new_ids", new_ids)):
            if value is not None:
                if key in arrays:
                    raise ValueError(f"{key} is given twice: in {sources[key]} and as an argument")
                arrays[key], sources[key] = _one_array(value, key, key)
    elif new is None or labels is None:
        given = "new" if labels is None else "labels"
        raise ValueError(f"pass old, new and labels (three arrays or files), or a single folder, .npz or .pt file "
                         f"holding all three; got old and {given} only")
    else:
        arrays, sources = {}, {}
        for key, value in (("old", old), ("new", new), ("labels", labels), ("query", query),
                           ("old_ids", old_ids), ("new_ids", new_ids)):
            if value is not None:
                arrays[key], sources[key] = _one_array(value, key, key)
    if ("old_ids" in arrays) != ("new_ids" in arrays):
        raise ValueError("item ids must be given for both sides (old_ids and new_ids) or for neither")
    x_old, x_new = arrays["old"], arrays["new"]
    _check_embeddings(x_old, sources["old"], "old embeddings")
    _check_embeddings(x_new, sources["new"], "new embeddings")
    if "old_ids" in arrays:
        order = _align_by_ids(np.asarray(arrays["old_ids"]), np.asarray(arrays["new_ids"]),
                              (sources["old_ids"], sources["new_ids"]), x_old.shape[0], x_new.shape[0])
        if order is not None:
            x_new = np.asarray(x_new[order])
    elif x_old.shape[0] != x_new.shape[0]:
        diff = abs(x_old.shape[0] - x_new.shape[0])
        raise ValueError(
            f"{sources['old']} has {x_old.shape[0]} rows but {sources['new']} has {x_new.shape[0]}: "
            f"{diff} item(s) missing from one side; embed the same items, in the same order, with both models "
            "(or pass old_ids/new_ids to align them by item id)")
    if x_old.shape[1] != x_new.shape[1]:
        raise ValueError(
            f"{sources['old']} has dimension {x_old.shape[1]} but {sources['new']} has dimension {x_new.shape[1]}; "
            "bclviz compares the two in one space (cross-test M(new, old), pseudo-old prototypes), so both "
            "models must embed into the same dimension")
    y, names = _check_labels(np.asarray(arrays["labels"]), sources["labels"], x_old.shape[0], sources["old"])
    mask = None
    if "query" in arrays:
        mask = _check_query(np.asarray(arrays["query"]), sources["query"], x_old.shape[0])
    return Embeddings(old=x_old, new=x_new, labels=y, class_names=names, query=mask, sources=dict(sources))
