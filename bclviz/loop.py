"""The epoch/batch machinery both trainers share (:mod:`bclviz.train`).

:class:`_Loop` holds seeded shuffling, ``max_steps``, device placement, optional
DistributedDataParallel, the batch loader (:mod:`bclviz.loader`), per-epoch checkpoints
and resumption; :class:`_LossSums` accumulates the per-step losses without a device sync
per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data.base import Labeled
from .distributed import all_reduce_sum, barrier, dist_info, shard
from .heads import MarginHead

__all__ = ["resolve_device"]

def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` (this process's current GPU, set per rank under torchrun) or ``"auto"``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("TrainConfig.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


class _Net(nn.Module):
    """Model and head in one module, so DistributedDataParallel syncs both."""

    def __init__(self, model: nn.Module, head: MarginHead) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x, y):
        f = self.model(x)
        return f, self.head(f, y)


class _Loop:
    """Epoch/batch bookkeeping shared by both trainers: seeded shuffling, max_steps,
    device placement, optional DDP, per-epoch checkpoints and resumption."""

    def __init__(self, model, num_classes, cfg: TrainConfig, data: Labeled, desc: str, progress: bool,
                 checkpoint: str | Path | None, meta: dict):
        self.cfg, self.data, self.desc, self.progress = cfg, data, desc, progress
        self.device = resolve_device(cfg.device)
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        self.head = MarginHead(model.dim, num_classes, kind=cfg.head, scale=cfg.scale, margin=cfg.margin, generator=gen)
        self.net = _Net(model, self.head).to(self.device)
        self.info = dist_info()
        self.ddp = self.net
        if self.info.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.history: list[dict] = []
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        # the worker count cannot change a result: left out, so checkpoints from before it existed resume
        self.meta = {"config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "workers"},
                     "num_classes": num_classes, "dim": model.dim, **meta}
        self.steps_done = 0  # optimiser steps of the finished epochs
        self._epoch_steps = 0  # steps of the epoch in progress (saved with it)
        self._feed = None  # the epoch in progress's batches, loaded ahead (bclviz.loader)

    def autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def resume(self, extra: dict[str, torch.Tensor]) -> int:
        """Load the checkpoint if there is one; returns the first epoch still to run."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return 0
        tensors, meta = load_checkpoint(self.checkpoint, expect=self.meta)
        self.net.load_state_dict(tensors["net"])
        self.opt.load_state_dict(tensors["optimizer"])
        self.shuffle.set_state(tensors["shuffle"])
        for key, value in extra.items():
            value.copy_(tensors["extra"][key])
        self.history = meta["history"]
        self.steps_done = meta["steps_done"]
        return meta["epoch"] + 1

    def save(self, epoch: int, extra: dict[str, torch.Tensor]) -> None:
        if self.checkpoint is None:
            return
        if self.info.rank == 0:
            tensors = {"net": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                       "shuffle": self.shuffle.get_state(), "extra": extra}
            save_checkpoint(self.checkpoint, tensors, {**self.meta, "epoch": epoch,
                                                       "steps_done": self.steps_done + self._epoch_steps,
                                                       "history": self.history})
        barrier()

    def epochs(self, start: int):
        """Yield (epoch, list of this rank's batch index tensors); :meth:`batch` hands out
        their inputs, which worker processes load ahead when they are lazily loaded images
        (:class:`~bclviz.loader.BatchLoader`, ``TrainConfig.workers``)."""
        from .loader import BatchLoader

        bar = tqdm(range(start, self.cfg.epochs), desc=self.desc, leave=False,
                   disable=not self.progress or self.info.rank != 0)
        loader = BatchLoader(self.data.x, self.data.y, device=self.device, workers=self.cfg.workers,
                             seed=self.cfg.seed)
        try:
            for epoch in bar:
                order = torch.randperm(len(self.data), generator=self.shuffle)
                batches = list(order.split(self.cfg.batch_size))
                if self.cfg.max_steps is not None:
                    batches = batches[: max(0, self.cfg.max_steps - self.steps_done)]
                if not batches:
                    break
                self._epoch_steps = len(batches)
                local = [shard(b) for b in batches]  # this rank's share, before anything is loaded
                self._feed = loader.epoch(local)
                yield epoch, local
                self._feed = None
                self.steps_done += len(batches)
                self._epoch_steps = 0
                if self.history:
                    bar.set_postfix(loss=f"{self.history[-1]['loss']:.3f}")
        finally:
            self._feed = None
            loader.close()

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def batch(self, idx):
        """Inputs and labels of batch ``idx`` on the device (the epoch's next batch comes
        from the loader, loaded ahead; any other index is read here)."""
        if self._feed is not None:
            return self._feed.load(idx)
        return self.data.x[idx].to(self.device), self.data.y[idx].to(self.device)

    def mean_over_ranks(self, sums: dict[str, float], n: int) -> dict[str, float]:
        if not self.info.enabled:  # the same float64 division, without a tensor round trip
            return {key: v / float(n) for key, v in sums.items()}
        t = all_reduce_sum(torch.tensor([*sums.values(), float(n)], dtype=torch.float64))
        return {key: float(v) / float(t[-1]) for key, v in zip(sums, t[:-1])}


def _step_autocast(loop: _Loop):
    """The autocast context every step enters, built once per run. Where it would only
    switch autocast off and autocast is off already, a null context does the same
    without ~8 us of set-up per step."""
    if loop.cfg.amp or torch.is_autocast_enabled(loop.device.type):
        return loop.autocast()
    return contextlib.nullcontext()


class _LossSums:
    """Batch-size-weighted sums of the per-step losses of one epoch.

    The losses are read off the device in one go (at the end of the epoch, or every
    1,024 steps) instead of with a ``float(loss)`` per step, which waits for a GPU each
    time. The float64 additions are those of ``total += float(loss) * len(batch)`` step
    by step, in the same order, so the sums are bit-identical.
    """

    def __init__(self, *keys: str) -> None:
        self._sums = dict.fromkeys(keys, 0.0)
        self._steps: list[tuple] = []

    def add(self, n: int, *losses: torch.Tensor | None) -> None:
        """One step of ``n`` samples; ``losses`` (scalars or None) in the order of the keys."""
        self._steps.append((n, *[None if v is None else v.detach() for v in losses]))
        if len(self._steps) >= 1024:
            self._fold()

    def _fold(self) -> None:
        steps, self._steps = self._steps, []
        flat = [v for step in steps for v in step[1:] if v is not None]
        values = iter(torch.stack(flat).tolist() if flat else ())
        for n, *losses in steps:
            for key, v in zip(self._sums, losses):
                if v is not None:
                    self._sums[key] += next(values) * n

    def sums(self) -> dict[str, float]:
        self._fold()
        return dict(self._sums)
