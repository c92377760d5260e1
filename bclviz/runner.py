"""Full runs from a YAML run config: train, evaluate, extract (the ``bclviz`` CLI's work).

The same :class:`~bclviz.runconfig.RunConfig` that ``export_config`` writes from a
notebook drives a run here, in one process or under ``torchrun`` (see
:mod:`bclviz.distributed`). Outputs go to ``run_cfg.output_dir``:

- ``old.pt`` / ``new-<method>.pt`` (+ ``.json`` metadata): checkpoints written after
  every epoch; an interrupted run resumes from them.
- ``metrics.json``: M(old,old), M(new,new), M(new,old) (mAP@k, R@1/5/10; per-query
  relevance for GLDv2), the headline metric (``BCLData.headline``, else mAP@k), the
  criterion and the compatibility gain judged on it.
- ``history.json``: the per-epoch training history of both models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .data import load_dataset
from .distributed import barrier, dist_info
from .evaluation import compatibility_gain, evaluate, is_compatible
from .experiment import build_new_model, build_old_model
from .io import atomic_write, write_json
from .runconfig import RunConfig, run_config_to_dict
from .train import TrainResult, embed, train_new, train_old

__all__ = ["run_training", "run_evaluation", "extract_features", "checkpoint_paths", "load_trained"]


def checkpoint_paths(run_cfg: RunConfig) -> tuple[Path, Path]:
    out = Path(run_cfg.output_dir)
    return out / "old.pt", out / f"new-{run_cfg.method.name}.pt"


def _old_model(run_cfg: RunConfig, data, *, progress: bool) -> TrainResult:
    """Train the old model, or restore it from (and resume) its checkpoint."""
    torch.manual_seed(run_cfg.seed)
    return train_old(build_old_model(data, run_cfg.old_model), data.old_train, num_classes=data.num_old_classes,
                     cfg=dataclasses.replace(run_cfg.old_train, seed=run_cfg.seed), progress=progress,
                     checkpoint=checkpoint_paths(run_cfg)[0])


def _train_both(run_cfg: RunConfig, *, progress: bool, require_existing: bool) -> tuple:
    old_ck, new_ck = checkpoint_paths(run_cfg)
    if require_existing:
        for p in (old_ck, new_ck):
            if not p.exists():
                raise FileNotFoundError(f"checkpoint {p} does not exist; run `bclviz train --config ...` first")
    data = load_dataset(run_cfg.dataset, seed=run_cfg.seed, **run_cfg.data_options)
    old = _old_model(run_cfg, data, progress=progress)
    torch.manual_seed(run_cfg.seed + 1)
    new = train_new(build_new_model(data, run_cfg.new_model), data.new_train, old, num_classes=data.num_classes,
                    cfg=dataclasses.replace(run_cfg.new_train, seed=run_cfg.seed + 1), method=run_cfg.method,
                    progress=progress, checkpoint=new_ck)
    return data, old, new


def _relevance_scores(q: torch.Tensor, g: torch.Tensor, relevant, *, k: int,
                      recall_at: tuple[int, ...] = (1, 5, 10)) -> dict:
    """mAP@k (official GLDv2, :func:`~bclviz.data.gldv2.map_at_k_relevance`) and R@r (a
    relevant item among the top r) of normalised features, from an exact faiss top-k
    inner-product search; ``relevant[i]`` lists the gallery positions relevant to query i."""
    import faiss

    from .data.gldv2 import map_at_k_relevance

    depth = min(max(k, *recall_at), g.shape[0])
    _, idx = faiss.knn(np.ascontiguousarray(q.numpy(), dtype=np.float32),
                       np.ascontiguousarray(g.numpy(), dtype=np.float32), depth, metric=faiss.METRIC_INNER_PRODUCT)
    hits = np.stack([np.isin(row, rel) for row, rel in zip(idx, relevant)])
    recall = {f"R@{r}": float(hits[:, :r].any(axis=1).mean()) for r in recall_at}
    return {f"mAP@{k}": map_at_k_relevance(idx, relevant, k=k), **recall, "n_queries": len(relevant)}


def _metrics(run_cfg: RunConfig, data, old: TrainResult, new: TrainResult) -> dict:
    # Each model embeds the query and gallery images once (they may be read from disk).
    feats = {}
    for name, result in (("old", old), ("new", new)):
        q = embed(result.model, data.query.x)
        feats[name] = (q, q if data.query_is_gallery else embed(result.model, data.gallery.x))

    def m(qm, gm):
        q, g = feats[qm][0], feats[gm][1]
        if data.relevance is not None:
            return _relevance_scores(q, g, data.relevance, k=run_cfg.k)
        return evaluate(q, data.query.y, g, data.gallery.y, k=run_cfg.k, exclude_self=data.query_is_gallery)

    key = data.headline or f"mAP@{run_cfg.k}"
    res = {"old_old": m("old", "old"), "new_new": m("new", "new"), "new_old": m("new", "old")}
    res["compatible"] = is_compatible(res["new_old"][key], res["old_old"][key])
    res["compatibility_gain"] = compatibility_gain(res["new_old"][key], res["old_old"][key])
    return {"dataset": run_cfg.dataset, "method": run_cfg.method.name, "k": run_cfg.k, "headline": key, **res}


def run_training(run_cfg: RunConfig, *, progress: bool = True) -> dict:
    """Train (or resume) the old and the new model of ``run_cfg``; write metrics and history.

    Returns the metrics dict (on every rank; only rank 0 writes files).
    """
    data, old, new = _train_both(run_cfg, progress=progress, require_existing=False)
    metrics = _metrics(run_cfg, data, old, new)
    if dist_info().rank == 0:
        out = Path(run_cfg.output_dir)
        write_json(out / "metrics.json", metrics)
        write_json(out / "history.json", {"old": old.history, "new": new.history})
        write_json(out / "config.json", run_config_to_dict(run_cfg))
    barrier()
    return metrics


def load_trained(run_cfg: RunConfig) -> tuple[TrainResult, TrainResult]:
    """The old and new models of a finished run, restored from their checkpoints."""
    _, old, new = _train_both(run_cfg, progress=False, require_existing=True)
    return old, new


def run_evaluation(run_cfg: RunConfig) -> dict:
    """Self/cross evaluation of the trained checkpoints of ``run_cfg`` (no training)."""
    data, old, new = _train_both(run_cfg, progress=False, require_existing=True)
    for result, ck in zip((old, new), checkpoint_paths(run_cfg)):
        meta = json.loads(Path(str(ck) + ".json").read_text())
        cfg = run_cfg.old_train if result is old else run_cfg.new_train
        if meta["epoch"] + 1 < cfg.epochs and cfg.max_steps is None:
            raise ValueError(f"checkpoint {ck} holds epoch {meta['epoch'] + 1} of {cfg.epochs}; "
                             "finish the run with `bclviz train` first")
    return _metrics(run_cfg, data, old, new)


def extract_features(run_cfg: RunConfig, *, cache_root: str | Path = "data/features") -> Path:
    """Cache old-model features, labels and prototypes of the new training set as ``.npy``.

    The folder is keyed by dataset and old-model checkpoint: ``cache_root/<dataset>-<hash>``
    where the hash covers the data options, the seed and the old checkpoint's bytes. Files
    are written atomically and read back with ``np.load(..., mmap_mode="r")`` (no pickle).
    """
    old_ck, _ = checkpoint_paths(run_cfg)
    if not old_ck.exists():
        raise FileNotFoundError(f"old checkpoint {old_ck} does not exist; run `bclviz train --config ...` first")
    data = load_dataset(run_cfg.dataset, seed=run_cfg.seed, **run_cfg.data_options)
    old = _old_model(run_cfg, data, progress=False)
    h = hashlib.sha256(json.dumps([run_cfg.data_options, run_cfg.seed], sort_keys=True).encode())
    h.update(old_ck.read_bytes())
    folder = Path(cache_root) / f"{run_cfg.dataset}-{h.hexdigest()[:12]}"
    feats = embed(old.model, data.new_train.x)
    labels = data.new_train.y
    from .train import class_prototypes

    protos = class_prototypes(feats, labels, data.num_classes)
    for name, arr in (("old_features", feats), ("labels", labels), ("old_protos", protos)):
        atomic_write(folder / f"{name}.npy", lambda tmp, a=arr: _save_npy(tmp, a.numpy()))
    return folder


def _save_npy(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
