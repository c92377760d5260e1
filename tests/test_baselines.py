"""Calibrated baselines: LCE's boundary rules and the baselines' own weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from bclviz.config import MethodConfig
from bclviz.losses import l2_loss, lce_boundaries
from bclviz.methods import CompatContext, create_method


def naive_boundaries(cos, labels, C, rule, outliers):
    theta = []
    for c in range(C):
        values = sorted(float(v) for v, y in zip(cos, labels) if int(y) == c)
        if not values:
            theta.append(-1.0)
        elif rule == "mean":
            theta.append(sum(values) / len(values))
        else:
            theta.append(values[math.floor(outliers * len(values))])
    return torch.tensor(theta, dtype=torch.float64)


def test_lce_boundaries_hand_computed():
    # class 0: ten cosines 0.05 (an outlier), 0.50, 0.55, ..., 0.90; class 1: 0.2, 0.4, 0.9; class 2: none
    cos0 = [0.05] + [0.5 + 0.05 * i for i in range(9)]
    cos = torch.tensor([0.9, 0.2] + cos0[::-1] + [0.4], dtype=torch.float64)
    labels = torch.tensor([1, 1] + [0] * 10 + [1])
    # official LCE: the plain minimum
    torch.testing.assert_close(lce_boundaries(cos, labels, 3, rule="min", outliers=0.0),
                               torch.tensor([0.05, 0.2, -1.0], dtype=torch.float64))
    # dropping 10% drops class 0's lowest (floor(0.1 * 10) = 1) and none of class 1's (floor(0.3) = 0)
    torch.testing.assert_close(lce_boundaries(cos, labels, 3, rule="min", outliers=0.1),
                               torch.tensor([0.5, 0.2, -1.0], dtype=torch.float64))
    # 40%: four of class 0 (0.05, 0.50, 0.55, 0.60), one of class 1 (0.2)
    torch.testing.assert_close(lce_boundaries(cos, labels, 3, rule="min", outliers=0.4),
                               torch.tensor([0.65, 0.4, -1.0], dtype=torch.float64))
    # bclviz's earlier boundary: the mean
    torch.testing.assert_close(lce_boundaries(cos, labels, 3, rule="mean"),
                               torch.tensor([(0.05 + sum(cos0[1:])) / 10, 0.5, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("rule, outliers", [("min", 0.0), ("min", 0.05), ("min", 0.3), ("mean", 0.05)])
def test_lce_boundaries_match_naive(rule, outliers):
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 7, (200,), generator=g)
    cos = torch.rand(200, generator=g, dtype=torch.float64) * 2 - 1
    got = lce_boundaries(cos, labels, 8, rule=rule, outliers=outliers)
    torch.testing.assert_close(got, naive_boundaries(cos, labels, 8, rule, outliers))


@pytest.mark.parametrize("kwargs, match", [
    (dict(rule="max"), "rule must be 'min' or 'mean', got 'max'"),
    (dict(outliers=1.0), r"outliers must be a fraction in \[0, 1\), got 1.0"),
    (dict(outliers=-0.1), r"outliers must be a fraction in \[0, 1\)"),
])
def test_lce_boundaries_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lce_boundaries(torch.zeros(3), torch.zeros(3, dtype=torch.int64), 2, **kwargs)


def test_lce_prepare_uses_the_configured_boundary():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    protos = F.normalize(torch.randn(4, 5, generator=g, dtype=torch.float64), dim=1)
    feats = F.normalize(protos[labels] + 0.5 * torch.randn(40, 5, generator=g, dtype=torch.float64), dim=1)
    cos = (feats * protos[labels]).sum(1)
    for rule, outliers in (("min", 0.05), ("min", 0.2), ("mean", 0.05)):
        cfg = MethodConfig(name="lce", lce_boundary=rule, lce_outliers=outliers)
        theta = create_method(cfg).prepare(feats, labels, protos)["theta"]
        torch.testing.assert_close(theta, naive_boundaries(cos, labels, 4, rule, outliers))
    # the default is LCE's minimum (after dropping 5% outliers), below the mean boundary
    default = create_method(MethodConfig(name="lce")).prepare(feats, labels, protos)["theta"]
    mean = create_method(MethodConfig(name="lce", lce_boundary="mean")).prepare(feats, labels, protos)["theta"]
    assert bool((default < mean).all())


def test_baseline_weights_scale_their_terms():
    g = torch.Generator().manual_seed(1)
    f_n = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    f_o = F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    P = F.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=1)
    W = torch.randn(3, 4, generator=g, dtype=torch.float64)
    ctx = CompatContext(P, P, P, W, {"theta": torch.full((3,), -1.0, dtype=torch.float64)})  # hinge inactive
    l2 = create_method(MethodConfig(name="l2", l2_weight=7.0)).loss(ctx, f_n, y, f_o)
    assert float(l2) == pytest.approx(7.0 * float(l2_loss(f_n, f_o)), rel=1e-12)
    align = float((1 - F.cosine_similarity(W[y], P[y], dim=1)).mean())
    lce = create_method(MethodConfig(name="lce", lce_align=2.5)).loss(ctx, f_n, y, f_o)
    assert float(lce) == pytest.approx(2.5 * align, rel=1e-12)


def test_earlier_settings_stay_reachable():
    m = MethodConfig(name="lce", lce_boundary="mean", lce_align=1.0)
    assert (m.lce_boundary, m.lce_align) == ("mean", 1.0)
    assert MethodConfig(name="l2", l2_weight=1.0).l2_weight == 1.0
    assert MethodConfig(eps_mode="nearest-angle").eps_mode == "nearest-angle"


@pytest.mark.parametrize("kwargs, match", [
    (dict(lce_boundary="median"), r"MethodConfig.lce_boundary must be one of \['min', 'mean'\], got 'median'"),
    (dict(lce_outliers=1.0), r"MethodConfig.lce_outliers must be in \[0, 1\), got 1.0"),
    (dict(lce_outliers=-0.5), "MethodConfig.lce_outliers must be a finite number >= 0"),
    (dict(l2_weight=-1.0), "MethodConfig.l2_weight must be a finite number >= 0"),
    (dict(l2_weight=float("inf")), "MethodConfig.l2_weight must be a finite number >= 0"),
    (dict(lce_align="high"), "MethodConfig.lce_align must be a finite number >= 0"),
    (dict(eps_mode="angle"), r"MethodConfig.eps_mode must be one of \['absolute', 'relative', 'nearest-angle'\], got 'angle'"),
])
def test_bad_method_config_values_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MethodConfig(**kwargs)
