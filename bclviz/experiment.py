"""One backward-compatible update end to end: data, old model, new models, evaluation.

The demo, the notebooks and findings go through :func:`run_experiment`, driven by an
:class:`~bclviz.config.ExperimentConfig` whose per-dataset defaults come from the
dataset registry (:func:`~bclviz.config.default_experiment`). Training and scoring are
the shared steps of :mod:`bclviz.pipeline` and :mod:`bclviz.scoring`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from .config import ExperimentConfig, MethodConfig, ModelSpec, default_experiment
from .data import BCLData, load_dataset
from .data.registry import list_datasets
from .evaluation import compatibility_gain, update_gain
from .models import InputView
from .pipeline import build_new_model, build_old_model, train_and_score, train_old_model
from .scoring import Scorer
from .stats import paired_comparison, summarise_seeds
from .train import TrainResult

__all__ = [
    "ModelSpec", "ExperimentConfig", "ExperimentResult", "InputView",
    "default_experiment", "build_old_model", "build_new_model", "run_experiment",
    "retrieval_scores", "train_and_evaluate_new", "DEMO_DATASETS", "summarise_seeds", "paired_comparison",
]

#: datasets with default experiment settings (the demo's choices)
DEMO_DATASETS = tuple(list_datasets("demo"))


@dataclass
class ExperimentResult:
    """Results (the ``results.json`` dict) plus the trained models for further views."""

    results: dict
    data: BCLData
    old: TrainResult
    new: dict[str, TrainResult]


def retrieval_scores(data: BCLData, query_model, gallery_model, *, k: int) -> dict[str, float]:
    """Metrics of ``query_model`` queries against ``gallery_model``'s gallery (one pair;
    :class:`~bclviz.scoring.Scorer` scores many pairs with each model embedding once)."""
    return Scorer(data, k=k).score(query_model, gallery_model)


def train_and_evaluate_new(data: BCLData, old: TrainResult, cfg: ExperimentConfig, method: MethodConfig, *,
                           progress: bool = True, callback=None, replicate: int = 0, scorer: Scorer | None = None):
    """Train one new model with ``method`` and return (TrainResult, result record).

    :func:`bclviz.pipeline.train_and_score` with a :class:`~bclviz.scoring.Scorer` of
    ``data`` (pass ``scorer`` to reuse the old model's embeddings across calls).
    """
    scorer = Scorer(data, k=cfg.k) if scorer is None else scorer
    return train_and_score(cfg, data, old, method, scorer, replicate=replicate, progress=progress,
                           callback=callback)


def _replicates(data, old, cfg, method, scorer, progress):
    runs = [train_and_score(cfg, data, old, method, scorer, progress=progress, replicate=r) for r in range(cfg.seeds)]
    per_seed = [{k: v for k, v in rec.items() if k != "settings"} for _, rec in runs]
    record = {**summarise_seeds(per_seed), "per_seed": per_seed,
              "seconds": sum(r["seconds"] for r in per_seed), "settings": dataclasses.asdict(method)}
    return runs[0][0], record


def run_experiment(cfg: ExperimentConfig, *, data: BCLData | None = None, progress: bool = True) -> ExperimentResult:
    """Train the old model, the independent model and every method of ``cfg``; evaluate all.

    Returns an :class:`ExperimentResult` whose ``results`` dict is what ``bclviz demo``
    writes as ``results.json`` (keys ``dataset``, ``seed``, ``seeds``, ``reference``,
    ``k``, ``headline`` (the metric compatibility is judged on), ``old``,
    ``independent``, ``methods``; each method has ``self`` and ``cross`` (means over
    seeds), ``self_ci`` and ``cross_ci`` (95% half-widths), ``per_seed``,
    ``compatible``, ``update_gain``, ``compatibility_gain`` (from the means),
    ``vs_<reference>`` (paired differences), ``seconds`` and ``settings``). The models
    kept in the result are those of the first seed.
    """
    if data is None:
        data = load_dataset(cfg.dataset, seed=cfg.seed, **cfg.data_options)
    scorer = Scorer(data, k=cfg.k)
    key = scorer.key
    t0 = time.perf_counter()
    old = train_old_model(cfg, data, progress=progress)
    old_record = {"self": scorer.score(old.model, old.model), "seconds": time.perf_counter() - t0}
    ind, ind_record = _replicates(data, old, cfg, MethodConfig(name="independent"), scorer, progress)
    new = {"independent": ind}
    methods = {}
    m_oo, m_ii = old_record["self"][key], ind_record["self"][key]
    for method in cfg.methods:
        if method.name == "independent":
            continue
        new[method.name], rec = _replicates(data, old, cfg, method, scorer, progress)
        rec["compatible"] = scorer.compatible(rec["cross"], old_record["self"])
        rec["update_gain"] = update_gain(rec["self"][key], m_oo, m_ii)
        rec["compatibility_gain"] = compatibility_gain(rec["cross"][key], m_oo)
        methods[method.name] = rec
    if cfg.reference in methods:
        for name, rec in methods.items():
            if name != cfg.reference:
                rec[f"vs_{cfg.reference}"] = paired_comparison(rec["per_seed"], methods[cfg.reference]["per_seed"], key)
    results = {
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "seeds": [cfg.seed + 1 + r for r in range(cfg.seeds)],
        "reference": cfg.reference,
        "k": cfg.k,
        "headline": key,
        "old": old_record,
        "independent": ind_record,
        "methods": methods,
        "data": {key_: value for key_, value in data.info.items() if key_ != "superclass"},
    }
    return ExperimentResult(results, data, old, new)
