"""Full runs from a YAML run config: train, evaluate, extract (the ``bclviz`` CLI's work).

The same run config (an :class:`~bclviz.config.ExperimentConfig` with one method) that
``export_config`` writes from a notebook drives a run here, in one process or under ``torchrun`` (see
:mod:`bclviz.distributed`). Outputs go to ``run_cfg.run_dir`` (``output_dir``):

- ``old.pt`` / ``new-<method>.pt`` (+ ``.json`` metadata): checkpoints written after
  every epoch; an interrupted run resumes from them.
- ``metrics.json``: M(old,old), M(new,new), M(new,old) (:class:`~bclviz.scoring.Scorer`:
  mAP@k, R@1/5/10; per-query relevance for GLDv2), the headline metric
  (``BCLData.headline``, else mAP@k), the criterion and the compatibility gain judged on it.

``bclviz evaluate`` / ``extract`` (and :func:`load_trained`) never train: on a missing
or unfinished run they raise :class:`UnfinishedRun`, naming the last finished epoch and
the command that finishes the run.
- ``history.json``: the per-epoch training history of both models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .cache import cache_dir
from .checkpoint import load_checkpoint
from .config import ExperimentConfig, TrainConfig
from .data import load_dataset
from .distributed import barrier, dist_info
from .evaluation import compatibility_gain
from .io import atomic_write, write_json
from .pipeline import train_new_model, train_old_model
from .runconfig import run_config_to_dict
from .scoring import Scorer
from .train import TrainResult, class_prototypes, embed

__all__ = [
    "run_training", "run_evaluation", "extract_features", "checkpoint_paths", "load_trained",
    "UnfinishedRun", "require_finished",
]


class UnfinishedRun(ValueError):
    """A run's checkpoints are missing or hold an unfinished training (``bclviz evaluate`` refuses)."""


def checkpoint_paths(run_cfg: ExperimentConfig) -> tuple[Path, Path]:
    """``(old.pt, new-<method>.pt)`` in the run's folder."""
    out = run_cfg.run_dir
    return out / "old.pt", out / f"new-{run_cfg.method.name}.pt"


def _finished_epochs(path: Path, cfg: TrainConfig) -> tuple[int, bool]:
    """(epochs finished, whether training is complete) of the checkpoint at ``path``."""
    _, meta = load_checkpoint(path)
    done = meta["epoch"] + 1
    complete = done >= cfg.epochs or (cfg.max_steps is not None and meta["steps_done"] >= cfg.max_steps)
    return done, complete


def require_finished(run_cfg: ExperimentConfig, *, config_file: str | None = None) -> None:
    """Raise :class:`UnfinishedRun` unless both checkpoints of ``run_cfg`` hold finished training.

    The message names the last finished epoch and the command that finishes the run.
    """
    command = f"bclviz train --config {config_file or 'run.yaml'}"
    for path, cfg in zip(checkpoint_paths(run_cfg), (run_cfg.old_train, run_cfg.new_train)):
        if not path.exists():
            raise UnfinishedRun(f"checkpoint {path} does not exist; train the run first with `{command}`")
        done, complete = _finished_epochs(path, cfg)
        if not complete:
            raise UnfinishedRun(
                f"the run in {run_cfg.run_dir} is unfinished: checkpoint {path} holds epoch {done} of "
                f"{cfg.epochs} (last finished epoch: {done}); finish it with `{command}`"
            )


def _train_both(run_cfg: ExperimentConfig, data, *, progress: bool) -> tuple[TrainResult, TrainResult]:
    """Train, resume, or (when both checkpoints are finished) restore the run's two models."""
    old_ck, new_ck = checkpoint_paths(run_cfg)
    old = train_old_model(run_cfg, data, progress=progress, checkpoint=old_ck)
    new = train_new_model(run_cfg, data, old, run_cfg.method, progress=progress, checkpoint=new_ck)
    return old, new


