"""Real benchmark datasets read from local copies: the common record and its tooling.

Every image-file loader returns an :class:`ImageList` (paths, contiguous labels, the
original id of each label); :class:`ImageListDataset` makes it a torch ``Dataset``.
Here: :func:`load_image_folder`, the splits, CIFAR-100 (:func:`load_cifar100`,
:func:`cifar100_50_to_100`). Google Landmarks v2 lives in :mod:`bclviz.data.gldv2`,
DeepFashion In-shop in :mod:`bclviz.data.inshop`; their public names can also be
imported from this module. Nothing is downloaded unless ``download=True`` is passed.
"""

from __future__ import annotations

import importlib
import operator
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bclviz.data import splits
from bclviz.data.base import BCLData, Labeled

# names resolved lazily (module ``__getattr__``) from gldv2.py and inshop.py
_LAZY = {
    "RetrievalSplit": "gldv2",
    "load_gldv2_train": "gldv2",
    "load_gldv2_retrieval": "gldv2",
    "map_at_k_relevance": "gldv2",
    "load_inshop": "inshop",
}
__all__ = [
    "ImageList", "ImageListDataset", "default_transform", "check_images_exist",
    "IMAGE_EXTENSIONS", "load_image_folder", "split_extended_class", "split_extended_data",
    "load_cifar100", "cifar_protocol_from_arrays", "cifar100_50_to_100", *_LAZY,
]  # fmt: skip

#: file name endings (lower case) that :func:`load_image_folder` treats as images
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"bclviz.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- record
@dataclass(frozen=True, eq=False, repr=False)
class ImageList:
    """Image files with contiguous integer labels.

    Attributes
    ----------
    paths : tuple of pathlib.Path, length n
        One file per image.
    labels : numpy.ndarray of int64, shape (n,), read-only
        Values in ``[0, len(class_ids))``. A list with no classes (``class_ids == ()``)
        holds unlabeled images, all with label ``-1`` (GLDv2 retrieval images, whose
        relevance is given per query instead).
    class_ids : tuple, length C
        Original class id (landmark id, item id, folder name, ...) of each label:
        ``class_ids[labels[i]]`` is the class of image ``i``.
    root : pathlib.Path
        The dataset folder the list was read from.
    """

    paths: tuple[Path, ...]
    labels: np.ndarray
    class_ids: tuple
    root: Path

    def __post_init__(self) -> None:
        paths = tuple(Path(p) for p in self.paths)
        labels = np.array(self.labels, dtype=np.int64)  # a copy we can freeze
        labels.setflags(write=False)
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_ids", tuple(self.class_ids))
        object.__setattr__(self, "root", Path(self.root))
        if labels.ndim != 1 or len(labels) != len(paths):
            raise ValueError(
                f"labels must have shape ({len(paths)},) to match paths, got {labels.shape}"
            )
        n_classes = len(self.class_ids)
        if n_classes == 0:
            if (labels != -1).any():
                raise ValueError("an ImageList with no class_ids must have all labels -1")
        elif len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"labels must lie in [0, {n_classes}) for {n_classes} class_ids, "
                f"got values in [{labels.min()}, {labels.max()}]"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:  # short: a list may hold millions of paths
        return f"ImageList({len(self)} images, {self.num_classes} classes, root={str(self.root)!r})"

    @property
    def num_classes(self) -> int:
        """``len(class_ids)``; 0 for unlabeled images."""
        return len(self.class_ids)

    def subset(self, index: Iterable[int], *, class_ids: Sequence | None = None) -> ImageList:
        """The images at ``index`` (labels unchanged).

        ``class_ids`` replaces the class list, e.g. to drop trailing classes that no
        longer occur; by default it is kept.
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        return ImageList(
            paths=tuple(self.paths[i] for i in index),
            labels=self.labels[index],
            class_ids=self.class_ids if class_ids is None else tuple(class_ids),
            root=self.root,
        )


def check_images_exist(paths: Iterable[Path], source: str | os.PathLike) -> None:
    """Raise ``FileNotFoundError`` naming the first of ``paths`` that is not a file.

    ``source`` is the list file that referenced them; it appears in the message.
    """
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source} references {len(missing)} image(s) that do not exist, first: "
            f"{missing[0]}. Place the images there, or pass check_files=False to skip "
            "this check (a missing image then fails when it is read)."
        )


# ----------------------------------------------------------------------------- dataset
def default_transform(image_size: int | tuple[int, int] = 224) -> Callable:
    """``Resize((h, w))`` then ``ToTensor()``: a (3, h, w) float tensor in [0, 1].

    No cropping, flipping or normalisation; pass your own ``transform`` for those.
    """
    from torchvision import transforms

    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    if len(image_size) != 2 or any(int(s) < 1 for s in image_size):
        raise ValueError(f"image_size must be a positive int or (h, w), got {image_size!r}")
    return transforms.Compose([transforms.Resize(tuple(image_size)), transforms.ToTensor()])


class ImageListDataset(Dataset):
    """Torch dataset over an :class:`ImageList`.

    Parameters
    ----------
    image_list : ImageList
    transform : callable, optional
        Applied to the RGB ``PIL.Image``; defaults to :func:`default_transform`
        with ``image_size``.
    image_size : int or (h, w), default 224
        Only used when ``transform`` is None.

    Items are ``(image, label, index)``: the transformed image, the int label (``-1``
    for unlabeled lists) and the position ``index`` in ``image_list``.
    """

    def __init__(
        self,
        image_list: ImageList,
        transform: Callable | None = None,
        *,
        image_size: int | tuple[int, int] = 224,
    ) -> None:
        if not isinstance(image_list, ImageList):
            raise TypeError(f"image_list must be an ImageList, got {type(image_list).__name__}")
        self.image_list = image_list
        self.transform = default_transform(image_size) if transform is None else transform

    def __len__(self) -> int:
        return len(self.image_list)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        from PIL import Image

        index = operator.index(index)
        if index < 0:
            index += len(self)
        path = self.image_list.paths[index]
        with Image.open(path) as image:
            image = image.convert("RGB")
        return self.transform(image), int(self.image_list.labels[index]), index


# ----------------------------------------------------------------------------- folders
def load_image_folder(
    root: str | os.PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> ImageList:
    """Images in ``root/<class name>/...`` (an ImageFolder tree).

    Classes are the sub-folders of ``root``, sorted by name; each class holds every
    file below its folder (recursively, sorted) whose name ends with one of
    ``extensions`` (case-insensitive). Entries whose name starts with ``.`` are
    skipped.

    Returns
    -------
    ImageList
        ``class_ids`` are the folder names.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    ValueError
        ``root`` has no class folders, or a class folder holds no image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    extensions = tuple(e.lower() for e in extensions)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} holds no class sub-folders; expected root/<class>/<image>")
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = []
        for folder, dirs, files in os.walk(root / name):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found += [Path(folder) / f for f in sorted(files)
                      if not f.startswith(".") and f.lower().endswith(extensions)]
        if not found:
            raise ValueError(
                f"class folder {root / name} holds no image file ({', '.join(extensions)})"
            )
        paths += found
        labels += [label] * len(found)
    return ImageList(tuple(paths), np.asarray(labels), tuple(classes), root)


