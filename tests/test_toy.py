import pytest
import torch

from bclviz.data import load_dataset
from bclviz.data.toy import make_toy


def test_shapes_and_split():
    d = make_toy(num_superclasses=4, siblings=3, coarse_dim=5, fine_dim=3, train_per_class=10, eval_per_class=4, seed=1)
    assert d.num_classes == 12 and d.num_old_classes == 6
    assert d.new_train.x.shape == (120, 8) and d.query.x.shape == (48, 8)
    assert int(d.old_train.y.max()) == 5 and len(d.old_train) == 60
    assert d.query_is_gallery and d.old_view.shape == (8, 8)


def test_deterministic_by_seed():
    a, b, c = make_toy(seed=4, train_per_class=5), make_toy(seed=4, train_per_class=5), make_toy(seed=5, train_per_class=5)
    assert torch.equal(a.new_train.x, b.new_train.x) and torch.equal(a.old_view, b.old_view)
    assert not torch.equal(a.new_train.x, c.new_train.x)


def test_old_view_attenuates_the_fine_subspace():
    d = make_toy(fine_visibility=0.0, train_per_class=5)
    # view = R diag(1..1, 0..0) R^T is a projection of rank coarse_dim
    eig = torch.linalg.eigvalsh(d.old_view.double())
    assert int((eig > 0.5).sum()) == 16 and int((eig.abs() < 1e-5).sum()) == 16


def test_siblings_crowd_in_the_old_view():
    d = make_toy(train_per_class=50, seed=0)
    y, x = d.new_train.y, d.new_train.x
    means = torch.stack([x[y == c].mean(0) for c in range(d.num_classes)])
    viewed = means @ d.old_view.T
    sib = d.info["siblings"]
    def sibling_gap(m):
        return float((m[0] - m[1]).norm() / (m[0] - m[sib]).norm())
    assert sibling_gap(viewed) < 0.6 * sibling_gap(means)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(siblings=0), "siblings must be a positive integer"),
        (dict(fine_visibility=1.5), r"fine_visibility must be in \[0, 1\]"),
        (dict(old_ratio=1.0), r"old_ratio must be in \(0, 1\)"),
        (dict(eval_per_class=1), "eval_per_class must be >= 2"),
        (dict(noise=float("nan")), "noise must be a finite number"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_toy(**kwargs)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
