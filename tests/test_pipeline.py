"""The one pipeline: run configs that refuse to resume silently, relevance and headline
metrics in every caller, registries that answer for themselves, no global seeding, one
cache root. Each test here failed before the pipeline was unified."""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import bclviz.train as train_module
from bclviz.cli import main
from bclviz.config import MethodConfig, ModelSpec, TrainConfig, default_experiment, run_config
from bclviz.data import load_dataset
from bclviz.experiment import run_experiment
from bclviz.methods import CompatMethod, method_class, perturbing_methods, register_method
from bclviz.pipeline import build_new_model, train_new_model, train_old_model
from bclviz.runconfig import save_run_config
from bclviz.runner import UnfinishedRun, checkpoint_paths, extract_features, load_trained, run_training
from bclviz.sequential import run_sequence
from bclviz.sweep import run_sweep, sweep_grid

from test_full_runs import make_gldv2, make_inshop

TINY = dict(num_superclasses=3, siblings=2, coarse_dim=4, fine_dim=4, train_per_class=32, eval_per_class=6)
TINY_SPEC = ModelSpec(dim=8, options={"hidden": 16})


def tiny_run(tmp_path, epochs=3):
    return run_config(dataset="toy", seed=1, data_options=TINY, old_model=TINY_SPEC, new_model=TINY_SPEC,
                      old_train=TrainConfig(epochs=2, batch_size=32), new_train=TrainConfig(epochs=epochs, batch_size=32),
                      method=MethodConfig(name="ndpp", eps=0.3, k=2), output_dir=str(tmp_path / "run"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------- unfinished runs are refused
@pytest.fixture()
def interrupted(tmp_path):
    """A toy run stopped after epoch 1 of 3 of the new model (checkpoints on disk)."""
    run_cfg = tiny_run(tmp_path)
    data = load_dataset("toy", seed=run_cfg.seed, **run_cfg.data_options)
    old_ck, new_ck = checkpoint_paths(run_cfg)
    old = train_old_model(run_cfg, data, progress=False, checkpoint=old_ck)

    def stop(record):
        raise KeyboardInterrupt("stopped after the first epoch")

    with pytest.raises(KeyboardInterrupt):
        train_new_model(run_cfg, data, old, run_cfg.method, progress=False, callback=stop, checkpoint=new_ck)
    path = save_run_config(tmp_path / "run.yaml", run_cfg)
    return run_cfg, path, {p: digest(p) for p in (old_ck, new_ck)}


@pytest.mark.parametrize("command", ["evaluate", "extract"])
def test_evaluate_and_extract_refuse_an_unfinished_run(interrupted, command, capsys):
    run_cfg, path, before = interrupted
    assert main([command, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unfinished" in err and "epoch 1 of 3" in err and f"bclviz train --config {path}" in err
    assert {p: digest(p) for p in before} == before  # nothing trained, nothing rewritten


def test_load_trained_refuses_and_training_finishes_the_run(interrupted):
    run_cfg, _, before = interrupted
    with pytest.raises(UnfinishedRun, match="last finished epoch: 1"):
        load_trained(run_cfg)
    with pytest.raises(UnfinishedRun, match="epoch 1 of 3"):
        extract_features(run_cfg)
    metrics = run_training(run_cfg, progress=False)  # `bclviz train` resumes and finishes it
    old, new = load_trained(run_cfg)
    assert len(new.history) == 3 and metrics["headline"] == "mAP@100"


def test_a_missing_run_is_named(tmp_path):
    with pytest.raises(UnfinishedRun, match="does not exist; train the run first"):
        load_trained(tiny_run(tmp_path))


# --------------------------------------------------------------------- relevance and headline everywhere
IMAGE_SPEC = ModelSpec("cnn", 16, {"width": 4})


def image_experiment(dataset, root, **fields):
    return default_experiment("toy", seed=0).__class__(
        dataset=dataset, data_options={"root": str(root), "image_size": 16}, old_model=IMAGE_SPEC, new_model=IMAGE_SPEC,
        old_train=TrainConfig(epochs=1, batch_size=8), new_train=TrainConfig(epochs=1, batch_size=8), **fields)


@pytest.fixture(scope="module")
def benchmark_data(tmp_path_factory):
    gld = image_experiment("gldv2", make_gldv2(tmp_path_factory.mktemp("gld")),
                           methods=(MethodConfig(name="proto"), MethodConfig(name="ndpp", k=2, warmup_epochs=0)))
    inshop = image_experiment("inshop", make_inshop(tmp_path_factory.mktemp("inshop")),
                              methods=(MethodConfig(name="proto"),))
    return {"gldv2": gld, "inshop": inshop}


@pytest.mark.parametrize("dataset, headline", [("gldv2", "mAP@100"), ("inshop", "R@1")])
def test_experiment_and_sweep_score_relevance_and_headline(benchmark_data, dataset, headline):
    cfg = benchmark_data[dataset]
    result = run_experiment(cfg, progress=False)  # used to reject GLDv2's label -1
    res = result.results
    assert res["headline"] == headline
    m_oo = res["old"]["self"][headline]
    for rec in res["methods"].values():
        assert rec["compatible"] == (rec["cross"][headline] > m_oo)
        assert all(0 <= rec[side][headline] <= 1 for side in ("self", "cross"))
    records = run_sweep(result.data, result.old, cfg, [MethodConfig(name="proto")], cache_dir=None, progress=False)
    assert records[0]["self"] == res["methods"]["proto"]["self"]  # same seed, same numbers
    assert records[0]["compatible"] == (records[0]["cross"][headline] > m_oo)  # judged on the headline
    seq = run_sequence(result.data, dataclasses.replace(cfg, old_train=TrainConfig(epochs=1, batch_size=8)),
                       MethodConfig(name="proto"), fractions=(0.5, 1.0), progress=False)
    assert np.isfinite(seq.matrix[np.tril_indices(2)]).all()


# --------------------------------------------------------------------- registries answer for themselves
def test_a_new_perturbing_method_is_picked_up_everywhere():
    from bclviz.findings import findings_grid
    from bclviz.views import preferred_method
    from bclviz.widgets.explorer import default_k, explorer_state

    @register_method("halfway")
    class Halfway(CompatMethod):
        """Moves every old prototype half way towards its new prototype (within eps)."""
        perturbs, default_k, knobs = True, 3, ("eps",)

        def loss(self, ctx, f_new, y, f_old):
            return method_class("proto").loss(self, ctx, f_new, y, f_old)

        def perturb(self, old_protos, new_protos, previous):
            step = (new_protos - old_protos) / 2
            return step * (self.cfg.eps / step.norm(dim=1, keepdim=True).clamp_min(self.cfg.eps))

    try:
        assert "halfway" in perturbing_methods()
        assert [m.name for m in sweep_grid(["halfway"], eps=(0.1,), baselines=())] == ["halfway"]
        assert any(m.name == "halfway" for m in findings_grid(eps=(0.2,)))
        assert default_k("halfway") == 3 and preferred_method(["proto", "halfway"]) == "halfway"
        p_o = torch.nn.functional.normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), dim=1)
        p_n = torch.nn.functional.normalize(p_o + 0.3, dim=1)
        s = explorer_state(p_o, p_n, method="halfway", eps=0.05, k=3)
        torch.testing.assert_close(s["delta"], Halfway(MethodConfig(name="halfway", eps=0.05)).perturb(p_o, p_n, None))
    finally:
        import bclviz.methods as methods_module

        methods_module._REGISTRY.pop("halfway")


def test_lce_embeds_the_training_set_once(tiny_toy, tiny_old, monkeypatch):
    calls = []
    real = train_module.embed

    def counting(model, x, **kw):
        calls.append(x.shape[0])
        return real(model, x, **kw)

    monkeypatch.setattr(train_module, "embed", counting)
    model = build_new_model(tiny_toy, ModelSpec(dim=8, options={"hidden": 16}), seed=0)
    train_module.train_new(model, tiny_toy.new_train, tiny_old, num_classes=tiny_toy.num_classes,
                           cfg=TrainConfig(epochs=1, max_steps=1), method="lce", progress=False)
    assert calls == [len(tiny_toy.new_train)]  # it used to embed the training set twice


# --------------------------------------------------------------------- randomness passed, not global
def test_library_code_leaves_the_global_generator_alone(tmp_path):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    cfg = default_experiment("toy", data_options=TINY, old_model=TINY_SPEC, new_model=TINY_SPEC,
                             old_train=TrainConfig(epochs=1), new_train=TrainConfig(epochs=1),
                             methods=(MethodConfig(name="proto"),))
    first = run_experiment(cfg, progress=False).results
    run_training(tiny_run(tmp_path, epochs=1), progress=False)
    data = load_dataset("toy", seed=0, **TINY)
    run_sequence(data, cfg, MethodConfig(name="proto"), fractions=(0.5, 1.0), progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)  # another global state: the same numbers
    again = run_experiment(cfg, progress=False).results
    assert again["methods"]["proto"]["self"] == first["methods"]["proto"]["self"]
    assert again["old"]["self"] == first["old"]["self"]


# --------------------------------------------------------------------- one cache root
def test_caches_go_under_the_cache_root_from_any_folder(tmp_path, monkeypatch):
    from bclviz.cache import cache_dir, cache_root

    monkeypatch.setenv("BCLVIZ_CACHE", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cache_root() == (tmp_path / "cache").resolve() and cache_dir("sweeps", "nb") == cache_root() / "sweeps" / "nb"
    run_cfg = tiny_run(tmp_path, epochs=1)
    run_training(run_cfg, progress=False)
    folder = extract_features(run_cfg)
    assert folder.parent == cache_root() / "features" and (folder / "old_protos.npy").is_file()
    assert list(work.iterdir()) == []  # nothing written into the working directory
    monkeypatch.delenv("BCLVIZ_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == (tmp_path / "xdg" / "bclviz").resolve()
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="plain non-empty names"):
            cache_dir(bad)


def test_a_run_cut_by_max_steps_inside_an_epoch_is_finished(tmp_path, capsys):
    """Checkpoints count the steps of the epoch they close (they used to lag one epoch,
    so a max_steps run looked unfinished and a resumed one took extra steps)."""
    run_cfg = dataclasses.replace(tiny_run(tmp_path), new_train=TrainConfig(epochs=2, batch_size=32, max_steps=3))
    path = save_run_config(tmp_path / "run.yaml", run_cfg)
    assert main(["train", "--config", str(path), "--quiet"]) == 0
    _, new_ck = checkpoint_paths(run_cfg)
    from bclviz.checkpoint import load_checkpoint

    assert load_checkpoint(new_ck)[1]["steps_done"] == 3
    capsys.readouterr()
    assert main(["evaluate", "--config", str(path)]) == 0