# ----------------------------------------------------------------------------- splits
def _labeled(image_list: ImageList) -> np.ndarray:
    if not isinstance(image_list, ImageList):
        raise TypeError(f"image_list must be an ImageList, got {type(image_list).__name__}")
    if image_list.num_classes == 0:
        raise ValueError("image_list is unlabeled (no class_ids); splits need class labels")
    return np.asarray(image_list.labels)


def split_extended_class(
    image_list: ImageList, *, ratio: float = 0.3, seed: int | None = 0
) -> tuple[ImageList, ImageList]:
    """Extended-class split of a training list (method reference, section 7).

    Parameters
    ----------
    image_list : ImageList
        The new model's training images.
    ratio : float in (0, 1), default 0.3
        Fraction of classes for the old model (0.3 is the GLDv2 convention), via
        :func:`bclviz.data.splits.extended_class`.
    seed : int or None, default 0
        Which classes are old; ``None`` takes the first classes.

    Returns
    -------
    old : ImageList
        The images of the ``C_old`` old classes, labels ``0..C_old-1``.
    new : ImageList
        All images, relabeled so that the old classes come first: ``old.class_ids ==
        new.class_ids[:C_old]`` and every old image has the same label in both.
    """
    y = _labeled(image_list)
    old_index, class_order = splits.extended_class(y, ratio=ratio, seed=seed)
    class_ids = tuple(image_list.class_ids[c] for c in class_order)
    new = ImageList(image_list.paths, splits.relabel(y, class_order), class_ids, image_list.root)
    n_old = len(np.unique(y[old_index]))
    return new.subset(old_index, class_ids=class_ids[:n_old]), new


def split_extended_data(
    image_list: ImageList, *, ratio: float, seed: int = 0
) -> tuple[ImageList, ImageList]:
    """Extended-data split: the old model sees ``ceil(ratio * n_c)`` images of each class.

    Returns ``(old, new)``: ``new`` is ``image_list`` itself, ``old`` a subset of it
    with the same labels and class ids (see :func:`bclviz.data.splits.extended_data`).
    """
    y = _labeled(image_list)
    return image_list.subset(splits.extended_data(y, ratio=ratio, seed=seed)), image_list


