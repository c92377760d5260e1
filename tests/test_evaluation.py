"""Tests for bclviz.evaluation: hand-computed rankings, a naive reference, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bclviz import evaluation
from bclviz.evaluation import (
    average_compatibility,
    compatibility_gain,
    compatibility_matrix,
    cross_model_table,
    evaluate,
    is_compatible,
    update_gain,
)


def circle(degrees, scale=None) -> np.ndarray:
    """Points on the unit circle (optionally rescaled, to check normalisation)."""
    rad = np.deg2rad(np.asarray(degrees, dtype=float))
    pts = np.stack([np.cos(rad), np.sin(rad)], axis=1)
    return pts if scale is None else pts * np.asarray(scale, dtype=float)[:, None]


def naive(q, ql, g, gl, *, k, recall_at, exclude_self):
    """Per-query reference: full argsort, explicit loop over ranks."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    aps, hits = [], {r: [] for r in recall_at}
    for i in range(len(q)):
        order = np.argsort(-(g @ q[i]), kind="stable")
        if exclude_self:
            order = order[order != i]
        n_rel = sum(1 for j in range(len(g)) if gl[j] == ql[i] and not (exclude_self and j == i))
        if n_rel == 0:
            continue
        found, total = 0, 0.0
        for rank, j in enumerate(order[:k], start=1):
            if gl[j] == ql[i]:
                found += 1
                total += found / rank
        aps.append(total / min(n_rel, k))
        for r in recall_at:
            hits[r].append(any(gl[j] == ql[i] for j in order[:r]))
    out = {f"mAP@{k}": float(np.mean(aps)) if aps else math.nan}
    out.update({f"R@{r}": float(np.mean(hits[r])) if aps else math.nan for r in recall_at})
    out["n_queries"] = len(aps)
    return out


def assert_same(got, want, tol=1e-6):
    assert got.keys() == want.keys()
    for key in want:
        if isinstance(want[key], float) and math.isnan(want[key]):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(want[key], abs=tol), key


# Queries at 0 degrees; gallery at 10..60 degrees, ranked in that order. Two gallery
# items are rescaled so that an unnormalised inner product would rank them differently.
GALLERY = circle([10, 20, 30, 40, 50, 60], scale=[0.1, 1, 1, 1, 1, 10])
GALLERY_LABELS = np.array([1, 0, 1, 1, 0, 0])
QUERY = circle([0, 0, 0], scale=[1, 2, 3])
QUERY_LABELS = np.array([1, 0, 7])  # label 7 has no gallery item: not scored


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_hand_computed_ap_and_recall(backend):
    # query 0 (label 1): relevance by rank 1,0,1,1,0,0 with R = 3
    # query 1 (label 0): relevance by rank 0,1,0,0,1,1 with R = 3
    args = (QUERY, QUERY_LABELS, GALLERY, GALLERY_LABELS)
    # k = 4 > R: divisor R = 3. q0: (1 + 2/3 + 3/4) / 3; q1: (1/2) / 3
    res = evaluate(*args, k=4, recall_at=(1, 2, 5), backend=backend)
    q0, q1 = (1 + 2 / 3 + 3 / 4) / 3, (1 / 2) / 3
    assert res["mAP@4"] == pytest.approx((q0 + q1) / 2)
    assert res["R@1"] == pytest.approx(0.5)
    assert res["R@2"] == pytest.approx(1.0)
    assert res["R@5"] == pytest.approx(1.0)
    assert res["n_queries"] == 2
    # k = 2 < R: divisor k = 2. q0: 1 / 2; q1: (1/2) / 2
    res = evaluate(*args, k=2, recall_at=(1,), backend=backend)
    assert res["mAP@2"] == pytest.approx((0.5 + 0.25) / 2)
    # k = 10 > gallery size: all 6 items ranked, divisor min(R, k) = 3.
    # q0 as for k = 4; q1: (1/2 + 2/5 + 3/6) / 3
    res = evaluate(*args, k=10, recall_at=(), backend=backend)
    q1 = (1 / 2 + 2 / 5 + 3 / 6) / 3
    assert res == {"mAP@10": pytest.approx((q0 + q1) / 2), "n_queries": 2}


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exclude_self_hand_computed(backend):
    # Image i is both query i and gallery item i.
    x = circle([0, 5, 90, 200])
    y = np.array([0, 1, 0, 1])
    # Without exclusion every query finds itself first.
    assert evaluate(x, y, x, y, k=3, backend=backend)["R@1"] == 1.0
    # With it: q0 ranks 1,2,3 -> rel 0,1,0 (R=1); q1 ranks 0,2,3 -> rel 0,0,1 (R=1);
    # q2 ranks 1,0,3 -> rel 0,1,0; q3 ranks 2,0,1 -> rel 0,0,1.
    res = evaluate(x, y, x, y, k=3, exclude_self=True, recall_at=(1, 2, 3), backend=backend)
    assert res["mAP@3"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2 + 1 / 3) / 4)
    assert (res["R@1"], res["R@2"], res["R@3"]) == (0.0, 0.5, 1.0)
    assert res["n_queries"] == 4


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exclude_self_across_models_drops_by_index(backend):
    # Queries from model A, gallery from model B, same images 0, 1, 2 with labels 0, 0, 1.
    # Query 0's own image (gallery 0 at 180 degrees) is ranked last, outside the top k.
    labels = np.array([0, 0, 1])
    q = circle([0, 100, 250])
    g = circle([180, 0, 30])
    res = evaluate(q, labels, g, labels, k=2, exclude_self=True, recall_at=(1,), backend=backend)
    # q0: ranking g1, g2, (g0) -> rel 1, 0 and R = 1 (g0 is itself) -> AP 1, hit at 1
    #     (counting g0 in R would give AP 1/2)
    # q1: ranking g2, g0, (g1) -> rel 0, 1 and R = 1 -> AP 1/2, no hit at 1
    # q2: label 1 has no gallery item besides itself -> not scored
    assert res == {"mAP@2": pytest.approx(0.75), "R@1": 0.5, "n_queries": 2}
    assert_same(res, naive(q, labels, g, labels, k=2, recall_at=(1,), exclude_self=True))


