"""Prototype perturbation: NDPP and ODPP as pure tensor functions.

bclviz's formulation of the prototype-perturbation methods of Zhou et al.,
"Prototype Perturbation for Relaxing Alignment Constraints in Backward-Compatible
Learning" (arXiv 2503.14824). The equations are written out in ``docs/method.md``
(sections "NDPP" and "ODPP"); every function here maps tensors to tensors and holds no
state, so the trainer, the widgets and the benchmarks share them.

Shapes: ``C`` classes, ``d`` embedding dimensions. Prototypes are (C, d); rows are
L2-normalised on entry. Work is done in row blocks of ``_BLOCK`` classes, so memory is
O(C * k * d) and never O(C^2). The old-space neighbour lists depend on ``P_o`` only,
which is fixed during training: :func:`old_neighbors` computes them once and ``ndpp``
/ ``odpp`` accept them as ``neighbors=`` (the kNN search is O(C^2 d), everything else
O(C k d)).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from ._validate import as_features, check_non_negative, check_positive_int
from .neighbors import class_neighbors

__all__ = [
    "ndpp", "ndpp_direction", "odpp", "odpp_objective", "pseudo_old", "check_prototypes", "budgets", "excess_crowding",
    "old_neighbors", "EPS_MODES",
]

EpsMode = Literal["absolute", "relative", "nearest-angle"]
#: the values of ``eps_mode`` (:func:`budgets`)
EPS_MODES: tuple[str, ...] = ("absolute", "relative", "nearest-angle")

_TINY = 1e-6  # a tangent direction shorter than this is treated as zero (unit vectors)
# Rows per block: (1024, k, d) float32 temporaries are a few MiB, which the allocator
# reuses; 8192-row blocks (tens of MiB) went back to the OS and were page-faulted in
# again on every elementwise op, which cost more than the arithmetic.
_BLOCK = 1024


def check_prototypes(old_protos, new_protos=None, *, k: int | None = None):
    """Validate and L2-normalise prototype matrices.

    Raises ``ValueError`` for wrong shapes, NaN/Inf, zero rows, differing sizes or
    dimensions, and ``k`` outside ``1 <= k < C``.
    """
    p_o = as_features(old_protos, "old_protos")
    if (p_o.norm(dim=1) == 0).any():
        raise ValueError("old_protos has all-zero rows; every class needs a non-zero prototype")
    p_o = F.normalize(p_o, dim=1)
    out = [p_o]
    if new_protos is not None:
        p_n = as_features(new_protos, "new_protos")
        if p_n.shape[1] != p_o.shape[1]:
            raise ValueError(
                f"old and new prototypes must share the embedding dimension, got "
                f"old d={p_o.shape[1]} and new d={p_n.shape[1]}"
            )
        if p_n.shape[0] != p_o.shape[0]:
            raise ValueError(
                f"old and new prototypes must have one row per class, got "
                f"{p_o.shape[0]} old and {p_n.shape[0]} new rows"
            )
        if (p_n.norm(dim=1) == 0).any():
            raise ValueError("new_protos has all-zero rows; every class needs a non-zero prototype")
        out.append(F.normalize(p_n, dim=1).to(p_o.dtype))
    if k is not None:
        k = check_positive_int(k, "k")
        C = p_o.shape[0]
        if k >= C:
            raise ValueError(f"k must be smaller than the number of classes ({C}), got k={k}")
    return tuple(out)


NeighborSearch = Literal["exact", "ivf"]


def old_neighbors(old_protos, k: int, *, search: NeighborSearch = "exact") -> torch.Tensor:
    """Old-space neighbour lists ``N_k(c)`` (C, k) int64, most similar first.

    What :func:`ndpp` and :func:`odpp` search for internally; pass the result as their
    ``neighbors=`` argument to reuse it while ``old_protos`` stays the same (a list for
    a larger k also serves every smaller k: its first k columns).

    ``search="ivf"`` finds them approximately with a faiss inverted-file index
    (:func:`bclviz.neighbors.class_neighbors`), for class counts where the exact
    O(C^2 d) search takes tens of seconds (GLDv2: C = 81,313).
    """
    (p_o,) = check_prototypes(old_protos, k=k)
    if search not in ("exact", "ivf"):
        raise ValueError(f"search must be 'exact' or 'ivf', got {search!r}")
    return class_neighbors(p_o, k, backend="ivf" if search == "ivf" else "auto")


def _neighbor_lists(p_o: torch.Tensor, k: int, neighbors) -> torch.Tensor:
    """``neighbors[:, :k]`` after checking its shape, or a fresh search when None."""
    if neighbors is None:
        return class_neighbors(p_o, k)
    if (not isinstance(neighbors, torch.Tensor) or neighbors.dtype != torch.int64 or neighbors.ndim != 2
            or neighbors.shape[0] != p_o.shape[0] or neighbors.shape[1] < k):
        got = tuple(neighbors.shape) if isinstance(neighbors, torch.Tensor) else type(neighbors).__name__
        raise ValueError(
            f"neighbors must be an int64 tensor of shape (C={p_o.shape[0]}, >= k={k}) from "
            f"old_neighbors(old_protos, k), got {got}"
        )
    return neighbors[:, :k]


def _rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` (B, k, d) for a (B, k) index; index_select is several times faster
    than advanced indexing on the CPU."""
    return x.index_select(0, idx.reshape(-1)).view(*idx.shape, x.shape[1])


