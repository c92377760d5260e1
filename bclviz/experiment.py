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
from .trials import Trial, run_trials

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


def _trials(cfg: ExperimentConfig) -> list[MethodConfig]:
    """The methods an experiment trains: ``independent`` first, then ``cfg.methods``."""
    return [MethodConfig(name="independent")] + [m for m in cfg.methods if m.name != "independent"]


def _train_all(data, old, cfg, scorer, progress, workers) -> tuple[dict, dict]:
    """Every method x seed replicate as trials (:func:`bclviz.trials.run_trials`); per
    method the first replicate's TrainResult and the record over seeds."""
    methods = _trials(cfg)
    trials = [Trial(method, r, keep=r == 0) for method in methods for r in range(cfg.seeds)]
    done = {}
    for i, new, record in run_trials(cfg, data, old, trials, scorer=scorer, workers=workers, progress=progress,
                                     desc="new models"):
        done[i] = (new, record)
    models, records = {}, {}
    for m, method in enumerate(methods):
        runs = [done[m * cfg.seeds + r] for r in range(cfg.seeds)]
        per_seed = [{k: v for k, v in rec.items() if k != "settings"} for _, rec in runs]
        models[method.name] = runs[0][0]
        records[method.name] = {**summarise_seeds(per_seed), "per_seed": per_seed,
                                "seconds": sum(r["seconds"] for r in per_seed), "settings": dataclasses.asdict(method)}
    return models, records


def run_experiment(cfg: ExperimentConfig, *, data: BCLData | None = None, progress: bool = True,
                   workers: int | None = None) -> ExperimentResult:
    """Train the old model, the independent model and every method of ``cfg``; evaluate all.

    Returns an :class:`ExperimentResult` whose ``results`` dict is what ``bclviz demo``
    writes as ``results.json`` (keys ``dataset``, ``seed``, ``seeds``, ``reference``,
    ``k``, ``headline`` (the metric compatibility is judged on), ``old``,
    ``independent``, ``methods``; each method has ``self`` and ``cross`` (means over
    seeds), ``self_ci`` and ``cross_ci`` (95% half-widths), ``per_seed``,
    ``compatible``, ``update_gain``, ``compatibility_gain`` (from the means),
    ``vs_<reference>`` (paired differences), ``seconds`` and ``settings``). The models
    kept in the result are those of the first seed.

    The new models (every method x seed) train in ``workers`` processes
    (:func:`bclviz.trials.run_trials`; ``None``: ``$BCLVIZ_WORKERS`` or one per core,
    1 on a GPU); the worker count does not change any number.
    """
    if data is None:
        data = load_dataset(cfg.dataset, seed=cfg.seed, **cfg.data_options)
    scorer = Scorer(data, k=cfg.k)
    key = scorer.key
    t0 = time.perf_counter()
    old = train_old_model(cfg, data, progress=progress)
    old_record = {"self": scorer.score(old.model, old.model), "seconds": time.perf_counter() - t0}
    new, records = _train_all(data, old, cfg, scorer, progress, workers)
    ind_record = records.pop("independent")
    methods = {}
    m_oo, m_ii = old_record["self"][key], ind_record["self"][key]
    for name, rec in records.items():
        rec["compatible"] = scorer.compatible(rec["cross"], old_record["self"])
        rec["update_gain"] = update_gain(rec["self"][key], m_oo, m_ii)
        rec["compatibility_gain"] = compatibility_gain(rec["cross"][key], m_oo)
        methods[name] = rec
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
        "tax": _tax(ind_record, methods, key),
        "headroom": prototype_headroom(data, new["independent"]),
    }
    return ExperimentResult(results, data, old, new)


def _tax(ind_record: dict, methods: dict, key: str) -> dict:
    """:func:`bclviz.stats.compatibility_tax` of the records gathered so far."""
    from .stats import compatibility_tax

    return compatibility_tax({"headline": key, "independent": ind_record, "methods": methods})


def prototype_headroom(data: BCLData, new: TrainResult, *, k: int | None = None) -> dict:
    """:func:`bclviz.proxies.headroom` of a trained new model against the old prototypes.

    ``P_o`` is the old model's prototypes over ``data.new_train`` (``new.state["old_protos"]``,
    what training aligned to); ``P_n`` the class means of ``new.model``'s features of the
    same images (:func:`bclviz.train.class_prototypes`, model in eval mode). ``k`` defaults
    to NDPP's default neighbour count (at most C - 1).

    Returns ``{"value", "k", "crowding_old", "crowding_new"}`` (see ``docs/metrics.md``),
    or ``{"value": None, "reason"}`` with fewer than 2 classes.
    """
    from .methods import default_k
    from .proxies import crowding, headroom
    from .train import class_prototypes, embed

    p_o = new.state["old_protos"]
    if p_o.shape[0] < 2:
        return {"value": None, "reason": f"headroom needs at least 2 classes, got {p_o.shape[0]}"}
    p_n = class_prototypes(embed(new.model, data.new_train.x), data.new_train.y, data.num_classes)
    k = min(default_k("ndpp"), p_o.shape[0] - 1) if k is None else k
    return {"value": headroom(p_o, p_n, k=k), "k": k, "crowding_old": crowding(p_o), "crowding_new": crowding(p_n)}
