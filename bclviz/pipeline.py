"""Train, then score: the steps every experiment, run, sweep and lab shares.

From an :class:`~bclviz.config.ExperimentConfig` and its dataset:

- :func:`train_old_model` builds the old embedder (behind the dataset's ``old_view``)
  with weights seeded by ``cfg.seed`` and trains it, or loads a frozen old model file
  (``old_model.name`` ``"torchscript"`` / ``"export"``, :mod:`bclviz.external`), which is
  never trained;
- :func:`train_new_model` builds a new embedder seeded by ``cfg.seed + 1 + replicate``
  and trains it with one method against the old model (with the dataset's map from new
  to old classes, ``BCLData.old_class_of``, when the old model had other classes);
- :func:`train_and_score` does the latter and scores it with a
  :class:`~bclviz.scoring.Scorer` (self-test ``M(new, new)``, cross-test ``M(new, old)``).

Randomness is derived from the config's seeds and passed down (model construction on a
seeded private stream, the trainer's own generators); torch's global generator is
never seeded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from torch import nn

from .config import ExperimentConfig, MethodConfig, ModelSpec
from .data.base import BCLData
from .external import load_frozen_model
from .loop import resolve_device
from .models import InputView, create_model
from .scoring import Scorer
from .train import TrainResult, train_new, train_old

__all__ = [
    "build_old_model", "build_new_model", "new_model_seed", "train_old_model", "train_new_model",
    "train_and_score",
]


def build_old_model(data: BCLData, spec: ModelSpec, *, seed: int | None = None) -> nn.Module:
    """The old embedder, behind the dataset's ``old_view`` when it has one (weights seeded by ``seed``).

    A frozen old model file (``spec.frozen``) is loaded instead, on the CPU
    (:class:`~bclviz.external.FrozenEmbedder`); it sees the data's inputs as they are,
    without the ``old_view`` that simulates an old model's degraded input: the file is
    the whole old model.
    """
    if spec.frozen:
        return load_frozen_model(spec.name, spec.options["path"], dim=spec.dim, input_shape=data.input_shape)
    model = create_model(spec.name, input_shape=data.input_shape, dim=spec.dim, seed=seed, **spec.options)
    return model if data.old_view is None else InputView(data.old_view, model)


def build_new_model(data: BCLData, spec: ModelSpec, *, seed: int | None = None) -> nn.Module:
    """The new embedder (weights seeded by ``seed``)."""
    return create_model(spec.name, input_shape=data.input_shape, dim=spec.dim, seed=seed, **spec.options)


def new_model_seed(cfg: ExperimentConfig, replicate: int = 0) -> int:
    """Seed of the new model of seed replicate ``replicate``: ``cfg.seed + 1 + replicate``."""
    return cfg.seed + 1 + replicate


def train_old_model(cfg: ExperimentConfig, data: BCLData, *, progress: bool = True,
                    checkpoint: str | Path | None = None, callback=None, pin_threads: bool = True) -> TrainResult:
    """Build and train (or resume from ``checkpoint``) the old model of ``cfg``, seeded by ``cfg.seed``.

    A frozen old model file is loaded onto ``cfg.old_train.device`` and returned untrained
    (no history, no head, no checkpoint written). ``callback`` is called with each epoch's
    history record. On the CPU it trains with :func:`bclviz.trials.trial_threads` threads,
    as every new model of an experiment or sweep does, so that the same seed gives the
    same old model in any process; ``pin_threads=False`` keeps this process's threads
    (``bclviz train``, one model at a time, uses them all).
    """
    from .trials import model_threads  # trials imports this module

    model = build_old_model(data, cfg.old_model, seed=cfg.seed)
    if cfg.old_model.frozen:
        return TrainResult(model.to(resolve_device(cfg.old_train.device)), head=None)
    with model_threads(cfg.old_train.device) if pin_threads else contextlib.nullcontext():
        return train_old(model, data.old_train, num_classes=data.num_old_classes,
                         cfg=dataclasses.replace(cfg.old_train, seed=cfg.seed), progress=progress,
                         checkpoint=checkpoint, callback=callback)


def train_new_model(cfg: ExperimentConfig, data: BCLData, old: TrainResult, method: MethodConfig, *,
                    replicate: int = 0, progress: bool = True, callback=None,
                    checkpoint: str | Path | None = None) -> TrainResult:
    """Build and train (or resume) one new model with ``method`` against ``old``."""
    seed = new_model_seed(cfg, replicate)
    return train_new(build_new_model(data, cfg.new_model, seed=seed), data.new_train, old,
                     num_classes=data.num_classes, cfg=dataclasses.replace(cfg.new_train, seed=seed),
                     method=method, progress=progress, callback=callback, checkpoint=checkpoint,
                     old_classes=data.old_class_of)


def train_and_score(cfg: ExperimentConfig, data: BCLData, old: TrainResult, method: MethodConfig,
                    scorer: Scorer, *, replicate: int = 0, progress: bool = True,
                    callback=None) -> tuple[TrainResult, dict]:
    """Train one new model and score it; returns ``(TrainResult, record)``.

    ``record`` holds ``seed``, ``self`` (``M(new, new)``), ``cross`` (``M(new, old)``),
    ``seconds`` (training time) and ``settings`` (the method's fields).
    """
    t0 = time.perf_counter()
    new = train_new_model(cfg, data, old, method, replicate=replicate, progress=progress, callback=callback)
    seconds = time.perf_counter() - t0
    record = {
        "seed": new_model_seed(cfg, replicate),
        "self": scorer.score(new.model, new.model),
        "cross": scorer.score(new.model, old.model),
        "seconds": seconds,
        "settings": dataclasses.asdict(method),
    }
    scorer.forget(new.model)
    return new, record
