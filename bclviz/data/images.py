"""Real image data that works offline: scikit-learn digits and Fashion-MNIST.

``digits`` needs scikit-learn, which is not in the core install (it comes with the
``lab`` extra: ``pip install 'bclviz[lab]'``); it is imported only when digits are
loaded, so this module imports without it.

Fashion-MNIST is read from local IDX files (gzip or plain). Places searched, in order
(see :func:`fashion_mnist_search_paths`):

1. the ``root`` argument, if given;
2. the folder in the environment variable ``BCLVIZ_FASHION_MNIST``;
3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
4. the ``fashion-mnist/`` folder of the cache root (:func:`fashion_mnist_cache_dir`:
   ``$BCLVIZ_CACHE/fashion-mnist`` when that variable is set, else
   ``$XDG_CACHE_HOME/bclviz/fashion-mnist`` or ``~/.cache/bclviz/fashion-mnist``).

Each place may hold the four IDX files directly or in torchvision's layout
``<place>/FashionMNIST/raw/``. Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from bclviz import cache
from bclviz.data import splits
from bclviz.data.base import BCLData, Labeled

__all__ = [
    "load_digits_arrays",
    "load_fashion_mnist",
    "fashion_mnist_search_paths",
    "fashion_mnist_cache_dir",
    "read_idx",
    "image_bcl_data",
]

DatasetName = Literal["digits", "fashion-mnist"]
Setting = Literal["extended-class", "extended-data"]
Protocol = Literal["closed-set", "open-set"]

FASHION_MNIST_ENV = "BCLVIZ_FASHION_MNIST"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
#: where Fashion-MNIST is looked for last and downloaded to; None (the default) means
#: ``bclviz.cache.cache_dir("fashion-mnist")``, resolved at each call. Set it to a folder
#: to override (tests do). See :func:`fashion_mnist_cache_dir`.
CACHE_FASHION_MNIST: Path | None = None
_LAB_HINT = "pip install 'bclviz[lab]'"
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_MAGIC = {2051: 3, 2049: 1}  # images: (n, rows, cols); labels: (n,)

# Per-dataset defaults for (max_train, max_eval); None keeps everything.
_DEFAULTS = {"digits": (None, None), "fashion-mnist": (20000, 2000)}
_DIGITS_TEST_RATIO = 0.3
_OPEN_SET_TRAIN_RATIO = 0.7


# ----------------------------------------------------------------------------- loading
def load_digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (1797 images, 10 classes).

    Returns
    -------
    x : torch.Tensor of float32, shape (1797, 1, 8, 8), values in [0, 1]
    y : torch.Tensor of int64, shape (1797,)

    Raises
    ------
    ImportError
        scikit-learn is not installed; the message says ``pip install 'bclviz[lab]'``.
    """
    x, y = _digits_uint8()
    return torch.from_numpy(x.astype(np.float32) / 16.0), torch.from_numpy(y.astype(np.int64))


@functools.lru_cache(maxsize=1)
def _digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            f"the digits dataset needs scikit-learn, which is not installed: {_LAB_HINT} "
            f"(scikit-learn comes with the lab extra)"
        ) from err

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)[:, None]  # pixel values are integers 0..16
    x.setflags(write=False)
    y = bunch.target.astype(np.int64)
    y.setflags(write=False)
    return x, y


def read_idx(path: str | os.PathLike, *, magic: Literal[2049, 2051]) -> np.ndarray:
    """Parse one IDX file (``.gz`` or plain) of unsigned bytes.

    Parameters
    ----------
    path : path to the file.
    magic : 2051 for images (3-D), 2049 for labels (1-D).

    Returns
    -------
    numpy.ndarray of uint8 with the shape stored in the header.

    Raises
    ------
    ValueError
        When the file is not valid gzip, has another magic number, or its size does
        not match its header. The message names the file.
    """
    path = Path(path)
    if magic not in _IDX_MAGIC:
        raise ValueError(f"magic must be one of {tuple(_IDX_MAGIC)}, got {magic!r}")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a readable IDX file ({err})") from err
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found is not None and found != magic:
        raise ValueError(
            f"{path}: expected IDX magic number {magic} "
            f"({'images' if magic == 2051 else 'labels'}), got {found}"
        )
    if len(raw) < header:
        raise ValueError(f"{path}: {len(raw)} bytes, too short for an IDX header ({header} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes), file has {len(raw)} bytes"
        )
    out = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    out.setflags(write=False)
    return out


def fashion_mnist_cache_dir() -> Path:
    """Fashion-MNIST's folder under the cache root (:func:`bclviz.cache.cache_dir`),
    read from the environment at each call; :data:`CACHE_FASHION_MNIST` overrides it."""
    if CACHE_FASHION_MNIST is not None:
        return Path(CACHE_FASHION_MNIST).expanduser()
    return cache.cache_dir("fashion-mnist")


