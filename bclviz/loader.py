"""Batches of one training epoch, loaded ahead by worker processes when the inputs are lazy.

The trainer (:mod:`bclviz.train`) draws each epoch's batch indices itself (a seeded
shuffle, cut to ``max_steps``, sharded per rank); :class:`BatchLoader` turns that list
into the batches ``(x, y)`` on the training device, in the same order:

* inputs held in memory (a ``torch.Tensor``) are indexed in the calling process, as the
  trainer always did: no worker, no queue, no copy beyond the indexing itself;
* lazily loaded inputs (anything else that indexes like a tensor, e.g.
  :class:`~bclviz.data.lazy.LazyImages`, whose images are decoded and resized on
  access) are read by a :class:`torch.utils.data.DataLoader` whose item is a whole batch
  (``batch_size=None``; a sampler hands it the precomputed index arrays in order), with
  ``workers`` processes kept alive across epochs, ``prefetch_factor`` batches queued per
  worker and pinned memory when the target device is CUDA. ``workers=0`` decodes in the
  calling process.

The batches are the same for every worker count: the order comes from the caller, the
DataLoader returns results in order, and decoding is deterministic. Workers are seeded
from ``seed`` (torch, :mod:`random` and numpy) in case a transform draws random numbers;
the DataLoader draws its seeds from its own generator, never from torch's global one,
so starting workers does not change the training process's random stream.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["BatchLoader", "EpochBatches", "available_cores", "default_workers", "resolve_workers"]


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Worker processes used when ``workers`` is ``None``: ``min(8, cores - 1)``, at least 0.

    The cores are those this process may run on, shared among the ranks of this machine
    under ``torchrun`` (``LOCAL_WORLD_SIZE``); one core is left to the training process.
    """
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(0, min(8, available_cores() // local - 1))


def _is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def resolve_workers(workers: int | None, name: str = "workers") -> int:
    """``workers`` as a number of processes (``None`` -> :func:`default_workers`);
    ``ValueError`` naming ``name`` unless it is ``None`` or an integer >= 0."""
    if workers is None:
        return default_workers()
    if not _is_count(workers) or workers < 0:
        raise ValueError(f"{name} must be an integer >= 0 or None (one per core, up to 8), got {workers!r}")
    return int(workers)


class _Batches(torch.utils.data.Dataset):
    """Map-style dataset whose key is a batch's index array and whose item is its inputs."""

    def __init__(self, x) -> None:
        self.x = x

    def __getitem__(self, index: np.ndarray):
        return self.x[index]


class _EpochSampler(torch.utils.data.Sampler):
    """The current epoch's index arrays, in order. It lives in the training process, so
    persistent workers see each epoch's new list (only the arrays travel to them)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _seed_worker(seed: int, worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    base = info.seed if info is not None else seed + worker_id  # torch already seeded itself from it
    random.seed(base)
    np.random.seed(base % 2**32)


def _single_threaded(x):
    """``x`` decoding in one thread per process (the DataLoader's processes are the parallelism)."""
    from .data.lazy import LazyImages

    if isinstance(x, LazyImages) and x.workers > 1:
        return LazyImages(x.image_list, image_size=x.image_size, mean=x.mean, std=x.std, workers=1)
    return x


class BatchLoader:
    """Loads the batches of a list of index tensors, ahead of use when the inputs are lazy.

    Parameters
    ----------
    x : torch.Tensor or tensor-like
        The inputs; anything but a ``torch.Tensor`` (e.g.
        :class:`~bclviz.data.lazy.LazyImages`) is read by worker processes. Must support
        ``len(x)`` and ``x[index_array]``.
    y : torch.Tensor
        The labels, one per row of ``x`` (indexed in the calling process).
    device : torch.device or str, default "cpu"
        Where the batches go; memory is pinned (and copied without blocking) for CUDA.
    workers : int or None, default None
        Worker processes for lazy inputs; ``None`` is :func:`default_workers`, 0 loads
        in the calling process. Ignored for in-memory tensors.
    prefetch_factor : int, default 2
        Batches each worker loads ahead.
    seed : int, default 0
        Seeds the workers' random generators (torch, ``random``, numpy).

    Use :meth:`epoch` once per epoch and :meth:`close` at the end (or ``with``); workers
    start at the first epoch and stay up until :meth:`close`.
    """

    def __init__(self, x, y: torch.Tensor, *, device: torch.device | str = "cpu", workers: int | None = None,
                 prefetch_factor: int = 2, seed: int = 0) -> None:
        if not hasattr(x, "__getitem__") or not hasattr(x, "__len__"):
            raise TypeError(f"x must be a tensor or a tensor-like with len() and indexing, got {type(x).__name__}")
        if not isinstance(y, torch.Tensor) or y.ndim != 1:
            raise TypeError(f"y must be a 1-D label tensor, got {type(y).__name__} {getattr(y, 'shape', '')}")
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same number of rows, got {len(x)} and {len(y)}")
        if not _is_count(prefetch_factor) or prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be a positive integer, got {prefetch_factor!r}")
        if not _is_count(seed) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be a torch device or its name, got {device!r}") from err
        self.x, self.y = x, y
        self.lazy = not isinstance(x, torch.Tensor)
        self.workers = resolve_workers(workers) if self.lazy else 0
        if not self.lazy:
            resolve_workers(workers)  # still refuse a bad value
        self.prefetch_factor, self.seed = int(prefetch_factor), int(seed)
        self.pin = self.device.type == "cuda"
        self._sampler: _EpochSampler | None = None
        self._loader: torch.utils.data.DataLoader | None = None

    @property
    def uses_workers(self) -> bool:
        """Whether batches come from worker processes (lazy inputs and ``workers > 0``)."""
        return self.lazy and self.workers > 0

    @property
    def started(self) -> bool:
        """Whether a DataLoader (and its workers) has been started."""
        return self._loader is not None

    # ------------------------------------------------------------------ epochs
    def epoch(self, batches: Sequence[torch.Tensor]) -> "EpochBatches":
        """The batches ``(x[idx], y[idx])`` on the device, one per index tensor, in order.

        Iterate over the result, or ask it for each batch in turn with
        :meth:`EpochBatches.load`. With workers the first batches are requested as soon
        as this is called.
        """
        batches = list(batches)
        for i, idx in enumerate(batches):
            if not isinstance(idx, torch.Tensor) or idx.ndim != 1 or idx.dtype not in (torch.int64, torch.int32):
                raise TypeError(
                    f"batches[{i}] must be a 1-D int64 index tensor, got "
                    f"{type(idx).__name__} {getattr(idx, 'dtype', '')} {tuple(getattr(idx, 'shape', ()))}"
                )
        if not self.uses_workers:
            return EpochBatches(self, batches, None)
        loader = self._start(len(batches))
        self._sampler.batches = [idx.cpu().numpy() for idx in batches]
        return EpochBatches(self, batches, iter(loader))

    def load(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x[idx], y[idx])`` on the device, read in the calling process."""
        return self.x[idx].to(self.device), self.y[idx].to(self.device)

    def _start(self, n_batches: int) -> torch.utils.data.DataLoader:
        if self._loader is None:
            self._sampler = _EpochSampler()
            workers = max(1, min(self.workers, n_batches))  # no idle processes for a short epoch
            self._loader = torch.utils.data.DataLoader(
                _Batches(_single_threaded(self.x)), batch_size=None, sampler=self._sampler,
                num_workers=workers, pin_memory=self.pin, persistent_workers=True,
                prefetch_factor=self.prefetch_factor,
                worker_init_fn=functools.partial(_seed_worker, self.seed),
                generator=torch.Generator().manual_seed(self.seed),
            )
        return self._loader

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop the worker processes (if any); a later :meth:`epoch` starts new ones."""
        loader, self._loader, self._sampler = self._loader, None, None
        iterator = getattr(loader, "_iterator", None) if loader is not None else None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = f"lazy, {self.workers} workers" if self.lazy else "in memory"
        return f"BatchLoader({len(self.y)} rows, {kind}, device={self.device})"


class EpochBatches:
    """One epoch of a :class:`BatchLoader`: its batches, in order, each handed out once.

    Iterating yields ``(x, y)`` per index tensor. :meth:`load` serves a caller that
    walks the index list itself (the trainer, which also needs each ``idx``).
    """

    def __init__(self, owner: BatchLoader, batches: list[torch.Tensor], pipeline) -> None:
        self._owner, self._batches, self._pipeline = owner, batches, pipeline
        self._next = 0  # position of the next batch still to hand out

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while self._next < len(self._batches):
            yield self.load(self._batches[self._next])

    def load(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``idx`` on the device: the next planned batch (the same index
        tensor, or an equal one) comes from the workers; any other index is read in the
        calling process, without disturbing the planned order."""
        if self._next < len(self._batches):
            planned = self._batches[self._next]
            if idx is planned or (isinstance(idx, torch.Tensor) and idx.shape == planned.shape
                                  and torch.equal(idx.cpu(), planned.cpu())):
                self._next += 1
                if self._pipeline is None:
                    return self._owner.load(planned)
                owner = self._owner
                xb = next(self._pipeline)
                return (xb.to(owner.device, non_blocking=owner.pin),
                        owner.y[planned].to(owner.device, non_blocking=owner.pin))
        return self._owner.load(idx)