def test_drop_self_by_index_or_last_column():
    idx = np.array([[0, 4, 2], [3, 2, 1], [5, 6, 7], [8, 3, 9]])
    np.testing.assert_array_equal(evaluation._drop_self(idx), [[4, 2], [3, 2], [5, 6], [8, 9]])


def test_no_scored_queries_gives_nan():
    res = evaluate(QUERY[2:], QUERY_LABELS[2:], GALLERY, GALLERY_LABELS, k=3, recall_at=(1,))
    assert res["n_queries"] == 0
    assert math.isnan(res["mAP@3"]) and math.isnan(res["R@1"])


def random_problem(seed, n_q=40, n_g=120, d=16, n_classes=6, same_images=False):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n_g, d)) * rng.uniform(0.5, 2.0, (n_g, 1))
    gl = rng.integers(0, n_classes, n_g)
    if same_images:
        q = g + 0.3 * rng.standard_normal(g.shape)  # another model's view of the same images
        return q, gl.copy(), g, gl
    return rng.standard_normal((n_q, d)), rng.integers(0, n_classes + 1, n_q), g, gl


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_backends_match_naive_reference(seed, exclude_self, monkeypatch):
    q, ql, g, gl = random_problem(seed, same_images=exclude_self)
    opts = dict(k=15, recall_at=(1, 5, 20), exclude_self=exclude_self)
    want = naive(q, ql, g, gl, **opts)
    assert want["n_queries"] > 0
    assert_same(evaluate(q, ql, g, gl, backend="faiss", **opts), want)
    monkeypatch.setattr(evaluation, "_TORCH_BLOCK_ELEMENTS", 7 * len(g))  # several chunks
    assert_same(evaluate(q, ql, g, gl, backend="torch", **opts), want)
    # self-test on one set of images (query i is gallery i)
    want = naive(g, gl, g, gl, **opts)
    assert_same(evaluate(g, gl, g, gl, backend="torch", **opts), want)
    assert_same(evaluate(g, gl, g, gl, backend="faiss", **opts), want)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exclude_self_when_self_is_far_down_the_ranking(backend):
    # Unrelated query embeddings: image i's gallery copy is mostly outside the top k + 1.
    q, ql, g, gl = random_problem(7, n_g=80, same_images=True)
    q = np.random.default_rng(8).standard_normal(q.shape)
    opts = dict(k=5, recall_at=(1, 3), exclude_self=True)
    assert_same(evaluate(q, ql, g, gl, backend=backend, **opts), naive(q, ql, g, gl, **opts))


