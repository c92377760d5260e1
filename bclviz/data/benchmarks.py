"""The benchmark datasets: one backward-compatible update on a real benchmark read from a
local copy.

Each builder turns a dataset folder into a :class:`~bclviz.data.base.BCLData` that
:func:`bclviz.runner.run_training` and the trainer use as they are; image files stay on
disk (:class:`~bclviz.data.lazy.LazyImages`), CIFAR-100 is held in memory.

============  ==============================  ======================================  ==========
name          training (old -> new)           evaluation                              headline
============  ==============================  ======================================  ==========
gldv2         extended-class, 30% -> 100%     private retrieval queries vs index,     mAP@100
              of the landmarks                per-query relevance
inshop        extended-class, 30% -> 100%     query vs gallery, item ids (open-set)   R@1
              of the training items
cifar100      classes 0..49 -> 0..99          test images, leave-one-out (closed)     mAP@100
imagefolder   extended-class, 50% -> 100%     held-out images per class,              mAP@100
                                              leave-one-out (closed-set)
============  ==============================  ======================================  ==========

All builders take ``root`` (required), ``seed`` and ``old_ratio``, and ``max_classes``
/ ``max_images`` to cut the training source down for quick trials (random classes,
then a stratified sample of images, both drawn from ``seed``). Images are resized to
``image_size`` without cropping or augmentation.

The builders are registered by name in :mod:`bclviz.data.registry` (``load_dataset("gldv2",
root=...)``); the file formats they read are in :mod:`bclviz.data.formats`,
:mod:`bclviz.data.gldv2`, :mod:`bclviz.data.inshop` and :mod:`bclviz.data.cifar`, whose
public names can also be imported from here (as before the split).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bclviz.data import splits
from bclviz.data.base import BCLData, Labeled
from bclviz.data.cifar import cifar100_50_to_100, cifar_protocol_from_arrays, load_cifar100
from bclviz.data.formats import (
    IMAGE_EXTENSIONS, ImageList, ImageListDataset, _optional_int, check_images_exist,
    default_transform, limit_classes, load_image_folder, split_extended_class, split_extended_data,
)  # fmt: skip
from bclviz.data.gldv2 import RetrievalSplit, load_gldv2_retrieval, load_gldv2_train, map_at_k_relevance
from bclviz.data.inshop import load_inshop
from bclviz.data.lazy import IMAGENET_MEAN, IMAGENET_STD, LazyImages, image_size_pair

__all__ = [
    "gldv2_data", "inshop_data", "cifar100_data", "imagefolder_data",
    # the formats, importable from here as before (bclviz.data.formats, .cifar, .gldv2, .inshop)
    "ImageList", "ImageListDataset", "default_transform", "check_images_exist",
    "IMAGE_EXTENSIONS", "load_image_folder", "split_extended_class", "split_extended_data",
    "limit_classes", "load_cifar100", "cifar_protocol_from_arrays", "cifar100_50_to_100",
    "RetrievalSplit", "load_gldv2_train", "load_gldv2_retrieval", "map_at_k_relevance", "load_inshop",
]  # fmt: skip

GLDV2_HOWTO = (
    "Get GLDv2 with the download scripts of https://github.com/cvdfoundation/google-landmark "
    "into one folder holding train/, index/, test/, train_clean.csv, index.csv and "
    "retrieval_solution_v2.1.csv (docs/full_runs.md)."
)
INSHOP_HOWTO = (
    "Get DeepFashion In-shop Clothes Retrieval "
    "(http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html): unzip img.zip "
    "into the folder and copy Eval/list_eval_partition.txt next to img/ (docs/full_runs.md)."
)
CIFAR100_HOWTO = (
    "Extract cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz) "
    "into the folder, or set data_options.download: true (needs internet)."
)
IMAGEFOLDER_HOWTO = "Point it at a folder laid out as root/<class name>/<image file>."


# ----------------------------------------------------------------------------- helpers
def _root(root, name: str, howto: str) -> Path:
    if root is None:
        raise ValueError(
            f"dataset {name!r} needs data_options.root, the folder holding the data. {howto}"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{name} root {path} does not exist or is not a folder. {howto}")
    return path


def _seeds(seed: int, n: int) -> list[int]:
    seed = splits._check_seed(seed)
    return [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(n)]


def _images(image_list: ImageList, size: tuple[int, int], normalize: bool, workers: int) -> LazyImages:
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be true or false, got {normalize!r}")
    stats = (IMAGENET_MEAN, IMAGENET_STD) if normalize else (None, None)
    return LazyImages(image_list, image_size=size, mean=stats[0], std=stats[1], workers=workers)


def _labeled(image_list: ImageList, size, normalize, workers, labels=None) -> Labeled:
    y = image_list.labels if labels is None else labels
    return Labeled(_images(image_list, size, normalize, workers), torch.from_numpy(np.array(y, dtype=np.int64)))


def _extended_class(train: ImageList, old_ratio: float, seed: int, size, normalize, workers):
    """``(old_train, new_train, num_old_classes, class_ids in new-label order)``."""
    if train.num_classes < 2:
        raise ValueError(
            f"the training images hold {train.num_classes} class; an extended-class update needs "
            "at least 2 (raise max_classes / max_images)"
        )
    splits._check_ratio(old_ratio, "old_ratio", allow_one=False)
    old, new = split_extended_class(train, ratio=old_ratio, seed=seed)
    return (_labeled(old, size, normalize, workers), _labeled(new, size, normalize, workers),
            old.num_classes, new.class_ids)


# ----------------------------------------------------------------------------- GLDv2
def gldv2_data(
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    image_size: int | Sequence[int] = 224,
    old_ratio: float = 0.3,
    max_classes: int | None = None,
    max_images: int | None = None,
    max_queries: int | None = None,
    max_index: int | None = None,
    train_csv: str = "train_clean.csv",
    min_images_per_class: int = 1,
    usage: Sequence[str] = ("Private",),
    check_files: bool = True,
    normalize: bool = False,
    workers: int = 8,
) -> BCLData:
    """Google Landmarks v2: extended-class training, retrieval scored by mAP@100.

    Parameters
    ----------
    root : folder with the layout of :mod:`bclviz.data.gldv2`.
    seed : which landmarks are old, and every subsample.
    image_size : int or [h, w], default 224.
    old_ratio : fraction of the training landmarks the old model sees, default 0.3.
    max_classes, max_images : cap on the training landmarks / images (quick trials).
    max_queries : keep this many random queries (of those with a relevant image).
    max_index : keep at most this many index images: all images relevant to a kept
        query, plus random distractors up to the cap.
    train_csv, min_images_per_class : see :func:`bclviz.data.gldv2.load_gldv2_train`.
    usage : solution rows to evaluate on, default ("Private",) (the usual report).
        Queries without any relevant image ("Ignored") are always dropped.
    check_files : check that every listed image exists before training (slow on
        millions of files; a missing one then fails when it is read).
    normalize : ImageNet mean/std normalisation (for pretrained weights).
    workers : decoding threads per batch.

    Returns
    -------
    BCLData
        ``query`` and ``gallery`` (the index) are unlabeled (-1); ``relevance[q]`` holds
        the gallery positions relevant to query ``q``.
    """
    path = _root(root, "gldv2", GLDV2_HOWTO)
    size = image_size_pair(image_size)
    usage = (usage,) if isinstance(usage, str) else tuple(usage)
    max_queries = _optional_int(max_queries, "max_queries", 1)
    max_index = _optional_int(max_index, "max_index", 1)
    s_limit, s_old, s_eval = _seeds(seed, 3)
    train = load_gldv2_train(path, csv=train_csv, min_images_per_class=min_images_per_class,
                             check_files=check_files)
    train = limit_classes(train, max_classes=max_classes, max_images=max_images, seed=s_limit)
    old_train, new_train, n_old, class_ids = _extended_class(train, old_ratio, s_old, size, normalize, workers)

    split = load_gldv2_retrieval(path, usage=usage, check_files=check_files)
    rng = np.random.default_rng(s_eval)
    queries = np.asarray([q for q, r in enumerate(split.relevant) if r.size], dtype=np.int64)
    if queries.size == 0:
        raise ValueError(f"{path}: no retrieval query with usage in {usage} has a relevant index image")
    if max_queries is not None and max_queries < queries.size:
        queries = np.sort(rng.choice(queries, size=max_queries, replace=False))
    relevant = [split.relevant[q] for q in queries]
    index = np.arange(len(split.index))
    if max_index is not None and max_index < index.size:
        needed = np.unique(np.concatenate(relevant))
        others = np.setdiff1d(index, needed)
        extra = rng.choice(others, size=min(others.size, max(0, max_index - needed.size)), replace=False)
        index = np.sort(np.concatenate([needed, extra]))
        relevant = [np.searchsorted(index, r) for r in relevant]
    query_list, index_list = split.query.subset(queries), split.index.subset(index)
    info = {
        "root": str(path), "seed": seed, "setting": "extended-class", "protocol": "open-set",
        "old_ratio": float(old_ratio), "image_size": list(size), "usage": list(usage),
        "n_old_train": len(old_train), "n_new_train": len(new_train),
        "n_queries": len(query_list), "n_index": len(index_list),
        "num_classes": len(class_ids), "num_old_classes": n_old,
    }  # fmt: skip
    return BCLData(
        name="gldv2", old_train=old_train, new_train=new_train,
        query=_labeled(query_list, size, normalize, workers),
        gallery=_labeled(index_list, size, normalize, workers),
        num_classes=len(class_ids), num_old_classes=n_old, input_shape=(3, *size),
        info=info, relevance=tuple(np.asarray(r, dtype=np.int64) for r in relevant),
    )


# ----------------------------------------------------------------------------- In-shop
def inshop_data(
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    image_size: int | Sequence[int] = 224,
    old_ratio: float = 0.3,
    max_classes: int | None = None,
    max_images: int | None = None,
    max_eval_classes: int | None = None,
    check_files: bool = True,
    normalize: bool = False,
    workers: int = 8,
) -> BCLData:
    """DeepFashion In-shop: extended-class training on item ids, query vs gallery.

    Parameters
    ----------
    root : folder holding ``list_eval_partition.txt`` and ``img/``.
    old_ratio : fraction of the training items the old model sees, default 0.3.
    max_classes, max_images : cap on the training items / images (quick trials).
    max_eval_classes : keep the query and gallery images of this many random test items.
    Others as in :func:`gldv2_data`.

    Returns
    -------
    BCLData
        Query and gallery labels are the test item ids (disjoint from training items);
        ``headline`` is ``"R@1"``, the In-shop convention.
    """
    path = _root(root, "inshop", INSHOP_HOWTO)
    size = image_size_pair(image_size)
    max_eval_classes = _optional_int(max_eval_classes, "max_eval_classes", 1)
    s_limit, s_old, s_eval = _seeds(seed, 3)
    parts = load_inshop(path, check_files=check_files)
    train = limit_classes(parts["train"], max_classes=max_classes, max_images=max_images, seed=s_limit)
    old_train, new_train, n_old, class_ids = _extended_class(train, old_ratio, s_old, size, normalize, workers)
    query, gallery = parts["query"], parts["gallery"]
    query_items = np.unique(query.labels)
    if max_eval_classes is not None and max_eval_classes < query_items.size:
        items = np.random.default_rng(s_eval).choice(query_items, size=max_eval_classes, replace=False)
        query = query.subset(np.flatnonzero(np.isin(query.labels, items)))
        gallery = gallery.subset(np.flatnonzero(np.isin(gallery.labels, items)))
    if len(query) == 0 or len(gallery) == 0:
        raise ValueError(f"{path}: the partition file lists {len(query)} query and {len(gallery)} gallery images; "
                         "both are needed")
    info = {
        "root": str(path), "seed": seed, "setting": "extended-class", "protocol": "open-set",
        "old_ratio": float(old_ratio), "image_size": list(size),
        "n_old_train": len(old_train), "n_new_train": len(new_train),
        "n_queries": len(query), "n_gallery": len(gallery),
        "num_classes": len(class_ids), "num_old_classes": n_old,
    }  # fmt: skip
    return BCLData(
        name="inshop", old_train=old_train, new_train=new_train,
        query=_labeled(query, size, normalize, workers), gallery=_labeled(gallery, size, normalize, workers),
        num_classes=len(class_ids), num_old_classes=n_old, input_shape=(3, *size),
        info=info, headline="R@1",
    )


# ----------------------------------------------------------------------------- CIFAR-100
def cifar100_data(
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    image_size: int | Sequence[int] = 32,
    old_ratio: float = 0.5,
    max_classes: int | None = None,
    max_images: int | None = None,
    download: bool = False,
) -> BCLData:
    """CIFAR-100 "50 -> 100" (FCT, BT^2), in memory.

    The old model trains on classes ``0..ceil(old_ratio * C) - 1`` (the fixed protocol
    classes, not random), the new model on all ``C``; evaluation is closed-set on the
    test images of those classes (leave-one-out).

    Parameters
    ----------
    root : folder holding ``cifar-100-python/``.
    image_size : default 32 (native); other sizes are resized bilinearly (all images
        are held in memory: 50000 x 3 x s x s float32).
    max_classes : keep classes ``0..max_classes-1`` only.
    max_images : stratified cap on the training images (drawn from ``seed``).
    download : fetch the archive into ``root`` with torchvision (needs internet).
    """
    if root is None:
        raise ValueError(f"dataset 'cifar100' needs data_options.root, the folder holding the data. {CIFAR100_HOWTO}")
    path = Path(root).expanduser()
    if not download and not (path / "cifar-100-python").is_dir():
        raise FileNotFoundError(f"cifar100 root {path} holds no cifar-100-python/ folder. {CIFAR100_HOWTO}")
    size = image_size_pair(image_size)
    max_classes = _optional_int(max_classes, "max_classes", 2)
    max_images = _optional_int(max_images, "max_images", 2)
    (s_limit,) = _seeds(seed, 1)
    x_tr, y_tr, x_te, y_te = load_cifar100(path, download=download)
    if max_classes is not None and max_classes < 100:
        tr, te = y_tr < max_classes, y_te < max_classes
        x_tr, y_tr, x_te, y_te = x_tr[tr], y_tr[tr], x_te[te], y_te[te]
    if max_images is not None and max_images < len(y_tr):
        keep = torch.from_numpy(splits.stratified_subsample(y_tr.numpy(), size=max_images, seed=s_limit))
        x_tr, y_tr = x_tr[keep], y_tr[keep]
        if len(torch.unique(y_tr)) < int(y_tr.max()) + 1:
            raise ValueError(f"max_images={max_images} leaves some classes without a training image")
    if size != (32, 32):
        resize = torch.nn.functional.interpolate
        x_tr = resize(x_tr, size=size, mode="bilinear", antialias=True, align_corners=False)
        x_te = resize(x_te, size=size, mode="bilinear", antialias=True, align_corners=False)
    n_classes = int(y_tr.max()) + 1
    splits._check_ratio(old_ratio, "old_ratio", allow_one=False)
    old_classes = min(max(math.ceil(round(old_ratio * n_classes, 9)), 1), n_classes - 1)
    data = cifar_protocol_from_arrays(x_tr, y_tr, x_te, y_te, old_classes=old_classes)
    info = {**data.info, "root": str(path), "seed": seed, "image_size": list(size), "old_ratio": float(old_ratio)}
    return dataclasses.replace(data, info=info)


# ----------------------------------------------------------------------------- folders
def imagefolder_data(
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    image_size: int | Sequence[int] = 224,
    old_ratio: float = 0.5,
    test_ratio: float = 0.2,
    max_classes: int | None = None,
    max_images: int | None = None,
    normalize: bool = False,
    workers: int = 8,
) -> BCLData:
    """Any ``root/<class>/<image>`` tree: extended-class update, closed-set evaluation.

    ``test_ratio`` of each class's images (at least one, when the class has two) are
    held out (:func:`bclviz.data.splits.closed_set`) and used as query and gallery with
    leave-one-out; the rest train the models, the old one on ``old_ratio`` of the
    classes. ``max_classes`` / ``max_images`` apply before the hold-out.
    """
    path = _root(root, "imagefolder", IMAGEFOLDER_HOWTO)
    size = image_size_pair(image_size)
    s_limit, s_split, s_old = _seeds(seed, 3)
    images = limit_classes(load_image_folder(path), max_classes=max_classes, max_images=max_images, seed=s_limit)
    train_index, test_index = splits.closed_set(images.labels, test_ratio=test_ratio, seed=s_split)
    if test_index.size < 2:
        raise ValueError(f"{path}: the hold-out keeps {test_index.size} image(s); evaluation needs at least 2 "
                         "(add images, or raise test_ratio)")
    train, test = images.subset(train_index), images.subset(test_index)
    old_train, new_train, n_old, class_ids = _extended_class(train, old_ratio, s_old, size, normalize, workers)
    label_of = {c: i for i, c in enumerate(class_ids)}
    test_labels = np.asarray([label_of[test.class_ids[c]] for c in test.labels], dtype=np.int64)
    evaluation = _labeled(test, size, normalize, workers, labels=test_labels)
    info = {
        "root": str(path), "seed": seed, "setting": "extended-class", "protocol": "closed-set",
        "old_ratio": float(old_ratio), "test_ratio": float(test_ratio), "image_size": list(size),
        "n_old_train": len(old_train), "n_new_train": len(new_train), "n_eval": len(evaluation),
        "class_ids": [str(c) for c in class_ids],
    }  # fmt: skip
    return BCLData(
        name="imagefolder", old_train=old_train, new_train=new_train, query=evaluation, gallery=evaluation,
        num_classes=len(class_ids), num_old_classes=n_old, input_shape=(3, *size),
        query_is_gallery=True, info=info,
    )