def fashion_mnist_search_paths(root: str | os.PathLike | None = None) -> list[Path]:
    """The places :func:`load_fashion_mnist` looks in, in order."""
    places = []
    if root is not None:
        places.append(Path(root).expanduser())
    env = os.environ.get(FASHION_MNIST_ENV)
    if env:
        places.append(Path(env).expanduser())
    places += [Path(DEBIAN_FASHION_MNIST).expanduser(), fashion_mnist_cache_dir()]
    return places


def _find_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain preferred over ``.gz``), or None."""
    found = {}
    for key, name in FASHION_MNIST_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _locate_fashion_mnist(places: list[Path]) -> dict[str, Path] | None:
    for place in places:
        for folder in (place, place / "FashionMNIST" / "raw"):
            files = _find_files(folder)
            if files is not None:
                return files
    return None


@functools.lru_cache(maxsize=4)
def _parse_fashion_mnist(resolved: tuple[tuple[str, str], ...]) -> dict[str, np.ndarray]:
    files = dict(resolved)
    out = {key: read_idx(files[key], magic=2051 if key.startswith("x") else 2049) for key in files}
    for split in ("train", "test"):
        x, y = out[f"x_{split}"], out[f"y_{split}"]
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{files[f'x_{split}']} holds {x.shape[0]} images but "
                f"{files[f'y_{split}']} holds {y.shape[0]} labels; expected the same number"
            )
    return out


def load_fashion_mnist(
    root: str | os.PathLike | None = None, *, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fashion-MNIST from a local copy (60k train and 10k test images, 10 classes).

    Parameters
    ----------
    root : folder holding the four IDX files (or ``FashionMNIST/raw/`` under it);
        searched first, before the places listed in the module docstring.
    download : when no local copy is found, fetch one with torchvision into ``root``
        (default :func:`fashion_mnist_cache_dir`, ``$BCLVIZ_CACHE/fashion-mnist`` when
        that variable is set). Needs internet access.

    Returns
    -------
    x_train : float32 (60000, 1, 28, 28) in [0, 1]
    y_train : int64 (60000,)
    x_test : float32 (10000, 1, 28, 28) in [0, 1]
    y_test : int64 (10000,)

    Parsed files are cached in memory per resolved path; each call returns new tensors.

    Raises
    ------
    FileNotFoundError
        No local copy and ``download`` is false; the message lists every place searched.
    ValueError
        A file is not a valid IDX file of the expected kind.
    """
    places = fashion_mnist_search_paths(root)
    files = _locate_fashion_mnist(places)
    if files is None and download:
        from torchvision.datasets import FashionMNIST

        target = fashion_mnist_cache_dir() if root is None else Path(root).expanduser()
        FashionMNIST(str(target), train=True, download=True)
        files = _locate_fashion_mnist([target])
    if files is None:
        searched = "\n".join(f"  - {p} (or {p / 'FashionMNIST' / 'raw'})" for p in places)
        names = ", ".join(f"{n}[.gz]" for n in FASHION_MNIST_FILES.values())
        raise FileNotFoundError(
            f"Fashion-MNIST not found. Looked for {names} in:\n{searched}\n"
            f"Get it with `apt-get install dataset-fashion-mnist`, point the "
            f"{FASHION_MNIST_ENV} environment variable or `root=` at a folder holding "
            f"the files, or pass download=True (needs internet)."
        )
    resolved = tuple(sorted((k, str(p.resolve())) for k, p in files.items()))
    a = _parse_fashion_mnist(resolved)
    images = {k: torch.from_numpy(a[k][:, None] / np.float32(255)) for k in ("x_train", "x_test")}
    labels = {k: torch.from_numpy(a[k].astype(np.int64)) for k in ("y_train", "y_test")}
    return images["x_train"], labels["y_train"], images["x_test"], labels["y_test"]