def _metrics(run_cfg: ExperimentConfig, data, old: TrainResult, new: TrainResult) -> dict:
    scorer = Scorer(data, k=run_cfg.k)
    key = scorer.key
    res = {"old_old": scorer.score(old.model, old.model), "new_new": scorer.score(new.model, new.model),
           "new_old": scorer.score(new.model, old.model)}
    res["compatible"] = scorer.compatible(res["new_old"], res["old_old"])
    res["compatibility_gain"] = compatibility_gain(res["new_old"][key], res["old_old"][key])
    return {"dataset": run_cfg.dataset, "method": run_cfg.method.name, "k": run_cfg.k, "headline": key, **res}


def run_training(run_cfg: ExperimentConfig, *, progress: bool = True) -> dict:
    """Train (or resume) the old and the new model of ``run_cfg``; write metrics and history.

    Returns the metrics dict (on every rank; only rank 0 writes files).
    """
    data = load_dataset(run_cfg.dataset, seed=run_cfg.seed, **run_cfg.data_options)
    old, new = _train_both(run_cfg, data, progress=progress)
    metrics = _metrics(run_cfg, data, old, new)
    if dist_info().rank == 0:
        out = run_cfg.run_dir
        write_json(out / "metrics.json", metrics)
        write_json(out / "history.json", {"old": old.history, "new": new.history})
        write_json(out / "config.json", run_config_to_dict(run_cfg))
    barrier()
    return metrics


def load_trained(run_cfg: ExperimentConfig, *, config_file: str | None = None) -> tuple[TrainResult, TrainResult]:
    """The old and new models of a finished run, restored from their checkpoints.

    Raises :class:`UnfinishedRun` (never trains) when the run is missing or unfinished.
    """
    require_finished(run_cfg, config_file=config_file)
    data = load_dataset(run_cfg.dataset, seed=run_cfg.seed, **run_cfg.data_options)
    return _train_both(run_cfg, data, progress=False)


def run_evaluation(run_cfg: ExperimentConfig, *, config_file: str | None = None) -> dict:
    """Self/cross evaluation of the finished checkpoints of ``run_cfg`` (never trains)."""
    require_finished(run_cfg, config_file=config_file)
    data = load_dataset(run_cfg.dataset, seed=run_cfg.seed, **run_cfg.data_options)
    old, new = _train_both(run_cfg, data, progress=False)
    return _metrics(run_cfg, data, old, new)


def extract_features(run_cfg: ExperimentConfig, *, cache_root: str | Path | None = None,
                     config_file: str | None = None) -> Path:
    """Cache old-model features, labels and prototypes of the new training set as ``.npy``.

    The folder is keyed by dataset and old-model checkpoint: ``cache_root/<dataset>-<hash>``
    (default root: ``features/`` under the cache root, :mod:`bclviz.cache`) where the
    hash covers the data options, the seed and the old checkpoint's bytes. Files are
    written atomically and read back with ``np.load(..., mmap_mode="r")`` (no pickle).
    Raises :class:`UnfinishedRun` (never trains) when the run is missing or unfinished.
    """
    require_finished(run_cfg, config_file=config_file)
    old_ck, _ = checkpoint_paths(run_cfg)
    data = load_dataset(run_cfg.dataset, seed=run_cfg.seed, **run_cfg.data_options)
    old = train_old_model(run_cfg, data, progress=False, checkpoint=old_ck)
    h = hashlib.sha256(json.dumps([run_cfg.data_options, run_cfg.seed], sort_keys=True).encode())
    h.update(old_ck.read_bytes())
    root = cache_dir("features") if cache_root is None else Path(cache_root)
    folder = root / f"{run_cfg.dataset}-{h.hexdigest()[:12]}"
    feats = embed(old.model, data.new_train.x)
    labels = data.new_train.y
    protos = class_prototypes(feats, labels, data.num_classes)
    for name, arr in (("old_features", feats), ("labels", labels), ("old_protos", protos)):
        atomic_write(folder / f"{name}.npy", lambda tmp, a=arr: _save_npy(tmp, a.numpy()))
    return folder


def _save_npy(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
