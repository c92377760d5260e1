"""Sequential updates: old -> new1 -> new2 ..., each model trained against the previous one.

The compatibility matrix ``M[i][j]`` (queries by model i, gallery by model j, i >= j) and
the average compatibility AC summarise the sequence (see ``docs/metrics.md``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from .config import ExperimentConfig, MethodConfig
from .data.base import BCLData, Labeled
from .data.splits import sequential as sequential_split
from .evaluation import average_compatibility
from .pipeline import build_new_model, build_old_model
from .scoring import Scorer
from .train import TrainResult, train_new, train_old

__all__ = ["SequenceResult", "step_sets", "run_sequence"]


@dataclass
class SequenceResult:
    """Models of a T-step sequence, their (T, T) compatibility matrix (the dataset's
    headline metric, NaN above the diagonal) and AC."""

    models: list[TrainResult]
    matrix: np.ndarray
    ac: float
    labels: list[str]
    num_classes: list[int]


def step_sets(y: torch.Tensor, fractions: Sequence[float], *, mode: Literal["class", "data"], seed: int) -> list[tuple[torch.Tensor, int]]:
    """Training indices and class count of each step.

    ``"class"``: step t trains on the classes ``0 .. ceil(f_t C) - 1`` (label order, so the
    class ids stay contiguous and each step's classes extend the previous step's).
    ``"data"``: nested per-class fractions of every class (:func:`bclviz.data.splits.sequential`).
    """
    fractions = list(fractions)
    if len(fractions) < 2 or any(b <= a for a, b in zip(fractions, fractions[1:])) or not 0 < fractions[0] or fractions[-1] > 1:
        raise ValueError(f"fractions must be at least two strictly increasing values in (0, 1], got {fractions}")
    C = int(y.max()) + 1
    if mode == "class":
        counts = [max(1, math.ceil(round(f * C, 9))) for f in fractions]
        return [(torch.nonzero(y < n).squeeze(1), n) for n in counts]
    if mode == "data":
        return [(torch.from_numpy(ix), C) for ix in sequential_split(y.numpy(), fractions=fractions, mode="data", seed=seed)]
    raise ValueError(f"mode must be 'class' or 'data', got {mode!r}")


def run_sequence(
    data: BCLData,
    cfg: ExperimentConfig,
    method: MethodConfig,
    *,
    fractions: Sequence[float] = (0.3, 0.6, 1.0),
    mode: Literal["class", "data"] = "class",
    progress: bool = True,
) -> SequenceResult:
    """Train model 0 (the old model, behind the dataset's old view) on the first step's
    data, then each later model with ``method`` against its predecessor; score all
    pairs on the dataset's query/gallery sets (:class:`~bclviz.scoring.Scorer`: labels
    or relevance, the dataset's headline metric). Model t's weights and shuffling are
    seeded with ``cfg.seed + t``."""
    steps = step_sets(data.new_train.y, fractions, mode=mode, seed=cfg.seed)
    models: list[TrainResult] = []
    for t, (index, n_cls) in enumerate(steps):
        subset: Labeled = data.new_train.subset(index)
        if t == 0:
            models.append(train_old(build_old_model(data, cfg.old_model, seed=cfg.seed), subset, num_classes=n_cls,
                                    cfg=dataclasses.replace(cfg.old_train, seed=cfg.seed), progress=progress))
        else:
            models.append(train_new(build_new_model(data, cfg.new_model, seed=cfg.seed + t), subset, models[-1],
                                    num_classes=n_cls, cfg=dataclasses.replace(cfg.new_train, seed=cfg.seed + t),
                                    method=method, progress=progress))
    scorer = Scorer(data, k=cfg.k)
    matrix = np.full((len(models), len(models)), np.nan)
    for i in range(len(models)):
        for j in range(i + 1):
            matrix[i, j] = scorer.score(models[i].model, models[j].model)[scorer.key]
    labels = ["old"] + [f"new{t}" for t in range(1, len(models))]
    return SequenceResult(models, matrix, average_compatibility(matrix), labels, [n for _, n in steps])
