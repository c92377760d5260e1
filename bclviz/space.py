"""What a tuning study varies: a grid of settings or a search space (``bclviz tune --space``).

A space file is YAML with one section, ``grid`` or ``search``, and the ``baselines``
run next to it at their default settings (reference points, never searched)::

    search:                       # a multi-objective sampler over ranges
      methods: [ndpp, odpp]       # perturbing methods (bclviz.methods.perturbing_methods)
      eps: [0.0, 1.0]             # [low, high], or {low, high, step, log}
      k: [2, 8]                   # integers; left out: each method's default k
      gamma: {low: 0.01, high: 1.0, log: true}   # methods whose knobs include gamma (ODPP)
      lam: [0.5, 2.0]             # left out: the run config's lam
      sampler: tpe                # tpe (multi-objective TPE) or nsga2 (NSGA-II)
      seed: 0
      startup: 10                 # TPE's random start-up trials / NSGA-II's population
    baselines: [proto, independent]

    grid:                         # every combination (bclviz.sweep.sweep_grid)
      methods: [ndpp, odpp]
      eps: [0.2, 0.4, 0.8]        # values
      k: [5]
      gamma: [0.1]
    baselines: [proto, independent]

:func:`load_space` reads a file, :func:`space_from_dict` a mapping; both raise
``ValueError`` naming the file, the key and the allowed values.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import MethodConfig
from .methods import list_methods, method_class, perturbing_methods

__all__ = ["Range", "SearchSpace", "GridSpace", "load_space", "space_from_dict", "SAMPLERS"]

#: samplers a search can use
SAMPLERS = ("tpe", "nsga2")
_DEFAULT_BASELINES = ("proto", "independent")


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True)
class Range:
    """A search range ``[low, high]`` (both included), optionally stepped or log-scaled."""

    low: float
    high: float
    step: float | None = None
    log: bool = False

    def __post_init__(self) -> None:
        _number(self.low, "low")
        _number(self.high, "high")
        if self.low > self.high:
            raise ValueError(f"a range needs low <= high, got [{self.low}, {self.high}]")
        if self.step is not None and _number(self.step, "step") <= 0:
            raise ValueError(f"step must be > 0, got {self.step!r}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError(f"a log range needs low > 0 and no step, got low={self.low}, step={self.step}")

    def suggest(self, trial, name: str, *, integer: bool = False):
        """``trial.suggest_int`` / ``suggest_float`` of this range under ``name``."""
        if integer:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)


def _baselines(values, where: str) -> tuple[str, ...]:
    values = tuple(values)
    unknown = [b for b in values if b not in list_methods()]
    if unknown:
        raise ValueError(f"{where}: unknown baseline(s) {unknown}; registered methods: {list_methods()}")
    return values


def _methods(values, where: str) -> tuple[str, ...]:
    values = tuple(values)
    allowed = perturbing_methods()
    bad = [m for m in values if m not in allowed]
    if bad or not values:
        raise ValueError(f"{where}: methods must be a non-empty list among {allowed}, got {list(values)}; "
                         "list other methods under baselines")
    return values


def _stored_constraints(trial) -> list[float]:
    """The constraint :class:`bclviz.study.SweepStudy` stored (``cross > M(old, old)``)."""
    return trial.system_attrs["constraints"]


@dataclass(frozen=True)
class SearchSpace:
    """A multi-objective search over NDPP/ODPP settings (see the module docstring).

    ``k``, ``gamma`` and ``lam`` left as None keep the template's value (for ``k``:
    each method's default); ``gamma`` is searched only for methods whose knobs include it.
    """

    methods: tuple[str, ...] = ("ndpp", "odpp")
    eps: Range = Range(0.0, 1.0)
    k: Range | None = None
    gamma: Range | None = None
    lam: Range | None = None
    baselines: tuple[str, ...] = _DEFAULT_BASELINES
    sampler: Literal["tpe", "nsga2"] = "tpe"
    seed: int = 0
    startup: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", _methods(self.methods, "SearchSpace.methods"))
        object.__setattr__(self, "baselines", _baselines(self.baselines, "SearchSpace.baselines"))
        for name in ("eps", "k", "gamma", "lam"):
            value = getattr(self, name)
            if value is None and name != "eps":
                continue
            if not isinstance(value, Range):
                raise ValueError(f"SearchSpace.{name} must be a Range, got {value!r}")
            if value.low < 0:
                raise ValueError(f"SearchSpace.{name} must not go below 0, got low={value.low}")
        if self.k is not None and (self.k.low < 1 or self.k.low != int(self.k.low) or self.k.high != int(self.k.high)):
            raise ValueError(f"SearchSpace.k must be a range of integers >= 1, got [{self.k.low}, {self.k.high}]")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"SearchSpace.sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        for name in ("seed", "startup"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                low = 0 if name == "seed" else 1
                raise ValueError(f"SearchSpace.{name} must be an integer >= {low}, got {value!r}")

    def check(self, num_classes: int) -> None:
        """``ValueError`` when ``k`` can reach ``num_classes`` (at most C - 1 neighbours)."""
        if self.k is not None and self.k.high > num_classes - 1:
            raise ValueError(f"SearchSpace.k goes up to {int(self.k.high)}, but the data has {num_classes} "
                             f"classes (k <= {num_classes - 1})")

    def suggest(self, trial, template: MethodConfig) -> MethodConfig:
        """The setting of an Optuna trial (define-by-run): ``template`` with the sampled
        method, eps and, where declared and applicable, k, gamma and lam."""
        name = trial.suggest_categorical("method", list(self.methods))
        knobs = method_class(name).knobs
        fields = {"name": name, "eps": self.eps.suggest(trial, "eps")}
        if self.k is not None and "k" in knobs:
            fields["k"] = self.k.suggest(trial, "k", integer=True)
        if self.gamma is not None and "gamma" in knobs:
            fields["gamma"] = self.gamma.suggest(trial, "gamma")
        if self.lam is not None:
            fields["lam"] = self.lam.suggest(trial, "lam")
        return dataclasses.replace(template, **fields)

    def make_sampler(self, *stream: int):
        """A fresh seeded sampler whose seed also depends on ``stream`` (e.g. how many
        trials are finished and the position in a batch), so that a search gives the
        same settings whether it ran through or was resumed."""
        import warnings

        import numpy as np
        import optuna

        seed = int(np.random.SeedSequence([self.seed, *stream]).generate_state(1)[0])
        with warnings.catch_warnings():  # constraints_func is "experimental" in Optuna 4
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.sampler == "nsga2":
                return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, self.startup),
                                                     constraints_func=_stored_constraints)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup,
                                              constraints_func=_stored_constraints)

    def describe(self) -> dict:
        """The space as plain data (it names the study, with the data and experiment)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GridSpace:
    """A grid: baselines, then ``methods`` x eps x k (x gamma), as :func:`bclviz.sweep.sweep_grid`."""

    methods: tuple[str, ...] = ("ndpp", "odpp")
    eps: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.6)
    k: tuple[int, ...] | None = None
    gamma: tuple[float, ...] = (0.1,)
    baselines: tuple[str, ...] = ("proto", "bct", "l2", "lce", "hot_refresh", "independent")

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", _methods(self.methods, "GridSpace.methods"))
        object.__setattr__(self, "baselines", _baselines(self.baselines, "GridSpace.baselines"))
        for name in ("eps", "k", "gamma"):
            values = getattr(self, name)
            if values is None:
                continue
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                raise ValueError(f"GridSpace.{name} must be a list of values, got {values!r}")
            values = tuple(values)
            for v in values:
                _number(v, f"GridSpace.{name} value")
                if v < 0 or (name == "k" and (v < 1 or v != int(v))):
                    raise ValueError(f"GridSpace.{name} values must be "
                                     f"{'integers >= 1' if name == 'k' else '>= 0'}, got {v!r}")
            object.__setattr__(self, name, values)

    def settings(self, template: MethodConfig | None = None) -> list[MethodConfig]:
        """The grid's settings (:func:`bclviz.sweep.sweep_grid`)."""
        from .sweep import sweep_grid

        k = None if self.k is None else tuple(int(v) for v in self.k)
        return sweep_grid(self.methods, self.eps, k, self.gamma, self.baselines, template=template)


