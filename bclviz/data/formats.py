"""Image files on disk as a labeled list: the record every benchmark reader returns.

:class:`ImageList` (paths, contiguous labels, the original id of each label) is what the
format readers produce: :func:`load_image_folder` here (``root/<class>/<image>``),
:func:`bclviz.data.gldv2.load_gldv2_train` / :func:`~bclviz.data.gldv2.load_gldv2_retrieval`
and :func:`bclviz.data.inshop.load_inshop`. :class:`ImageListDataset` makes a list a
torch ``Dataset``; :func:`split_extended_class`, :func:`split_extended_data` and
:func:`limit_classes` cut lists into the old/new training sets. CIFAR-100, held in
memory rather than as files, is read by :mod:`bclviz.data.cifar`. The benchmark
builders that combine these into a :class:`~bclviz.data.base.BCLData` live in
:mod:`bclviz.data.benchmarks`.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bclviz.data import splits

__all__ = [
    "ImageList", "ImageListDataset", "default_transform", "check_images_exist",
    "IMAGE_EXTENSIONS", "load_image_folder", "split_extended_class", "split_extended_data",
    "limit_classes",
]  # fmt: skip

#: file name endings (lower case) that :func:`load_image_folder` treats as images
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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


def _optional_int(value, name: str, low: int) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or value < low):
        raise ValueError(f"{name} must be an integer >= {low} or null, got {value!r}")
    return None if value is None else int(value)


def limit_classes(
    image_list: ImageList, *, max_classes: int | None = None, max_images: int | None = None,
    seed: int = 0,
) -> ImageList:
    """At most ``max_classes`` random classes, then at most ``max_images`` images of them.

    Images are drawn by :func:`bclviz.data.splits.stratified_subsample`; classes left
    without an image are dropped. Labels are made contiguous again (``0..C'-1`` in the
    original label order) and ``class_ids`` follow. ``None`` keeps everything.
    """
    max_classes = _optional_int(max_classes, "max_classes", 2)
    max_images = _optional_int(max_images, "max_images", 2)
    y = np.asarray(image_list.labels)
    rng = np.random.default_rng(splits._check_seed(seed))
    keep = np.arange(len(y))
    if max_classes is not None and max_classes < image_list.num_classes:
        chosen = rng.choice(image_list.num_classes, size=max_classes, replace=False)
        keep = np.flatnonzero(np.isin(y, chosen))
    if max_images is not None and max_images < len(keep):
        keep = keep[splits.stratified_subsample(y[keep], size=max_images, seed=int(rng.integers(2**31)))]
    if len(keep) == len(y):
        return image_list
    present = np.unique(y[keep])
    return ImageList(
        tuple(image_list.paths[i] for i in keep), np.searchsorted(present, y[keep]),
        tuple(image_list.class_ids[c] for c in present), image_list.root,
    )
