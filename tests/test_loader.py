"""Multi-process loading of lazily decoded images (bclviz.loader, TrainConfig.workers).

A tiny ImageFolder of 16x16 JPEGs: the batches, and the weights trained on them, are
the same whether the images are decoded in the training process or by worker
processes; in-memory tensors never start a DataLoader.
"""

import dataclasses

import pytest
import torch
from test_full_runs import _image

import bclviz.loader as loader_mod
from bclviz.checkpoint import load_checkpoint
from bclviz.config import ExperimentConfig, MethodConfig, TrainConfig
from bclviz.data import load_dataset
from bclviz.data.formats import load_image_folder
from bclviz.data.lazy import LazyImages
from bclviz.loader import BatchLoader, default_workers, resolve_workers
from bclviz.models import create_model
from bclviz.runconfig import apply_overrides, load_run_config, save_run_config
from bclviz.sweep import cache_key
from bclviz.train import train_new, train_old

SIZE = 16


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    for c in range(4):
        for i in range(6):
            _image(root / f"class_{c}" / f"{i}.jpg", 10 * c + i, fmt="JPEG")
    return root


@pytest.fixture(scope="module")
def folder_data(jpeg_root):
    return load_dataset("imagefolder", root=jpeg_root, image_size=SIZE, seed=1)


def _epochs(loader, n, seed=0, batch_size=5):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        batches = list(torch.randperm(len(loader.y), generator=g).split(batch_size))
        out.append([(idx, x, y) for idx, (x, y) in zip(batches, loader.epoch(batches))])
    return out


# ----------------------------------------------------------------------------- the loader
def test_batches_identical_for_0_and_2_workers(jpeg_root):
    images = load_image_folder(jpeg_root)
    x, y = LazyImages(images, image_size=SIZE), torch.tensor(list(images.labels), dtype=torch.int64)
    with BatchLoader(x, y, workers=0) as inline:
        want = _epochs(inline, 2)
        assert not inline.uses_workers and not inline.started
    with BatchLoader(x, y, workers=2, prefetch_factor=1, seed=3) as pool:
        got = _epochs(pool, 2)
        assert pool.uses_workers and pool.started
    assert not pool.started  # closed
    assert len(got) == len(want) == 2
    for epoch_got, epoch_want in zip(got, want):
        assert len(epoch_got) == len(epoch_want) == 5  # 24 images in batches of 5
        for (i1, x1, y1), (i2, x2, y2) in zip(epoch_got, epoch_want):
            assert torch.equal(i1, i2)
            torch.testing.assert_close(x1, x2, rtol=0, atol=0)
            assert torch.equal(y1, y2) and torch.equal(y1, y[i1])
            torch.testing.assert_close(x1, x[i1], rtol=0, atol=0)


def test_workers_persist_across_epochs_and_serve_any_index_order(jpeg_root):
    images = load_image_folder(jpeg_root)
    x, y = LazyImages(images, image_size=SIZE), torch.tensor(list(images.labels), dtype=torch.int64)
    batches = list(torch.arange(len(y)).flip(0).split(7))
    with BatchLoader(x, y, workers=2) as pool:
        first = pool.epoch(batches)
        dl = pool._loader
        # an index that is not the next planned batch is read in place; the plan is kept
        other = torch.tensor([3, 1])
        xo, yo = first.load(other)
        torch.testing.assert_close(xo, x[other], rtol=0, atol=0)
        got = list(first)
        assert len(got) == len(batches)
        for idx, (xb, yb) in zip(batches, got):
            torch.testing.assert_close(xb, x[idx], rtol=0, atol=0)
            assert torch.equal(yb, y[idx])
        half = pool.epoch(batches[:2])  # a new epoch after a partly read one
        next(iter(half))
        again = pool.epoch(batches)
        assert pool._loader is dl  # the same (persistent) workers
        torch.testing.assert_close(torch.cat([xb for xb, _ in again]), x[torch.cat(batches)], rtol=0, atol=0)


def test_in_memory_tensors_never_start_a_dataloader(monkeypatch, tiny_toy):
    def refuse(*args, **kwargs):
        raise AssertionError("a DataLoader was started for in-memory tensors")

    monkeypatch.setattr(torch.utils.data, "DataLoader", refuse)
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    loader = BatchLoader(x, y, workers=4)
    assert not loader.uses_workers and loader.workers == 0
    batches = [torch.tensor([4, 0]), torch.tensor([9])]
    got = list(loader.epoch(batches))
    assert not loader.started
    assert torch.equal(got[0][0], x[[4, 0]]) and torch.equal(got[1][1], y[[9]])
    torch.manual_seed(0)
    model = create_model("mlp", input_shape=tiny_toy.input_shape, dim=8, hidden=16)
    train_old(model, tiny_toy.old_train, num_classes=tiny_toy.num_old_classes,
              cfg=TrainConfig(epochs=1, batch_size=32, workers=4), progress=False)


def _trained(data, workers, tmp_path=None):
    cfg = TrainConfig(epochs=3, batch_size=4, max_steps=5, seed=2, workers=workers)
    torch.manual_seed(0)
    model = create_model("cnn", input_shape=data.input_shape, dim=8, width=4)
    old = train_old(model, data.old_train, num_classes=data.num_old_classes, cfg=cfg, progress=False,
                    checkpoint=None if tmp_path is None else tmp_path / "old.pt")
    torch.manual_seed(1)
    model = create_model("cnn", input_shape=data.input_shape, dim=8, width=4)
    new = train_new(model, data.new_train, old, num_classes=data.num_classes, cfg=cfg,
                    method=MethodConfig(name="l2"), progress=False)  # l2 gathers old features by idx
    return old, new


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def test_trained_weights_identical_for_0_and_2_workers(folder_data):
    assert isinstance(folder_data.old_train.x, LazyImages)
    old0, new0 = _trained(folder_data, 0)
    old2, new2 = _trained(folder_data, 2)
    assert [h["steps"] for h in old2.history] == [h["steps"] for h in old0.history] and old0.history
    for a, b in ((old0, old2), (new0, new2)):
        _same_weights(a.model, b.model)
        _same_weights(a.head, b.head)
    assert [h["loss"] for h in new0.history] == [h["loss"] for h in new2.history]


