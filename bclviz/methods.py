"""Registry of backward-compatibility methods (method.md section 5).

A method contributes a compatibility term to the new model's loss and, for the
prototype-perturbation methods, a rule to refresh the perturbation. Adding a method is
one small class decorated with :func:`register_method`; the trainer never branches on
method names, and ``tests/test_methods.py`` iterates :func:`list_methods`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from . import losses
from .perturb import ndpp, odpp, old_neighbors

__all__ = ["CompatContext", "CompatMethod", "register_method", "list_methods", "create_method"]

_REGISTRY: dict[str, type["CompatMethod"]] = {}


@dataclass
class CompatContext:
    """What a compatibility term may read during training (all (C, d) unless noted).

    old_protos : old prototypes ``P_o``.
    pseudo_old : current pseudo-old prototypes ``Q`` (equal to ``P_o`` when delta = 0).
    old_weights : BCT's old classifier: the old head's rows for old classes and the old
        prototypes for classes the old model never saw.
    theta : (C,) LCE boundary per class: mean cosine of the class's old features to
        its old prototype.
    new_weights : the new model's classifier rows (live parameters, with gradient).
    """

    old_protos: torch.Tensor
    pseudo_old: torch.Tensor
    old_weights: torch.Tensor
    theta: torch.Tensor
    new_weights: torch.Tensor


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


def create_method(cfg) -> "CompatMethod":
    """Instantiate the method named by ``cfg.name`` (a :class:`~bclviz.config.MethodConfig`)."""
    if cfg.name not in _REGISTRY:
        raise ValueError(f"unknown method {cfg.name!r}; registered: {list_methods()}")
    return _REGISTRY[cfg.name](cfg)


class CompatMethod:
    """Base class: no compatibility term, no perturbation."""

    name: ClassVar[str]
    #: whether :meth:`loss` reads per-sample old features of the batch
    needs_old_features: ClassVar[bool] = False
    #: whether :meth:`perturb` computes a non-zero delta (the pseudo-old space)
    perturbs: ClassVar[bool] = False

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def loss(self, ctx: CompatContext, f_new, y, f_old) -> torch.Tensor | None:
        return None

    def perturb(self, old_protos, new_protos, previous) -> torch.Tensor:
        return torch.zeros_like(old_protos)


@register_method("independent")
class Independent(CompatMethod):
    """No compatibility term: the discriminability upper bound."""


@register_method("l2")
class L2(CompatMethod):
    needs_old_features = True

    def loss(self, ctx, f_new, y, f_old):
        return losses.l2_loss(f_new, f_old)


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
    def loss(self, ctx, f_new, y, f_old):
        return losses.lce_loss(f_new, y, ctx.new_weights, ctx.old_protos, ctx.theta)


@register_method("hot_refresh")
class HotRefresh(CompatMethod):
    needs_old_features = True

    def loss(self, ctx, f_new, y, f_old):
        return losses.hot_refresh_loss(f_new, f_old, y, tau=self.cfg.tau)


def _neighbours(k: int | None, default: int, protos: torch.Tensor) -> int:
    """The configured k, or the method's default capped at C - 1 for small class counts."""
    return k if k is not None else min(default, protos.shape[0] - 1)


class _Perturbing(Proto):
    """Shared by NDPP and ODPP: the old-space neighbour lists depend on ``P_o`` only,
    which is fixed for a whole training run, so they are searched once (an O(C^2 d)
    kNN search; the perturbation itself is O(C k d)) and reused by every refresh."""

    perturbs = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self._neighbor_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def neighbors(self, old_protos: torch.Tensor, k: int) -> torch.Tensor:
        cached = self._neighbor_cache
        if cached is None or cached[1].shape[1] < k or not torch.equal(cached[0], old_protos):
            self._neighbor_cache = cached = (
                old_protos.clone(), old_neighbors(old_protos, k, search=self.cfg.neighbor_search))
        return cached[1]


@register_method("ndpp")
class NDPP(_Perturbing):
    """Alignment to pseudo-old prototypes perturbed by :func:`bclviz.perturb.ndpp`."""

    def perturb(self, old_protos, new_protos, previous):
        k = _neighbours(self.cfg.k, 5, old_protos)
        return ndpp(old_protos, new_protos, eps=self.cfg.eps, k=k, eps_mode=self.cfg.eps_mode,
                    neighbors=self.neighbors(old_protos, k))


@register_method("odpp")
class ODPP(_Perturbing):
    """Alignment to pseudo-old prototypes optimised by :func:`bclviz.perturb.odpp`."""

    def perturb(self, old_protos, new_protos, previous):
        k = _neighbours(self.cfg.k, 8, old_protos)
        return odpp(
            old_protos, new_protos, eps=self.cfg.eps, k=k,
            steps=self.cfg.odpp_steps, gamma=self.cfg.gamma, lr=self.cfg.odpp_lr,
            init=previous if previous is not None and bool(previous.any()) else None,
            eps_mode=self.cfg.eps_mode, neighbors=self.neighbors(old_protos, k),
        )
