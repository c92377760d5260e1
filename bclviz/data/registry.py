"""The dataset registry: every dataset's name, builder, accepted options and defaults.

A :class:`DatasetSpec` declares one dataset: its builder as ``"module:function"``
(imported on first use, so ``import bclviz.data`` needs neither torchvision nor PIL),
the ``data_options`` the builder accepts besides ``seed``, and, for the demo sets, the
default experiment settings that :func:`bclviz.config.default_experiment` starts from.
Everything that names a dataset (:func:`load_dataset`, the CLI, run configs, the demo)
reads this registry; ``tests/test_datasets.py`` checks every declared ``options`` tuple
against its builder's keyword parameters.

Built in, in this order: the demo sets ``toy``, ``digits``, ``fashion-mnist``,
``glyphs`` and the benchmarks ``gldv2``, ``inshop``, ``cifar100``, ``imagefolder``
(builders in :mod:`bclviz.data.benchmarks`; they need ``root=``). Add your own with::

    register_dataset(DatasetSpec("mine", "mypackage.data:mine_data", "benchmark",
                                 options=("root", "image_size")))
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bclviz.data.base import BCLData

__all__ = [
    "DatasetSpec", "register_dataset", "get_dataset", "list_datasets", "load_dataset",
    "BENCHMARKS", "load_benchmark", "KINDS",
]  # fmt: skip

#: the kinds of dataset: small demo sets with default experiments, and real benchmarks
KINDS = ("demo", "benchmark")


class _Defaults(Mapping):
    """A read-only copy of plain (YAML-like) settings; every lookup returns a fresh copy,
    so a config built from it cannot change the registered defaults."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = copy.deepcopy(dict(values))

    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._values[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return repr(self._values)


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset.

    Attributes
    ----------
    name : the name used everywhere (``load_dataset(name)``, ``dataset:`` in configs).
    builder : ``"module:function"``; the function takes ``seed=`` and the ``options`` as
        keywords and returns a :class:`~bclviz.data.base.BCLData`.
    kind : ``"demo"`` or ``"benchmark"``.
    options : the ``data_options`` the builder accepts, besides ``seed``.
    experiment : default :class:`~bclviz.config.ExperimentConfig` fields as plain dicts
        (``{"old_model": {"name": "cnn", "dim": 32, ...}, "old_train": {...}}``); demo
        sets only. Read-only; each lookup returns a copy.
    description : one line for listings.
    """

    name: str
    builder: str
    kind: Literal["demo", "benchmark"]
    options: tuple[str, ...]
    experiment: Mapping[str, Any] | None = field(default=None, hash=False)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"DatasetSpec.name must be a non-empty string, got {self.name!r}")
        module, _, function = self.builder.partition(":") if isinstance(self.builder, str) else ("", "", "")
        if not module or not function or ":" in function:
            raise ValueError(f"DatasetSpec.builder must be 'module:function', got {self.builder!r}")
        if self.kind not in KINDS:
            raise ValueError(f"DatasetSpec.kind must be one of {list(KINDS)}, got {self.kind!r}")
        options = (self.options,) if isinstance(self.options, str) else tuple(self.options)
        if not all(isinstance(o, str) and o for o in options) or len(set(options)) != len(options):
            raise ValueError(f"DatasetSpec.options must be distinct option names, got {self.options!r}")
        if "seed" in options:
            raise ValueError("DatasetSpec.options must not list 'seed' (every builder takes it)")
        object.__setattr__(self, "options", options)
        if self.experiment is not None:
            if not isinstance(self.experiment, Mapping) or not all(isinstance(k, str) for k in self.experiment):
                raise ValueError(f"DatasetSpec.experiment must be a mapping of field names, got {self.experiment!r}")
            object.__setattr__(self, "experiment", _Defaults(self.experiment))

    def resolve(self) -> Callable[..., BCLData]:
        """The builder function (its module is imported now, if it was not yet)."""
        module, _, function = self.builder.partition(":")
        try:
            return getattr(importlib.import_module(module), function)
        except AttributeError:
            raise ImportError(f"dataset {self.name!r}: module {module!r} has no builder {function!r}") from None

    def build(self, *, seed: int = 0, **options) -> BCLData:
        """``builder(seed=seed, **options)``; an option not in :attr:`options` is a ``ValueError``."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"unknown data_options {unknown} for dataset {self.name!r}; allowed: {list(self.options)}"
            )
        return self.resolve()(seed=seed, **options)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` under ``spec.name``; a name can be registered once (``ValueError``)."""
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset takes a DatasetSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered (by {_REGISTRY[spec.name].builder})")
    _REGISTRY[spec.name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; choose one of {list_datasets()}") from None


def list_datasets(kind: str | None = None) -> list[str]:
    """Registered names in registration order, all or those of one ``kind``."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {list(KINDS)} or None")
    return [name for name, spec in _REGISTRY.items() if kind is None or spec.kind == kind]


def load_dataset(name: str, *, seed: int = 0, **options) -> BCLData:
    """Build the named dataset: ``get_dataset(name).build(seed=seed, **options)``."""
    return get_dataset(name).build(seed=seed, **options)


def load_benchmark(name: str, *, seed: int = 0, **options) -> BCLData:
    """:func:`load_dataset` restricted to the benchmarks."""
    if name not in list_datasets("benchmark"):
        raise ValueError(f"unknown benchmark {name!r}; choose one of {list_datasets('benchmark')}")
    return load_dataset(name, seed=seed, **options)


class _Builders(Mapping):
    """Read-only ``name -> builder function`` of the registered benchmarks (resolved on access)."""

    def __getitem__(self, name: str) -> Callable[..., BCLData]:
        if name not in list_datasets("benchmark"):
            raise KeyError(name)
        return _REGISTRY[name].resolve()

    def __iter__(self) -> Iterator[str]:
        return iter(list_datasets("benchmark"))

    def __len__(self) -> int:
        return len(list_datasets("benchmark"))

    def __repr__(self) -> str:
        return f"BENCHMARKS({ {name: _REGISTRY[name].builder for name in self} })"


#: benchmark builders by name (a view of the registry); their keywords are ``data_options``
BENCHMARKS: Mapping[str, Callable[..., BCLData]] = _Builders()

# builders that lived here before bclviz.data.benchmarks; importable from here still
_MOVED = ("gldv2_data", "inshop_data", "cifar100_data", "imagefolder_data", "limit_classes")


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module("bclviz.data.benchmarks"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- built in
def _models(dim: int, old: dict, new: dict, name: str = "cnn") -> dict:
    return {"old_model": {"name": name, "dim": dim, "options": old},
            "new_model": {"name": name, "dim": dim, "options": new}}  # fmt: skip


def _training(**train) -> dict:
    return {"old_train": dict(train), "new_train": dict(train)}


_IMAGE_OPTIONS = ("setting", "old_ratio", "protocol", "max_train", "max_eval", "root", "download")
_LAZY_IMAGE_OPTIONS = ("check_files", "normalize", "workers")

for _spec in (
    DatasetSpec(
        "toy", "bclviz.data.toy:make_toy", "demo",
        ("num_superclasses", "siblings", "coarse_dim", "fine_dim", "separation", "fine_separation",
         "noise", "fine_visibility", "train_per_class", "eval_per_class", "old_ratio"),
        {**_models(16, {"hidden": 64}, {"hidden": 128}, name="mlp"), **_training(epochs=8, lr=5e-3)},
        "crowded Gaussian toy: sibling classes collapse in the old model's coarse view",
    ),
    DatasetSpec(
        "digits", "bclviz.data.demos:digits_data", "demo", _IMAGE_OPTIONS,
        {**_models(32, {"width": 8}, {"width": 32}), **_training(epochs=15, batch_size=64)},
        "scikit-learn 8x8 digits, offline",
    ),
    DatasetSpec(
        "fashion-mnist", "bclviz.data.demos:fashion_mnist_data", "demo", _IMAGE_OPTIONS,
        {**_models(64, {"width": 8}, {"width": 16}), **_training(epochs=3)},
        "Fashion-MNIST 28x28 from a local copy",
    ),
    DatasetSpec(
        "glyphs", "bclviz.data.glyphs:make_glyphs", "demo",
        ("size", "images_per_font", "classes", "train_fonts", "eval_fonts", "old_ratio", "cache_dir",
         "font_dir", "max_rotation", "max_shift", "scale_range"),
        {**_models(64, {"width": 8}, {"width": 16}), **_training(epochs=6)},
        "characters rendered in many fonts, open-set by font",
    ),
    DatasetSpec(
        "gldv2", "bclviz.data.benchmarks:gldv2_data", "benchmark",
        ("root", "image_size", "old_ratio", "max_classes", "max_images", "max_queries", "max_index",
         "train_csv", "min_images_per_class", "usage", *_LAZY_IMAGE_OPTIONS),
        description="Google Landmarks v2 retrieval, mAP@100",
    ),
    DatasetSpec(
        "inshop", "bclviz.data.benchmarks:inshop_data", "benchmark",
        ("root", "image_size", "old_ratio", "max_classes", "max_images", "max_eval_classes",
         *_LAZY_IMAGE_OPTIONS),
        description="DeepFashion In-shop query vs gallery, R@1",
    ),
    DatasetSpec(
        "cifar100", "bclviz.data.benchmarks:cifar100_data", "benchmark",
        ("root", "image_size", "old_ratio", "max_classes", "max_images", "download"),
        description="CIFAR-100 50 -> 100 classes, in memory",
    ),
    DatasetSpec(
        "imagefolder", "bclviz.data.benchmarks:imagefolder_data", "benchmark",
        ("root", "image_size", "old_ratio", "test_ratio", "max_classes", "max_images", "normalize", "workers"),
        description="any root/<class>/<image> tree, closed-set",
    ),
):
    register_dataset(_spec)
del _spec
