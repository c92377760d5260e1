"""Frozen, validated configuration dataclasses shared by notebooks, CLI, sweeps and trainer.

:class:`ExperimentConfig` is the one experiment description: data, old and new models,
their training, the methods, the seeds and (for a run) the output folder. A *run
config* is an experiment config with exactly one method (:func:`run_config`); YAML
files round-trip through :mod:`bclviz.runconfig`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "TrainConfig", "MethodConfig", "ModelSpec", "ExperimentConfig", "run_config", "default_output_dir",
    "default_experiment", "config_to_dict", "config_from_dict",
]

HeadKind = Literal["cosface", "arcface"]
PrototypeSource = Literal["ema", "classifier"]


def _positive_int(obj, *names):
    for n in names:
        v = getattr(obj, n)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{type(obj).__name__}.{n} must be a positive integer, got {v!r}")


def _non_negative(obj, *names):
    for n in names:
        v = getattr(obj, n)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{type(obj).__name__}.{n} must be a finite number >= 0, got {v!r}")


def _choice(obj, name, allowed):
    v = getattr(obj, name)
    if v not in allowed:
        raise ValueError(f"{type(obj).__name__}.{name} must be one of {list(allowed)}, got {v!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one model (old or new).

    ``max_steps`` caps the number of optimiser steps (the "fast" knob for tests and
    previews); ``None`` runs all ``epochs``. ``device="auto"`` picks CUDA when
    available; ``amp`` enables bfloat16 autocast on CUDA (ignored on the CPU).
    ``workers`` is the number of DataLoader worker processes that decode lazily loaded
    images (:class:`~bclviz.data.lazy.LazyImages`) ahead of the training step: ``None``
    picks ``min(8, cores - 1)`` at run time (:func:`bclviz.loader.default_workers`), 0
    decodes in the training process; in-memory tensors never use workers. The worker
    count does not change the batches or the results, so checkpoints and sweep caches
    ignore it.
    """

    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    head: HeadKind = "cosface"
    scale: float = 30.0
    margin: float = 0.2
    seed: int = 0
    max_steps: int | None = None
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    amp: bool = False
    workers: int | None = None

    def __post_init__(self) -> None:
        _positive_int(self, "epochs", "batch_size")
        _choice(self, "device", ("cpu", "cuda", "auto"))
        if not isinstance(self.amp, bool):
            raise ValueError(f"TrainConfig.amp must be true or false, got {self.amp!r}")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 0):
            raise ValueError(
                f"TrainConfig.workers must be an integer >= 0 or null (one per core, up to 8), got {self.workers!r}"
            )
        _non_negative(self, "lr", "weight_decay", "scale", "margin")
        if self.lr == 0:
            raise ValueError("TrainConfig.lr must be > 0, got 0")
        _choice(self, "head", ("cosface", "arcface"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be an integer >= 0, got {self.seed!r}")
        if self.max_steps is not None:
            _positive_int(self, "max_steps")


@dataclass(frozen=True)
class MethodConfig:
    """The backward-compatibility method and its knobs (method.md sections 2-5).

    ``k=None`` uses the method's default neighbour count (NDPP 5, ODPP 8), capped at
    ``C - 1``. ``eps_mode`` sets each class's budget (:func:`bclviz.perturb.budgets`):
    ``"absolute"`` (``eps`` for every class, the default), ``"relative"`` (``eps`` scaled
    by the class's excess crowding, largest for the pair the new model separates most)
    or ``"nearest-angle"`` (``eps`` times the angle to the nearest old neighbour: what
    ``"relative"`` meant before; it gives a collapsed pair no room).
    ``lam`` multiplies every method's compatibility term. The baselines' own weights,
    calibrated to meet the compatibility criterion (``docs/method.md`` section 5):
    ``l2_weight`` (``l2``; 1.0 before), ``lce_align`` (weight of LCE's classifier
    alignment; 1.0 before), ``lce_boundary`` (``"min"``: the smallest old cosine of the
    class's samples to its old prototype after dropping the ``lce_outliers`` fraction
    of lowest ones, as in LCE/AdvBCT; ``"mean"``: the mean cosine, as before).
    ``update_every=None`` refreshes the perturbation once per epoch; an integer
    refreshes it every that many optimiser steps.
    ``neighbor_search`` finds the old-space neighbour lists of NDPP/ODPP (searched once
    per run): ``"exact"``, or ``"ivf"``, an approximate faiss inverted-file search for
    tens of thousands of classes (see ``docs/performance.md`` for its recall).
    """

    name: str = "ndpp"
    lam: float = 1.0
    eps: float = 0.4
    eps_mode: Literal["absolute", "relative", "nearest-angle"] = "absolute"
    k: int | None = None
    gamma: float = 0.1
    odpp_steps: int = 30
    odpp_lr: float = 0.02
    ema_momentum: float = 0.9
    new_prototypes: PrototypeSource = "ema"
    warmup_epochs: int = 1
    update_every: int | None = None
    comp_scale: float = 30.0
    comp_margin: float = 0.2
    tau: float = 0.01
    neighbor_search: Literal["exact", "ivf"] = "exact"
    l2_weight: float = 10.0
    lce_align: float = 100.0
    lce_boundary: Literal["min", "mean"] = "min"
    lce_outliers: float = 0.05

    def __post_init__(self) -> None:
        from .methods import list_methods  # local: the registry module imports torch

        if self.name not in list_methods():
            raise ValueError(f"MethodConfig.name must be one of {list_methods()}, got {self.name!r}")
        _non_negative(self, "lam", "eps", "gamma", "odpp_lr", "comp_scale", "comp_margin", "tau",
                      "l2_weight", "lce_align", "lce_outliers")
        if self.k is not None:
            _positive_int(self, "k")
        if isinstance(self.odpp_steps, bool) or not isinstance(self.odpp_steps, int) or self.odpp_steps < 0:
            raise ValueError(f"MethodConfig.odpp_steps must be an integer >= 0, got {self.odpp_steps!r}")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"MethodConfig.warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        if not 0 <= self.ema_momentum < 1:
            raise ValueError(f"MethodConfig.ema_momentum must be in [0, 1), got {self.ema_momentum!r}")
        _choice(self, "new_prototypes", ("ema", "classifier"))
        _choice(self, "eps_mode", ("absolute", "relative", "nearest-angle"))
        _choice(self, "lce_boundary", ("min", "mean"))
        if not self.lce_outliers < 1:
            raise ValueError(f"MethodConfig.lce_outliers must be in [0, 1), got {self.lce_outliers!r}")
        _choice(self, "neighbor_search", ("exact", "ivf"))
        if self.update_every is not None:
            _positive_int(self, "update_every")
        if self.tau == 0:
            raise ValueError("MethodConfig.tau must be > 0, got 0")


def _integer(obj, name: str, low: int) -> None:
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{type(obj).__name__}.{name} must be an integer >= {low}, got {v!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A model name, its embedding dimension and options.

    ``name``: a registered model (:func:`bclviz.models.list_models`), ``"torchvision:<arch>"``
    (any torchvision classification architecture; ``options`` may name ``weights``,
    ``resize`` and the architecture's own settings, :class:`bclviz.external.TorchvisionEmbedder`),
    or, for the old model only, ``"torchscript"`` / ``"export"`` with ``options={"path": FILE}``:
    a frozen old model saved with ``torch.jit.save`` / ``torch.export.save``, loaded and never
    trained (:func:`bclviz.external.load_frozen_model`); ``dim`` must be its output dimension.
    """

    name: str = "mlp"
    dim: int = 16
    options: dict = field(default_factory=dict)

    def validate(self, where: str, *, frozen_ok: bool = False) -> None:
        """Raise ``ValueError`` naming ``where`` (e.g. ``ExperimentConfig.old_model``) for a bad spec;
        ``frozen_ok``: a frozen model file is allowed (the old model)."""
        from .external import FROZEN_KINDS
        from .models import check_model_name

        check_model_name(self.name, where=f"{where}.name", frozen_ok=frozen_ok)
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"{where}.dim must be a positive integer, got {self.dim!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"{where}.options must be a mapping, got {self.options!r}")
        if self.name in FROZEN_KINDS and (set(self.options) != {"path"} or not isinstance(self.options["path"], str)
                                          or not self.options["path"]):
            raise ValueError(f"{where}.options of a {self.name!r} model must be exactly {{path: FILE}} (the file "
                             f"{FROZEN_KINDS[self.name]} wrote), got {self.options!r}")

    @property
    def frozen(self) -> bool:
        """Whether this names a frozen model file (loaded, never trained)."""
        from .external import FROZEN_KINDS

        return self.name in FROZEN_KINDS


def default_output_dir(dataset: str, method: str) -> str:
    """``runs/<dataset>-<method>``: where a run writes unless told otherwise."""
    return f"runs/{dataset}-{method}"


def _all_methods() -> tuple[MethodConfig, ...]:
    from .methods import list_methods

    return tuple(MethodConfig(name=m) for m in list_methods() if m != "independent")


_SECTIONS = {"old_model": ModelSpec, "new_model": ModelSpec, "old_train": TrainConfig, "new_train": TrainConfig}


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one backward-compatible update (see :func:`default_experiment`).

    ``seed`` fixes the data split and the old model. Every new model is trained
    ``seeds`` times with initialisation/shuffling seeds ``seed + 1 + r`` for replicate
    ``r = 0 .. seeds - 1``; results report the mean, a 95% Student-t interval, every
    per-seed value, and differences to ``reference`` paired by seed (``docs/metrics.md``).

    ``data_options`` are passed to :func:`bclviz.data.load_dataset`; its ``"scenario"``
    key names the update scenario (:attr:`scenario`; left out: the dataset's default).

    A *run config* (``bclviz train``) is an experiment config with exactly one method,
    :attr:`method`; it writes to ``output_dir`` (:attr:`run_dir`; empty means
    :func:`default_output_dir`). ``k`` is the mAP@k cut-off; a dataset may name another
    headline metric (``BCLData.headline``, e.g. In-shop's R@1).
    """

    dataset: str = "toy"
    seed: int = 0
    data_options: dict = field(default_factory=dict)
    old_model: ModelSpec = ModelSpec(options={"hidden": 64})
    new_model: ModelSpec = ModelSpec(options={"hidden": 128})
    old_train: TrainConfig = TrainConfig(epochs=8)
    new_train: TrainConfig = TrainConfig(epochs=8)
    methods: tuple[MethodConfig, ...] = field(default_factory=_all_methods)
    k: int = 100
    seeds: int = 1
    reference: str = "proto"
    output_dir: str = ""

    def __post_init__(self) -> None:
        from .data.registry import list_datasets

        name = type(self).__name__
        if self.dataset not in list_datasets():
            raise ValueError(f"{name}.dataset must be one of {list_datasets()}, got {self.dataset!r}")
        _integer(self, "seed", 0)
        _integer(self, "k", 1)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"{name}.seeds must be a positive integer, got {self.seeds!r}")
        if not isinstance(self.data_options, dict):
            raise ValueError(f"{name}.data_options must be a mapping, got {self.data_options!r}")
        if "scenario" in self.data_options:  # the registry names the valid ones
            from .data.registry import get_dataset

            get_dataset(self.dataset).scenario(self.data_options["scenario"])
        for section, cls in _SECTIONS.items():
            value = getattr(self, section)
            if not isinstance(value, cls):
                raise ValueError(f"{name}.{section} must be a {cls.__name__}, got {value!r}")
        self.old_model.validate(f"{name}.old_model", frozen_ok=True)
        self.new_model.validate(f"{name}.new_model")
        if self.old_model.dim != self.new_model.dim:
            raise ValueError(
                f"old and new embedding dimensions differ ({self.old_model.dim} vs {self.new_model.dim})"
            )
        if isinstance(self.methods, list):
            object.__setattr__(self, "methods", tuple(self.methods))
        bad = [m for m in self.methods if not isinstance(m, MethodConfig)] if isinstance(self.methods, tuple) else [self.methods]
        if bad:
            raise ValueError(f"{name}.methods must hold MethodConfig objects, e.g. MethodConfig(name='ndpp'); got {bad!r}")
        names = [m.name for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"methods must have distinct names, got {names}")
        if not isinstance(self.reference, str):
            raise ValueError(f"{name}.reference must be a method name, got {self.reference!r}")
        if not isinstance(self.output_dir, str):
            raise ValueError(f"{name}.output_dir must be a string, got {self.output_dir!r}")

    @property
    def scenario(self) -> str | None:
        """The update scenario of the data: ``data_options["scenario"]``, else the
        dataset's default scenario (None for a dataset without scenarios)."""
        from .data.registry import get_dataset

        chosen = get_dataset(self.dataset).scenario(self.data_options.get("scenario"))
        return None if chosen is None else chosen.name

    @property
    def method(self) -> MethodConfig:
        """The method of a run config; ``ValueError`` unless there is exactly one."""
        if len(self.methods) != 1:
            raise ValueError(
                f"a run config has exactly one method; this experiment has {len(self.methods)} "
                f"({[m.name for m in self.methods]}); pick one with cfg.run(method)"
            )
        return self.methods[0]

    @property
    def run_dir(self) -> Path:
        """Where the run of :attr:`method` writes: ``output_dir``, else :func:`default_output_dir`."""
        return Path(self.output_dir or default_output_dir(self.dataset, self.method.name))

    def run(self, method: MethodConfig | None = None, *, output_dir: str = "") -> "ExperimentConfig":
        """The run config of ``method`` (default: the only method) within this experiment."""
        method = self.method if method is None else method
        return dataclasses.replace(self, methods=(method,), output_dir=output_dir or default_output_dir(self.dataset, method.name))


def run_config(*, method: MethodConfig = MethodConfig(), output_dir: str = "", **fields) -> ExperimentConfig:
    """A run config: an :class:`ExperimentConfig` with the one method ``method``.

    ``output_dir=""`` fills in :func:`default_output_dir` of the dataset and the method.
    """
    if "methods" in fields:
        raise ValueError("a run config takes method=MethodConfig(...), not methods=")
    return ExperimentConfig(**fields, methods=(method,)).run(output_dir=output_dir)


def default_experiment(dataset: str = "toy", *, seed: int = 0, scenario: str | None = None,
                       **overrides) -> ExperimentConfig:
    """The default experiment of ``dataset`` in one of its update scenarios.

    ``scenario`` (None: the dataset's default, :func:`bclviz.data.registry.list_scenarios`)
    picks the data (``data_options["scenario"]``) and the models and training: the
    dataset's base sections (its registry entry) with the scenario's sections in their
    place. ``overrides`` replace top-level fields; a ``data_options`` override adds to
    the scenario (its ``"scenario"`` key, if any, must agree with ``scenario``).
    """
    from .data.registry import get_dataset, list_datasets

    demo = list_datasets("demo")
    spec = get_dataset(dataset) if dataset in list_datasets() else None
    if spec is None or spec.experiment is None:
        raise ValueError(
            f"no default experiment for dataset {dataset!r}; choose one of {demo}, "
            "or write a run config for `bclviz train` (docs/full_runs.md)"
        )
    options = dict(overrides.pop("data_options", None) or {})
    if scenario is not None and options.get("scenario", scenario) != scenario:
        raise ValueError(f"default_experiment: scenario={scenario!r} but data_options names scenario "
                         f"{options['scenario']!r}; give one")
    chosen = spec.scenario(options.get("scenario", scenario))
    if chosen is not None:
        options = {"scenario": chosen.name, **options}
    values = {**spec.experiment, **(chosen.experiment if chosen is not None and chosen.experiment else {})}
    sections = {key: config_from_dict(_SECTIONS[key], value) if key in _SECTIONS else value
                for key, value in values.items()}
    cfg = ExperimentConfig(dataset=dataset, seed=seed, data_options=options, **sections)
    return dataclasses.replace(cfg, **overrides)


def config_to_dict(cfg) -> dict:
    """Plain dict of a config dataclass (JSON/YAML friendly)."""
    return dataclasses.asdict(cfg)


def config_from_dict(cls, values: dict):
    """Build ``cls`` from a dict, naming unknown keys in the error."""
    if not isinstance(values, dict):
        raise TypeError(f"{cls.__name__} settings must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} setting(s) {unknown}; allowed: {sorted(known)}")
    return cls(**values)
