"""One backward-compatible update end to end: data, old model, new models, evaluation.

The demo, the notebooks and the CLI all go through :func:`run_experiment`, driven by an
:class:`ExperimentConfig` whose defaults per dataset come from :func:`default_experiment`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import MethodConfig, TrainConfig
from .data import BCLData, load_dataset
from .evaluation import compatibility_gain, evaluate, is_compatible, update_gain
from .methods import list_methods
from .models import create_model
from .stats import mean_interval, paired_difference
from .train import TrainResult, embed, train_new, train_old

__all__ = [
    "ModelSpec", "ExperimentConfig", "ExperimentResult", "InputView",
    "default_experiment", "build_old_model", "build_new_model", "run_experiment",
    "retrieval_scores", "train_and_evaluate_new", "DEMO_DATASETS", "summarise_seeds", "paired_comparison",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name (:func:`bclviz.models.list_models`), its dimension and options."""

    name: str = "mlp"
    dim: int = 16
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one update experiment (see :func:`default_experiment`).

    ``seed`` fixes the data split and the old model. Every new model is trained
    ``seeds`` times with initialisation/shuffling seeds ``seed + 1 + r`` for replicate
    ``r = 0 .. seeds - 1``; results report the mean, a 95% Student-t interval, every
    per-seed value, and differences to ``reference`` paired by seed (``docs/metrics.md``).
    """

    dataset: str = "toy"
    seed: int = 0
    data_options: dict = field(default_factory=dict)
    old_model: ModelSpec = ModelSpec(options={"hidden": 64})
    new_model: ModelSpec = ModelSpec(options={"hidden": 128})
    old_train: TrainConfig = TrainConfig(epochs=8)
    new_train: TrainConfig = TrainConfig(epochs=8)
    methods: tuple[MethodConfig, ...] = tuple(MethodConfig(name=m) for m in list_methods() if m != "independent")
    k: int = 100
    seeds: int = 1
    reference: str = "proto"

    def __post_init__(self) -> None:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"ExperimentConfig.seeds must be a positive integer, got {self.seeds!r}")
        if self.old_model.dim != self.new_model.dim:
            raise ValueError(
                f"old and new embedding dimensions differ ({self.old_model.dim} vs {self.new_model.dim})"
            )
        for name, low in (("seed", 0), ("k", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"ExperimentConfig.{name} must be an integer >= {low}, got {v!r}")
        bad = [m for m in self.methods if not isinstance(m, MethodConfig)]
        if bad:
            raise ValueError(f"ExperimentConfig.methods must hold MethodConfig objects, e.g. MethodConfig(name='ndpp'); got {bad!r}")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"methods must have distinct names, got {names}")


#: datasets with default experiment settings (the demo's choices)
DEMO_DATASETS = ("toy", "digits", "fashion-mnist", "glyphs")


def default_experiment(dataset: str = "toy", *, seed: int = 0, **overrides) -> ExperimentConfig:
    """Default settings per dataset; ``overrides`` replace top-level fields."""
    if dataset == "toy":
        cfg = ExperimentConfig(
            dataset="toy", seed=seed,
            old_train=TrainConfig(epochs=8, lr=5e-3), new_train=TrainConfig(epochs=8, lr=5e-3),
        )
    elif dataset == "digits":
        cfg = ExperimentConfig(
            dataset="digits", seed=seed,
            old_model=ModelSpec("cnn", 32, {"width": 8}), new_model=ModelSpec("cnn", 32, {"width": 32}),
            old_train=TrainConfig(epochs=15, batch_size=64), new_train=TrainConfig(epochs=15, batch_size=64),
        )
    elif dataset == "fashion-mnist":
        cfg = ExperimentConfig(
            dataset="fashion-mnist", seed=seed,
            old_model=ModelSpec("cnn", 64, {"width": 8}), new_model=ModelSpec("cnn", 64, {"width": 16}),
            old_train=TrainConfig(epochs=3), new_train=TrainConfig(epochs=3),
        )
    elif dataset == "glyphs":
        cfg = ExperimentConfig(
            dataset="glyphs", seed=seed,
            old_model=ModelSpec("cnn", 64, {"width": 8}), new_model=ModelSpec("cnn", 64, {"width": 16}),
            old_train=TrainConfig(epochs=6), new_train=TrainConfig(epochs=6),
        )
    else:
        raise ValueError(
            f"no default experiment for dataset {dataset!r}; choose one of {list(DEMO_DATASETS)}, "
            "or write a run config for `bclviz train` (docs/full_runs.md)"
        )
    return dataclasses.replace(cfg, **overrides)


class InputView(nn.Module):
    """Applies a fixed (D, D) matrix to flattened inputs before ``inner`` (the toy's coarse view)."""

    def __init__(self, view: torch.Tensor, inner: nn.Module) -> None:
        super().__init__()
        self.register_buffer("view", view.clone())
        self.inner = inner
        self.dim = inner.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return self.inner((x.reshape(shape[0], -1) @ self.view.T).reshape(shape))


def build_old_model(data: BCLData, spec: ModelSpec) -> nn.Module:
    """The old embedder, behind the dataset's ``old_view`` when it has one."""
    model = create_model(spec.name, input_shape=data.input_shape, dim=spec.dim, **spec.options)
    return model if data.old_view is None else InputView(data.old_view, model)


def build_new_model(data: BCLData, spec: ModelSpec) -> nn.Module:
    return create_model(spec.name, input_shape=data.input_shape, dim=spec.dim, **spec.options)


@dataclass
class ExperimentResult:
    """Results (the ``results.json`` dict) plus the trained models for further views."""

    results: dict
    data: BCLData
    old: TrainResult
    new: dict[str, TrainResult]


def retrieval_scores(data: BCLData, query_model, gallery_model, *, k: int) -> dict[str, float]:
    """Metrics of ``query_model`` queries against ``gallery_model``'s gallery.

    Self-matches are excluded by index when the dataset's query set is its gallery.
    """
    q = embed(query_model, data.query.x)
    g = q if (gallery_model is query_model and data.query_is_gallery) else embed(gallery_model, data.gallery.x)
    return evaluate(q, data.query.y, g, data.gallery.y, k=k, exclude_self=data.query_is_gallery)


def train_and_evaluate_new(data: BCLData, old: TrainResult, cfg: ExperimentConfig, method: MethodConfig, *,
                           progress: bool = True, callback=None, replicate: int = 0):
    """Train one new model with ``method`` and return (TrainResult, result record).

    ``replicate`` r selects the new model's seed ``cfg.seed + 1 + r``. ``callback``
    receives each epoch's history record (see :func:`bclviz.train.train_new`).
    """
    seed = cfg.seed + 1 + replicate
    torch.manual_seed(seed)
    model = build_new_model(data, cfg.new_model)
    t0 = time.perf_counter()
    new = train_new(
        model, data.new_train, old, num_classes=data.num_classes,
        cfg=dataclasses.replace(cfg.new_train, seed=seed), method=method, progress=progress,
        callback=callback,
    )
    seconds = time.perf_counter() - t0
    record = {
        "seed": seed,
        "self": retrieval_scores(data, new.model, new.model, k=cfg.k),
        "cross": retrieval_scores(data, new.model, old.model, k=cfg.k),
        "seconds": seconds,
        "settings": dataclasses.asdict(method),
    }
    return new, record


def summarise_seeds(per_seed: list[dict]) -> dict:
    """Mean and 95% half-width of every metric over per-seed records (``self``/``cross``).

    With a single seed the half-width is ``None`` (JSON ``null``): no interval.
    """
    out = {}
    for side in ("self", "cross"):
        if side not in per_seed[0]:
            continue
        stats = {m: mean_interval([r[side][m] for r in per_seed]) for m in per_seed[0][side]}
        out[side] = {m: v[0] for m, v in stats.items()}
        out[f"{side}_ci"] = {m: None if math.isnan(v[1]) else v[1] for m, v in stats.items()}
    return out


def paired_comparison(per_seed: list[dict], reference: list[dict], key: str) -> dict:
    """Paired-by-seed differences of ``key`` (e.g. mAP@100) against a reference method."""
    return {side: paired_difference([r[side][key] for r in per_seed], [r[side][key] for r in reference])
            for side in ("self", "cross")}


def _replicates(data, old, cfg, method, progress):
    runs = [train_and_evaluate_new(data, old, cfg, method, progress=progress, replicate=r) for r in range(cfg.seeds)]
    per_seed = [{k: v for k, v in rec.items() if k != "settings"} for _, rec in runs]
    record = {**summarise_seeds(per_seed), "per_seed": per_seed,
              "seconds": sum(r["seconds"] for r in per_seed), "settings": dataclasses.asdict(method)}
    return runs[0][0], record


def run_experiment(cfg: ExperimentConfig, *, data: BCLData | None = None, progress: bool = True) -> ExperimentResult:
    """Train the old model, the independent model and every method of ``cfg``; evaluate all.

    Returns an :class:`ExperimentResult` whose ``results`` dict is what ``bclviz demo``
    writes as ``results.json`` (keys ``dataset``, ``seed``, ``seeds``, ``reference``,
    ``k``, ``old``, ``independent``, ``methods``; each method has ``self`` and ``cross``
    (means over seeds), ``self_ci`` and ``cross_ci`` (95% half-widths), ``per_seed``,
    ``compatible``, ``update_gain``, ``compatibility_gain`` (from the means),
    ``vs_<reference>`` (paired differences), ``seconds`` and ``settings``). The models
    kept in the result are those of the first seed.
    """
    if data is None:
        data = load_dataset(cfg.dataset, seed=cfg.seed, **cfg.data_options)
    key = f"mAP@{cfg.k}"
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    old = train_old(
        build_old_model(data, cfg.old_model), data.old_train, num_classes=data.num_old_classes,
        cfg=dataclasses.replace(cfg.old_train, seed=cfg.seed), progress=progress,
    )
    old_record = {"self": retrieval_scores(data, old.model, old.model, k=cfg.k), "seconds": time.perf_counter() - t0}
    ind, ind_record = _replicates(data, old, cfg, MethodConfig(name="independent"), progress)
    new = {"independent": ind}
    methods = {}
    m_oo, m_ii = old_record["self"][key], ind_record["self"][key]
    for method in cfg.methods:
        if method.name == "independent":
            continue
        new[method.name], rec = _replicates(data, old, cfg, method, progress)
        rec["compatible"] = is_compatible(rec["cross"][key], m_oo)
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
        "old": old_record,
        "independent": ind_record,
        "methods": methods,
        "data": {key_: value for key_, value in data.info.items() if key_ != "superclass"},
    }
    return ExperimentResult(results, data, old, new)
