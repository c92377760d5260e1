"""NDPP / ODPP against naive per-class references, plus the spec's invariants."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bclviz.neighbors import class_neighbors, ivf_cells
from bclviz.perturb import ndpp, ndpp_direction, odpp, odpp_objective, old_neighbors, pseudo_old
from bclviz.proxies import crowding


def unit(x):
    return F.normalize(torch.as_tensor(x, dtype=torch.float64), dim=1)


def random_protos(C, d, seed, noise=0.6):
    g = torch.Generator().manual_seed(seed)
    p_o = unit(torch.randn(C, d, generator=g, dtype=torch.float64))
    p_n = unit(p_o + noise * torch.randn(C, d, generator=g, dtype=torch.float64))
    return p_o, p_n


def naive_neighbors(P, c, k):
    sims = [(float(P[c] @ P[j]), j) for j in range(P.shape[0]) if j != c]
    sims.sort(key=lambda t: -t[0])
    return [j for _, j in sims[:k]]


def naive_excess(P_o, P_n, c, k):
    return max(max(0.0, float(P_o[c] @ P_o[j]) - float(P_n[c] @ P_n[j])) for j in naive_neighbors(P_o, c, k))


def naive_budget(P_o, c, eps, mode, P_n=None, k=None):
    if mode == "absolute":
        return eps
    if mode == "relative":
        top = max(naive_excess(P_o, P_n, i, k) for i in range(P_o.shape[0]))
        return 0.0 if top == 0 else eps * naive_excess(P_o, P_n, c, k) / top
    nearest = naive_neighbors(P_o, c, 1)[0]
    return eps * math.acos(max(-1.0, min(1.0, float(P_o[c] @ P_o[nearest]))))


def naive_ndpp(P_o, P_n, eps, k, mode="absolute"):
    C, d = P_o.shape
    delta = torch.zeros(C, d, dtype=torch.float64)
    for c in range(C):
        r = torch.zeros(d, dtype=torch.float64)
        for j in naive_neighbors(P_o, c, k):
            w = max(0.0, float(P_o[c] @ P_o[j]) - float(P_n[c] @ P_n[j]))
            t = (P_o[c] - P_o[j]) - ((P_o[c] - P_o[j]) @ P_o[c]) * P_o[c]
            if t.norm() <= 1e-6:
                t = (P_n[c] - P_n[j]) - ((P_n[c] - P_n[j]) @ P_o[c]) * P_o[c]
            if t.norm() <= 1e-6:
                continue
            r += w * t / t.norm()
        delta[c] = naive_budget(P_o, c, eps, mode, P_n, k) * r / max(1.0, float(r.norm()))
    return delta


def naive_objective(P_o, P_n, delta, k, gamma):
    C = P_o.shape[0]
    q = F.normalize(P_o + delta, dim=1)
    total = 0.0
    for c in range(C):
        for j in naive_neighbors(P_o, c, k):
            t = min(float(P_o[c] @ P_o[j]), float(P_n[c] @ P_n[j]))
            total = total + torch.clamp(q[c] @ q[j] - t, min=0) ** 2
    return total / C + gamma * (delta**2).sum() / C


def naive_odpp(P_o, P_n, eps, k, steps, gamma, lr, mode="absolute"):
    delta = (0.01 * naive_ndpp(P_o, P_n, eps, k, mode)).clone().requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        naive_objective(P_o, P_n, delta, k, gamma).backward()
        opt.step()
        with torch.no_grad():
            for c in range(delta.shape[0]):
                n, b = delta[c].norm(), naive_budget(P_o, c, eps, mode, P_n, k)
                if n > b:
                    delta[c] *= b / n
    return delta.detach()


# ---------------------------------------------------------------- references


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_ndpp_matches_naive_loop(seed, k):
    P_o, P_n = random_protos(12, 6, seed)
    for eps in (0.05, 0.4, 2.0):
        got = ndpp(P_o, P_n, eps=eps, k=k)
        torch.testing.assert_close(got, naive_ndpp(P_o, P_n, eps, k), atol=1e-10, rtol=1e-8)


def test_ndpp_hand_computed_two_classes():
    # Two classes on the unit circle at +-30 degrees; the new model places them at +-60.
    a = np.deg2rad(30)
    P_o = unit([[np.cos(a), np.sin(a)], [np.cos(a), -np.sin(a)]])
    b = np.deg2rad(60)
    P_n = unit([[np.cos(b), np.sin(b)], [np.cos(b), -np.sin(b)]])
    w = np.cos(2 * a) - np.cos(2 * b)  # 0.5 - (-0.5) = 1.0
    # tangent at p0 pointing away from p1 is (-sin a, cos a)
    expected0 = 0.1 * w * np.array([-np.sin(a), np.cos(a)]) / max(1.0, w)
    got = ndpp(P_o, P_n, eps=0.1, k=1)
    np.testing.assert_allclose(got[0].numpy(), expected0, atol=1e-12)
    np.testing.assert_allclose(got[1].numpy(), expected0 * [1, -1], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", ["absolute", "relative", "nearest-angle"])
def test_odpp_matches_naive_autograd_adam(seed, mode):
    P_o, P_n = random_protos(10, 5, seed, noise=0.8)
    got = odpp(P_o, P_n, eps=0.3, k=4, steps=12, gamma=0.1, lr=0.02, eps_mode=mode)
    want = naive_odpp(P_o, P_n, 0.3, 4, 12, 0.1, 0.02, mode)
    torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("mode", ["relative", "nearest-angle"])
def test_ndpp_budget_modes_match_naive_loop(seed, mode):
    P_o, P_n = random_protos(12, 6, seed)
    for eps in (0.1, 0.5, 2.0):
        got = ndpp(P_o, P_n, eps=eps, k=3, eps_mode=mode)
        torch.testing.assert_close(got, naive_ndpp(P_o, P_n, eps, 3, mode), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("mode", ["absolute", "relative", "nearest-angle"])
def test_ndpp_is_eps_times_its_direction(mode):
    """Every budget is linear in eps, so NDPP is eps times a direction (what the explorer caches)."""
    P_o, P_n = random_protos(12, 6, 5)
    direction = ndpp_direction(P_o, P_n, k=3, eps_mode=mode)
    for eps in (0.0, 0.25, 1.0):
        assert torch.equal(ndpp(P_o, P_n, eps=eps, k=3, eps_mode=mode), eps * direction)
        torch.testing.assert_close(eps * direction, naive_ndpp(P_o, P_n, eps, 3, mode), atol=1e-10, rtol=1e-8)


def test_odpp_objective_matches_naive():
    P_o, P_n = random_protos(9, 4, 3)
    delta = 0.2 * unit(torch.randn(9, 4, generator=torch.Generator().manual_seed(1)))
    got = odpp_objective(P_o, P_n, delta, k=3, gamma=0.5)
    want = float(naive_objective(P_o, P_n, delta, 3, 0.5))
    assert got == pytest.approx(want, rel=1e-10)


def test_odpp_lowers_its_objective():
    P_o, P_n = random_protos(40, 8, 5, noise=1.0)
    delta = odpp(P_o, P_n, eps=0.5)
    zero = odpp_objective(P_o, P_n, torch.zeros_like(P_o))
    assert zero > 0.01
    assert odpp_objective(P_o, P_n, delta) < 0.7 * zero


def test_odpp_warm_start_is_projected_and_used():
    P_o, P_n = random_protos(20, 6, 7)
    init = 5.0 * unit(torch.randn(20, 6, generator=torch.Generator().manual_seed(2)))
    out = odpp(P_o, P_n, eps=0.2, steps=0, init=init)
    torch.testing.assert_close(out, 0.2 * unit(init))


def test_neighbor_backends_agree_and_exclude_self():
    P_o, _ = random_protos(300, 16, 11)
    a = class_neighbors(P_o.float(), 7, backend="torch", block=64)
    b = class_neighbors(P_o.float(), 7, backend="faiss")
    assert torch.equal(a, b)
    assert not (a == torch.arange(300).unsqueeze(1)).any()
    assert torch.equal(a[5], torch.tensor(naive_neighbors(P_o, 5, 7)))


def clustered_protos(C, d, cluster, seed):
    """Unit rows in clusters of ``cluster`` siblings (the crowding NDPP is for)."""
    g = torch.Generator().manual_seed(seed)
    centres = unit(torch.randn(C // cluster + 1, d, generator=g, dtype=torch.float64))
    assign = torch.randperm(C, generator=g) % centres.shape[0]
    return unit(centres[assign] + 0.35 / d**0.5 * torch.randn(C, d, generator=g, dtype=torch.float64)).float()


def test_ivf_cells():
    assert [ivf_cells(n) for n in (1, 38, 39, 100, 4000, 81313)] == [1, 1, 1, 2, 102, 1141]


def test_ivf_search_recall_and_determinism():
    P = clustered_protos(6000, 32, 6, 0)
    exact = class_neighbors(P, 5, backend="torch")
    approx = class_neighbors(P, 5, backend="ivf")
    assert approx.shape == (6000, 5) and not (approx == torch.arange(6000).unsqueeze(1)).any()
    assert all(len(set(r.tolist())) == 5 for r in approx)
    recall = np.mean([len(set(a.tolist()) & set(e.tolist())) / 5 for a, e in zip(approx, exact)])
    assert recall > 0.95, recall
    # most similar first
    sims = (P.unsqueeze(1) * P[approx]).sum(-1)
    assert (sims[:, :-1] >= sims[:, 1:] - 1e-6).all()
    assert torch.equal(approx, class_neighbors(P, 5, backend="ivf"))  # seeded
    # scanning every cell makes it exact
    full = class_neighbors(P, 5, backend="ivf", nprobe=ivf_cells(6000))
    assert (full == exact).float().mean() > 0.999  # ties aside


def test_ivf_search_of_few_classes_is_exact():
    P_o, _ = random_protos(30, 8, 3)
    assert torch.equal(old_neighbors(P_o, 4, search="ivf"), old_neighbors(P_o, 4))


@pytest.mark.parametrize("kwargs, match", [
    (dict(backend="annoy"), "backend must be one of"),
    (dict(backend="ivf", nprobe=0), "nprobe must be an integer >= 1"),
    (dict(backend="ivf", nprobe=2.0), "nprobe must be an integer >= 1"),
])
def test_neighbor_search_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        class_neighbors(unit(torch.randn(10, 3)).float(), 2, **kwargs)
    with pytest.raises(ValueError, match="search must be 'exact' or 'ivf'"):
        old_neighbors(unit(torch.randn(10, 3)), 2, search="hnsw")


def test_neighbors_of_duplicates_are_each_other():
    P = unit([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    nb = class_neighbors(P, 1)
    assert nb[:2, 0].tolist() == [1, 0]


# ---------------------------------------------------------------- invariants

proto_sets = st.tuples(
    st.integers(min_value=3, max_value=14),
    st.integers(min_value=2, max_value=6),
    st.integers(min_value=0, max_value=10_000),
    st.floats(min_value=0.0, max_value=1.5),
)


@settings(max_examples=40, deadline=None)
@given(proto_sets, st.sampled_from(["ndpp", "odpp"]))
def test_delta_norm_within_budget(args, method):
    C, d, seed, eps = args
    P_o, P_n = random_protos(C, d, seed, noise=1.0)
    fn = ndpp if method == "ndpp" else lambda a, b, **kw: odpp(a, b, steps=8, **kw)
    delta = fn(P_o.float(), P_n.float(), eps=eps, k=min(3, C - 1))
    assert delta.shape == (C, d) and delta.dtype == torch.float32
    assert torch.isfinite(delta).all()
    assert float(delta.norm(dim=1).max()) <= eps + 1e-6


@settings(max_examples=20, deadline=None)
@given(proto_sets)
def test_eps_zero_gives_zeros(args):
    C, d, seed, _ = args
    P_o, P_n = random_protos(C, d, seed)
    assert torch.count_nonzero(ndpp(P_o, P_n, eps=0.0, k=1)) == 0
    assert torch.count_nonzero(odpp(P_o, P_n, eps=0.0, k=1)) == 0


@pytest.mark.parametrize("fn", [ndpp, odpp])
def test_identical_old_prototypes_give_finite_split(fn):
    # Classes 0 and 1 coincide in the old space (collapse); the new model separates them.
    P_o = unit([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    P_n = unit([[1.0, 0.5, 0.0], [1.0, -0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    delta = fn(P_o, P_n, eps=0.3, k=1)
    assert torch.isfinite(delta).all()
    q = pseudo_old(P_o, delta)
    assert float(q[0] @ q[1]) < 0.99  # the collapsed pair is pulled apart
    assert float(delta[0, 1]) > 0 > float(delta[1, 1])  # along the new-space direction


@pytest.mark.parametrize("fn", [ndpp, odpp])
def test_all_identical_everything_is_finite_zero(fn):
    P = unit(torch.ones(5, 4))
    delta = fn(P, P, eps=0.5, k=2)
    assert torch.isfinite(delta).all() and torch.count_nonzero(delta) == 0


@settings(max_examples=25, deadline=None)
@given(proto_sets, st.sampled_from(["ndpp", "odpp"]))
def test_relabelling_classes_permutes_output(args, method):
    C, d, seed, eps = args
    P_o, P_n = random_protos(C, d, seed, noise=1.0)
    perm = torch.randperm(C, generator=torch.Generator().manual_seed(seed + 1))
    fn = ndpp if method == "ndpp" else lambda a, b, **kw: odpp(a, b, steps=5, **kw)
    k = min(3, C - 1)
    a = fn(P_o, P_n, eps=eps, k=k)
    b = fn(P_o[perm], P_n[perm], eps=eps, k=k)
    torch.testing.assert_close(b, a[perm], atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("fn", [ndpp, odpp])
def test_separated_crowded_pair_lowers_pseudo_old_crowding(fn):
    # A crowded pair in the old space (cos 0.98) that the new model separates (cos 0.5).
    a, b = np.arccos(0.98) / 2, np.arccos(0.5) / 2
    P_o = unit([[np.cos(a), np.sin(a), 0, 0], [np.cos(a), -np.sin(a), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    P_n = unit([[np.cos(b), np.sin(b), 0, 0], [np.cos(b), -np.sin(b), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    q = pseudo_old(P_o, fn(P_o, P_n, eps=0.2, k=1))
    assert crowding(q) < crowding(P_o) - 0.01
    # and the pair does not move closer than the new model places it (ODPP target)
    assert float(q[0] @ q[1]) >= 0.5 - 1e-6


def test_classes_the_new_model_keeps_crowded_do_not_move():
    P_o, _ = random_protos(10, 5, 4)
    assert torch.count_nonzero(ndpp(P_o, P_o, eps=0.5, k=3)) == 0
    assert float(odpp(P_o, P_o, eps=0.5, k=3).norm(dim=1).max()) < 1e-6


def test_deterministic():
    P_o, P_n = random_protos(30, 8, 9)
    assert torch.equal(odpp(P_o, P_n, eps=0.3), odpp(P_o, P_n, eps=0.3))
    assert torch.equal(ndpp(P_o, P_n, eps=0.3), ndpp(P_o, P_n, eps=0.3))
    for mode in ("relative", "nearest-angle"):
        assert torch.equal(odpp(P_o, P_n, eps=0.3, eps_mode=mode), odpp(P_o, P_n, eps=0.3, eps_mode=mode))
        assert torch.equal(ndpp(P_o, P_n, eps=0.3, eps_mode=mode), ndpp(P_o, P_n, eps=0.3, eps_mode=mode))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(eps=-0.1), ValueError, "eps must be a finite number >= 0"),
        (dict(eps=float("nan")), ValueError, "eps"),
        (dict(eps=0.1, k=0), ValueError, "k must be a positive integer"),
        (dict(eps=0.1, k=6), ValueError, "k must be smaller than the number of classes"),
        (dict(eps=0.1, k=2, eps_mode="percent"), ValueError,
         r"eps_mode must be one of \['absolute', 'relative', 'nearest-angle'\], got 'percent'"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    P_o, P_n = random_protos(6, 3, 0)
    with pytest.raises(exc, match=match):
        ndpp(P_o, P_n, **kwargs)
    with pytest.raises(exc, match=match):
        odpp(P_o, P_n, **kwargs)


def test_bad_prototypes():
    P_o, P_n = random_protos(6, 3, 0)
    with pytest.raises(ValueError, match="embedding dimension"):
        ndpp(P_o, P_n[:, :2], eps=0.1)
    with pytest.raises(ValueError, match="one row per class"):
        ndpp(P_o, P_n[:5], eps=0.1, k=2)
    bad = P_o.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        odpp(bad, P_n, eps=0.1, k=2)
    with pytest.raises(ValueError, match="all-zero rows"):
        ndpp(torch.zeros(6, 3), P_n, eps=0.1, k=2)
    with pytest.raises(ValueError, match="must be 2-D"):
        ndpp(P_o[0], P_n, eps=0.1, k=2)
    with pytest.raises(TypeError, match="torch.Tensor or numpy.ndarray"):
        ndpp(P_o.tolist(), P_n, eps=0.1, k=2)
    with pytest.raises(ValueError, match="steps"):
        odpp(P_o, P_n, eps=0.1, k=2, steps=-1)


@settings(max_examples=30, deadline=None)
@given(proto_sets, st.sampled_from(["ndpp", "odpp"]))
def test_nearest_angle_budget_is_a_multiple_of_the_nearest_gap(args, method):
    C, d, seed, eps = args
    P_o, P_n = random_protos(C, d, seed, noise=1.0)
    fn = ndpp if method == "ndpp" else lambda a, b, **kw: odpp(a, b, steps=8, **kw)
    delta = fn(P_o, P_n, eps=eps, k=min(3, C - 1), eps_mode="nearest-angle")
    gaps = torch.tensor([naive_budget(P_o, c, 1.0, "nearest-angle") for c in range(C)], dtype=torch.float64)
    assert torch.isfinite(delta).all()
    assert bool((delta.norm(dim=1) <= eps * gaps + 1e-6).all())


@settings(max_examples=30, deadline=None)
@given(proto_sets, st.sampled_from(["ndpp", "odpp"]))
def test_relative_budget_follows_excess_crowding(args, method):
    C, d, seed, eps = args
    P_o, P_n = random_protos(C, d, seed, noise=1.0)
    fn = ndpp if method == "ndpp" else lambda a, b, **kw: odpp(a, b, steps=8, **kw)
    k = min(3, C - 1)
    delta = fn(P_o, P_n, eps=eps, k=k, eps_mode="relative")
    room = torch.tensor([naive_budget(P_o, c, eps, "relative", P_n, k) for c in range(C)], dtype=torch.float64)
    assert torch.isfinite(delta).all()
    assert bool((delta.norm(dim=1) <= room + 1e-6).all()) and float(room.max()) <= eps + 1e-12
    # never more room than "absolute" gives, and the most excessively crowded class gets all of it
    excess = [naive_excess(P_o, P_n, c, k) for c in range(C)]
    if max(excess) > 0:
        assert float(room[int(np.argmax(excess))]) == pytest.approx(eps)


# Five classes in 3-d, k = 1 (each class's nearest old neighbour is unique):
#   0, 1: one collapsed old prototype (1, 0, 0); the new model places them at cosine 0.6.
#   2, 3: old cosine 0.8, new cosine 0.6.
#   4:    nearest old neighbour 3 (cosine 0.6); the new model keeps them at 0.8.
HAND_OLD = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0.8, 0.6], [0, 0, 1]]
HAND_NEW = [[1, 0, 0], [0.6, 0, 0.8], [0, 1, 0], [0, 0.6, 0.8], [0, 0, 1]]


def test_budgets_hand_computed():
    from bclviz.perturb import budgets, excess_crowding

    P_o, P_n = unit(HAND_OLD), unit(HAND_NEW)
    nbr = old_neighbors(P_o, 1)
    assert nbr[:, 0].tolist() == [1, 0, 3, 2, 3]
    # excess crowding max(0, S_o - S_n): 1 - 0.6 for the collapsed pair, 0.8 - 0.6, none for 4
    torch.testing.assert_close(excess_crowding(P_o, P_n, nbr), torch.tensor([0.4, 0.4, 0.2, 0.2, 0.0], dtype=torch.float64))
    # "relative": eps * excess / largest excess; the collapsed pair gets the largest budget, class 4 none
    rel = budgets(P_o, P_n, nbr, 0.5, "relative").squeeze(1)
    torch.testing.assert_close(rel, torch.tensor([0.5, 0.5, 0.25, 0.25, 0.0], dtype=torch.float64))
    assert int(rel.argmax()) in (0, 1) and float(rel[4]) == 0
    # "nearest-angle" (the former "relative"): no room at all for the collapsed pair
    angle = budgets(P_o, P_n, nbr, 0.5, "nearest-angle").squeeze(1)
    torch.testing.assert_close(angle, 0.5 * torch.tensor([0.0, 0.0, math.acos(0.8), math.acos(0.8), math.acos(0.6)],
                                                         dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(budgets(P_o, P_n, nbr, 0.5, "absolute").squeeze(1), torch.full((5,), 0.5, dtype=torch.float64))
    # nobody crowded in excess: no budget anywhere (and no division by zero)
    assert torch.count_nonzero(budgets(P_o, P_o, nbr, 0.5, "relative")) == 0
    with pytest.raises(ValueError, match=r"eps_mode must be one of .*got 'angle'"):
        budgets(P_o, P_n, nbr, 0.5, "angle")


def test_ndpp_relative_budgets_hand_computed():
    P_o, P_n = unit(HAND_OLD), unit(HAND_NEW)
    got = ndpp(P_o, P_n, eps=0.5, k=1, eps_mode="relative")
    want = torch.tensor([
        [0, 0, -0.5 * 0.4],        # budget 0.5, r = 0.4 * (new-space direction (0, 0, -1)); old ones coincide
        [0, 0, 0.5 * 0.4],
        [0, 0, -0.25 * 0.2],       # budget 0.25, r = 0.2 * (0, 0, -1): away from 3 in the tangent plane at (0, 1, 0)
        [0, -0.25 * 0.2 * 0.6, 0.25 * 0.2 * 0.8],  # away from 2 in the tangent plane at (0, 0.8, 0.6)
        [0, 0, 0],                 # no excess crowding, no budget
    ], dtype=torch.float64)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    # "absolute" moves class 2 twice as far; "nearest-angle" does not move the collapsed pair at all
    assert float(ndpp(P_o, P_n, eps=0.5, k=1)[2].norm()) == pytest.approx(0.5 * 0.2)
    assert float(ndpp(P_o, P_n, eps=0.5, k=1, eps_mode="nearest-angle")[:2].abs().max()) == 0
    # ODPP under the same budgets: the pair gets apart, class 4 stays put
    delta = odpp(P_o, P_n, eps=0.5, k=1, eps_mode="relative")
    assert float(delta[4].abs().max()) == 0 and float(delta[0].norm()) > 0.05
    assert bool((delta.norm(dim=1) <= torch.tensor([0.5, 0.5, 0.25, 0.25, 0.0], dtype=torch.float64) + 1e-9).all())


@pytest.mark.parametrize("fn", ["ndpp", "odpp"])
def test_blockwise_matches_one_block(monkeypatch, fn):
    """Row blocks must not change the result (no other test spans more than one block)."""
    from bclviz import perturb

    gen = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(6, 8, generator=gen, dtype=torch.float64), dim=1)
    p_o = F.normalize(centres[torch.arange(50) % 6] + 0.1 * torch.randn(50, 8, generator=gen, dtype=torch.float64), dim=1)
    p_n = F.normalize(p_o + 0.3 * torch.randn(50, 8, generator=gen, dtype=torch.float64), dim=1)
    one = getattr(perturb, fn)(p_o, p_n, eps=0.4)
    monkeypatch.setattr(perturb, "_BLOCK", 7)
    many = getattr(perturb, fn)(p_o, p_n, eps=0.4)
    torch.testing.assert_close(many, one, atol=1e-10, rtol=0)