# ----------------------------------------------------------------------------- CIFAR-100
def load_cifar100(
    root: str | os.PathLike, *, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-100 from ``root/cifar-100-python/`` through torchvision.

    Returns
    -------
    x_train : float32 (50000, 3, 32, 32) in [0, 1]
    y_train : int64 (50000,), fine labels 0..99
    x_test : float32 (10000, 3, 32, 32) in [0, 1]
    y_test : int64 (10000,)

    Raises
    ------
    FileNotFoundError
        ``root/cifar-100-python`` is missing and ``download`` is false.
    """
    root = Path(root).expanduser()
    folder = root / "cifar-100-python"
    if not download and not folder.is_dir():
        raise FileNotFoundError(
            f"CIFAR-100 not found: {folder} does not exist. Pass download=True to fetch it "
            f"into {root} (needs internet), or place the extracted 'cifar-100-python/' "
            f"folder (from cifar-100-python.tar.gz) in {root}."
        )
    from torchvision.datasets import CIFAR100

    out = []
    for train in (True, False):
        data = CIFAR100(str(root), train=train, download=download)
        x = torch.from_numpy(np.ascontiguousarray(data.data.transpose(0, 3, 1, 2)))
        out += [x.float().div_(255), torch.as_tensor(data.targets, dtype=torch.int64)]
    return out[0], out[1], out[2], out[3]


def _labels(a, name: str) -> torch.Tensor:
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    if a.dtype.is_floating_point or a.dtype.is_complex or a.dtype == torch.bool or a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D integer array, got {a.dtype} {tuple(a.shape)}")
    return a.long()


def cifar_protocol_from_arrays(
    x_train, y_train, x_test, y_test, *, old_classes: int = 50, name: str = "cifar100"
) -> BCLData:
    """The FCT / BT^2 "50 -> 100" protocol on given arrays.

    The old model trains on the training images of classes ``0..old_classes-1``, the new
    model on all training images; evaluation is closed-set on the test images (query =
    gallery, leave-one-out).

    Parameters
    ----------
    x_train : array or tensor, shape (n, ...); y_train : int, shape (n,)
        Labels must be ``0..C-1`` with every class present.
    x_test : array or tensor, shape (m, ...); y_test : int, shape (m,)
        Labels in ``[0, C)``.
    old_classes : int in [1, C), default 50
    name : str, default "cifar100"
        ``BCLData.name``.
    """
    x_train, x_test = torch.as_tensor(x_train).float(), torch.as_tensor(x_test).float()
    y_train, y_test = _labels(y_train, "y_train"), _labels(y_test, "y_test")
    n_classes = int(y_train.max()) + 1 if len(y_train) else 0
    if len(y_train) == 0 or not torch.equal(torch.unique(y_train), torch.arange(n_classes)):
        raise ValueError("y_train must hold every label 0..C-1 (contiguous class ids)")
    if len(y_test) == 0 or y_test.min() < 0 or y_test.max() >= n_classes:
        raise ValueError(f"y_test must be non-empty with labels in [0, {n_classes})")
    if isinstance(old_classes, bool) or not isinstance(old_classes, (int, np.integer)) or not (
        1 <= old_classes < n_classes
    ):
        raise ValueError(f"old_classes must be an integer in [1, {n_classes}), got {old_classes!r}")
    new_train = Labeled(x_train, y_train)
    old_train = new_train.subset(torch.nonzero(y_train < old_classes).flatten())
    evaluation = Labeled(x_test, y_test)
    return BCLData(
        name=name,
        old_train=old_train,
        new_train=new_train,
        query=evaluation,
        gallery=evaluation,
        num_classes=n_classes,
        num_old_classes=int(old_classes),
        input_shape=tuple(x_train.shape[1:]),
        query_is_gallery=True,
        info={"setting": "extended-class", "protocol": "closed-set",
              "old_classes": int(old_classes), "n_old_train": len(old_train),
              "n_new_train": len(new_train), "n_eval": len(evaluation),
              "class_ids": list(range(n_classes))},
    )  # fmt: skip


def cifar100_50_to_100(root: str | os.PathLike, *, download: bool = False) -> BCLData:
    """CIFAR-100 50 -> 100 (FCT, BT^2): :func:`load_cifar100` then
    :func:`cifar_protocol_from_arrays` with ``old_classes=50``."""
    return cifar_protocol_from_arrays(*load_cifar100(root, download=download), old_classes=50)
