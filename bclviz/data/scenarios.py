"""Update scenarios: which real model upgrade one backward-compatible update stands for.

A :class:`Scenario` is a named bundle of data options and experiment defaults (models,
training) that a dataset declares in the registry (``DatasetSpec.scenarios``). It is
chosen wherever a dataset is: ``load_dataset(name, scenario=...)``,
``default_experiment(name, scenario=...)``, ``scenario:`` in a run config and
``bclviz demo/train/findings --scenario``; :func:`bclviz.data.registry.list_scenarios`
lists a dataset's scenarios, its default first.

The built-in scenarios (declared per dataset in :mod:`bclviz.data.registry`):

``default-v1``
    The settings bclviz used before scenarios existed, unchanged (same seed, same
    numbers): digits and Fashion-MNIST extended-data (the old model saw 30% of each
    class), glyphs extended-class at 50% with every class kept, the old CNN about half
    as wide as the new one and trained as long.
``weak-old``
    The paper's protocol, extended-class at 30%: a small old backbone, briefly trained,
    that saw 30% of the classes; a larger new one trained on all classes until its
    self-test plateaus (GLDv2: ResNet-18 on 30% of the landmarks -> ResNet-50).
``lowres-old``
    The old model saw low-resolution images (thumbnails, an older camera): every image
    block-averaged over ``old_pool x old_pool`` pixels (:class:`~bclviz.models.BlockAverage`),
    the new one sees full resolution. Classes told apart by fine detail crowd in the
    old space: the image version of the toy's coarse view.
``coarse-old``
    The old model was trained with a coarser taxonomy (categories before products):
    the same training images labelled by superclass; the new one learns the fine
    classes. Classes the old model never had to tell apart sit together in its space.

Three data options, accepted by every dataset (they act on the built data, after the
dataset's own builder; :data:`AFTER_BUILD_OPTIONS`), make the scenarios:

- ``heldout_classes``: a fraction in (0, 1) of the classes held out from training
  altogether (neither model trains on them) and used as the only query and gallery
  classes: retrieval of classes no model has seen, the protocol of GLDv2 (whose test
  landmarks are not among the training landmarks). Applied first, by
  :func:`hold_out_classes`.

- ``old_pool``: an integer >= 2; the old model sees images block-averaged over
  ``old_pool x old_pool`` pixels (``BCLData.old_view``). Image datasets only.
- ``old_labels``: ``"fine"`` (default) or ``"superclass"``: the old model trains on
  every new training image labelled by its superclass (the dataset's declared grouping,
  ``DatasetSpec.superclasses``; listed in ``info["superclasses"]``), whatever the split
  options; ``BCLData.old_class_of`` maps each class to its superclass.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from bclviz.data.base import BCLData

__all__ = [
    "Scenario", "OLD_SIDE_OPTIONS", "AFTER_BUILD_OPTIONS", "OLD_LABELS", "degrade_old_side", "hold_out_classes",
    "DIGIT_SUPERCLASSES", "FASHION_MNIST_CLASSES", "FASHION_MNIST_SUPERCLASSES", "GLYPH_SUPERCLASSES",
    "CIFAR100_FINE_TO_COARSE", "CIFAR100_SUPERCLASS_NAMES",
    "digit_superclasses", "fashion_mnist_superclasses", "glyph_superclasses", "toy_superclasses",
    "cifar100_superclasses",
]  # fmt: skip

#: data options every dataset accepts besides its builder's (applied after the builder)
OLD_SIDE_OPTIONS = ("old_pool", "old_labels")
#: every data option applied after a dataset's builder (:func:`hold_out_classes` first)
AFTER_BUILD_OPTIONS = ("heldout_classes", *OLD_SIDE_OPTIONS)
#: ``info`` entries that hold one value per class (subset by :func:`hold_out_classes`)
_PER_CLASS_INFO = ("class_ids", "class_chars", "class_names", "superclass")
#: the values of ``old_labels``
OLD_LABELS = ("fine", "superclass")


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
class Scenario:
    """One named update scenario of a dataset.

    Attributes
    ----------
    name : the name used everywhere (``scenario="weak-old"``).
    doc : what real upgrade it models, and how (shown by listings and the docs).
    data : data options (the builder's, and :data:`OLD_SIDE_OPTIONS`); options given
        explicitly to ``load_dataset`` override them.
    experiment : :class:`~bclviz.config.ExperimentConfig` sections as plain dicts
        (``{"new_train": {"epochs": 20}}``); each replaces the dataset's base section
        (``DatasetSpec.experiment``). ``None``: the base sections as they are.
    """

    name: str
    doc: str
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)
    experiment: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Scenario.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.doc, str) or not self.doc:
            raise ValueError(f"scenario {self.name!r}: doc must say what upgrade it models")
        if not isinstance(self.data, Mapping) or "scenario" in self.data or "seed" in self.data:
            raise ValueError(f"scenario {self.name!r}: data must be a mapping of data options "
                             f"(not 'scenario' or 'seed'), got {self.data!r}")
        if self.experiment is not None and not isinstance(self.experiment, Mapping):
            raise ValueError(f"scenario {self.name!r}: experiment must be a mapping of sections or None")
        object.__setattr__(self, "data", _Defaults(self.data))  # read-only; lookups return copies
        if self.experiment is not None:
            object.__setattr__(self, "experiment", _Defaults(self.experiment))


# ----------------------------------------------------------------------------- old side
def degrade_old_side(data: BCLData, *, old_pool: int | None = None, old_labels: str = "fine",
                     superclasses: Callable[[BCLData], tuple[np.ndarray, list[str]]] | None = None) -> BCLData:
    """``data`` with the old model's side degraded (see the module docstring).

    Parameters
    ----------
    old_pool : None (or 1) for full resolution, else the block side (an integer >= 2
        dividing the image height and width).
    old_labels : "fine" (unchanged) or "superclass".
    superclasses : the dataset's grouping, needed for ``old_labels="superclass"``: a
        function of the data returning the superclass of every class (``(C,)`` ints)
        and the superclass names.
    """
    import torch

    from bclviz.data.base import Labeled

    changes: dict[str, Any] = {}
    info = dict(data.info)
    if old_pool is not None and old_pool != 1:
        if isinstance(old_pool, bool) or not isinstance(old_pool, (int, np.integer)) or old_pool < 2:
            raise ValueError(f"old_pool must be an integer >= 2 (or None), got {old_pool!r}")
        shape = data.input_shape
        if len(shape) != 3 or shape[1] % old_pool or shape[2] % old_pool:
            raise ValueError(f"old_pool={old_pool} needs images (c, h, w) whose h and w are multiples of it; "
                             f"dataset {data.name!r} has inputs of shape {shape}")
        if data.old_view is not None:
            raise ValueError(f"dataset {data.name!r} already has an old view; old_pool cannot add another")
        from bclviz.models import BlockAverage

        changes["old_view"] = BlockAverage(int(old_pool))
        info["old_pool"] = int(old_pool)
    if old_labels not in OLD_LABELS:
        raise ValueError(f"old_labels must be one of {list(OLD_LABELS)}, got {old_labels!r}")
    if old_labels == "superclass":
        if superclasses is None:
            raise ValueError(f"dataset {data.name!r} declares no superclasses, so old_labels='superclass' "
                             "is not available (DatasetSpec.superclasses)")
        groups, names = superclasses(data)
        groups = np.asarray(groups, dtype=np.int64)
        if groups.shape != (data.num_classes,) or groups.min() < 0 or groups.max() >= len(names):
            raise ValueError(f"the superclasses of {data.name!r} must give one group in [0, {len(names)}) "
                             f"per class ({data.num_classes}), got shape {groups.shape}")
        present, old_of = np.unique(groups, return_inverse=True)  # groups without a class are left out
        old_of = torch.from_numpy(old_of.astype(np.int64))
        new = data.new_train
        changes.update(old_train=Labeled(new.x, old_of[new.y]), num_old_classes=len(present), old_class_of=old_of)
        info.update(old_labels="superclass", superclasses=[names[g] for g in present],
                    n_old_train=len(new), old_setting="every training image, labelled by superclass")
    if not changes:
        return data
    return dataclasses.replace(data, info=info, **changes)


def hold_out_classes(data: BCLData, ratio: float, *, seed: int = 0) -> BCLData:
    """``data`` with a fraction of its classes held out for evaluation only (open-set by class).

    ``ceil(ratio * C)`` classes (at least 1, leaving at least 2 to train on), drawn with
    ``seed``, leave both training sets; query and gallery keep only their images. The
    training classes are renumbered ``0..C'-1`` in their order (the old model's classes
    stay first), the old model's classes ``0..C_old'-1``; the held-out classes get the
    labels ``C'..C-1`` so that no query label is a training class. ``info`` records
    ``heldout_classes`` (the ratio), ``heldout_labels`` (their labels before renumbering)
    and ``protocol`` ("open-set-by-class"); per-class entries (``class_ids``,
    ``class_chars``, ...) keep the training classes, and ``heldout_<entry>`` the others.

    Raises ``ValueError`` when the ratio is not in (0, 1), fewer than 3 classes exist, or
    a held-out class has fewer than 2 evaluation images (retrieval needs a match).
    """
    import torch

    from bclviz.data import splits
    from bclviz.data.base import Labeled

    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise ValueError(f"heldout_classes must be a fraction in (0, 1), got {ratio!r}")
    n = data.num_classes
    if n < 3:
        raise ValueError(f"heldout_classes needs at least 3 classes; dataset {data.name!r} has {n}")
    n_held = splits._count(ratio, n, low=1, high=n - 2)
    rng = np.random.default_rng(np.random.SeedSequence([splits._check_seed(seed), 0x4E1D]))
    held = np.sort(rng.choice(n, n_held, replace=False))
    keep = np.setdiff1d(np.arange(n), held)
    new_id = np.empty(n, dtype=np.int64)
    new_id[keep] = np.arange(len(keep))
    new_id[held] = len(keep) + np.arange(n_held)
    old_of = data.old_classes().numpy()  # new class -> old class (-1: unseen)
    old_kept = np.unique(old_of[keep][old_of[keep] >= 0])
    old_id = np.full(max(data.num_old_classes, 1), -1, dtype=np.int64)
    old_id[old_kept] = np.arange(len(old_kept))
    if len(old_kept) == 0:
        raise ValueError(f"heldout_classes={ratio} holds out every class the old model trained on; "
                         "use a smaller ratio or another seed")

    def rows(part: Labeled, classes: np.ndarray, labels: np.ndarray) -> Labeled:
        sub = part.subset(torch.from_numpy(np.flatnonzero(np.isin(part.y.numpy(), classes))))
        return Labeled(sub.x, torch.from_numpy(labels)[sub.y])

    new_train = rows(data.new_train, keep, new_id)
    old_train = rows(data.old_train, old_kept, old_id)
    query = rows(data.query, held, new_id)
    gallery = query if data.query_is_gallery else rows(data.gallery, held, new_id)
    sizes = np.bincount(np.searchsorted(held, data.query.y.numpy()[np.isin(data.query.y.numpy(), held)]),
                        minlength=n_held)
    if data.query_is_gallery and sizes.min() < 2:
        raise ValueError(f"held-out class {int(held[sizes.argmin()])} of {data.name!r} has {int(sizes.min())} "
                         "evaluation image(s); retrieval needs at least 2")
    info = dict(data.info)
    for name in _PER_CLASS_INFO:
        values = info.get(name)
        if isinstance(values, (list, tuple)) and len(values) == n:
            info[name] = [values[c] for c in keep]
            info[f"heldout_{name}"] = [values[c] for c in held]
    info.update(heldout_classes=float(ratio), heldout_labels=held.tolist(), protocol="open-set-by-class",
                n_new_train=len(new_train), n_old_train=len(old_train), n_eval=len(query))
    explicit = None
    if data.old_class_of is not None:
        explicit = torch.from_numpy(np.where(old_of[keep] >= 0, old_id[np.maximum(old_of[keep], 0)], -1))
    return dataclasses.replace(data, new_train=new_train, old_train=old_train, query=query, gallery=gallery,
                               num_classes=len(keep), num_old_classes=len(old_kept), old_class_of=explicit,
                               info=info)


# ----------------------------------------------------------------------------- groupings
def _by_name(table: dict[str, tuple], keys: list) -> tuple[np.ndarray, list[str]]:
    names = list(table)
    index = {k: g for g, members in enumerate(table.values()) for k in members}
    missing = [k for k in keys if k not in index]
    if missing:
        raise ValueError(f"no superclass declared for class(es) {missing[:10]}")
    return np.array([index[k] for k in keys], dtype=np.int64), names


#: digits by stroke shape: closed loops, straight strokes, open curves
DIGIT_SUPERCLASSES = {"loops (0 6 8 9)": (0, 6, 8, 9), "straight strokes (1 4 7)": (1, 4, 7),
                      "open curves (2 3 5)": (2, 3, 5)}
#: Fashion-MNIST's class names, by original label id
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
#: Fashion-MNIST by garment kind (original label ids)
FASHION_MNIST_SUPERCLASSES = {"tops": (0, 2, 4, 6), "bottoms and dresses": (1, 3), "footwear": (5, 7, 9),
                              "bags": (8,)}


def digit_superclasses(data: BCLData) -> tuple[np.ndarray, list[str]]:
    """:data:`DIGIT_SUPERCLASSES` of every class (``info["class_ids"]`` holds the digits)."""
    return _by_name(DIGIT_SUPERCLASSES, [int(c) for c in data.info["class_ids"]])


def fashion_mnist_superclasses(data: BCLData) -> tuple[np.ndarray, list[str]]:
    """:data:`FASHION_MNIST_SUPERCLASSES` of every class (by original label id)."""
    return _by_name(FASHION_MNIST_SUPERCLASSES, [int(c) for c in data.info["class_ids"]])


def _glyph_family(char: str) -> str:
    if char.isdigit():
        return "digits"
    script = "Greek" if "\u0370" <= char <= "\u03ff" else "Latin"
    return f"{script} {'capitals' if char.isupper() else 'small letters'}"


#: glyphs by script and case (a character's family; every glyph class has one)
GLYPH_SUPERCLASSES = ("digits", "Latin capitals", "Latin small letters", "Greek capitals", "Greek small letters")


def glyph_superclasses(data: BCLData) -> tuple[np.ndarray, list[str]]:
    """Script and case of every glyph class (:data:`GLYPH_SUPERCLASSES`)."""
    families = [_glyph_family(c) for c in data.info["class_chars"]]
    return np.array([GLYPH_SUPERCLASSES.index(f) for f in families], dtype=np.int64), list(GLYPH_SUPERCLASSES)


def toy_superclasses(data: BCLData) -> tuple[np.ndarray, list[str]]:
    """The toy's own superclasses (siblings share one: ``info["superclass"]``)."""
    groups = np.asarray(data.info["superclass"], dtype=np.int64)
    return groups, [f"superclass {g}" for g in range(int(groups.max()) + 1)]


#: CIFAR-100's fine label -> its official coarse label (the dataset's 20 superclasses)
CIFAR100_FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip
CIFAR100_SUPERCLASS_NAMES = (
    "aquatic mammals", "fish", "flowers", "food containers", "fruit and vegetables",
    "household electrical devices", "household furniture", "insects", "large carnivores",
    "large man-made outdoor things", "large natural outdoor scenes", "large omnivores and herbivores",
    "medium-sized mammals", "non-insect invertebrates", "people", "reptiles", "small mammals", "trees",
    "vehicles 1", "vehicles 2",
)  # fmt: skip


def cifar100_superclasses(data: BCLData) -> tuple[np.ndarray, list[str]]:
    """CIFAR-100's official 20 superclasses (``info["class_ids"]`` holds the fine ids)."""
    fine = np.asarray(data.info["class_ids"], dtype=np.int64)
    return np.asarray(CIFAR100_FINE_TO_COARSE, dtype=np.int64)[fine], list(CIFAR100_SUPERCLASS_NAMES)
