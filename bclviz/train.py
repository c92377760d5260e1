"""Training of old and new models: one plain loop, the method plugged in by registry.

``train_old`` fits an embedder with a cosine-margin head. ``train_new`` adds the
compatibility term of a registered method (:mod:`bclviz.methods`): it computes the old
prototypes once with the frozen old model, tracks the new prototypes as an EMA of batch
class means (or reads them off the classifier), and, for NDPP/ODPP, refreshes the
perturbation after the warm-up, once per epoch or every ``update_every`` steps.

Both loops write a resumable checkpoint after every epoch when ``checkpoint=`` is given,
and run unchanged under ``torchrun``: each rank takes its share of every global batch,
gradients are averaged by DistributedDataParallel, prototype statistics are all-reduced,
perturbations are computed identically on every rank, and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import as_features, as_labels, check_positive_int
from .config import MethodConfig, TrainConfig
from .data.base import Labeled
from .distributed import all_reduce_sum, dist_info
from .external import FrozenEmbedder
from .heads import MarginHead
from .loop import _Loop, _LossSums, _step_autocast, resolve_device
from .methods import CompatContext, create_method
from .perturb import pseudo_old
from .proxies import crowding

__all__ = ["TrainResult", "embed", "class_prototypes", "train_old", "train_new", "resolve_device"]


@dataclass
class TrainResult:
    """A trained model, its classifier head, per-epoch history and final state tensors.

    ``state`` of a new model holds ``old_protos``, ``new_protos``, ``delta`` and
    ``pseudo_old`` (each (C, d)); an old model's ``state`` is empty. A frozen old model
    loaded from a file (:class:`~bclviz.external.FrozenEmbedder`) has no ``head`` (None)
    and no history.
    """

    model: nn.Module
    head: MarginHead | None
    history: list[dict] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Normalised embeddings (n, d) of inputs ``x`` (on the CPU) with the model in eval mode.

    ``x`` is a tensor or a tensor-like read batch by batch (``x[s : s + batch_size]``),
    e.g. :class:`~bclviz.data.lazy.LazyImages`.
    """
    was_training = model.training
    model.eval()
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    try:
        out = [F.normalize(model(x[s : s + batch_size].to(device)), dim=1).cpu() for s in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``normalize(mean of features of class c)`` for c in 0..num_classes-1 (C, d).

    Raises ``ValueError`` naming the classes that have no sample.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    features = as_features(features, "features")
    labels = as_labels(labels, "labels", n=features.shape[0], num_classes=num_classes)
    counts = torch.bincount(labels, minlength=num_classes)
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
    empty = torch.nonzero(torch.bincount(data.y, minlength=num_classes) == 0).squeeze(1).tolist()
    if empty:
        raise ValueError(f"class(es) {empty[:10]} have no training samples; every class needs at least one")
    # Lazily loaded inputs (bclviz.data.lazy.LazyImages) are decoded images, finite by
    # construction; reading them all here would defeat the laziness.
    if isinstance(data.x, torch.Tensor) and not torch.isfinite(data.x).all():
        raise ValueError("the training inputs contain NaN or Inf values")


def train_old(
    model: nn.Module,
    data: Labeled,
    *,
    num_classes: int,
    cfg: TrainConfig = TrainConfig(),
    progress: bool = True,
    checkpoint: str | Path | None = None,
    callback: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` (an embedder with ``.dim``) with a margin classifier on ``data``.

    ``checkpoint``: a path written after every epoch and resumed from when it exists
    (refused with :class:`~bclviz.checkpoint.CheckpointMismatch` if it was written for
    another configuration). ``callback`` is called with each epoch's history record
    (``loss``, ``steps``, ``seconds``).
    """
    if isinstance(model, FrozenEmbedder):
        raise ValueError(f"the old model {model.path} is a frozen model file: it is used as it is, never trained")
    _check_training_data(data, num_classes)
    loop = _Loop(model, num_classes, cfg, data, "old model", progress, checkpoint, {"role": "old"})
    start = loop.resume({})
    loop.net.train()
    amp = _step_autocast(loop)
    for epoch, batches in loop.epochs(start):
        t0, losses = time.perf_counter(), _LossSums("loss")
        for idx in batches:
            x, y = loop.batch(idx)
            with amp:
                _, loss = loop.ddp(x, y)
            loop.step(loss)
            losses.add(len(idx), loss)
        n = sum(len(b) for b in batches)
        loop.history.append(dict(epoch=epoch, steps=len(batches), **loop.mean_over_ranks(losses.sums(), n),
                                 seconds=time.perf_counter() - t0))
        loop.save(epoch, {})
        if callback is not None:
            callback(loop.history[-1])
    loop.net.eval()
    return TrainResult(loop.net.model, loop.head, loop.history)


def _ema_update(protos: torch.Tensor, f: torch.Tensor, y: torch.Tensor, mu: float, *,
                distributed: bool | None = None) -> None:
    """p[c] <- normalize(mu p[c] + (1 - mu) mean of batch features of class c), in place.

    Batch sums and counts are all-reduced, so every rank sees the global batch means
    (``distributed=None``: whether this process is one of several ranks).

    It runs every step, so it is a handful of small ops: sums and counts come from one
    ``index_add_`` (a column of ones counts). A single process with more classes than
    the batch updates the batch's classes only; otherwise every row is computed and the
    classes absent from the batch keep their row (``where``). Either way the arithmetic
    per row is that of the masked update it replaces (``F.normalize`` spelled out),
    so the prototypes are bit-identical.
    """
    if distributed is None:
        distributed = dist_info().enabled
    num_classes, d = protos.shape
    sparse = not distributed and num_classes > y.shape[0]
    if sparse:
        classes, y = torch.unique(y, return_inverse=True)
    stats = protos.new_zeros(classes.shape[0] if sparse else num_classes, d + 1).index_add_(
        0, y, torch.cat([f, f.new_ones(f.shape[0], 1)], dim=1))
    if distributed:
        all_reduce_sum(stats)
    counts = stats[:, d:]
    mixed = mu * (protos.index_select(0, classes) if sparse else protos) + (1 - mu) * (stats[:, :d] / counts)
    new = mixed / torch.linalg.vector_norm(mixed, 2, 1, True).clamp_min(1e-12)
    if sparse:
        protos.index_copy_(0, classes, new)
    else:
        torch.where(counts > 0, new, protos, out=protos)


class _EmaPrototypes:
    """The EMA of the new prototypes: ``protos`` (C, d), fed each step's features with
    :meth:`add`, up to date in place after :meth:`sync`.

    With ``defer`` (for at most as many classes as a batch holds), the steps are applied
    ``every`` at a time and whenever the prototypes are read: one ``index_add_`` (and one
    all-reduce) gives the batch statistics of all of them, after which each step costs
    five or six small ops instead of a dozen. The arithmetic of every step is that of
    :func:`_ema_update`, so the prototypes are bit-identical. Without ``defer`` (many
    classes: the stacked statistics would be large) each step is applied at once.
    """

    def __init__(self, protos: torch.Tensor, mu: float, *, defer: bool, distributed: bool, every: int = 32) -> None:
        self.protos, self.mu, self.defer, self.distributed, self.every = protos, mu, defer, distributed, every
        self._steps: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, f: torch.Tensor, y: torch.Tensor) -> None:
        """One step's features (B, d), detached and float32 like ``protos``, and labels (B,)."""
        if not self.defer:
            _ema_update(self.protos, f, y, self.mu, distributed=self.distributed)
            return
        self._steps.append((f, y))
        if len(self._steps) >= self.every:
            self.sync()

    @torch.no_grad()
    def sync(self) -> torch.Tensor:
        """Apply the pending steps; returns ``protos``."""
        if not self._steps:
            return self.protos
        steps, self._steps = self._steps, []
        (num_classes, d), k, dev = self.protos.shape, len(steps), self.protos.device
        f = torch.cat([s[0] for s in steps])
        # row t * C + c of the stacked statistics: step t, class c
        rows = torch.cat([s[1] for s in steps]).add_(torch.arange(k, device=dev).mul_(num_classes).repeat_interleave(
            torch.tensor([s[1].shape[0] for s in steps], device=dev)))
        stats = self.protos.new_zeros(k * num_classes, d + 1).index_add_(
            0, rows, torch.cat([f, f.new_ones(f.shape[0], 1)], dim=1))
        if self.distributed:
            all_reduce_sum(stats)
        stats = stats.view(k, num_classes, d + 1)
        counts = stats[:, :, d:]
        pulls = (1 - self.mu) * (stats[:, :, :d] / counts)
        present = counts > 0
        every_class = present.reshape(k, num_classes).all(1).tolist()
        p = self.protos
        for t in range(k):
            mixed = self.mu * p + pulls[t]
            new = mixed / torch.linalg.vector_norm(mixed, 2, 1, True).clamp_min(1e-12)
            p = new if every_class[t] else torch.where(present[t], new, p)
        return self.protos.copy_(p)


def _old_classifier(w_old: torch.Tensor, p_old: torch.Tensor, old_classes: torch.Tensor) -> torch.Tensor:
    """(C, d) rows of BCT's old classifier: the old head's row of each class's old class,
    the class's old prototype where it has none (``old_classes[c] == -1``)."""
    num_classes = p_old.shape[0]
    if old_classes.dtype != torch.int64 or old_classes.shape != (num_classes,):
        raise ValueError(f"old_classes must be an int64 tensor of shape ({num_classes},), "
                         f"got {old_classes.dtype} {tuple(old_classes.shape)}")
    if int(old_classes.min()) < -1 or int(old_classes.max()) >= w_old.shape[0]:
        raise ValueError(f"old_classes must hold the old head's classes [0, {w_old.shape[0]}) or -1, got range "
                         f"[{int(old_classes.min())}, {int(old_classes.max())}]")
    seen = (old_classes >= 0).unsqueeze(1)
    return torch.where(seen, w_old[old_classes.clamp_min(0)], p_old)


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
    checkpoint: str | Path | None = None,
    old_classes: torch.Tensor | None = None,
) -> TrainResult:
    """Train a new model compatible with ``old`` using a registered method.

    Parameters
    ----------
    model : the new embedder (``.dim`` must equal the old model's).
    data : new training set; labels in ``[0, num_classes)``, old classes first.
    old : the trained old model and head (from :func:`train_old`); its head's rows are
        the old classes. A frozen old model file (no head) makes BCT's old classifier the
        old prototypes of every class, and its fingerprint is recorded in ``checkpoint``.
    method : a :class:`MethodConfig` or a method name with default settings.
    callback : called with each epoch's history record (e.g. to update a widget).
    checkpoint : path written after every epoch and resumed from when it exists.
    old_classes : optional (num_classes,) int64, the old model's class of every new
        class (-1: the old model never saw it), as ``BCLData.old_class_of``. ``None``:
        new class ``c`` is old class ``c`` for ``c`` below the old head's row count.
        BCT's old classifier gives class ``c`` the old head's row of its old class (so
        classes merged in the old model share a row), or its old prototype when unseen.

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
    if compat.perturbs and mcfg.k is not None and mcfg.k >= num_classes:
        raise ValueError(f"MethodConfig.k must be smaller than the number of classes ({num_classes}), got k={mcfg.k}")
    meta = {"role": "new", "method": dataclasses.asdict(mcfg)}
    if isinstance(old.model, FrozenEmbedder):  # resuming against another old model file is refused
        meta["old_model"] = old.model.fingerprint
    loop = _Loop(model, num_classes, cfg, data, f"new model ({mcfg.name})", progress, checkpoint, meta)
    dev = loop.device
    f_old_all = embed(old.model, data.x)  # the frozen old model embeds the training set once
    p_old = class_prototypes(f_old_all, data.y, num_classes).to(dev)
    f_old_all = f_old_all.to(dev)
    prepared = compat.prepare(f_old_all, data.y.to(dev), p_old)
    f_old_all = f_old_all if compat.needs_old_features else None
    if old.head is None:  # a frozen old model file has no classifier: its prototypes stand in for every class
        old_weights = p_old
    elif old_classes is None:
        n_old_cls = old.head.weight.shape[0]
        old_weights = torch.cat([old.head.weight.detach().to(dev), p_old[n_old_cls:]])[:num_classes]
    else:
        old_weights = _old_classifier(old.head.weight.detach().to(dev), p_old, old_classes.to(dev))
    ctx = CompatContext(p_old, p_old.clone(), old_weights, loop.head.weight, prepared)
    p_new, delta = p_old.clone(), torch.zeros_like(p_old)
    ema = _EmaPrototypes(p_new, mcfg.ema_momentum, defer=num_classes <= cfg.batch_size,
                         distributed=loop.info.enabled)

    def current_new_protos():
        return ema.sync() if mcfg.new_prototypes == "ema" else F.normalize(loop.head.weight.detach(), dim=1)

    def refresh():
        delta.copy_(compat.perturb(p_old.cpu(), current_new_protos().cpu(), delta.cpu()).to(dev))
        ctx.pseudo_old = pseudo_old(p_old.cpu(), delta.cpu()).to(dev) if compat.perturbs else p_old

    start = loop.resume({"new_protos": p_new, "delta": delta})
    if compat.perturbs and start > mcfg.warmup_epochs:
        ctx.pseudo_old = pseudo_old(p_old.cpu(), delta.cpu()).to(dev)
    loop.net.train()
    amp = _step_autocast(loop)
    crowding_old = crowding(p_old.cpu())  # P_o is fixed for the run
    for epoch, batches in loop.epochs(start):
        t0 = time.perf_counter()
        active = compat.perturbs and epoch >= mcfg.warmup_epochs
        if active and mcfg.update_every is None:
            refresh()
        losses = _LossSums("loss", "loss_cls", "loss_comp")
        for i, idx in enumerate(batches):
            if active and mcfg.update_every is not None and (loop.steps_done + i) % mcfg.update_every == 0:
                refresh()
            x, y = loop.batch(idx)
            with amp:
                f, l_cls = loop.ddp(x, y)
                f = f.float()
                l_comp = compat.loss(ctx, f, y, f_old_all[idx.to(dev)] if f_old_all is not None else None)
            loss = l_cls if l_comp is None else l_cls + mcfg.lam * l_comp
            loop.step(loss)
            ema.add(f.detach(), y)
            losses.add(len(idx), loss, l_cls, l_comp)
        ema.sync()
        norms = delta.norm(dim=1)
        record = dict(
            epoch=epoch, steps=len(batches), **loop.mean_over_ranks(losses.sums(), sum(len(b) for b in batches)),
            delta_norm_mean=float(norms.mean()), delta_norm_max=float(norms.max()),
            crowding_old=crowding_old, crowding_pseudo_old=crowding(ctx.pseudo_old.cpu()),
            crowding_new=crowding(current_new_protos().cpu()), seconds=time.perf_counter() - t0,
        )
        loop.history.append(record)
        loop.save(epoch, {"new_protos": p_new, "delta": delta})
        if callback is not None:
            callback(record)
    loop.net.eval()
    state = {k: v.cpu() for k, v in dict(old_protos=p_old, new_protos=current_new_protos().clone(),
                                          delta=delta, pseudo_old=ctx.pseudo_old).items()}
    return TrainResult(loop.net.model, loop.head, loop.history, state)
