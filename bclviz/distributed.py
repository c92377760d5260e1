"""Thin helpers over ``torch.distributed`` (torchrun + DistributedDataParallel).

Nothing happens at import time. :func:`init_from_env` is called by the CLI when it runs
under ``torchrun`` (``WORLD_SIZE > 1``); everything else works unchanged in a single
process, where the helpers are no-ops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "dist_info", "init_from_env", "all_reduce_sum", "shard", "barrier", "is_main"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()


def is_main() -> bool:
    return dist_info().rank == 0


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Uses ``nccl`` when CUDA is available and ``gloo`` otherwise, unless ``backend`` is
    given; with CUDA, each rank selects GPU ``LOCAL_RANK``. Returns the single-process :class:`DistInfo` when ``WORLD_SIZE`` is unset or 1.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if torch.cuda.is_available():  # one GPU per rank: rank-local CUDA calls go to LOCAL_RANK
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
    return dist_info()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place (no-op in a single process); returns ``t``."""
    if dist_info().enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shard(index: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global batch of indices: ``index[rank::world_size]``."""
    info = dist_info()
    return index[info.rank :: info.world_size] if info.enabled else index


def barrier() -> None:
    if dist_info().enabled:
        dist.barrier()
