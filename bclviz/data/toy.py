"""The toy "crowded" scenario.

Fine classes come in groups of siblings that share a superclass. An input is the sum of
a superclass part and a class part living in two orthogonal subspaces, plus Gaussian
noise, seen through a fixed random rotation. The old model sees a *coarse view* of the
input: the class-specific subspace is attenuated by ``fine_visibility`` before the old
model's first layer (and the old model is trained on the first ``old_ratio`` of the
classes only). Siblings therefore crowd together in the old space, while a new model
that sees the whole input can tell them apart -- the situation in which strict
alignment to the old space costs the new model discriminability.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import BCLData, Labeled

__all__ = ["make_toy"]


def _orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def make_toy(
    *,
    num_superclasses: int = 8,
    siblings: int = 4,
    coarse_dim: int = 16,
    fine_dim: int = 16,
    separation: float = 3.0,
    fine_separation: float = 1.5,
    noise: float = 0.6,
    fine_visibility: float = 0.25,
    train_per_class: int = 1500,
    eval_per_class: int = 40,
    old_ratio: float = 0.5,
    seed: int = 0,
) -> BCLData:
    """Build the toy crowded scenario (closed-set retrieval, extended-class update).

    Parameters
    ----------
    num_superclasses, siblings : ``C = num_superclasses * siblings`` fine classes.
    coarse_dim, fine_dim : dimensions of the superclass and class subspaces; the input
        has ``coarse_dim + fine_dim`` features.
    separation : norm of the superclass centres (distance between superclasses).
    fine_separation : norm of the class offsets within a superclass (overlap between
        siblings: smaller means more overlap, for every model).
    noise : standard deviation of the isotropic input noise.
    fine_visibility : factor on the class subspace in the old model's view (0 means the
        old model cannot tell siblings apart at all, 1 means it sees everything).
    train_per_class, eval_per_class : samples per class for training and for the
        held-out query/gallery pool.
    old_ratio : fraction of classes (whole superclass groups first) the old model trains on.
    seed : everything is drawn from ``np.random.default_rng(seed)``.

    Returns
    -------
    BCLData whose ``old_view`` is the (D, D) coarse-view matrix.
    """
    for name, value in [
        ("num_superclasses", num_superclasses),
        ("siblings", siblings),
        ("coarse_dim", coarse_dim),
        ("fine_dim", fine_dim),
        ("train_per_class", train_per_class),
        ("eval_per_class", eval_per_class),
    ]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if eval_per_class < 2:
        raise ValueError(f"eval_per_class must be >= 2 for leave-one-out retrieval, got {eval_per_class}")
    for name, value in [("separation", separation), ("fine_separation", fine_separation), ("noise", noise)]:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not 0 <= fine_visibility <= 1:
        raise ValueError(f"fine_visibility must be in [0, 1], got {fine_visibility!r}")
    if not 0 < old_ratio < 1:
        raise ValueError(f"old_ratio must be in (0, 1), got {old_ratio!r}")
    C = num_superclasses * siblings
    if C < 2:
        raise ValueError("the toy needs at least 2 classes")
    rng = np.random.default_rng(seed)
    D = coarse_dim + fine_dim

    def directions(n, dim):
        v = rng.standard_normal((n, dim))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    coarse = separation * directions(num_superclasses, coarse_dim)
    fine = fine_separation * directions(C, fine_dim)
    centres = np.concatenate([np.repeat(coarse, siblings, axis=0), fine], axis=1)  # (C, D)
    rotation = _orthogonal(rng, D)

    def sample(per_class):
        y = np.repeat(np.arange(C), per_class)
        x = centres[y] + noise * rng.standard_normal((y.size, D))
        return torch.from_numpy((x @ rotation.T).astype(np.float32)), torch.from_numpy(y)

    x_tr, y_tr = sample(train_per_class)
    x_ev, y_ev = sample(eval_per_class)
    mask = np.concatenate([np.ones(coarse_dim), np.full(fine_dim, fine_visibility)])
    view = torch.from_numpy((rotation @ np.diag(mask) @ rotation.T).astype(np.float32))

    num_old = max(1, min(C - 1, round(old_ratio * C)))
    new_train = Labeled(x_tr, y_tr)
    old_train = new_train.subset(torch.nonzero(y_tr < num_old).squeeze(1))
    evaluation = Labeled(x_ev, y_ev)
    return BCLData.leave_one_out(
        "toy", old_train=old_train, new_train=new_train, evaluation=evaluation,
        num_classes=C, num_old_classes=num_old, old_view=view,
        info=dict(
            seed=seed, num_superclasses=num_superclasses, siblings=siblings,
            coarse_dim=coarse_dim, fine_dim=fine_dim, separation=separation,
            fine_separation=fine_separation, noise=noise, fine_visibility=fine_visibility,
            train_per_class=train_per_class, eval_per_class=eval_per_class,
            old_ratio=old_ratio, setting="extended-class", protocol="closed-set",
            superclass=[c // siblings for c in range(C)],
        ),
    )