def _range(value, where: str) -> Range:
    try:
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"low", "high", "step", "log"})
            if unknown:
                raise ValueError(f"unknown key(s) {unknown}; allowed: low, high, step, log")
            return Range(**value)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return Range(*value)
        raise ValueError(f"expected [low, high] or {{low, high, step, log}}, got {value!r}")
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def space_from_dict(values: dict, *, source: str = "space") -> SearchSpace | GridSpace:
    """A :class:`SearchSpace` or :class:`GridSpace` from a mapping (module docstring)."""
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping with a 'grid' or a 'search' section, got {values!r}")
    unknown = sorted(set(values) - {"grid", "search", "baselines"}, key=str)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; allowed: grid, search, baselines")
    if ("grid" in values) == ("search" in values):
        raise ValueError(f"{source}: give exactly one of 'grid' and 'search'")
    kind = "grid" if "grid" in values else "search"
    section = values[kind]
    if not isinstance(section, dict):
        raise ValueError(f"{source}: section {kind!r} must be a mapping of settings, got {section!r}")
    cls = GridSpace if kind == "grid" else SearchSpace
    allowed = [f.name for f in dataclasses.fields(cls) if f.name != "baselines"]
    bad = sorted(set(section) - set(allowed), key=str)
    if bad:
        raise ValueError(f"{source}: unknown setting(s) {bad} in {kind!r}; allowed: {allowed}")
    fields = dict(section)
    if "baselines" in values:
        fields["baselines"] = values["baselines"] or ()
    if kind == "search":
        for name in ("eps", "k", "gamma", "lam"):
            if name in fields:
                fields[name] = _range(fields[name], f"{source}: search.{name}")
    for name in ("methods", "baselines"):
        if name in fields and not isinstance(fields[name], (list, tuple)):
            raise ValueError(f"{source}: {name} must be a list of method names, got {fields[name]!r}")
    try:
        return cls(**fields)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None


def load_space(path: str | os.PathLike) -> SearchSpace | GridSpace:
    """Read a space file (module docstring); ``FileNotFoundError`` when it is missing."""
    from .runconfig import _safe_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"space file {path} does not exist")
    return space_from_dict(_safe_load(path.read_text(encoding="utf-8"), str(path)), source=str(path))
