"""CIFAR-100 read through torchvision, and the FCT / BT^2 "50 -> 100" protocol.

Unlike the image-file benchmarks (:mod:`bclviz.data.formats`), CIFAR is held in memory
as float tensors. :func:`load_cifar100` reads ``root/cifar-100-python/`` (downloading
only with ``download=True``); :func:`cifar_protocol_from_arrays` turns any arrays into
the old/new update; the ``cifar100`` dataset is built by
:func:`bclviz.data.benchmarks.cifar100_data`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from bclviz.data.base import BCLData, Labeled

__all__ = ["load_cifar100", "cifar_protocol_from_arrays", "cifar100_50_to_100"]


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
    return BCLData.leave_one_out(
        name, old_train=old_train, new_train=new_train, evaluation=evaluation,
        num_classes=n_classes, num_old_classes=old_classes,
        info={"setting": "extended-class", "protocol": "closed-set",
              "old_classes": int(old_classes), "n_old_train": len(old_train),
              "n_new_train": len(new_train), "n_eval": len(evaluation),
              "class_ids": list(range(n_classes))},
    )  # fmt: skip


def cifar100_50_to_100(root: str | os.PathLike, *, download: bool = False) -> BCLData:
    """CIFAR-100 50 -> 100 (FCT, BT^2): :func:`load_cifar100` then
    :func:`cifar_protocol_from_arrays` with ``old_classes=50``."""
    return cifar_protocol_from_arrays(*load_cifar100(root, download=download), old_classes=50)
