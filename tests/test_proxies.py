import numpy as np
import pytest
import torch

from bclviz.proxies import crowding, drift, format_headroom, headroom, recognisability


def test_crowding_hand_computed():
    P = torch.tensor([[1.0, 0.0], [np.cos(0.5), np.sin(0.5)], [-1.0, 0.0]])
    # row 0: max(cos .5, -1) ; row 1: max(cos .5, cos(pi-.5)) ; row 2: max(-1, -cos .5)
    expected = (np.cos(0.5) + np.cos(0.5) - np.cos(0.5)) / 3
    assert crowding(P) == pytest.approx(expected, abs=1e-6)


def test_drift_hand_computed():
    P = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    Q = torch.tensor([[np.cos(0.3), np.sin(0.3)], [0.0, 1.0]])
    assert drift(Q, P) == pytest.approx(0.15, abs=1e-6)
    with pytest.raises(ValueError, match="differ in size"):
        drift(Q[:1], P)


def test_recognisability_hand_computed():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1, 0])
    assert recognisability(feats, labels, protos) == pytest.approx(0.75)
    assert recognisability(feats, labels, protos, block=1) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="out of range"):
        recognisability(feats, torch.tensor([0, 1, 2, 0]), protos)


def _headroom_reference(p_o, p_n, k):
    """Naive loop: dense similarities, neighbours by sorting each row (self excluded)."""
    p_o = (p_o / np.linalg.norm(p_o, axis=1, keepdims=True)).astype(np.float64)
    p_n = (p_n / np.linalg.norm(p_n, axis=1, keepdims=True)).astype(np.float64)
    s_o, s_n = p_o @ p_o.T, p_n @ p_n.T
    total = 0.0
    for c in range(len(p_o)):
        others = [j for j in np.argsort(-s_o[c], kind="stable") if j != c][:k]
        for j in others:
            total += max(0.0, s_o[c, j] - s_n[c, j])
    return total / (len(p_o) * k)


def test_headroom_hand_computed_2d():
    # old space: classes 0 and 1 collapse (cosine 1); class 2 opposite. New space: 0 and 1
    # are orthogonal, class 2 stays put. Neighbours (k=1): 0<->1, 2 -> 0 or 1 (cosine -1 both).
    p_o = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    p_n = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # w[0,1] = w[1,0] = 1 - 0 = 1; class 2: S_o = -1, S_n in {-1, 0} -> 0
    assert headroom(p_o, p_n, k=1) == pytest.approx(2 / 3)
    # k=2: every class has both others; w[0,2]=0, w[1,2]=max(0,-1-0)=0, w[2,*]=0
    assert headroom(p_o, p_n, k=2) == pytest.approx(2 / 6)
    assert headroom(p_o, p_o, k=2) == 0.0  # identical spaces: nothing to undo
    # the new model crowds a pair the old one kept apart: max(0, .) gives no headroom
    assert headroom(torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), k=1) == 0.0
    assert headroom(3 * p_o, 0.5 * p_n, k=1) == pytest.approx(2 / 3)  # rows are normalised


@pytest.mark.parametrize("C,d,k", [(12, 5, 3), (40, 8, 5), (9, 3, 8)])
def test_headroom_matches_naive_loop(C, d, k):
    g = torch.Generator().manual_seed(C * 100 + k)
    p_o = torch.randn(C, d, generator=g, dtype=torch.float64)
    p_n = p_o + 0.7 * torch.randn(C, d, generator=g, dtype=torch.float64)
    want = _headroom_reference(p_o.numpy(), p_n.numpy(), k)
    assert headroom(p_o, p_n, k=k) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert headroom(p_o.numpy(), p_n.numpy(), k=k) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_headroom_blocks_do_not_change_the_value(monkeypatch):
    import bclviz.proxies as proxies

    g = torch.Generator().manual_seed(1)
    p_o, p_n = torch.randn(30, 4, generator=g), torch.randn(30, 4, generator=g)
    whole = headroom(p_o, p_n, k=4)
    monkeypatch.setattr(proxies, "_BLOCK", 7)
    assert headroom(p_o, p_n, k=4) == pytest.approx(whole, rel=1e-6)


