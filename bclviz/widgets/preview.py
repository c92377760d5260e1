"""The explorer's pure core: the perturbation, pseudo-old prototypes and proxies of one setting.

:func:`explorer_state` is what :class:`~bclviz.widgets.PerturbationExplorer` shows for
its controls; it holds no widget and is tested against :func:`bclviz.ndpp` /
:func:`bclviz.odpp` and the proxies directly.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from .. import methods
from ..config import MethodConfig
from ..perturb import pseudo_old
from ..proxies import LiveProxies, crowding, drift, headroom, recognisability

__all__ = ["PerturbationMethod", "default_k", "explorer_state", "format_proxies", "state_of"]

PerturbationMethod = Literal["ndpp", "odpp"]


def _check_method(method: str) -> None:
    if method not in methods.perturbing_methods():
        raise ValueError(f"method must be one of {methods.perturbing_methods()}, got {method!r}")


def default_k(method: PerturbationMethod) -> int:
    """The neighbour count ``method`` uses when ``k`` is not given (its registry ``default_k``)."""
    _check_method(method)
    return methods.default_k(method)


def explorer_state(
    old_protos,
    new_protos,
    *,
    method: PerturbationMethod,
    eps: float,
    k: int,
    gamma: float = MethodConfig.gamma,
    steps: int = MethodConfig.odpp_steps,
    lr: float = MethodConfig.odpp_lr,
    eps_mode: str = MethodConfig.eps_mode,
    neighbor_search: str = MethodConfig.neighbor_search,
    features=None,
    labels=None,
    live: LiveProxies | None = None,
) -> dict:
    """Perturbation, pseudo-old prototypes and live proxies for one setting.

    Parameters
    ----------
    old_protos, new_protos : (C, d) prototypes ``P_o``, ``P_n``.
    method : ``"ndpp"`` or ``"odpp"``.
    eps, k, gamma : perturbation magnitude, neighbours, ODPP penalty (ignored by NDPP).
    steps, lr : ODPP optimisation steps and Adam learning rate (from a cold start, so
        the result depends on the parameters only).
    eps_mode, neighbor_search : the budget mode and old-neighbour search, as in
        :class:`~bclviz.config.MethodConfig`. The perturbation is computed by the same
        registered method object training uses (:func:`bclviz.methods.create_method`),
        so the preview is exactly what a training refresh computes from these
        prototypes.
    features, labels : optional old-model features (n, d) and their class ids (n,),
        indexing the prototype rows, for the recognisability proxy.
    live : :class:`~bclviz.proxies.LiveProxies` of ``old_protos``, ``new_protos`` (and the
        features), optional: reuse its old-space neighbour lists, old crowding, headroom
        and NDPP direction across calls, and take the pseudo-old proxies from it (the same
        numbers up to :data:`bclviz.proxies.EXACT_CLASSES` classes, estimates on samples
        and candidate lists above).
        ``features`` and ``labels`` are then ignored (the live set's are used).

    Returns
    -------
    dict with ``delta`` and ``pseudo_old`` (C, d) tensors and ``proxies``: a dict of
    ``crowding_old``, ``crowding_pseudo_old`` (mean largest cosine to another class),
    ``drift_deg`` (mean angle between ``q`` and ``p_o``, degrees), ``delta_mean`` (the
    realised mean ``||delta[c]||``, at most eps), ``headroom``
    (:func:`bclviz.proxies.headroom` of ``P_o``, ``P_n`` over the same ``k`` old-space
    neighbours and neighbour search: the mean NDPP weight, what there is to relax) and, with features,
    ``recognisability`` (top-1 of nearest pseudo-old prototype).
    """
    _check_method(method)
    cfg = MethodConfig(name=method, eps=eps, k=k, gamma=gamma, odpp_steps=steps, odpp_lr=lr,
                       eps_mode=eps_mode, neighbor_search=neighbor_search)
    old_protos, new_protos = torch.as_tensor(old_protos), torch.as_tensor(new_protos)
    if live is not None and method == "ndpp":
        # NDPP is eps times a direction that no slider but k and the budget mode changes;
        # bclviz.ndpp computes the same product, so this is its very number
        delta = cfg.eps * live.ndpp_direction(k, eps_mode, neighbor_search)
    else:
        method_obj = methods.create_method(cfg)
        if live is not None:
            method_obj.use_neighbors(old_protos, live.neighbors(k, neighbor_search))
        delta = method_obj.perturb(old_protos, new_protos, None)
    return state_of(old_protos, new_protos, delta, k=k, neighbor_search=neighbor_search, features=features,
                    labels=labels, live=live)


def state_of(old_protos, new_protos, delta: torch.Tensor, *, k: int, neighbor_search: str = "exact",
             features=None, labels=None, live: LiveProxies | None = None) -> dict:
    """The :func:`explorer_state` dict of a given perturbation ``delta`` (C, d): the
    pseudo-old prototypes and the proxies (arguments as there)."""
    q = pseudo_old(old_protos, delta)
    if live is not None:
        proxies = {
            "crowding_old": live.crowding_old(),
            "crowding_pseudo_old": live.crowding(q),
            "drift_deg": math.degrees(drift(q, old_protos)),
            "delta_mean": float(delta.norm(dim=1).mean()),
            "headroom": live.headroom(k, neighbor_search),
        }
        if live.features is not None:
            proxies["recognisability"] = live.recognisability(q)
        return {"delta": delta, "pseudo_old": q, "proxies": proxies}
    proxies = {
        "crowding_old": crowding(old_protos),
        "crowding_pseudo_old": crowding(q),
        "drift_deg": math.degrees(drift(q, old_protos)),
        "delta_mean": float(delta.norm(dim=1).mean()),
        "headroom": headroom(old_protos, new_protos, k=k, search=neighbor_search),
    }
    if features is not None:
        proxies["recognisability"] = recognisability(features, labels, q)
    return {"delta": delta, "pseudo_old": q, "proxies": proxies}


_PROXY_TEXT = {
    "crowding_old": "crowding old {:.3f}",
    "crowding_pseudo_old": "crowding pseudo-old {:.3f}",
    "drift_deg": "drift {:.2f}&deg;",
    "delta_mean": "mean ||delta|| {:.3f}",
    "headroom": '<span title="mean max(0, S_o - S_n) over the k old-space neighbours">headroom {:.3f}</span>',
    "recognisability": "old-gallery recognisability {:.3f}",
}


def format_proxies(proxies: dict) -> str:
    """The proxies as the one-line HTML the explorer shows."""
    return " &nbsp;|&nbsp; ".join(_PROXY_TEXT[key].format(value) for key, value in proxies.items())
