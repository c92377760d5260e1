"""Registry of backward-compatibility methods (method.md section 5).

A method contributes a compatibility term to the new model's loss and, for the
prototype-perturbation methods, a rule to refresh the perturbation. Adding a method is
one small class decorated with :func:`register_method`; the trainer never branches on
method names, and ``tests/test_methods.py`` iterates :func:`list_methods`.

Each class answers for itself: ``perturbs`` (whether it builds a pseudo-old space),
``default_k`` (its neighbour count when ``MethodConfig.k`` is None), ``knobs`` (the
settings a sweep or the explorer varies) and :meth:`CompatMethod.prepare` (what it
computes once before training, e.g. LCE's boundaries). Sweeps, plots, the explorer
and findings ask :func:`perturbing_methods` / :func:`method_class` instead of listing
names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch

from . import losses
from .perturb import ndpp, odpp, old_neighbors

__all__ = [
    "CompatContext", "CompatMethod", "register_method", "list_methods", "create_method",
    "method_class", "perturbing_methods", "default_k",
]

_REGISTRY: dict[str, type["CompatMethod"]] = {}


@dataclass
class CompatContext:
    """What a compatibility term may read during training (all (C, d) unless noted).

    old_protos : old prototypes ``P_o``.
    pseudo_old : current pseudo-old prototypes ``Q`` (equal to ``P_o`` when delta = 0).
    old_weights : BCT's old classifier: the old head's rows for old classes and the old
        prototypes for classes the old model never saw.
    new_weights : the new model's classifier rows (live parameters, with gradient).
    prepared : what the method's :meth:`CompatMethod.prepare` computed before training
        (e.g. LCE's ``theta``, its (C,) boundary per class).
    """

    old_protos: torch.Tensor
    pseudo_old: torch.Tensor
    old_weights: torch.Tensor
    new_weights: torch.Tensor
    prepared: dict = field(default_factory=dict)


def register_method(name: str) -> Callable[[type], type]:
    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_REGISTRY)


def method_class(name: str) -> type["CompatMethod"]:
    """The registered class of method ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered: {list_methods()}")
    return _REGISTRY[name]


def perturbing_methods() -> list[str]:
    """Names of the methods that align with a perturbed (pseudo-old) space, e.g. NDPP, ODPP."""
    return [name for name, cls in _REGISTRY.items() if cls.perturbs]


def default_k(name: str) -> int:
    """The neighbour count method ``name`` uses when ``MethodConfig.k`` is None."""
    cls = method_class(name)
    if cls.default_k is None:
        raise ValueError(f"method {name!r} has no neighbour count; perturbing methods: {perturbing_methods()}")
    return cls.default_k


def create_method(cfg) -> "CompatMethod":
    """Instantiate the method named by ``cfg.name`` (a :class:`~bclviz.config.MethodConfig`)."""
    return method_class(cfg.name)(cfg)


class CompatMethod:
    """Base class: no compatibility term, no perturbation."""

    name: ClassVar[str]
    #: whether :meth:`loss` reads per-sample old features of the batch
    needs_old_features: ClassVar[bool] = False
    #: whether :meth:`perturb` computes a non-zero delta (the pseudo-old space)
    perturbs: ClassVar[bool] = False
    #: neighbour count used when ``MethodConfig.k`` is None (perturbing methods)
    default_k: ClassVar[int | None] = None
    #: MethodConfig fields a sweep varies and a setting's label shows
    knobs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def prepare(self, old_features: torch.Tensor, labels: torch.Tensor, old_protos: torch.Tensor) -> dict:
        """Computed once before training from the frozen old model's features (n, d) of
        the training set, their labels (n,) and the old prototypes (C, d); the result is
        :attr:`CompatContext.prepared`."""
        return {}

    def loss(self, ctx: CompatContext, f_new, y, f_old) -> torch.Tensor | None:
        return None

    def perturb(self, old_protos, new_protos, previous) -> torch.Tensor:
        return torch.zeros_like(old_protos)


@register_method("independent")
class Independent(CompatMethod):
    """No compatibility term: the discriminability upper bound."""


@register_method("l2")
class L2(CompatMethod):
    """``l2_weight * ||f_n - f_o||^2`` per sample (old features of the same input)."""

    needs_old_features = True

    def loss(self, ctx, f_new, y, f_old):
        return self.cfg.l2_weight * losses.l2_loss(f_new, f_old)


@register_method("bct")
class BCT(CompatMethod):
    def loss(self, ctx, f_new, y, f_old):
        return losses.influence_loss(
            f_new, y, ctx.old_weights, scale=self.cfg.comp_scale, margin=self.cfg.comp_margin
        )


@register_method("proto")
class Proto(CompatMethod):
    """Alignment to the unperturbed old prototypes (eps = 0)."""

    def loss(self, ctx, f_new, y, f_old):
        return losses.prototype_alignment_loss(
            f_new, y, ctx.pseudo_old, scale=self.cfg.comp_scale, margin=self.cfg.comp_margin
        )


@register_method("lce")
class LCE(CompatMethod):
    """Boundary hinge plus classifier alignment (Meng et al., ICCV 2021)."""

    def prepare(self, old_features, labels, old_protos):
        """``theta[c]``: class c's boundary cosine to its old prototype
        (:func:`bclviz.losses.lce_boundaries` with ``lce_boundary`` and ``lce_outliers``)."""
        cos = (old_features * old_protos[labels]).sum(1)
        return {"theta": losses.lce_boundaries(cos, labels, old_protos.shape[0], rule=self.cfg.lce_boundary,
                                               outliers=self.cfg.lce_outliers)}

    def loss(self, ctx, f_new, y, f_old):
        return losses.lce_loss(f_new, y, ctx.new_weights, ctx.old_protos, ctx.prepared["theta"],
                               align_weight=self.cfg.lce_align)


@register_method("hot_refresh")
class HotRefresh(CompatMethod):
    needs_old_features = True

    def loss(self, ctx, f_new, y, f_old):
        return losses.hot_refresh_loss(f_new, f_old, y, tau=self.cfg.tau)


class _Perturbing(Proto):
    """Shared by NDPP and ODPP: the old-space neighbour lists depend on ``P_o`` only,
    which is fixed for a whole training run, so they are searched once (an O(C^2 d)
    kNN search; the perturbation itself is O(C k d)) and reused by every refresh."""

    perturbs = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self._neighbor_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def neighbours(self, num_classes: int) -> int:
        """The configured k, or :attr:`default_k` capped at C - 1 for small class counts."""
        return self.cfg.k if self.cfg.k is not None else min(self.default_k, num_classes - 1)

    def use_neighbors(self, old_protos: torch.Tensor, neighbors: torch.Tensor) -> None:
        """Reuse old-space neighbour lists (C, >= k) already searched for ``old_protos`` with
        this config's ``neighbor_search`` (e.g. by the explorer, across slider moves)."""
        self._neighbor_cache = (old_protos, neighbors)

    def neighbors(self, old_protos: torch.Tensor, k: int) -> torch.Tensor:
        cached = self._neighbor_cache
        if cached is None or cached[1].shape[1] < k or not torch.equal(cached[0], old_protos):
            self._neighbor_cache = cached = (
                old_protos.clone(), old_neighbors(old_protos, k, search=self.cfg.neighbor_search))
        return cached[1]


@register_method("ndpp")
class NDPP(_Perturbing):
    """Alignment to pseudo-old prototypes perturbed by :func:`bclviz.perturb.ndpp`."""

    default_k = 5
    knobs = ("eps", "k")

    def perturb(self, old_protos, new_protos, previous):
        k = self.neighbours(old_protos.shape[0])
        return ndpp(old_protos, new_protos, eps=self.cfg.eps, k=k, eps_mode=self.cfg.eps_mode,
                    neighbors=self.neighbors(old_protos, k))


@register_method("odpp")
class ODPP(_Perturbing):
    """Alignment to pseudo-old prototypes optimised by :func:`bclviz.perturb.odpp`."""

    default_k = 8
    knobs = ("eps", "k", "gamma")

    def perturb(self, old_protos, new_protos, previous):
        k = self.neighbours(old_protos.shape[0])
        return odpp(
            old_protos, new_protos, eps=self.cfg.eps, k=k,
            steps=self.cfg.odpp_steps, gamma=self.cfg.gamma, lr=self.cfg.odpp_lr,
            init=previous if previous is not None and bool(previous.any()) else None,
            eps_mode=self.cfg.eps_mode, neighbors=self.neighbors(old_protos, k),
        )
