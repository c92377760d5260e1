import pytest
import torch
import torch.nn.functional as F

from bclviz.config import MethodConfig, TrainConfig
from bclviz.data.base import Labeled
from bclviz.experiment import ModelSpec, build_new_model
from bclviz.train import _ema_update, class_prototypes, embed, train_new


def test_class_prototypes_against_loop():
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(20, 3, generator=g), dim=1)
    y = torch.tensor([i % 4 for i in range(20)])
    got = class_prototypes(f, y, 4)
    for c in range(4):
        mean = f[y == c].mean(0)
        torch.testing.assert_close(got[c], mean / mean.norm())


def test_class_prototypes_empty_class_named():
    f = torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no training samples"):
        class_prototypes(f, torch.tensor([0, 0, 2]), 3)


def test_ema_update_against_formula():
    P = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    f = F.normalize(torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]]), dim=1)
    y = torch.tensor([0, 0, 1])
    got = P.clone()
    _ema_update(got, f, y, 0.9)
    want0 = 0.9 * P[0] + 0.1 * torch.tensor([0.0, 1.0])
    want1 = 0.9 * P[1] + 0.1 * torch.tensor([1.0, 0.0])
    torch.testing.assert_close(got[0], want0 / want0.norm())
    torch.testing.assert_close(got[1], want1 / want1.norm())
    torch.testing.assert_close(got[2], P[2])  # absent from the batch: unchanged


def test_refresh_every_n_steps_and_warmup(tiny_toy, tiny_old):
    torch.manual_seed(0)
    model = build_new_model(tiny_toy, ModelSpec(dim=8, options={"hidden": 16}))
    calls = []
    res = train_new(model, tiny_toy.new_train, tiny_old, num_classes=tiny_toy.num_classes,
                    cfg=TrainConfig(epochs=3, batch_size=60), progress=False,
                    method=MethodConfig(name="ndpp", eps=0.2, k=2, warmup_epochs=2, update_every=1),
                    callback=calls.append)
    assert [r["epoch"] for r in calls] == [0, 1, 2]
    assert calls[0]["delta_norm_max"] == calls[1]["delta_norm_max"] == 0
    assert calls[2]["delta_norm_max"] > 0
    torch.testing.assert_close(res.state["pseudo_old"], F.normalize(res.state["old_protos"] + res.state["delta"], dim=1))


def test_max_steps_caps_training(tiny_toy, tiny_old):
    torch.manual_seed(0)
    model = build_new_model(tiny_toy, ModelSpec(dim=8, options={"hidden": 16}))
    res = train_new(model, tiny_toy.new_train, tiny_old, num_classes=tiny_toy.num_classes,
                    cfg=TrainConfig(epochs=5, batch_size=60, max_steps=4), method="proto", progress=False)
    assert sum(r["steps"] for r in res.history) == 4


def test_dimension_mismatch_refused(tiny_toy, tiny_old):
    model = build_new_model(tiny_toy, ModelSpec(dim=4, options={"hidden": 16}))
    with pytest.raises(ValueError, match="embedding dimensions differ"):
        train_new(model, tiny_toy.new_train, tiny_old, num_classes=tiny_toy.num_classes, progress=False)


def test_bad_training_labels(tiny_toy, tiny_old):
    model = build_new_model(tiny_toy, ModelSpec(dim=8, options={"hidden": 16}))
    data = tiny_toy.new_train
    bad = Labeled(data.x, data.y + 10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        train_new(model, bad, tiny_old, num_classes=tiny_toy.num_classes, progress=False)
    nan = data.x.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        train_new(model, Labeled(nan, data.y), tiny_old, num_classes=tiny_toy.num_classes, progress=False)


def test_embed_is_normalised_and_batched(tiny_toy, tiny_old):
    a = embed(tiny_old.model, tiny_toy.query.x, batch_size=7)
    b = embed(tiny_old.model, tiny_toy.query.x)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(a.shape[0]))


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (TrainConfig, dict(epochs=0), "epochs must be a positive integer"),
        (TrainConfig, dict(lr=-1.0), "lr must be a finite number >= 0"),
        (TrainConfig, dict(head="softmax"), "head must be one of"),
        (MethodConfig, dict(name="nope"), "name must be one of"),
        (MethodConfig, dict(eps=-0.1), "eps must be a finite number >= 0"),
        (MethodConfig, dict(ema_momentum=1.0), r"ema_momentum must be in \[0, 1\)"),
        (MethodConfig, dict(new_prototypes="mean"), "new_prototypes must be one of"),
    ],
)
def test_config_validation(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
