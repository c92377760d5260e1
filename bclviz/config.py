"""Frozen, validated configuration dataclasses shared by notebooks, CLI and trainer."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["TrainConfig", "MethodConfig", "config_to_dict", "config_from_dict"]

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

    def __post_init__(self) -> None:
        _positive_int(self, "epochs", "batch_size")
        _choice(self, "device", ("cpu", "cuda", "auto"))
        if not isinstance(self.amp, bool):
            raise ValueError(f"TrainConfig.amp must be true or false, got {self.amp!r}")
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
    ``C - 1``. ``eps_mode="relative"`` makes each class's budget ``eps`` times its angle
    to the nearest old neighbour (off by default).
    ``update_every=None`` refreshes the perturbation once per epoch; an integer
    refreshes it every that many optimiser steps.
    ``neighbor_search`` finds the old-space neighbour lists of NDPP/ODPP (searched once
    per run): ``"exact"``, or ``"ivf"``, an approximate faiss inverted-file search for
    tens of thousands of classes (see ``docs/performance.md`` for its recall).
    """

    name: str = "ndpp"
    lam: float = 1.0
    eps: float = 0.4
    eps_mode: Literal["absolute", "relative"] = "absolute"
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

    def __post_init__(self) -> None:
        from .methods import list_methods  # local: methods imports this module

        if self.name not in list_methods():
            raise ValueError(f"MethodConfig.name must be one of {list_methods()}, got {self.name!r}")
        _non_negative(self, "lam", "eps", "gamma", "odpp_lr", "comp_scale", "comp_margin", "tau")
        if self.k is not None:
            _positive_int(self, "k")
        if isinstance(self.odpp_steps, bool) or not isinstance(self.odpp_steps, int) or self.odpp_steps < 0:
            raise ValueError(f"MethodConfig.odpp_steps must be an integer >= 0, got {self.odpp_steps!r}")
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"MethodConfig.warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        if not 0 <= self.ema_momentum < 1:
            raise ValueError(f"MethodConfig.ema_momentum must be in [0, 1), got {self.ema_momentum!r}")
        _choice(self, "new_prototypes", ("ema", "classifier"))
        _choice(self, "eps_mode", ("absolute", "relative"))
        _choice(self, "neighbor_search", ("exact", "ivf"))
        if self.update_every is not None:
            _positive_int(self, "update_every")
        if self.tau == 0:
            raise ValueError("MethodConfig.tau must be > 0, got 0")


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
