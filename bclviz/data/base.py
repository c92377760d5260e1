"""Containers shared by every dataset builder."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

__all__ = ["Labeled", "BCLData"]


@dataclass(frozen=True)
class Labeled:
    """Inputs ``x`` (n, ...) with integer labels ``y`` (n,).

    ``x`` is a tensor, or a lazily loaded tensor-like such as
    :class:`~bclviz.data.lazy.LazyImages` (``shape``, indexing that returns tensors,
    and ``take(index)`` for a subset that stays lazy).
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]} labels"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, index: torch.Tensor) -> "Labeled":
        index = torch.as_tensor(index, dtype=torch.long)
        x = self.x[index] if isinstance(self.x, torch.Tensor) else self.x.take(index)
        return Labeled(x, self.y[index])


@dataclass(frozen=True)
class BCLData:
    """Everything one backward-compatible update needs.

    Attributes
    ----------
    name : dataset name (``"toy"``, ``"digits"``, ...).
    old_train : what the old model is trained on; labels in ``[0, num_old_classes)``.
    new_train : what the new model is trained on; labels in ``[0, num_classes)``.
        Old classes keep the same label ids in both sets, unless ``old_class_of`` says
        otherwise.
    query, gallery : retrieval evaluation sets (labels may be any ids; only equality
        matters). When ``query_is_gallery`` is true they are the same images and the
        self-match is excluded by index (closed-set leave-one-out).
    num_classes, num_old_classes : class counts of ``new_train`` and ``old_train``.
    input_shape : shape of one input, e.g. ``(32,)`` or ``(1, 28, 28)``.
    old_view : optional degraded view the old model sees instead of the input: a (D, D)
        matrix applied to flattened inputs (the toy's "coarse view"), or a module mapping
        a batch to a batch of the same shape (e.g. :class:`~bclviz.models.BlockAverage`,
        the ``lowres-old`` scenario). The old model is built behind it
        (:class:`~bclviz.models.InputView`).
    old_class_of : optional (num_classes,) int64: the old model's class (its label in
        ``old_train``, ``0..num_old_classes-1``) of every new class, ``-1`` for a class
        the old model never saw. ``None`` means the plain contract above: class ``c``
        is old class ``c`` when ``c < num_old_classes``, unseen otherwise. Several new
        classes may share one old class (the ``coarse-old`` scenario: the old model
        was trained on superclasses); :meth:`old_classes` always returns the map.
    info : free-form description of how the data was made (seed, ratios, protocol).
    relevance : optional, one sorted int64 array per query: the positions in
        ``gallery`` relevant to it (GLDv2 retrieval, where relevance is not given by
        class labels; query and gallery labels are then -1). When set, retrieval is
        scored with :func:`bclviz.data.gldv2.map_at_k_relevance`, not by labels.
    headline : optional metric name (e.g. ``"R@1"``, In-shop's convention) that a run
        reports as its headline and judges compatibility on; ``None`` means ``mAP@k``.
    """

    name: str
    old_train: Labeled
    new_train: Labeled
    query: Labeled
    gallery: Labeled
    num_classes: int
    num_old_classes: int
    input_shape: tuple[int, ...]
    query_is_gallery: bool = False
    old_view: torch.Tensor | nn.Module | None = None
    info: dict = field(default_factory=dict)
    relevance: tuple[np.ndarray, ...] | None = None
    headline: str | None = None
    old_class_of: torch.Tensor | None = None

    def __post_init__(self) -> None:
        m = self.old_class_of
        if m is None:
            return
        if not isinstance(m, torch.Tensor) or m.dtype != torch.int64 or m.shape != (self.num_classes,):
            raise ValueError(f"BCLData.old_class_of must be an int64 tensor of shape ({self.num_classes},), "
                             f"got {getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}")
        if int(m.min()) < -1 or int(m.max()) >= self.num_old_classes:
            raise ValueError(f"BCLData.old_class_of must hold old classes in [0, {self.num_old_classes}) "
                             f"or -1 (unseen), got range [{int(m.min())}, {int(m.max())}]")

    def old_classes(self) -> torch.Tensor:
        """The (num_classes,) int64 map from new classes to old ones (-1: unseen)."""
        if self.old_class_of is not None:
            return self.old_class_of.clone()
        ids = torch.arange(self.num_classes, dtype=torch.int64)
        return torch.where(ids < self.num_old_classes, ids, torch.full_like(ids, -1))

    @classmethod
    def leave_one_out(cls, name: str, *, old_train: Labeled, new_train: Labeled, evaluation: Labeled,
                      num_classes: int, num_old_classes: int, **fields) -> "BCLData":
        """Closed-set retrieval: ``evaluation`` is both query and gallery (self-match
        excluded by index); ``input_shape`` is read off ``new_train``."""
        return cls(name=name, old_train=old_train, new_train=new_train, query=evaluation, gallery=evaluation,
                   num_classes=int(num_classes), num_old_classes=int(num_old_classes),
                   input_shape=tuple(new_train.x.shape[1:]), query_is_gallery=True, **fields)
