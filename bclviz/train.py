"""Training of old and new models: one plain loop, the method plugged in by registry.

``train_old`` fits an embedder with a cosine-margin head. ``train_new`` adds the
compatibility term of a registered method (:mod:`bclviz.methods`): it computes the old
prototypes once with the frozen old model, tracks the new prototypes as an EMA of batch
class means (or reads them off the classifier), and, for NDPP/ODPP, refreshes the
perturbation after the warm-up, once per epoch or every ``update_every`` steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import MethodConfig, TrainConfig
from .data.base import Labeled
from .heads import MarginHead
from .methods import CompatContext, create_method
from .perturb import pseudo_old
from .proxies import crowding

__all__ = ["TrainResult", "embed", "class_prototypes", "train_old", "train_new"]


@dataclass
class TrainResult:
    """A trained model, its classifier head, per-epoch history and final state tensors.

    ``state`` of a new model holds ``old_protos``, ``new_protos``, ``delta`` and
    ``pseudo_old`` (each (C, d)); an old model's ``state`` is empty.
    """

    model: nn.Module
    head: MarginHead
    history: list[dict] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Normalised embeddings (n, d) of inputs ``x`` with the model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = [F.normalize(model(x[s : s + batch_size]), dim=1) for s in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``normalize(mean of features of class c)`` for c in 0..num_classes-1 (C, d).

    Raises ``ValueError`` naming the classes that have no sample.
    """
    counts = torch.bincount(labels, minlength=num_classes)
    if counts.numel() > num_classes:
        raise ValueError(f"labels go up to {int(labels.max())}, beyond num_classes={num_classes}")
    empty = torch.nonzero(counts == 0).squeeze(1).tolist()
    if empty:
        raise ValueError(f"class(es) {empty[:10]} have no training samples; every class needs at least one")
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype).index_add_(0, labels, features)
    return F.normalize(sums, dim=1)


def _check_training_data(data: Labeled, num_classes: int) -> None:
    if len(data) == 0:
        raise ValueError("the training set is empty")
    if data.y.dtype != torch.int64:
        raise TypeError(f"labels must be int64, got {data.y.dtype}")
    if int(data.y.min()) < 0 or int(data.y.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range [{int(data.y.min())}, {int(data.y.max())}]"
        )
    if not torch.isfinite(data.x).all():
        raise ValueError("the training inputs contain NaN or Inf values")


def _make_head(model: nn.Module, num_classes: int, cfg: TrainConfig) -> MarginHead:
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    return MarginHead(model.dim, num_classes, kind=cfg.head, scale=cfg.scale, margin=cfg.margin, generator=gen)


