"""Containers shared by every dataset builder."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

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
        Old classes keep the same label ids in both sets.
    query, gallery : retrieval evaluation sets (labels may be any ids; only equality
        matters). When ``query_is_gallery`` is true they are the same images and the
        self-match is excluded by index (closed-set leave-one-out).
    num_classes, num_old_classes : class counts of ``new_train`` and ``old_train``.
    input_shape : shape of one input, e.g. ``(32,)`` or ``(1, 28, 28)``.
    old_view : optional (D, D) matrix applied to flattened inputs before the old model
        (the toy's "coarse view": the old model sees a degraded input).
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
    old_view: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    relevance: tuple[np.ndarray, ...] | None = None
    headline: str | None = None

    @classmethod
    def leave_one_out(cls, name: str, *, old_train: Labeled, new_train: Labeled, evaluation: Labeled,
                      num_classes: int, num_old_classes: int, **fields) -> "BCLData":
        """Closed-set retrieval: ``evaluation`` is both query and gallery (self-match
        excluded by index); ``input_shape`` is read off ``new_train``."""
        return cls(name=name, old_train=old_train, new_train=new_train, query=evaluation, gallery=evaluation,
                   num_classes=int(num_classes), num_old_classes=int(num_old_classes),
                   input_shape=tuple(new_train.x.shape[1:]), query_is_gallery=True, **fields)