def test_checkpoint_ignores_the_worker_count(folder_data, tmp_path, monkeypatch):
    import bclviz.train as train_mod

    cfg = TrainConfig(epochs=2, batch_size=4, seed=2, workers=0)
    data, n = folder_data.old_train, folder_data.num_old_classes
    save = train_mod._Loop.save

    def save_then_stop(self, epoch, extra):
        save(self, epoch, extra)
        raise KeyboardInterrupt  # interrupted after the first epoch's checkpoint

    monkeypatch.setattr(train_mod._Loop, "save", save_then_stop)
    torch.manual_seed(0)
    model = create_model("cnn", input_shape=folder_data.input_shape, dim=8, width=4)
    with pytest.raises(KeyboardInterrupt):
        train_old(model, data, num_classes=n, cfg=cfg, progress=False, checkpoint=tmp_path / "old.pt")
    monkeypatch.setattr(train_mod._Loop, "save", save)
    _, meta = load_checkpoint(tmp_path / "old.pt")
    assert "workers" not in meta["config"] and meta["config"]["seed"] == 2 and meta["epoch"] == 0
    # resumed with another worker count: accepted, and the same as an uninterrupted run
    torch.manual_seed(0)
    model = create_model("cnn", input_shape=folder_data.input_shape, dim=8, width=4)
    resumed = train_old(model, data, num_classes=n, cfg=dataclasses.replace(cfg, workers=2), progress=False,
                        checkpoint=tmp_path / "old.pt")
    torch.manual_seed(0)
    model = create_model("cnn", input_shape=folder_data.input_shape, dim=8, width=4)
    straight = train_old(model, data, num_classes=n, cfg=cfg, progress=False)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    _same_weights(resumed.model, straight.model)


def test_sweep_cache_key_ignores_the_worker_count(tiny_toy):
    cfg = ExperimentConfig(methods=(MethodConfig(name="proto"),))
    keys = {cache_key(tiny_toy, dataclasses.replace(cfg, new_train=TrainConfig(epochs=8, workers=w),
                                                    old_train=TrainConfig(epochs=8, workers=w)),
                      MethodConfig(name="proto"))
            for w in (None, 0, 4)}
    assert len(keys) == 1
    other = cache_key(tiny_toy, dataclasses.replace(cfg, new_train=TrainConfig(epochs=9)), MethodConfig(name="proto"))
    assert other not in keys


# ----------------------------------------------------------------------------- settings
@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_workers_are_named(bad, jpeg_root):
    with pytest.raises(ValueError, match=r"TrainConfig\.workers"):
        TrainConfig(workers=bad)
    images = load_image_folder(jpeg_root)
    x, y = LazyImages(images, image_size=SIZE), torch.zeros(len(images), dtype=torch.int64)
    with pytest.raises(ValueError, match="workers"):
        BatchLoader(x, y, workers=bad)
    with pytest.raises(ValueError, match="workers"):
        BatchLoader(torch.zeros(len(images), 3), y, workers=bad)


def test_bad_loader_inputs_are_named(jpeg_root):
    images = load_image_folder(jpeg_root)
    x, y = LazyImages(images, image_size=SIZE), torch.zeros(len(images), dtype=torch.int64)
    with pytest.raises(ValueError, match="prefetch_factor"):
        BatchLoader(x, y, prefetch_factor=0)
    with pytest.raises(ValueError, match="same number of rows"):
        BatchLoader(x, y[:-1])
    with pytest.raises(ValueError, match="seed"):
        BatchLoader(x, y, seed=-1)
    with pytest.raises(TypeError, match="y must be"):
        BatchLoader(x, [0] * len(images))
    with pytest.raises(TypeError, match=r"batches\[1\]"):
        BatchLoader(x, y, workers=0).epoch([torch.tensor([0]), torch.tensor([0.5])])


def test_default_worker_count(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for cores, want in ((1, 0), (2, 1), (4, 3), (64, 8)):
        monkeypatch.setattr(loader_mod, "available_cores", lambda cores=cores: cores)
        assert default_workers() == want and resolve_workers(None) == want
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setattr(loader_mod, "available_cores", lambda: 16)
    assert default_workers() == 3  # 4 cores per rank, one left to the rank itself
    assert resolve_workers(0) == 0 and resolve_workers(5) == 5


def test_yaml_round_trip_and_override(tmp_path):
    cfg = ExperimentConfig(methods=(MethodConfig(name="proto"),)).run()
    assert cfg.new_train.workers is None
    over = apply_overrides(cfg, ["new_train.workers=4", "old_train.workers=0"])
    assert over.new_train.workers == 4 and over.old_train.workers == 0
    assert apply_overrides(over, ["new_train.workers=null"]).new_train.workers is None
    path = save_run_config(tmp_path / "run.yaml", over)
    assert "workers: 4" in path.read_text()
    assert load_run_config(path) == over
    with pytest.raises(ValueError, match="workers"):
        apply_overrides(cfg, ["new_train.workers=-2"])
    (tmp_path / "bad.yaml").write_text("dataset: toy\nnew_train:\n  workers: many\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*TrainConfig\.workers"):
        load_run_config(tmp_path / "bad.yaml")