def _epochs(cfg: TrainConfig, n: int, desc: str, progress: bool):
    """Yield (epoch, batch index lists) with a seeded shuffle, honouring max_steps."""
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_left = cfg.max_steps
    bar = tqdm(range(cfg.epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        order = torch.randperm(n, generator=gen)
        batches = list(order.split(cfg.batch_size))
        if steps_left is not None:
            batches = batches[:steps_left]
            steps_left -= len(batches)
        if not batches:
            break
        yield epoch, batches, bar


def train_old(
    model: nn.Module,
    data: Labeled,
    *,
    num_classes: int,
    cfg: TrainConfig = TrainConfig(),
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` (an embedder with ``.dim``) with a margin classifier on ``data``."""
    _check_training_data(data, num_classes)
    head = _make_head(model, num_classes, cfg)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = []
    model.train()
    for epoch, batches, bar in _epochs(cfg, len(data), "old model", progress):
        t0, total = time.perf_counter(), 0.0
        for idx in batches:
            loss = head(model(data.x[idx]), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history.append(dict(epoch=epoch, loss=total / len(batches), steps=len(batches), seconds=time.perf_counter() - t0))
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
    model.eval()
    return TrainResult(model, head, history)


def _ema_update(protos: torch.Tensor, f: torch.Tensor, y: torch.Tensor, mu: float) -> None:
    """p[c] <- normalize(mu p[c] + (1 - mu) mean of batch features of class c), in place."""
    sums = torch.zeros_like(protos).index_add_(0, y, f)
    counts = torch.bincount(y, minlength=protos.shape[0]).unsqueeze(1)
    present = counts.squeeze(1) > 0
    means = sums[present] / counts[present]
    protos[present] = F.normalize(mu * protos[present] + (1 - mu) * means, dim=1)


def train_new(
    model: nn.Module,
    data: Labeled,
    old: TrainResult,
    *,
    num_classes: int,
    cfg: TrainConfig = TrainConfig(),
    method: MethodConfig | str = "ndpp",
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train a new model compatible with ``old`` using a registered method.

    Parameters
    ----------
    model : the new embedder (``.dim`` must equal the old model's).
    data : new training set; labels in ``[0, num_classes)``, old classes first.
    old : the trained old model and head (from :func:`train_old`); its head's rows are
        the old classes.
    method : a :class:`MethodConfig` or a method name with default settings.
    callback : called with each epoch's history record (e.g. to update a widget).

    Returns
    -------
    TrainResult with history records holding ``loss``, ``loss_cls``, ``loss_comp``,
    ``delta_norm_mean``, ``delta_norm_max``, ``crowding_old``, ``crowding_pseudo_old``,
    ``crowding_new`` and ``seconds`` per epoch.
    """
    mcfg = MethodConfig(name=method) if isinstance(method, str) else method
    _check_training_data(data, num_classes)
    if model.dim != old.model.dim:
        raise ValueError(
            f"old and new embedding dimensions differ (old {old.model.dim}, new {model.dim}); "
            "cross-model retrieval needs the same dimension"
        )
    compat = create_method(mcfg)
    f_old_all = embed(old.model, data.x)
    p_old = class_prototypes(f_old_all, data.y, num_classes)
    n_old_cls = old.head.weight.shape[0]
    old_weights = torch.cat([old.head.weight.detach(), p_old[n_old_cls:]]) if n_old_cls < num_classes else old.head.weight.detach()[:num_classes]
    theta = torch.zeros(num_classes).index_add_(0, data.y, (f_old_all * p_old[data.y]).sum(1))
    theta /= torch.bincount(data.y, minlength=num_classes)

    head = _make_head(model, num_classes, cfg)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    ctx = CompatContext(p_old, p_old.clone(), old_weights, theta, head.weight)
    p_new = p_old.clone()
    delta = torch.zeros_like(p_old)

    def current_new_protos():
        return p_new if mcfg.new_prototypes == "ema" else F.normalize(head.weight.detach(), dim=1)

    def refresh():
        nonlocal delta
        delta = compat.perturb(p_old, current_new_protos(), delta)
        ctx.pseudo_old = pseudo_old(p_old, delta) if compat.perturbs else p_old

    history, step = [], 0
    model.train()
    for epoch, batches, bar in _epochs(cfg, len(data), f"new model ({mcfg.name})", progress):
        t0 = time.perf_counter()
        active = compat.perturbs and epoch >= mcfg.warmup_epochs
        if active and mcfg.update_every is None:
            refresh()
        sums = dict(loss=0.0, loss_cls=0.0, loss_comp=0.0)
        for idx in batches:
            if active and mcfg.update_every is not None and step % mcfg.update_every == 0:
                refresh()
            x, y = data.x[idx], data.y[idx]
            f = model(x)
            l_cls = head(f, y)
            l_comp = compat.loss(ctx, f, y, f_old_all[idx] if compat.needs_old_features else None)
            loss = l_cls if l_comp is None else l_cls + mcfg.lam * l_comp
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                _ema_update(p_new, f.detach(), y, mcfg.ema_momentum)
            step += 1
            sums["loss"] += float(loss.detach())
            sums["loss_cls"] += float(l_cls.detach())
            sums["loss_comp"] += 0.0 if l_comp is None else float(l_comp.detach())
        norms = delta.norm(dim=1)
        record = dict(
            epoch=epoch, steps=len(batches),
            **{key: value / len(batches) for key, value in sums.items()},
            delta_norm_mean=float(norms.mean()), delta_norm_max=float(norms.max()),
            crowding_old=crowding(p_old), crowding_pseudo_old=crowding(ctx.pseudo_old),
            crowding_new=crowding(current_new_protos()),
            seconds=time.perf_counter() - t0,
        )
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if callback is not None:
            callback(record)
    model.eval()
    state = dict(old_protos=p_old, new_protos=current_new_protos().clone(), delta=delta, pseudo_old=ctx.pseudo_old)
    return TrainResult(model, head, history, state)