def pseudo_old(old_protos: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Pseudo-old prototypes ``q[c] = normalize(p_o[c] + delta[c])`` (C, d)."""
    (p_o,) = check_prototypes(old_protos)
    delta = as_features(delta, "delta", dim=p_o.shape[1])
    if delta.shape[0] != p_o.shape[0]:
        raise ValueError(f"delta has {delta.shape[0]} rows, expected {p_o.shape[0]}")
    return F.normalize(p_o + delta.to(p_o.dtype), dim=1)


def _tangent(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Project vectors v (B, k, d) onto the tangent planes at unit vectors p (B, d)."""
    return v - (v * p.unsqueeze(1)).sum(-1, keepdim=True) * p.unsqueeze(1)


def _unit_or_zero(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors of t (B, k, d) and a mask of rows long enough to normalise."""
    n = t.norm(dim=-1, keepdim=True)
    ok = n > _TINY
    return torch.where(ok, t / n.clamp_min(torch.finfo(t.dtype).tiny), torch.zeros_like(t)), ok


def _check_eps_mode(mode) -> None:
    if mode not in EPS_MODES:
        raise ValueError(f"eps_mode must be one of {list(EPS_MODES)}, got {mode!r}")


def _pair_sims(p_o: torch.Tensor, p_n: torch.Tensor, nbr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``S_o[c, j]`` and ``S_n[c, j]`` over the neighbour lists, each (C, k)."""
    s_o = torch.empty(nbr.shape, dtype=p_o.dtype, device=p_o.device)
    s_n = torch.empty_like(s_o)
    for s in range(0, p_o.shape[0], _BLOCK):
        rows = slice(s, s + _BLOCK)
        idx = nbr[rows]
        s_o[rows] = (p_o[rows].unsqueeze(1) * _rows(p_o, idx)).sum(-1)
        s_n[rows] = (p_n[rows].unsqueeze(1) * _rows(p_n, idx)).sum(-1)
    return s_o, s_n


def excess_crowding(p_o: torch.Tensor, p_n: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """Each class's largest excess crowding ``e[c] = max_{j in N_k(c)} max(0, S_o[c,j] - S_n[c,j])`` (C,).

    NDPP's weight ``w[c, j]`` at the class's worst old-space neighbour: how much closer
    the old model places that pair than the new model does (0 when the new model keeps
    every neighbour at least as close; up to 2). ``p_o``, ``p_n`` are normalised (C, d)
    prototypes, ``nbr`` the (C, k) old-space neighbour lists.
    """
    s_o, s_n = _pair_sims(p_o, p_n, nbr)
    return (s_o - s_n).clamp_min(0).amax(dim=1)


def budgets(p_o: torch.Tensor, p_n: torch.Tensor, nbr: torch.Tensor, eps: float, mode: EpsMode) -> torch.Tensor:
    """Per-class perturbation budgets (C, 1): the radius of each class's ball ``||delta[c]|| <= b[c]``.

    ``"absolute"``: ``eps`` for every class.

    ``"relative"``: ``b[c] = eps * e[c] / max_c' e[c']`` with ``e`` the excess crowding
    of :func:`excess_crowding` over the neighbour lists ``nbr``. The class whose worst
    old-space neighbour the new model separates most gets the full ``eps`` (a collapsed
    old pair, ``S_o = 1``, that the new model pulls apart is the typical one); a class
    with no excess crowding gets 0; every budget is at most ``eps``, so ``eps`` keeps its
    meaning of the largest move, as in ``"absolute"``. All zero when no class has any
    excess.

    ``"nearest-angle"``: ``eps`` times the angle (radians) between ``p_o[c]`` and its
    nearest old neighbour ``nbr[:, 0]`` (what ``"relative"`` meant before; it gives a
    collapsed pair no room at all, kept for comparison).

    ``p_o``, ``p_n``: normalised (C, d) old and new prototypes; ``nbr``: (C, k) old-space
    neighbour lists, most similar first.
    """
    _check_eps_mode(mode)
    if mode == "absolute":
        return torch.full((p_o.shape[0], 1), eps, dtype=p_o.dtype, device=p_o.device)
    if mode == "nearest-angle":
        cos = (p_o * p_o.index_select(0, nbr[:, 0])).sum(1, keepdim=True).clamp(-1.0, 1.0)
        return eps * torch.arccos(cos)
    e = excess_crowding(p_o, p_n, nbr).unsqueeze(1)
    top = float(e.max())
    if top == 0:
        return torch.zeros_like(e)
    return eps * (e / top)


def ndpp(
    old_protos, new_protos, *, eps: float, k: int = 5, eps_mode: EpsMode = "absolute",
    neighbors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Neighbor-driven prototype perturbation.

    For each class ``c`` and each of its ``k`` nearest old-space neighbours ``j``:
    ``w = max(0, S_o[c,j] - S_n[c,j])`` (excess crowding), ``u`` = unit push direction
    away from ``p_o[j]`` in the tangent plane at ``p_o[c]`` (the new-space direction
    ``p_n[c] - p_n[j]`` projected the same way when the old prototypes coincide; nothing
    when both vanish); ``r = sum_j w u``; ``delta = b * r / max(1, ||r||)`` with ``b`` the
    class's budget (``eps`` under the default ``eps_mode="absolute"``).

    Parameters
    ----------
    old_protos, new_protos : (C, d) prototypes of the old and new model (normalised here).
    eps : perturbation magnitude, ``>= 0``; ``||delta[c]|| <= eps`` in the ``"absolute"``
        and ``"relative"`` budget modes (``"nearest-angle"``: ``eps`` times an angle in radians).
    k : old-space neighbours per class, ``1 <= k < C``.
    eps_mode : per-class budgets (:func:`budgets`): ``"absolute"`` (``eps`` for every
        class), ``"relative"`` (``eps`` scaled by the class's excess crowding, relative
        to the most excessively crowded class) or ``"nearest-angle"`` (``eps`` times the
        angle to the nearest old neighbour). The step is ``budget[c] * r / max(1, ||r||)``.
    neighbors : optional (C, >= k) old-space neighbour lists from :func:`old_neighbors`
        for these ``old_protos``, reused instead of searching again.

    Returns
    -------
    delta : (C, d) tensor in the dtype of ``old_protos`` (float32 or float64).
    """
    eps = check_non_negative(eps, "eps")
    p_o, p_n = check_prototypes(old_protos, new_protos, k=k)
    _check_eps_mode(eps_mode)
    if eps == 0:
        return torch.zeros_like(p_o)
    nbr = _neighbor_lists(p_o, k, neighbors)
    return eps * _ndpp(p_o, p_n, nbr, budgets(p_o, p_n, nbr, 1.0, eps_mode))


def ndpp_direction(
    old_protos, new_protos, *, k: int = 5, eps_mode: EpsMode = "absolute", neighbors: torch.Tensor | None = None,
) -> torch.Tensor:
    """NDPP's step per unit of eps (C, d): ``ndpp(..., eps=eps) == eps * ndpp_direction(...)``.

    Every budget mode scales linearly with ``eps`` (:func:`budgets`), and nothing else in
    NDPP depends on it, so :func:`ndpp` computes exactly this and multiplies by ``eps``
    (the same floating-point result). Keep it while ``P_o``, ``P_n``, ``k`` and the budget
    mode stay the same (e.g. while an eps slider moves): every eps is then an O(C d)
    product instead of an O(C k d) pass. Arguments as in :func:`ndpp`.
    """
    p_o, p_n = check_prototypes(old_protos, new_protos, k=k)
    _check_eps_mode(eps_mode)
    nbr = _neighbor_lists(p_o, k, neighbors)
    return _ndpp(p_o, p_n, nbr, budgets(p_o, p_n, nbr, 1.0, eps_mode))


def _ndpp(p_o: torch.Tensor, p_n: torch.Tensor, nbr: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """NDPP of normalised prototypes with known neighbour lists (C, k) and budgets (C, 1)."""
    C, _ = p_o.shape
    delta = torch.empty_like(p_o)
    for s in range(0, C, _BLOCK):
        rows = slice(s, s + _BLOCK)
        po, pn, idx = p_o[rows], p_n[rows], nbr[rows]
        po_j, pn_j = _rows(p_o, idx), _rows(p_n, idx)  # (B, k, d)
        s_o = (po.unsqueeze(1) * po_j).sum(-1)
        s_n = (pn.unsqueeze(1) * pn_j).sum(-1)
        w = (s_o - s_n).clamp_min(0)
        u_old, ok_old = _unit_or_zero(_tangent(po.unsqueeze(1) - po_j, po))
        u_new, _ = _unit_or_zero(_tangent(pn.unsqueeze(1) - pn_j, po))
        u = torch.where(ok_old, u_old, u_new)
        r = (w.unsqueeze(-1) * u).sum(1)
        delta[rows] = budget[rows] * r / r.norm(dim=1, keepdim=True).clamp_min(1.0)
    return delta


def _targets(p_o: torch.Tensor, p_n: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
    """t[c, j] = min(S_o[c, j], S_n[c, j]) over the neighbour lists (C, K)."""
    return torch.minimum(*_pair_sims(p_o, p_n, nbr))


def _objective_and_grad(
    p_o: torch.Tensor, delta: torch.Tensor, nbr: torch.Tensor, t: torch.Tensor, gamma: float
) -> tuple[float, torch.Tensor]:
    """ODPP objective and its analytic gradient with respect to delta."""
    C = p_o.shape[0]
    a = p_o + delta
    n = a.norm(dim=1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    q = a.div_(n)
    g_q = torch.zeros_like(q)
    total = 0.0
    for s in range(0, C, _BLOCK):
        rows = slice(s, s + _BLOCK)
        idx = nbr[rows]
        qc, qj = q[rows], _rows(q, idx)  # (B, d), (B, K, d)
        h = (qc.unsqueeze(1) * qj).sum(-1).sub_(t[rows]).clamp_min_(0)  # (B, K)
        total += float((h * h).sum())
        g_q[rows] += (h.unsqueeze(-1) * qj).sum(1)
        g_q.index_add_(0, idx.reshape(-1), (h.unsqueeze(-1) * qc.unsqueeze(1)).reshape(-1, q.shape[1]))
    g_q *= 2.0 / C
    # d q / d a = (I - q q^T) / ||a||
    g_a = g_q.sub_((g_q * q).sum(1, keepdim=True) * q).div_(n)
    value = total / C + gamma * float((delta * delta).sum()) / C
    return value, g_a.add_(delta, alpha=2.0 * gamma / C)


def _project(delta: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Rescale each row of delta onto its ball of radius ``budget`` (C, 1) when outside."""
    norm = delta.norm(dim=1, keepdim=True)
    scale = torch.where(norm > budget, budget / norm.clamp_min(torch.finfo(delta.dtype).tiny), torch.ones_like(norm))
    return delta * scale


def odpp_objective(
    old_protos, new_protos, delta, *, k: int = 8, gamma: float = 0.1, neighbors: torch.Tensor | None = None
) -> float:
    """Value of the ODPP objective at ``delta`` (see :func:`odpp`)."""
    p_o, p_n = check_prototypes(old_protos, new_protos, k=k)
    delta = as_features(delta, "delta", dim=p_o.shape[1]).to(p_o.dtype)
    nbr = _neighbor_lists(p_o, k, neighbors)
    return _objective_and_grad(p_o, delta, nbr, _targets(p_o, p_n, nbr), gamma)[0]


def odpp(
    old_protos,
    new_protos,
    *,
    eps: float,
    k: int = 8,
    steps: int = 30,
    gamma: float = 0.1,
    lr: float = 0.02,
    init: torch.Tensor | None = None,
    eps_mode: EpsMode = "absolute",
    neighbors: torch.Tensor | None = None,
) -> torch.Tensor:
    """Optimization-driven prototype perturbation.

    Minimises, over delta with ``||delta[c]|| <= eps``,
    ``(1/C) sum_c sum_{j in N_K(c)} max(0, <q_c, q_j> - t[c,j])^2 + gamma (1/C) sum_c ||delta[c]||^2``
    with ``q = normalize(p_o + delta)``, ``N_K(c)`` the ``k`` nearest old-space
    neighbours and ``t[c,j] = min(S_o[c,j], S_n[c,j])``, by ``steps`` Adam steps
    (betas 0.9/0.999, eps 1e-8, learning rate ``lr``) each followed by rescaling every
    row onto the eps-ball. The gradient is computed analytically in row blocks.

    Parameters
    ----------
    old_protos, new_protos : (C, d) prototypes (normalised here).
    eps : budget, ``>= 0``.
    k : neighbours per class (the spec's K), ``1 <= k < C``.
    steps : projected gradient steps, ``>= 0``.
    gamma : weight of the ``||delta||^2`` penalty, ``>= 0``.
    lr : Adam learning rate, ``> 0``.
    init : warm start (C, d), e.g. the previous solution; projected onto the eps-ball.
        ``None`` starts at ``0.01 * ndpp(old, new, eps=eps, k=k)``: a near-zero start
        whose only role is to break the symmetry of coinciding old prototypes, where
        the gradient of the objective vanishes exactly.
    eps_mode : ``"absolute"``, ``"relative"`` or ``"nearest-angle"`` budgets, as in
        :func:`ndpp`; the eps-ball of each class has the radius :func:`budgets` gives.
    neighbors : optional (C, >= k) old-space neighbour lists from :func:`old_neighbors`
        for these ``old_protos``, reused instead of searching again.

    Returns
    -------
    delta : (C, d) tensor in the dtype of ``old_protos``.
    """
    eps = check_non_negative(eps, "eps")
    gamma = check_non_negative(gamma, "gamma")
    lr = check_non_negative(lr, "lr")
    if lr == 0:
        raise ValueError("lr must be > 0, got 0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    p_o, p_n = check_prototypes(old_protos, new_protos, k=k)
    _check_eps_mode(eps_mode)
    if eps == 0:
        return torch.zeros_like(p_o)
    nbr = _neighbor_lists(p_o, k, neighbors)
    budget = budgets(p_o, p_n, nbr, eps, eps_mode)
    if init is None:
        delta = 0.01 * _ndpp(p_o, p_n, nbr, budget)
    else:
        delta = as_features(init, "init", dim=p_o.shape[1]).to(p_o.dtype)
        if delta.shape[0] != p_o.shape[0]:
            raise ValueError(f"init has {delta.shape[0]} rows, expected {p_o.shape[0]}")
        delta = _project(delta.clone(), budget)
    t = _targets(p_o, p_n, nbr)
    m = torch.zeros_like(delta)
    v = torch.zeros_like(delta)
    b1, b2, adam_eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        _, g = _objective_and_grad(p_o, delta, nbr, t, gamma)
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        # delta - lr * m_hat / (sqrt(v_hat) + adam_eps), without C x d temporaries
        denom = v.sqrt().div_(math.sqrt(1 - b2**step)).add_(adam_eps)
        delta = _project(delta.addcdiv_(m, denom, value=-lr / (1 - b1**step)), budget)
    return delta
