"""The dataset registry: every dataset's name, builder, accepted options and defaults.

A :class:`DatasetSpec` declares one dataset: its builder as ``"module:function"``
(imported on first use, so ``import bclviz.data`` needs neither torchvision nor PIL),
the ``data_options`` the builder accepts besides ``seed``, for the demo sets the base
experiment settings that :func:`bclviz.config.default_experiment` starts from, and its
update scenarios (:class:`~bclviz.data.scenarios.Scenario`: named bundles of data
options and experiment defaults, e.g. ``weak-old``; :func:`list_scenarios`), one of them
the default. Everything that names a dataset (:func:`load_dataset`, the CLI, run
configs, the demo) reads this registry; ``tests/test_datasets.py`` checks every declared
``options`` tuple against its builder's keyword parameters, and every scenario's options
against the declared ones.

Built in, in this order: the demo sets ``toy``, ``digits``, ``fashion-mnist``,
``glyphs`` and the benchmarks ``gldv2``, ``inshop``, ``cifar100``, ``imagefolder``
(builders in :mod:`bclviz.data.benchmarks`; they need ``root=``). Add your own with::

    register_dataset(DatasetSpec("mine", "mypackage.data:mine_data", "benchmark",
                                 options=("root", "image_size")))
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bclviz.data.scenarios import (
    AFTER_BUILD_OPTIONS, OLD_SIDE_OPTIONS, Scenario, _Defaults, degrade_old_side, hold_out_classes,
)

if TYPE_CHECKING:
    from bclviz.data.base import BCLData

__all__ = [
    "DatasetSpec", "Scenario", "register_dataset", "get_dataset", "list_datasets", "load_dataset",
    "list_scenarios", "get_scenario", "BENCHMARKS", "load_benchmark", "KINDS",
]  # fmt: skip

#: the kinds of dataset: small demo sets with default experiments, and real benchmarks
KINDS = ("demo", "benchmark")


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
    experiment : base :class:`~bclviz.config.ExperimentConfig` fields as plain dicts
        (``{"old_model": {"name": "cnn", "dim": 32, ...}, "old_train": {...}}``); demo
        sets only. A scenario's ``experiment`` replaces sections of it. Read-only; each
        lookup returns a copy.
    description : one line for listings.
    scenarios : the dataset's update scenarios; their data options must be declared
        ``options`` or :data:`~bclviz.data.scenarios.AFTER_BUILD_OPTIONS`.
    default_scenario : the scenario used when none is named (default: the first).
    superclasses : ``"module:function"`` giving every class's superclass (see
        :func:`~bclviz.data.scenarios.degrade_old_side`), for ``old_labels="superclass"``.
    """

    name: str
    builder: str
    kind: Literal["demo", "benchmark"]
    options: tuple[str, ...]
    experiment: Mapping[str, Any] | None = field(default=None, hash=False)
    description: str = ""
    scenarios: tuple[Scenario, ...] = field(default=(), hash=False)
    default_scenario: str | None = None
    superclasses: str | None = None

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
        self._check_scenarios(options)

    def _check_scenarios(self, options: tuple[str, ...]) -> None:
        scenarios = (self.scenarios,) if isinstance(self.scenarios, Scenario) else tuple(self.scenarios)
        if not all(isinstance(sc, Scenario) for sc in scenarios):
            raise ValueError(f"DatasetSpec.scenarios must hold Scenario objects, got {self.scenarios!r}")
        names = [sc.name for sc in scenarios]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name!r}: scenario names must be distinct, got {names}")
        for sc in scenarios:
            unknown = sorted(set(sc.data) - set(options) - set(AFTER_BUILD_OPTIONS))
            if unknown:
                raise ValueError(f"dataset {self.name!r}, scenario {sc.name!r}: unknown data options {unknown}; "
                                 f"allowed: {list(options) + list(AFTER_BUILD_OPTIONS)}")
        if self.default_scenario is not None and self.default_scenario not in names:
            raise ValueError(f"dataset {self.name!r}: default_scenario {self.default_scenario!r} is not one of "
                             f"its scenarios {names}")
        object.__setattr__(self, "scenarios", scenarios)
        if self.default_scenario is None and scenarios:
            object.__setattr__(self, "default_scenario", names[0])

    def resolve(self) -> Callable[..., BCLData]:
        """The builder function (its module is imported now, if it was not yet)."""
        return self._import(self.builder, "builder")

    def _import(self, target: str, what: str):
        module, _, function = target.partition(":")
        try:
            return getattr(importlib.import_module(module), function)
        except AttributeError:
            raise ImportError(f"dataset {self.name!r}: module {module!r} has no {what} {function!r}") from None

    def scenario(self, name: str | None = None) -> Scenario | None:
        """The scenario called ``name`` (None: the default; None too for a dataset
        without scenarios); ``ValueError`` naming the valid ones for an unknown name."""
        if name is None:
            name = self.default_scenario
            if name is None:
                return None
        for sc in self.scenarios:
            if sc.name == name:
                return sc
        valid = [sc.name for sc in self.scenarios]
        raise ValueError(f"unknown scenario {name!r} for dataset {self.name!r}; "
                         + (f"choose one of {valid}" if valid else "it declares no scenarios"))

    def build(self, *, seed: int = 0, scenario: str | None = None, **options) -> BCLData:
        """Build the data of ``scenario`` (None: the default one), ``options`` overriding
        the scenario's data options: ``builder(seed=seed, **builder_options)``, then
        ``heldout_classes`` (:func:`~bclviz.data.scenarios.hold_out_classes`), then the
        old-side options (:func:`~bclviz.data.scenarios.degrade_old_side`). An option
        that is neither declared nor one of those is a ``ValueError``."""
        unknown = sorted(set(options) - set(self.options) - set(AFTER_BUILD_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown data_options {unknown} for dataset {self.name!r}; allowed: {list(self.options)} "
                f"and, for every dataset, {list(AFTER_BUILD_OPTIONS)}"
            )
        chosen = self.scenario(scenario)
        merged = {**(chosen.data if chosen is not None else {}), **options}
        old_side = {key: merged.pop(key) for key in OLD_SIDE_OPTIONS if key in merged}
        heldout = merged.pop("heldout_classes", None)
        data = self.resolve()(seed=seed, **merged)
        if heldout is not None:
            data = hold_out_classes(data, heldout, seed=seed)
        if old_side:
            grouping = self._import(self.superclasses, "superclasses") if self.superclasses else None
            data = degrade_old_side(data, superclasses=grouping, **old_side)
        if chosen is not None:
            data = dataclasses.replace(data, info={**data.info, "scenario": chosen.name})
        return data


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


def load_dataset(name: str, *, seed: int = 0, scenario: str | None = None, **options) -> BCLData:
    """Build the named dataset in one of its scenarios (None: the dataset's default):
    ``get_dataset(name).build(seed=seed, scenario=scenario, **options)``."""
    return get_dataset(name).build(seed=seed, scenario=scenario, **options)


def list_scenarios(name: str) -> list[str]:
    """The scenarios of dataset ``name``, its default first, then in declaration order."""
    spec = get_dataset(name)
    names = [sc.name for sc in spec.scenarios]
    return sorted(names, key=lambda n: n != spec.default_scenario)


def get_scenario(name: str, scenario: str | None = None) -> Scenario | None:
    """Scenario ``scenario`` of dataset ``name`` (None: its default); ``ValueError``
    naming the valid scenarios for an unknown one."""
    return get_dataset(name).scenario(scenario)


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


def _sections(dim: int, *, old_width: int, new_width: int, old_train: dict, new_train: dict) -> dict:
    return {**_models(dim, {"width": old_width}, {"width": new_width}),
            "old_train": dict(old_train), "new_train": dict(new_train)}  # fmt: skip


_IMAGE_OPTIONS = ("setting", "old_ratio", "protocol", "max_train", "max_eval", "root", "download")
_LAZY_IMAGE_OPTIONS = ("check_files", "normalize", "workers")

# What each built-in scenario models (the datasets add their numbers; see data/README.md
# for the measurements behind the epoch counts and the default scenarios).
_V1 = ("The settings before scenarios existed, unchanged (same seed, same numbers). {what} "
       "Models an upgrade where the old model already knew every class and the new one is only "
       "moderately stronger: aligning with it costs the new model little.")
_WEAK_OLD = ("The paper's protocol (GLDv2: an old ResNet-18 on 30% of the landmarks, a new ResNet-50 on all): "
             "extended-class at 30%. The old model is a {old} trained briefly ({old_epochs} epoch(s)); the new "
             "one a {new} trained until its self-test plateaus ({new_epochs} epochs). Models a first, cheap "
             "retrieval model upgraded once the catalogue and the compute budget have grown.")
_LOWRES_OLD = ("The old system indexed low-resolution images (thumbnails, an older camera): its model saw every "
               "image block-averaged over {pool}x{pool} pixels (old_pool={pool}), the new one sees full "
               "resolution. {split} Classes told apart by fine detail crowd in the old space.")
_COARSE_OLD = ("The old model was trained with a coarser taxonomy (categories before products): the same training "
               "images labelled by superclass ({groups}); the new one learns the fine classes. Classes the old "
               "model never had to tell apart sit together in its space.")
_CNN = "CNN of width {width}"
#: glyphs' update scenarios share weak-old's split (old_ratio 0.3 orders the classes, and the
#: held-out draw follows that order), so they hold out the same characters and train the same
#: new model: only the old model differs.
_GLYPHS_HELDOUT = (" Queries and gallery are the 30% of the characters that weak-old holds out (heldout_classes=0.3, "
                   "old_ratio 0.3), in fonts never trained on; the new model and its training data are weak-old's, "
                   "so only the old model differs. default-v1 keeps the training characters.")

_DIGITS_SPLIT = "The old model saw every training image (extended-data, old_ratio 1)."
_BENCHMARK_POOL = Scenario(
    "lowres-old", _LOWRES_OLD.format(pool=4, split="Split as in default-v1."), {"old_pool": 4})
_BENCHMARK_V1 = Scenario("default-v1", _V1.format(what="The builder's defaults (extended-class at its old_ratio)."))

for _spec in (
    DatasetSpec(
        "toy", "bclviz.data.toy:make_toy", "demo",
        ("num_superclasses", "siblings", "coarse_dim", "fine_dim", "separation", "fine_separation",
         "noise", "fine_visibility", "train_per_class", "eval_per_class", "old_ratio"),
        {**_models(16, {"hidden": 64}, {"hidden": 128}, name="mlp"), **_training(epochs=8, lr=5e-3)},
        "crowded Gaussian toy: sibling classes collapse in the old model's coarse view",
        scenarios=(
            Scenario("coarse-view",
                     "An old model that saw a degraded input: its coarse view attenuates the fine subspace that "
                     "tells siblings apart, and it trained on half of the classes, so sibling classes collapse "
                     "in its space; the new model sees everything. default-v1's update with 1,000 training "
                     "samples per class and batches of 512 (500 steps per model instead of 3,000), so that "
                     "`bclviz demo --dataset toy` takes under a minute on 2 cores; over 5 seeds NDPP and ODPP "
                     "still beat proto on self-test (paired intervals above zero; docs/performance.md).",
                     {"train_per_class": 1000},
                     {"old_train": {"epochs": 8, "lr": 5e-3, "batch_size": 512},
                      "new_train": {"epochs": 8, "lr": 5e-3, "batch_size": 512}}),
            Scenario("default-v1", _V1.format(
                what="The old model sees a coarse view of the input (the fine subspace attenuated) and half the "
                     "classes, so sibling classes collapse in its space.")),
        ),
        superclasses="bclviz.data.scenarios:toy_superclasses",
    ),
    DatasetSpec(
        "digits", "bclviz.data.demos:digits_data", "demo", _IMAGE_OPTIONS,
        {**_models(32, {"width": 8}, {"width": 32}), **_training(epochs=15, batch_size=64)},
        "scikit-learn 8x8 digits, offline",
        scenarios=(
            Scenario("default-v1", _V1.format(
                what="Extended-data: the old model (CNN width 8) saw 30% of each class's images; both models "
                     "train 15 epochs.")),
            Scenario("weak-old", _WEAK_OLD.format(old=_CNN.format(width=4), old_epochs=2,
                                                  new=_CNN.format(width=32), new_epochs=30),
                     {"setting": "extended-class", "old_ratio": 0.3},
                     _sections(32, old_width=4, new_width=32, old_train={"epochs": 2, "batch_size": 64},
                               new_train={"epochs": 30, "batch_size": 64})),
            Scenario("lowres-old", _LOWRES_OLD.format(pool=2, split=_DIGITS_SPLIT),
                     {"setting": "extended-data", "old_ratio": 1.0, "old_pool": 2},
                     _sections(32, old_width=8, new_width=32, old_train={"epochs": 15, "batch_size": 64},
                               new_train={"epochs": 30, "batch_size": 64})),
            Scenario("coarse-old", _COARSE_OLD.format(groups="loops 0 6 8 9, straight strokes 1 4 7, open "
                                                             "curves 2 3 5"),
                     {"old_labels": "superclass"},
                     _sections(32, old_width=8, new_width=32, old_train={"epochs": 15, "batch_size": 64},
                               new_train={"epochs": 30, "batch_size": 64})),
        ),
        superclasses="bclviz.data.scenarios:digit_superclasses",
    ),
    DatasetSpec(
        "fashion-mnist", "bclviz.data.demos:fashion_mnist_data", "demo", _IMAGE_OPTIONS,
        {**_models(64, {"width": 8}, {"width": 16}), **_training(epochs=3)},
        "Fashion-MNIST 28x28 from a local copy",
        scenarios=(
            Scenario("default-v1", _V1.format(
                what="Extended-data: the old model (CNN width 8) saw 30% of each class's images; both models "
                     "train 3 epochs (the new one is a CNN of width 16).")),
            Scenario("weak-old", _WEAK_OLD.format(old=_CNN.format(width=4), old_epochs=1,
                                                  new=_CNN.format(width=16), new_epochs=12),
                     {"setting": "extended-class", "old_ratio": 0.3},
                     _sections(64, old_width=4, new_width=16, old_train={"epochs": 1},
                               new_train={"epochs": 12})),
            Scenario("lowres-old", _LOWRES_OLD.format(pool=4, split=_DIGITS_SPLIT),
                     {"setting": "extended-data", "old_ratio": 1.0, "old_pool": 4},
                     _sections(64, old_width=8, new_width=16, old_train={"epochs": 3},
                               new_train={"epochs": 12})),
            Scenario("coarse-old", _COARSE_OLD.format(groups="tops, bottoms and dresses, footwear, bags"),
                     {"old_labels": "superclass"},
                     _sections(64, old_width=8, new_width=16, old_train={"epochs": 3},
                               new_train={"epochs": 12})),
        ),
        superclasses="bclviz.data.scenarios:fashion_mnist_superclasses",
    ),
    DatasetSpec(
        "glyphs", "bclviz.data.glyphs:make_glyphs", "demo",
        ("size", "images_per_font", "classes", "train_fonts", "eval_fonts", "old_ratio", "cache_dir",
         "font_dir", "max_rotation", "max_shift", "scale_range", "lookalikes"),
        {**_models(64, {"width": 8}, {"width": 16}), **_training(epochs=6)},
        "characters rendered in many fonts, open-set by font",
        scenarios=(
            Scenario("default-v1", _V1.format(
                what="Extended-class at 50% with every class kept (Latin/Greek lookalikes too); old CNN width "
                     "8, new width 16, both trained 6 epochs.")),
            Scenario("weak-old", _WEAK_OLD.format(old=_CNN.format(width=4), old_epochs=8,
                                                  new=_CNN.format(width=16), new_epochs=40)
                     + " As in GLDv2, retrieval is of classes no model trained on: 30% of the characters are "
                       "held out (heldout_classes=0.3) and are the only query and gallery classes, in fonts "
                       "never trained on. Greek letters drawn like a Latin one are left out (lookalikes='drop').",
                     {"old_ratio": 0.3, "lookalikes": "drop", "heldout_classes": 0.3},
                     _sections(64, old_width=4, new_width=16, old_train={"epochs": 8},
                               new_train={"epochs": 40})),
            Scenario("lowres-old", _LOWRES_OLD.format(pool=4, split="Extended-class at 30% as in weak-old, "
                                                                     "with an old CNN of width 8 trained 6 "
                                                                     "epochs; lookalikes dropped.")
                     + _GLYPHS_HELDOUT,
                     {"old_ratio": 0.3, "lookalikes": "drop", "old_pool": 4, "heldout_classes": 0.3},
                     _sections(64, old_width=8, new_width=16, old_train={"epochs": 6},
                               new_train={"epochs": 40})),
            Scenario("coarse-old", _COARSE_OLD.format(groups="digits, Latin capitals, Latin small letters, "
                                                             "Greek capitals, Greek small letters; lookalikes "
                                                             "dropped") + _GLYPHS_HELDOUT,
                     {"old_ratio": 0.3, "lookalikes": "drop", "old_labels": "superclass", "heldout_classes": 0.3},
                     _sections(64, old_width=8, new_width=16, old_train={"epochs": 6},
                               new_train={"epochs": 40})),
        ),
        superclasses="bclviz.data.scenarios:glyph_superclasses",
        default_scenario="weak-old",  # the clearest compatibility tax measured: +0.030 at lam 10 (data/README.md)
    ),
    DatasetSpec(
        "gldv2", "bclviz.data.benchmarks:gldv2_data", "benchmark",
        ("root", "image_size", "old_ratio", "max_classes", "max_images", "max_queries", "max_index",
         "train_csv", "min_images_per_class", "usage", *_LAZY_IMAGE_OPTIONS),
        description="Google Landmarks v2 retrieval, mAP@100",
        scenarios=(_BENCHMARK_V1, _BENCHMARK_POOL),
    ),
    DatasetSpec(
        "inshop", "bclviz.data.benchmarks:inshop_data", "benchmark",
        ("root", "image_size", "old_ratio", "max_classes", "max_images", "max_eval_classes",
         *_LAZY_IMAGE_OPTIONS),
        description="DeepFashion In-shop query vs gallery, R@1",
        scenarios=(_BENCHMARK_V1, _BENCHMARK_POOL),
    ),
    DatasetSpec(
        "cifar100", "bclviz.data.benchmarks:cifar100_data", "benchmark",
        ("root", "image_size", "old_ratio", "max_classes", "max_images", "download"),
        description="CIFAR-100 50 -> 100 classes, in memory",
        scenarios=(_BENCHMARK_V1, _BENCHMARK_POOL,
                   Scenario("coarse-old", _COARSE_OLD.format(groups="CIFAR-100's 20 official superclasses"),
                            {"old_labels": "superclass"})),
        superclasses="bclviz.data.scenarios:cifar100_superclasses",
    ),
    DatasetSpec(
        "imagefolder", "bclviz.data.benchmarks:imagefolder_data", "benchmark",
        ("root", "image_size", "old_ratio", "test_ratio", "max_classes", "max_images", "normalize", "workers"),
        description="any root/<class>/<image> tree, closed-set",
        scenarios=(_BENCHMARK_V1, _BENCHMARK_POOL),
    ),
):
    register_dataset(_spec)
del _spec
