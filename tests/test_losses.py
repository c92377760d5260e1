"""Each loss against a naive per-sample loop."""

import math

import pytest
import torch
import torch.nn.functional as F

from bclviz.losses import (
    hot_refresh_loss,
    influence_loss,
    l2_loss,
    lce_loss,
    margin_cross_entropy,
    prototype_alignment_loss,
)

B, C, D = 9, 5, 4


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    f_n = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1)
    f_o = F.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 1, 3])
    P = F.normalize(torch.randn(C, D, generator=g, dtype=torch.float64), dim=1)
    W = torch.randn(C, D, generator=g, dtype=torch.float64)
    return f_n, f_o, y, P, W


def naive_margin_ce(f, y, W, s, m, kind="cosface"):
    total = 0.0
    for i in range(len(y)):
        logits = []
        for c in range(W.shape[0]):
            cos = float(f[i] @ W[c] / W[c].norm())
            if c == int(y[i]):
                cos = cos - m if kind == "cosface" else math.cos(math.acos(cos) + m)
            logits.append(s * cos)
        mx = max(logits)
        total += -(logits[int(y[i])] - mx - math.log(sum(math.exp(v - mx) for v in logits)))
    return total / len(y)


@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_margin_cross_entropy(batch, kind):
    f_n, _, y, P, _ = batch
    got = margin_cross_entropy(f_n @ P.T, y, scale=30.0, margin=0.2, kind=kind)
    assert float(got) == pytest.approx(naive_margin_ce(f_n, y, P, 30.0, 0.2, kind), rel=1e-9)


def test_prototype_alignment_and_influence(batch):
    f_n, _, y, P, W = batch
    assert float(prototype_alignment_loss(f_n, y, P, scale=30, margin=0.2)) == pytest.approx(
        naive_margin_ce(f_n, y, P, 30, 0.2), rel=1e-9
    )
    assert float(influence_loss(f_n, y, W, scale=16, margin=0.1)) == pytest.approx(
        naive_margin_ce(f_n, y, W, 16, 0.1), rel=1e-9
    )


def test_prototype_alignment_has_no_gradient_into_prototypes(batch):
    f_n, _, y, P, _ = batch
    P = P.clone().requires_grad_(True)
    f = f_n.clone().requires_grad_(True)
    prototype_alignment_loss(f, y, P, scale=30, margin=0.2).backward()
    assert P.grad is None and f.grad is not None


def test_l2(batch):
    f_n, f_o, _, _, _ = batch
    want = sum(float(((f_n[i] - f_o[i]) ** 2).sum()) for i in range(B)) / B
    assert float(l2_loss(f_n, f_o)) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("align_weight", [1.0, 3.5])
def test_lce(batch, align_weight):
    f_n, _, y, P, W = batch
    theta = torch.linspace(0.2, 0.9, C, dtype=torch.float64)
    want = 0.0
    for i in range(B):
        c = int(y[i])
        want += max(0.0, float(theta[c]) - float(f_n[i] @ P[c]))
        want += align_weight * (1 - float(W[c] @ P[c] / (W[c].norm() * P[c].norm())))
    assert float(lce_loss(f_n, y, W, P, theta, align_weight=align_weight)) == pytest.approx(want / B, rel=1e-9)


def test_hot_refresh(batch):
    f_n, f_o, y, _, _ = batch
    tau = 0.05
    want = 0.0
    for i in range(B):
        pos = float(f_n[i] @ f_o[i]) / tau
        terms = [pos]
        for j in range(B):
            if int(y[j]) != int(y[i]):
                terms.append(float(f_n[i] @ f_o[j]) / tau)
                terms.append(float(f_n[i] @ f_n[j]) / tau)
        mx = max(terms)
        want += -(pos - mx - math.log(sum(math.exp(t - mx) for t in terms)))
    assert float(hot_refresh_loss(f_n, f_o, y, tau=tau)) == pytest.approx(want / B, rel=1e-9)


def test_unknown_head_kind(batch):
    f_n, _, y, P, _ = batch
    with pytest.raises(ValueError, match="'cosface' or 'arcface'"):
        margin_cross_entropy(f_n @ P.T, y, scale=1, margin=0, kind="sphereface")
