"""Tests for bclviz.models: every registered model is exercised through list_models()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bclviz.models import (
    MLPEmbedder,
    ResNetEmbedder,
    SmallCNN,
    create_model,
    list_models,
    register_model,
)

DIM = 16
# One small input shape per model; a model registered later falls back to DEFAULT_SHAPE.
SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 8, 8), "resnet18": (1, 16, 16), "resnet50": (3, 8, 8)}
DEFAULT_SHAPE = (1, 8, 8)
HEAVY = {"resnet50"}  # only a forward pass: too slow to build twice on a shared CPU


def _shape(name: str) -> tuple[int, ...]:
    return SHAPES.get(name, DEFAULT_SHAPE)


def _build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, input_shape=_shape(name), dim=DIM)


def _batch(shape: tuple[int, ...], n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_registry_lists_the_builtin_models():
    assert {"mlp", "cnn", "resnet18", "resnet50"} <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", list_models())
def test_output_shape_and_unit_norm(name):
    model = _build(name).eval()
    with torch.no_grad():
        out = model(_batch(_shape(name)))
    assert model.dim == DIM
    assert out.shape == (2, DIM) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("name", [n for n in list_models() if n not in HEAVY])
def test_gradients_reach_every_parameter(name):
    model = _build(name).train()
    target = torch.randn(DIM, generator=torch.Generator().manual_seed(1))
    (model(_batch(_shape(name), n=4)) @ target).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize("name", [n for n in list_models() if n not in HEAVY])
def test_same_seed_same_weights(name):
    a, b, c = _build(name, seed=0), _build(name, seed=0), _build(name, seed=1)
    for (key, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(),
                                 c.state_dict().values()):
        assert torch.equal(pa, pb), key
    assert any(not torch.equal(pa, pc) for pa, pc in
               zip(a.state_dict().values(), c.state_dict().values()))
    x = _batch(_shape(name))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("size", [8, 28])
def test_cnn_handles_digits_and_fashion_sizes(size):
    torch.manual_seed(0)
    narrow = create_model("cnn", input_shape=(1, size, size), dim=DIM, width=8)
    wide = create_model("cnn", input_shape=(1, size, size), dim=DIM, width=16)
    assert isinstance(narrow, SmallCNN)
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in narrow.parameters())
    with torch.no_grad():
        out = narrow.eval()(_batch((1, size, size), n=3))
    assert out.shape == (3, DIM)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_resnet18_small_inputs(shape):
    torch.manual_seed(0)
    model = create_model("resnet18", input_shape=shape, dim=DIM)
    assert isinstance(model, ResNetEmbedder) and model.small_input
    assert model.net.conv1.in_channels == shape[0] and model.net.conv1.kernel_size == (3, 3)
    assert model.net.conv1.stride == (1, 1) and isinstance(model.net.maxpool, nn.Identity)
    with torch.no_grad():
        out = model.eval()(_batch(shape))
    assert out.shape == (2, DIM)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_resnet_imagenet_stem_for_large_inputs():
    torch.manual_seed(0)
    model = ResNetEmbedder("resnet18", DIM, in_channels=1, input_size=64)
    assert not model.small_input
    assert model.net.conv1.kernel_size == (7, 7) and model.net.conv1.in_channels == 1
    assert isinstance(model.net.maxpool, nn.MaxPool2d)
    assert ResNetEmbedder("resnet18", DIM, small_input=True).small_input


def test_mlp_flattens_and_sizes_layers():
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=(1, 8, 8), dim=DIM, hidden=32, depth=3)
    assert isinstance(model, MLPEmbedder) and model.in_dim == 64
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 4
    out = model(torch.rand(5, 64))
    assert out.shape == (5, DIM)
    with pytest.raises(ValueError, match="expected 64 input features per row, got 10"):
        model(torch.rand(5, 10))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: create_model("vit", input_shape=(1, 8, 8), dim=4),
         r"unknown model 'vit'; choose one of \['cnn', 'mlp', 'resnet18', 'resnet50'"),
        (lambda: create_model("cnn", input_shape=(64,), dim=4), r"needs input_shape \(channels"),
        (lambda: create_model("mlp", input_shape=(0, 8), dim=4), "input_shape"),
        (lambda: create_model("mlp", input_shape=(8,), dim=0), "dim must be a positive integer"),
        (lambda: SmallCNN(1, 8, width=-2), "width"),
        (lambda: ResNetEmbedder("resnet34", 8), r"arch must be one of \('resnet18', 'resnet50'\)"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_register_model_rejects_duplicates_and_adds_names():
    with pytest.raises(ValueError, match="already registered"):
        register_model("mlp")(lambda **kw: None)
