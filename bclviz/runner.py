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
- ``tensorboard/``: the same history and the evaluation as TensorBoard scalars, when
  asked (``log="tensorboard"``, ``bclviz train --log tensorboard``; :mod:`bclviz.runlog`).

A frozen old model file (``old_model.name`` ``torchscript`` / ``export``) is loaded, not
trained: the run has no ``old.pt``, and the file's sha256 stands for it (in the new
model's checkpoint and in ``extract``'s folder key).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .cache import cache_dir
from .checkpoint import load_checkpoint
from .config import ExperimentConfig, TrainConfig
from .data import load_dataset
from .distributed import barrier, dist_info
from .evaluation import compatibility_gain
from .io import write_json, write_npy
from .pipeline import train_new_model, train_old_model
from .runconfig import run_config_to_dict
from .runlog import LogTarget, RunLog, open_run_log
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
    for role, path, cfg in zip(("old", "new"), checkpoint_paths(run_cfg), (run_cfg.old_train, run_cfg.new_train)):
        if role == "old" and run_cfg.old_model.frozen:
            continue  # a frozen old model file is never trained: no checkpoint
        if not path.exists():
            raise UnfinishedRun(f"checkpoint {path} does not exist; train the run first with `{command}`")
        done, complete = _finished_epochs(path, cfg)
        if not complete:
            raise UnfinishedRun(
                f"the run in {run_cfg.run_dir} is unfinished: checkpoint {path} holds epoch {done} of "
                f"{cfg.epochs} (last finished epoch: {done}); finish it with `{command}`"
            )


def _train_both(run_cfg: ExperimentConfig, data, *, progress: bool,
                log: RunLog | None = None) -> tuple[TrainResult, TrainResult]:
    """Train, resume, or (when both checkpoints are finished) restore the run's two models;
    ``log`` receives the history record of every epoch trained here."""
    log = RunLog() if log is None else log
    old_ck, new_ck = checkpoint_paths(run_cfg)
    old = train_old_model(run_cfg, data, progress=progress, checkpoint=old_ck, pin_threads=False,
                          callback=lambda record: log.epoch("old", record))
    new = train_new_model(run_cfg, data, old, run_cfg.method, progress=progress, checkpoint=new_ck,
                          callback=lambda record: log.epoch("new", record))
    return old, new


def _metrics(run_cfg: ExperimentConfig, data, old: TrainResult, new: TrainResult) -> dict:
    scorer = Scorer(data, k=run_cfg.k)
    key = scorer.key
    res = {"old_old": scorer.score(old.model, old.model), "new_new": scorer.score(new.model, new.model),
           "new_old": scorer.score(new.model, old.model)}
    res["compatible"] = scorer.compatible(res["new_old"], res["old_old"])
    res["compatibility_gain"] = compatibility_gain(res["new_old"][key], res["old_old"][key])
    return {"dataset": run_cfg.dataset, "method": run_cfg.method.name, "k": run_cfg.k, "headline": key, **res}


def run_training(run_cfg: ExperimentConfig, *, progress: bool = True, log: LogTarget | None = None) -> dict:
    """Train (or resume) the old and the new model of ``run_cfg``; write metrics and history.

    ``log="tensorboard"`` also writes every epoch's history record and the evaluation as
    TensorBoard scalars to ``run_dir/tensorboard/`` (:mod:`bclviz.runlog`; needs
    ``pip install 'bclviz[tensorboard]'``); it changes no number.
    Returns the metrics dict (on every rank; only rank 0 writes files).
    """
    with open_run_log(log, run_cfg.run_dir) as run_log:  # first: a missing package stops the run before any work
        data = load_dataset(run_cfg.dataset, seed=run_cfg.seed, **run_cfg.data_options)
        old, new = _train_both(run_cfg, data, progress=progress, log=run_log)
        metrics = _metrics(run_cfg, data, old, new)
        run_log.evaluation(metrics, new.history[-1]["epoch"] if new.history else 0)
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
    """Cache both models' features, the labels and both prototype sets of the new training set as ``.npy``.

    Writes ``old_features.npy``, ``labels.npy`` and ``old_protos.npy`` (the frozen old
    model's features of ``data.new_train``, their labels and class prototypes), and
    ``new_features.npy`` / ``new_protos.npy``: the run's new model's features of the same
    items, row for row, and their class prototypes (the class means, not the EMA tracked
    in training). The folder is what ``bclviz inspect --features`` (and
    :func:`bclviz.features.load`) reads.

    The folder is keyed by dataset and checkpoints: ``cache_root/<dataset>-<hash>``
    (default root: ``features/`` under the cache root, :mod:`bclviz.cache`) where the
    hash covers the data options, the seed and the bytes of both checkpoints, so runs
    with another new model never share a folder. Files are written atomically and read
    back with ``np.load(..., mmap_mode="r")`` (no pickle). Raises :class:`UnfinishedRun`
    (never trains) when the run is missing or unfinished.
    """
    require_finished(run_cfg, config_file=config_file)
    old_ck, new_ck = checkpoint_paths(run_cfg)
    data = load_dataset(run_cfg.dataset, seed=run_cfg.seed, **run_cfg.data_options)
    old, new = _train_both(run_cfg, data, progress=False)
    h = hashlib.sha256(json.dumps([run_cfg.data_options, run_cfg.seed], sort_keys=True).encode())
    # a frozen old model file has no checkpoint: its sha256 stands for it
    h.update(old.model.sha256.encode() if run_cfg.old_model.frozen else old_ck.read_bytes())
    h.update(new_ck.read_bytes())
    root = cache_dir("features") if cache_root is None else Path(cache_root)
    folder = root / f"{run_cfg.dataset}-{h.hexdigest()[:12]}"
    labels = data.new_train.y
    arrays = {"labels": labels}
    for side, result in (("old", old), ("new", new)):
        feats = embed(result.model, data.new_train.x)
        arrays[f"{side}_features"] = feats
        arrays[f"{side}_protos"] = class_prototypes(feats, labels, data.num_classes)
    for name, arr in arrays.items():
        write_npy(folder / f"{name}.npy", arr.numpy())
    return folder