def test_k_larger_than_gallery_and_recall_beyond_k():
    q, ql, g, gl = random_problem(5, n_g=30, same_images=True)
    for opts in (dict(k=50, recall_at=(1, 40)), dict(k=3, recall_at=(10,))):
        for exclude_self in (False, True):
            want = naive(q, ql, g, gl, exclude_self=exclude_self, **opts)
            assert_same(evaluate(q, ql, g, gl, exclude_self=exclude_self, **opts), want)


def test_torch_and_numpy_inputs_and_large_label_ids_agree():
    q, ql, g, gl = random_problem(3)
    base = evaluate(q, ql, g, gl, k=10)
    tq, tg = torch.from_numpy(q).float(), torch.from_numpy(g)
    as_torch = evaluate(tq, torch.from_numpy(ql), tg, torch.from_numpy(gl), k=10)
    assert_same(as_torch, base)
    # sparse huge ids take the np.unique path; the metric only depends on label equality
    big = evaluate(q, ql * 1_000_003 + 200_000, g, gl * 1_000_003 + 200_000, k=10)
    assert_same(big, base)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_g=st.integers(2, 40),
    n_classes=st.integers(1, 5),
    k=st.integers(1, 12),
    exclude_self=st.booleans(),
)
def test_property_bounds_and_gallery_permutation(seed, n_g, n_classes, k, exclude_self):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n_g, 3))
    gl = rng.integers(0, n_classes, n_g)
    if exclude_self:
        q, ql = g + 0.1 * rng.standard_normal(g.shape), gl
    else:
        q, ql = rng.standard_normal((7, 3)), rng.integers(0, n_classes, 7)
    res = evaluate(q, ql, g, gl, k=k, exclude_self=exclude_self)
    assert 0 <= res["n_queries"] <= len(q)
    if res["n_queries"]:
        assert all(0.0 <= v <= 1.0 for key, v in res.items() if key != "n_queries")
        assert res["R@1"] <= res["R@5"] <= res["R@10"]
    perm = rng.permutation(n_g)
    if exclude_self:  # the same images on both sides: permute both the same way
        q, ql = q[perm], ql[perm]
    assert_same(evaluate(q, ql, g[perm], gl[perm], k=k, exclude_self=exclude_self), res)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_classes=st.integers(1, 6), per_class=st.integers(2, 6))
def test_property_perfect_separation_scores_one(seed, n_classes, per_class):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    centres = np.eye(8)[:n_classes]
    x = centres[labels] + 0.01 * rng.standard_normal((len(labels), 8))
    k = int(rng.integers(1, 2 * per_class + 1))
    res = evaluate(x, labels, x, labels, k=k, exclude_self=True)
    assert res[f"mAP@{k}"] == pytest.approx(1.0)
    assert res["R@1"] == res["R@5"] == 1.0
    assert res["n_queries"] == len(labels)


def three_models(seed=0):
    rng = np.random.default_rng(seed)
    base_q, base_g = rng.standard_normal((30, 8)), rng.standard_normal((60, 8))
    qs = [base_q + 0.5 * t * rng.standard_normal(base_q.shape) for t in range(3)]
    gs = [base_g + 0.5 * t * rng.standard_normal(base_g.shape) for t in range(3)]
    return qs, gs, rng.integers(0, 4, 30), rng.integers(0, 4, 60)


def test_compatibility_matrix_shape_nan_and_entries():
    qs, gs, ql, gl = three_models()
    m = compatibility_matrix(qs, gs, ql, gl, k=10)
    assert m.shape == (3, 3)
    assert np.isnan(m[np.triu_indices(3, k=1)]).all()
    assert np.isfinite(m[np.tril_indices(3)]).all()
    for t in range(3):
        assert m[t, t] == pytest.approx(evaluate(qs[t], ql, gs[t], gl, k=10)["mAP@10"])
    assert m[2, 0] == pytest.approx(evaluate(qs[2], ql, gs[0], gl, k=10)["mAP@10"])
    r1 = compatibility_matrix(qs, gs, ql, gl, k=10, metric="R@1", backend="torch")
    assert r1[1, 0] == pytest.approx(evaluate(qs[1], ql, gs[0], gl, k=10)["R@1"])


