"""Every registered method trains, stays finite and is deterministic (registry-driven)."""

import pytest
import torch

from bclviz.config import MethodConfig, TrainConfig
from bclviz.experiment import ModelSpec, build_new_model
from bclviz.methods import CompatMethod, create_method, list_methods, register_method
from bclviz.train import train_new

SPEC = ModelSpec(dim=8, options={"hidden": 16})
CFG = TrainConfig(epochs=3, batch_size=32, seed=5)


def test_registry_holds_the_spec_methods():
    assert set(list_methods()) >= {"independent", "l2", "bct", "proto", "lce", "hot_refresh", "ndpp", "odpp"}


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_method("ndpp")(type("X", (CompatMethod,), {}))


@pytest.mark.parametrize("name", list_methods())
def test_method_trains_and_is_deterministic(name, tiny_toy, tiny_old):
    def run():
        torch.manual_seed(1)
        model = build_new_model(tiny_toy, SPEC)
        return train_new(model, tiny_toy.new_train, tiny_old, num_classes=tiny_toy.num_classes,
                         cfg=CFG, method=MethodConfig(name=name, eps=0.3, k=2), progress=False)

    a, b = run(), run()
    assert len(a.history) == 3
    for rec in a.history:
        assert all(torch.isfinite(torch.tensor(v)) for v in rec.values())
    method = create_method(MethodConfig(name=name))
    if name == "independent":
        assert all(rec["loss_comp"] == 0 for rec in a.history)
    else:
        assert all(rec["loss_comp"] > 0 for rec in a.history)
    # perturbation: zero during warm-up (epoch 0), within budget afterwards
    assert a.history[0]["delta_norm_max"] == 0
    if method.perturbs:
        assert 0 < a.history[-1]["delta_norm_max"] <= 0.3 + 1e-6
    else:
        assert a.history[-1]["delta_norm_max"] == 0
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("search", ["exact", "ivf"])
def test_perturbing_methods_search_neighbours_once_as_configured(search, monkeypatch):
    import bclviz.methods as methods

    calls = []
    real = methods.old_neighbors

    def spy(protos, k, *, search):
        calls.append(search)
        return real(protos, k, search=search)

    monkeypatch.setattr(methods, "old_neighbors", spy)
    g = torch.Generator().manual_seed(0)
    p_o, p_n = torch.randn(12, 4, generator=g), torch.randn(12, 4, generator=g)
    for name in ("ndpp", "odpp"):
        method = create_method(MethodConfig(name=name, neighbor_search=search))
        first = method.perturb(p_o, p_n, None)
        assert torch.equal(method.perturb(p_o, p_n, None), first)
    assert calls == [search, search]  # once per method object, reused by the refresh


@pytest.mark.parametrize("mode", ["absolute", "relative", "nearest-angle"])
def test_perturbing_methods_use_the_configured_budget_mode(mode):
    from bclviz.perturb import ndpp, odpp

    g = torch.Generator().manual_seed(2)
    p_o, p_n = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    got = create_method(MethodConfig(name="ndpp", eps=0.5, k=3, eps_mode=mode)).perturb(p_o, p_n, None)
    torch.testing.assert_close(got, ndpp(p_o, p_n, eps=0.5, k=3, eps_mode=mode))
    got = create_method(MethodConfig(name="odpp", eps=0.5, k=3, eps_mode=mode)).perturb(p_o, p_n, None)
    torch.testing.assert_close(got, odpp(p_o, p_n, eps=0.5, k=3, eps_mode=mode))
    if mode != "absolute":
        assert not torch.equal(got, odpp(p_o, p_n, eps=0.5, k=3))