def test_headroom_rejects_bad_inputs():
    p = torch.eye(3)
    with pytest.raises(ValueError, match="k must be smaller"):
        headroom(p, p, k=3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        headroom(p, p, k=0)
    with pytest.raises(ValueError, match="one row per class"):
        headroom(p, p[:2], k=1)
    with pytest.raises(ValueError, match="embedding dimension"):
        headroom(p, torch.eye(3, 2), k=1)
    with pytest.raises(ValueError, match="all-zero rows"):
        headroom(p, torch.zeros(3, 3), k=1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        headroom(p, torch.full((3, 3), float("nan")), k=1)
    with pytest.raises(ValueError, match="search must be"):
        headroom(p, p, k=1, search="fuzzy")


def test_format_headroom():
    assert format_headroom({"value": 0.0412, "k": 5, "crowding_old": 0.6, "crowding_new": 0.4}) == \
        "0.041 (k = 5; crowding old 0.600, new 0.400)"
    assert format_headroom({"value": 0.5, "k": 1}) == "0.500 (k = 1)"
    assert format_headroom(None) == "n/a (not computed)"
    assert format_headroom({"value": None, "reason": "one class"}) == "n/a (one class)"


# --- live proxies: candidate lists above EXACT_CLASSES, caches ----------------------


def _clustered(c=60, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(c // 3, d, generator=g), dim=1)
    p_o = torch.nn.functional.normalize(centres.repeat_interleave(3, 0) + 0.2 * torch.randn(c, d, generator=g), dim=1)
    p_n = torch.nn.functional.normalize(p_o + 0.3 * torch.randn(c, d, generator=g), dim=1)
    f = p_o.repeat_interleave(4, 0) + 0.4 * torch.randn(4 * c, d, generator=g)
    return p_o, p_n, f, torch.arange(c).repeat_interleave(4)


def test_candidate_proxies_bound_the_exact_ones_and_equal_them_with_every_class():
    from bclviz.perturb import old_neighbors

    p_o, p_n, f, y = _clustered()
    q = torch.nn.functional.normalize(p_o + 0.3 * (p_n - p_o), dim=1)
    c = p_o.shape[0]
    every = old_neighbors(p_o, c - 1)  # all other classes: the exact values
    assert crowding(q, candidates=every) == pytest.approx(crowding(q), abs=1e-6)
    few = every[:, :2]
    assert crowding(q, candidates=few) <= crowding(q) + 1e-6  # a lower bound
    all_protos = torch.arange(c).repeat(f.shape[0], 1)
    assert recognisability(f, y, q, candidates=all_protos) == pytest.approx(recognisability(f, y, q))
    near = (torch.nn.functional.normalize(f, dim=1) @ p_o.T).topk(2, dim=1).indices
    assert recognisability(f, y, q, candidates=near) >= recognisability(f, y, q)  # an upper bound
    with pytest.raises(ValueError, match="candidates must be an int64"):
        crowding(q, candidates=few[:5])
    with pytest.raises(ValueError, match="index the 60"):
        crowding(q, candidates=few + c)


def test_headroom_reuses_given_neighbour_lists():
    from bclviz.perturb import old_neighbors

    p_o, p_n, _, _ = _clustered()
    wide = old_neighbors(p_o, 10)
    assert headroom(p_o, p_n, k=4, neighbors=wide) == pytest.approx(headroom(p_o, p_n, k=4), abs=1e-12)


def test_live_proxies_are_exact_up_to_exact_classes_and_use_candidates_above(monkeypatch):
    import bclviz.proxies as proxies
    from bclviz.perturb import old_neighbors
    from bclviz.proxies import LiveProxies

    p_o, p_n, f, y = _clustered()
    q = torch.nn.functional.normalize(p_o + 0.2 * (p_n - p_o), dim=1)
    exact = LiveProxies(p_o, p_n, f, y)
    assert exact.exact
    assert exact.crowding(q) == crowding(q) and exact.recognisability(q) == recognisability(f, y, q)
    assert exact.crowding_old() == crowding(p_o)
    assert exact.headroom(3) == headroom(p_o, p_n, k=3)
    torch.testing.assert_close(exact.neighbors(3)[:, :3], old_neighbors(p_o, 3))

    live = LiveProxies(p_o, p_n, f, y, exact_classes=10, candidates=5)
    assert not live.exact
    assert live.crowding(q) == pytest.approx(crowding(q, candidates=old_neighbors(p_o, 5)), abs=1e-6)
    near = (torch.nn.functional.normalize(f, dim=1) @ p_o.T).topk(5, dim=1).indices
    assert live.recognisability(q) == pytest.approx(recognisability(f, y, q, candidates=near))
    # nothing C x C after the first call: searches and old crowding are cached
    live.crowding_old(), live.headroom(3)
    calls = []
    monkeypatch.setattr(proxies, "class_neighbors", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(proxies, "old_neighbors", lambda *a, **k: calls.append(1))
    for _ in range(3):
        live.crowding(q), live.recognisability(q), live.headroom(3), live.crowding_old()
    assert calls == []


def test_live_proxies_above_exact_classes_are_sample_estimates_of_a_naive_loop():
    from bclviz.perturb import old_neighbors
    from bclviz.proxies import LiveProxies

    p_o, p_n, f, y = _clustered()
    q = torch.nn.functional.normalize(p_o + 0.2 * (p_n - p_o), dim=1)
    live = LiveProxies(p_o, p_n, f, y, exact_classes=10, candidates=5, sample_classes=20, sample_features=50, seed=3)
    again = LiveProxies(p_o, p_n, f, y, exact_classes=10, candidates=5, sample_classes=20, sample_features=50, seed=3)
    assert torch.equal(live.class_sample, again.class_sample) and torch.equal(live.feature_sample, again.feature_sample)
    assert live.class_sample.unique().numel() == 20 and live.feature_sample.unique().numel() == 50
    cand = old_neighbors(p_o, 5)
    want = sum(max(float(q[c] @ q[j]) for j in cand[c].tolist() if j != c) for c in live.class_sample.tolist()) / 20
    assert live.crowding(q) == pytest.approx(want, abs=1e-6)
    fn = torch.nn.functional.normalize(f, dim=1)
    hits = 0
    for i in live.feature_sample.tolist():
        near = (fn[i] @ p_o.T).topk(5).indices.tolist()
        scores = {j: float(fn[i] @ q[j]) for j in set(near) | {int(y[i])}}
        best = max(scores.values())
        hits += min(j for j, v in scores.items() if v == best) == int(y[i])
    assert live.recognisability(q) == pytest.approx(hits / 50)
    # NDPP's direction is cached per (k, budget mode, search) and is bclviz.ndpp per unit eps
    from bclviz.perturb import ndpp

    d = live.ndpp_direction(3, "relative")
    assert live.ndpp_direction(3, "relative") is d
    assert torch.equal(0.7 * d, ndpp(p_o, p_n, eps=0.7, k=3, eps_mode="relative"))
    with pytest.raises(ValueError, match="sample_classes"):
        LiveProxies(p_o, p_n, sample_classes=0)