def test_compatibility_matrix_errors():
    qs, gs, ql, gl = three_models()
    with pytest.raises(ValueError, match=r"metric must be one of .*'R@1'.*got 'R@3'"):
        compatibility_matrix(qs, gs, ql, gl, k=10, metric="R@3")
    with pytest.raises(ValueError, match="same models"):
        compatibility_matrix(qs, gs[:2], ql, gl)
    with pytest.raises(ValueError, match=r"query_features\[2\] has dimension 5"):
        compatibility_matrix([qs[0], qs[1], qs[2][:, :5]], gs, ql, gl)


def test_average_compatibility_hand_matrix():
    nan = math.nan
    m = [[0.5, nan, nan], [0.6, 0.7, nan], [0.5, 0.8, 0.9]]
    # (1,0): 0.6 > 0.5 yes; (2,0): 0.5 > 0.5 no (strict); (2,1): 0.8 > 0.7 yes
    assert average_compatibility(m) == pytest.approx(2 / 3)
    assert average_compatibility([[0.5, nan], [0.4, 0.9]]) == 0.0
    with pytest.raises(ValueError, match="T >= 2"):
        average_compatibility([[0.5]])
    with pytest.raises(ValueError, match="NaN"):
        average_compatibility([[0.5, nan], [nan, 0.9]])


def test_gains_and_strict_compatibility():
    assert update_gain(0.8, 0.6, 0.9) == pytest.approx(2 / 3)
    assert update_gain(0.5, 0.6, 0.9) == pytest.approx(-1 / 3)
    assert math.isnan(update_gain(0.8, 0.6, 0.6))
    assert compatibility_gain(0.66, 0.6) == pytest.approx(0.1)
    assert math.isnan(compatibility_gain(0.3, 0.0))
    assert is_compatible(0.61, 0.6) is True
    assert is_compatible(0.6, 0.6) is False
    assert is_compatible(0.59, 0.6) is False


def test_cross_model_table():
    qs, gs, ql, gl = three_models()
    feats = {"old": (qs[0], gs[0]), "new": (qs[1], gs[1])}
    pairs = [("new", "new"), ("new", "old"), ("old", "old")]
    table = cross_model_table(feats, ql, gl, pairs=pairs, k=10)
    assert list(table) == ["new->new", "new->old", "old->old"]
    assert_same(table["new->old"], evaluate(qs[1], ql, gs[0], gl, k=10))
    assert_same(table["old->old"], evaluate(qs[0], ql, gs[0], gl, k=10))
    with pytest.raises(ValueError, match=r"'ind'.*\['new', 'old'\]"):
        cross_model_table(feats, ql, gl, pairs=[("ind", "ind")])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(gallery=np.ones((4, 3))), ValueError, "query has dimension 2 but gallery has dim"),
        (dict(query_labels=np.zeros(3, dtype=int)), ValueError, "query_labels has 3 labels"),
        (dict(gallery_labels=np.zeros(5, dtype=int)), ValueError, "gallery_labels has 5 labels"),
        (dict(query=np.array([[0.0, np.nan], [1, 0]])), ValueError, "NaN or Inf"),
        (dict(gallery=np.full((4, 2), np.inf)), ValueError, "NaN or Inf"),
        (dict(query=np.zeros((0, 2))), ValueError, "at least 1 row"),
        (dict(k=0), ValueError, "k must be a positive integer, got 0"),
        (dict(k=2.5), ValueError, "k must be a positive integer"),
        (dict(recall_at=(1, 0)), ValueError, r"recall_at\[1\] must be a positive integer"),
        (dict(recall_at=5), ValueError, "recall_at must be a sequence"),
        (dict(backend="annoy"), ValueError, r"backend must be one of \('faiss', 'torch'\)"),
        (dict(exclude_self=True), ValueError, "exclude_self=True .* got 2 and 4"),
    ],
)
def test_bad_inputs(kwargs, error, match):
    args = dict(query=np.eye(2), query_labels=np.array([0, 1]))
    args.update(gallery=np.ones((4, 2)), gallery_labels=np.array([0, 1, 1, 0]))
    args.update(kwargs)
    data = [args.pop(name) for name in ("query", "query_labels", "gallery", "gallery_labels")]
    with pytest.raises(error, match=match):
        evaluate(*data, **args)
