"""Images decoded from disk on access: a tensor-like that the trainer can index.

:class:`LazyImages` stands where a ``(n, C, H, W)`` float tensor of images would stand
in a :class:`~bclviz.data.base.Labeled`: it has ``shape``, ``len``, indexing by int,
slice or 1-D index tensor (returning decoded float tensors), and :meth:`LazyImages.take`
for lazy subsets. Only the images of the batch asked for are read, so the trainer's
``data.x[idx]`` and :func:`bclviz.train.embed`'s ``x[s : s + batch_size]`` work on
datasets far larger than memory.

Decoding is deterministic (resize to ``image_size``, values in [0, 1], optional
per-channel normalisation) and identical to
:class:`~bclviz.data.formats.ImageListDataset` with :func:`default_transform`.
There is no training augmentation (random crops, flips): every epoch sees the same
pixels.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from bclviz.data.formats import ImageList, default_transform

__all__ = ["LazyImages", "IMAGENET_MEAN", "IMAGENET_STD", "image_size_pair"]

#: per-channel mean and standard deviation of ImageNet (RGB), for ``normalize=True``
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_size_pair(image_size) -> tuple[int, int]:
    """``image_size`` (an int or ``(h, w)``) as ``(h, w)``; ``ValueError`` otherwise."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        image_size = (int(image_size), int(image_size))
    if (
        not isinstance(image_size, Sequence)
        or len(image_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in image_size)
    ):
        raise ValueError(f"image_size must be a positive integer or [height, width], got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


class LazyImages:
    """The images of an :class:`~bclviz.data.formats.ImageList`, decoded when indexed.

    Parameters
    ----------
    image_list : ImageList
        The files, in order; row ``i`` is ``image_list.paths[i]``.
    image_size : int or (h, w), default 224
        Every image is resized to this (no cropping, aspect ratio not kept).
    mean, std : sequence of 3 floats, optional
        Per-channel normalisation ``(x - mean) / std`` after scaling to [0, 1]; both or
        neither (e.g. :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD` for pretrained weights).
    workers : int, default 8
        Threads that decode one batch in parallel (PIL releases the GIL while
        decoding); 1 decodes in the calling thread.

    Indexing
    --------
    ``x[i]`` -> float32 ``(3, h, w)``; ``x[a:b]``, ``x[index_tensor]``,
    ``x[numpy_array]`` or ``x[list_of_ints]`` -> float32 ``(m, 3, h, w)``. Negative
    positions count from the end; a 1-D boolean mask selects rows.
    """

    def __init__(
        self,
        image_list: ImageList,
        *,
        image_size: int | Sequence[int] = 224,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        workers: int = 8,
    ) -> None:
        if not isinstance(image_list, ImageList):
            raise TypeError(f"image_list must be an ImageList, got {type(image_list).__name__}")
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std (per-channel normalisation) or neither")
        if mean is not None:
            if len(mean) != 3 or len(std) != 3 or any(float(s) <= 0 for s in std):
                raise ValueError(f"mean and std must hold 3 values each, std > 0; got {mean!r}, {std!r}")
            mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.image_list = image_list
        self.image_size = image_size_pair(image_size)
        self.mean, self.std = mean, std
        self.workers = int(workers)
        self._transform = default_transform(self.image_size)

    # ------------------------------------------------------------------ tensor-like
    @property
    def shape(self) -> torch.Size:
        """``(n, 3, h, w)``."""
        return torch.Size((len(self.image_list), 3, *self.image_size))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.image_list)

    def __repr__(self) -> str:
        h, w = self.image_size
        norm = "" if self.mean is None else ", normalised"
        return f"LazyImages({len(self)} images of 3x{h}x{w}{norm}, root={str(self.image_list.root)!r})"

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, slice):
            return self._decode(np.arange(len(self))[key])
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self._decode(self._positions(np.asarray([operator.index(key)])))[0]
        return self._decode(self._positions(key))

    def take(self, index) -> "LazyImages":
        """The rows at ``index`` (int array, tensor or list; or a boolean mask), still lazy."""
        return LazyImages(
            self.image_list.subset(self._positions(index)), image_size=self.image_size,
            mean=self.mean, std=self.std, workers=self.workers,
        )

    # ------------------------------------------------------------------ decoding
    def _positions(self, key) -> np.ndarray:
        if isinstance(key, torch.Tensor):
            key = key.detach().cpu().numpy()
        index = np.asarray(key)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise IndexError(f"a boolean mask must have shape ({len(self)},), got {index.shape}")
            return np.flatnonzero(index)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise IndexError(
                f"LazyImages takes an int, a slice or a 1-D integer index, got {index.dtype} {index.shape}"
            )
        index = index.astype(np.int64)
        n = len(self)
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"index out of range for {n} images: [{index.min()}, {index.max()}]")
        return np.where(index < 0, index + n, index)

    def _load(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.image_list.paths[i]) as image:
            return self._transform(image.convert("RGB"))

    def _decode(self, index: np.ndarray) -> torch.Tensor:
        if index.size == 0:
            return torch.empty((0, 3, *self.image_size), dtype=torch.float32)
        positions = [int(i) for i in index]
        if self.workers == 1 or len(positions) == 1:
            images = [self._load(i) for i in positions]
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(positions))) as pool:
                images = list(pool.map(self._load, positions))
        out = torch.stack(images)
        if self.mean is not None:
            mean = torch.tensor(self.mean).view(1, 3, 1, 1)
            std = torch.tensor(self.std).view(1, 3, 1, 1)
            out = out.sub_(mean).div_(std)
        return out