# ----------------------------------------------------------------------------- BCL data
def _check_choice(value, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _remap(y: np.ndarray, class_order: np.ndarray, offset: int = 0) -> torch.Tensor:
    return torch.from_numpy(splits.relabel(y, class_order) + offset)


def image_bcl_data(
    name: DatasetName,
    *,
    seed: int = 0,
    setting: Setting = "extended-data",
    old_ratio: float = 0.3,
    protocol: Protocol = "closed-set",
    max_train: int | None = None,
    max_eval: int | None = None,
    root: str | os.PathLike | None = None,
    download: bool = False,
) -> BCLData:
    """One backward-compatible update on real images.

    Parameters
    ----------
    name : "digits" (scikit-learn, 8x8; needs scikit-learn) or "fashion-mnist" (28x28,
        local copy).
    seed : every random choice (splits, subsampling) derives from it.
    setting : "extended-data" (old model: ``old_ratio`` of each class's training images)
        or "extended-class" (old model: all images of ``ceil(old_ratio * C)`` classes,
        chosen at random by ``seed``).
    old_ratio : in (0, 1] for extended-data, (0, 1) for extended-class.
    protocol : "closed-set": evaluation on held-out images of the training classes
        (digits: 30% of each class; Fashion-MNIST: the official t10k images).
        "open-set": 70% of the classes (7 of 10) train, evaluation on images of the
        other classes (digits: all their images; Fashion-MNIST: their t10k images).
        In both, query = gallery with ``query_is_gallery=True`` (leave-one-out).
    max_train, max_eval : cap on the training pool / evaluation set, by stratified
        subsampling. ``None`` means the dataset default: everything for digits,
        20000 / 2000 for Fashion-MNIST (pass a number >= the pool size to use all).
    root, download : passed to :func:`load_fashion_mnist`.

    Returns
    -------
    BCLData
        ``new_train`` labels are ``0..C-1`` with the old classes first
        (``0..C_old-1``); closed-set evaluation labels use the same ids, open-set
        evaluation classes get ids ``C, C+1, ...``. ``info`` records the original class
        id of every label (``class_ids`` for training, ``eval_class_ids``).
    """
    _check_choice(name, "name", ("digits", "fashion-mnist"))
    _check_choice(setting, "setting", ("extended-class", "extended-data"))
    _check_choice(protocol, "protocol", ("closed-set", "open-set"))
    seed = splits._check_seed(seed)
    splits._check_ratio(old_ratio, "old_ratio", allow_one=setting == "extended-data")
    for value, arg in ((max_train, "max_train"), (max_eval, "max_eval")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 2):
            raise ValueError(f"{arg} must be an integer >= 2 or None, got {value!r}")
    default_train, default_eval = _DEFAULTS[name]
    max_train = default_train if max_train is None else max_train
    max_eval = default_eval if max_eval is None else max_eval
    s_split, s_train, s_eval, s_old = (
        int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(4)
    )

    if name == "digits":
        x, y = load_digits_arrays()
        y_np = y.numpy()
        if protocol == "closed-set":
            tr, ev = splits.closed_set(y_np, test_ratio=_DIGITS_TEST_RATIO, seed=s_split)
        else:
            tr, ev = splits.open_set(y_np, train_ratio=_OPEN_SET_TRAIN_RATIO, seed=s_split)
        x_tr, y_tr = x[torch.from_numpy(tr)], y_np[tr]
        x_ev, y_ev = x[torch.from_numpy(ev)], y_np[ev]
    else:
        x_tr, y_tr_t, x_ev, y_ev_t = load_fashion_mnist(root, download=download)
        y_tr, y_ev = y_tr_t.numpy(), y_ev_t.numpy()
        if protocol == "open-set":
            tr, _ = splits.open_set(y_tr, train_ratio=_OPEN_SET_TRAIN_RATIO, seed=s_split)
            train_classes = np.unique(y_tr[tr])
            ev = np.flatnonzero(~np.isin(y_ev, train_classes))
            x_tr, y_tr = x_tr[torch.from_numpy(tr)], y_tr[tr]
            x_ev, y_ev = x_ev[torch.from_numpy(ev)], y_ev[ev]

    n_classes = len(np.unique(y_tr))
    keep = splits.stratified_subsample(y_tr, size=max_train, seed=s_train)
    x_tr, y_tr = x_tr[torch.from_numpy(keep)], y_tr[keep]
    if len(np.unique(y_tr)) < n_classes:
        raise ValueError(
            f"max_train={max_train} keeps only {len(np.unique(y_tr))} of the {n_classes} "
            f"training classes; use max_train >= {n_classes} (better: many per class)"
        )
    keep = splits.stratified_subsample(y_ev, size=max_eval, seed=s_eval)
    x_ev, y_ev = x_ev[torch.from_numpy(keep)], y_ev[keep]

    if setting == "extended-class":
        old_index, class_order = splits.extended_class(y_tr, ratio=old_ratio, seed=s_old)
        num_old = len(np.unique(y_tr[old_index]))
    else:
        old_index = splits.extended_data(y_tr, ratio=old_ratio, seed=s_old)
        class_order = np.unique(y_tr)
        num_old = len(class_order)
    y_new = _remap(y_tr, class_order)
    if protocol == "closed-set":
        eval_order = class_order
        y_eval = _remap(y_ev, class_order)
    else:
        eval_order = np.unique(y_ev)
        y_eval = _remap(y_ev, eval_order, offset=len(class_order))

    new_train = Labeled(x_tr, y_new)
    old_train = new_train.subset(torch.from_numpy(old_index))
    evaluation = Labeled(x_ev, y_eval)
    info = {
        "seed": seed, "setting": setting, "protocol": protocol, "old_ratio": float(old_ratio),
        "test_ratio": _DIGITS_TEST_RATIO if (name, protocol) == ("digits", "closed-set") else None,
        "train_class_ratio": _OPEN_SET_TRAIN_RATIO if protocol == "open-set" else None,
        "max_train": max_train, "max_eval": max_eval, "n_old_train": len(old_train),
        "n_new_train": len(new_train), "n_eval": len(evaluation),
        "class_ids": class_order.tolist(), "eval_class_ids": eval_order.tolist(),
    }  # fmt: skip
    return BCLData.leave_one_out(name, old_train=old_train, new_train=new_train, evaluation=evaluation,
                                 num_classes=len(class_order), num_old_classes=num_old, info=info)
