"""Your own models: torchvision architectures with local weights, frozen TorchScript /
torch.export old models, image folders, and TensorBoard run logs (bclviz.external,
bclviz.runlog).

Every weights file is written to tmp_path here; nothing is downloaded (the download
functions of torch.hub are replaced by ones that fail).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from bclviz.checkpoint import load_checkpoint
from bclviz.cli import main
from bclviz.config import MethodConfig, ModelSpec, TrainConfig
from bclviz.external import FrozenEmbedder, TorchvisionEmbedder, file_sha256, load_frozen_model
from bclviz.models import create_model
from bclviz.runconfig import RunConfig, load_log_setting, save_run_config
from bclviz.runner import load_trained, run_training

TINY = dict(num_superclasses=3, siblings=2, coarse_dim=4, fine_dim=4, train_per_class=32, eval_per_class=6)
ARCH = "squeezenet1_1"  # 1.2M parameters, the cheapest torchvision classifier to build (~0.05 s)


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def _torchvision(arch: str = ARCH, seed: int = 5) -> nn.Module:
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.get_model(arch, weights=None).eval()


def _features_of(tv: nn.Module, head: str, x: torch.Tensor) -> torch.Tensor:
    """The torchvision model's output with its classifier ``head`` replaced by Identity."""
    tv.set_submodule(head, nn.Identity())
    with torch.no_grad():
        return torch.flatten(tv(x), 1)


# ----------------------------------------------------------------------------- torchvision
def test_torchvision_weights_file_round_trip(tmp_path):
    tv = _torchvision()
    path = tmp_path / "squeeze.pth"
    torch.save(tv.state_dict(), path)
    model = create_model(f"torchvision:{ARCH}", input_shape=(3, 32, 32), dim=8, seed=0, weights=str(path)).eval()
    assert isinstance(model, TorchvisionEmbedder) and model.dim == 8 and model.weights == str(path)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats, out = model.features(x), model(x)
    torch.testing.assert_close(feats, _features_of(tv, "classifier.1", x), rtol=0, atol=0)
    assert out.shape == (4, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))
    # every backbone weight came from the file; without it they differ
    state = tv.state_dict()
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    random = create_model(f"torchvision:{ARCH}", input_shape=(3, 32, 32), dim=8, seed=0).eval()
    with torch.no_grad():
        assert not torch.allclose(random.features(x), feats)
    # a checkpoint dict holding the state dict, saved from DDP ("module." prefixes), loads the same
    wrapped = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": torch.tensor(3)}, wrapped)
    again = create_model(f"torchvision:{ARCH}", input_shape=(3, 32, 32), dim=8, seed=0, weights=wrapped).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), out, rtol=0, atol=0)


def test_torchvision_grayscale_repeats_the_channel_and_resize_fits_small_images(tmp_path):
    tv = _torchvision()
    path = tmp_path / "squeeze.pth"
    torch.save(tv.state_dict(), path)
    model = create_model(f"torchvision:{ARCH}", input_shape=(1, 16, 16), dim=8, seed=0, weights=path, resize=32).eval()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    rgb = F.interpolate(x.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), _features_of(tv, "classifier.1", rgb), rtol=0, atol=0)
    four = create_model(f"torchvision:{ARCH}", input_shape=(4, 32, 32), dim=8, seed=0)
    assert four.adapt.in_channels == 4 and four.adapt.out_channels == 3  # a learned 1x1 convolution
    # seeded construction: the projection (and everything else) is reproducible
    a = create_model(f"torchvision:{ARCH}", input_shape=(3, 32, 32), dim=8, seed=3)
    b = create_model(f"torchvision:{ARCH}", input_shape=(3, 32, 32), dim=8, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_torchvision_weights_names_come_from_the_hub_cache_only(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    name = "SqueezeNet1_1_Weights.IMAGENET1K_V1"
    cached = tmp_path / "hub" / "checkpoints" / Path(torchvision.models.get_weight(name).url).name
    with pytest.raises(FileNotFoundError, match="not in torch's hub cache .*never downloads"):
        create_model(f"torchvision:{ARCH}", input_shape=(3, 32, 32), dim=8, weights=name)
    tv = _torchvision(seed=9)
    cached.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), cached)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    expected = _features_of(tv, "classifier.1", x)
    for spelling in (name, "IMAGENET1K_V1", "DEFAULT"):
        model = create_model(f"torchvision:{ARCH}", input_shape=(3, 32, 32), dim=8, weights=spelling).eval()
        assert model.weights == name
        with torch.no_grad():
            torch.testing.assert_close(model.features(x), expected, rtol=0, atol=0)


def test_torchvision_model_spec_validates_the_architecture():
    ModelSpec(f"torchvision:{ARCH}", 8).validate("m")
    with pytest.raises(ValueError, match=r"m.name: unknown torchvision architecture 'resnet19'.*'resnet18'"):
        ModelSpec("torchvision:resnet19", 8).validate("m")


# ----------------------------------------------------------------------------- frozen files
def _scripted(path: Path, in_dim: int = 8, dim: int = 8, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, 16), nn.ReLU(), nn.Linear(16, dim)).eval()
    torch.jit.save(torch.jit.trace(model, torch.zeros(2, in_dim)), str(path))
    return path


def _frozen_run(tmp_path: Path, old_file: Path, **train) -> RunConfig:
    fast = TrainConfig(epochs=2, batch_size=32, **train)
    return RunConfig(
        dataset="toy", seed=1, data_options=TINY,
        old_model=ModelSpec("torchscript", 8, {"path": str(old_file)}),
        new_model=ModelSpec(dim=8, options={"hidden": 16}), old_train=fast, new_train=fast,
        method=MethodConfig(name="ndpp", eps=0.3, k=2, warmup_epochs=0), output_dir=str(tmp_path / "run"),
    )


def test_torchscript_old_model_is_loaded_not_trained(tmp_path):
    old_file = _scripted(tmp_path / "old.pt")
    run_cfg = _frozen_run(tmp_path, old_file, max_steps=4)
    metrics = run_training(run_cfg, progress=False)
    run = tmp_path / "run"
    assert not (run / "old.pt").exists()
    history = json.loads((run / "history.json").read_text())
    assert history["old"] == [] and sum(r["steps"] for r in history["new"]) == 4
    assert set(metrics) >= {"old_old", "new_new", "new_old", "compatible"}
    # the new checkpoint records the old file's identity
    _, meta = load_checkpoint(run / "new-ndpp.pt")
    assert meta["old_model"] == {"kind": "torchscript", "sha256": file_sha256(old_file)}
    # the old model is the file's module, normalised, frozen, in eval mode
    old, new = load_trained(run_cfg)
    assert isinstance(old.model, FrozenEmbedder) and old.head is None and old.history == []
    assert not any(p.requires_grad for p in old.model.parameters())
    x = torch.rand(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(old.model(x), F.normalize(torch.jit.load(str(old_file))(x), dim=1))
    # a pickled copy (what a trial worker receives) reloads the file and checks its hash
    copy = pickle.loads(pickle.dumps(old.model))
    with torch.no_grad():
        torch.testing.assert_close(copy(x), old.model(x))
    # another file with the same name is another old model: the finished new checkpoint is refused
    _scripted(old_file, seed=1)
    with pytest.raises(ValueError, match="changed while in use"):
        pickle.loads(pickle.dumps(old.model))
    with pytest.raises(ValueError, match=r"another configuration .*old_model.sha256"):
        run_training(run_cfg, progress=False)


def test_study_keys_name_a_frozen_model_by_its_file_hash(tmp_path):
    """Sweeps, tune and the lab key trials on the old model file's sha256, not its path:
    a moved copy finds its trials, another file with the same name does not."""
    from bclviz.data import load_dataset
    from bclviz.experiment import ExperimentConfig
    from bclviz.sweep import cache_key

    data = load_dataset("toy", seed=1, **TINY)
    a = _scripted(tmp_path / "a.pt")
    (tmp_path / "moved").mkdir()
    b = tmp_path / "moved" / "b.pt"
    b.write_bytes(a.read_bytes())
    method = MethodConfig(name="ndpp", eps=0.3)

    def key(path):
        cfg = ExperimentConfig(dataset="toy", old_model=ModelSpec("torchscript", 8, {"path": str(path)}),
                               new_model=ModelSpec(dim=8, options={"hidden": 16}))
        return cache_key(data, cfg, method)

    assert key(a) == key(b)
    _scripted(b, seed=1)
    assert key(a) != key(b)
    # a spec that names no file keys as before (earlier studies keep their trials)
    plain = ExperimentConfig(dataset="toy")
    import dataclasses as dc

    from bclviz.sweep import _model_identity
    assert _model_identity(dc.asdict(plain.old_model)) == dc.asdict(plain.old_model)


def test_export_old_model(tmp_path):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(8, 8), nn.Tanh()).eval()
    x = torch.zeros(2, 8)
    dynamic = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(dynamic, str(tmp_path / "old.pt2"))
    model = load_frozen_model("export", tmp_path / "old.pt2", dim=8, input_shape=(8,))
    batch = torch.rand(7, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(batch), F.normalize(module(batch), dim=1))
    model.train()
    assert not model.training  # frozen: stays as loaded (an exported module cannot change mode)
    torch.export.save(torch.export.export(module, (x,)), str(tmp_path / "static.pt2"))
    with pytest.raises(ValueError, match=r"fails on a batch of shape \(3, 8\).*dynamic batch dimension"):
        load_frozen_model("export", tmp_path / "static.pt2", dim=8, input_shape=(8,))


# ----------------------------------------------------------------------------- image folders
def _image_folder(root: Path, classes: int = 4, per_class: int = 10, size: int = 16) -> Path:
    from PIL import Image

    for c in range(classes):
        base = np.random.default_rng(c).integers(0, 256, 3)
        for i in range(per_class):
            noise = np.random.default_rng(100 * c + i).integers(-30, 30, (size, size, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / f"class_{c}" / f"{i}.png")
    return root


def test_imagefolder_with_torchscript_old_and_torchvision_new_through_the_cli(tmp_path, capsys):
    folder = _image_folder(tmp_path / "images")
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 8)).eval()
    old_file = tmp_path / "old_cnn.pt"
    torch.jit.save(torch.jit.script(cnn), str(old_file))
    weights = tmp_path / "squeeze.pth"
    torch.save(_torchvision().state_dict(), weights)
    train = {"epochs": 1, "batch_size": 8, "max_steps": 2, "workers": 0}
    config = {
        "dataset": "imagefolder", "seed": 0,
        "data_options": {"root": str(folder), "image_size": 16, "workers": 1},
        "old_model": {"name": "torchscript", "dim": 8, "options": {"path": str(old_file)}},
        "new_model": {"name": f"torchvision:{ARCH}", "dim": 8, "options": {"weights": str(weights), "resize": 32}},
        "old_train": train, "new_train": train,
        "method": {"name": "ndpp", "eps": 0.3, "warmup_epochs": 0},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["dataset"] == "imagefolder" and metrics["headline"] == "mAP@100"
    for pair in ("old_old", "new_new", "new_old"):  # two held-out images per class: each query has one match
        assert metrics[pair]["n_queries"] == 8 and 0 < metrics[pair]["mAP@100"] <= 1
    assert not (tmp_path / "run" / "old.pt").exists()
    assert main(["evaluate", "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == metrics
    assert main(["extract", "--config", str(path)]) == 0
    features = Path(json.loads(capsys.readouterr().out)["features"])
    assert np.load(features / "old_features.npy").shape == np.load(features / "new_features.npy").shape == (32, 8)
    # a frozen file cannot be the new model
    config["new_model"] = config["old_model"]
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--quiet"]) == 2
    assert "can only be the old model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- TensorBoard
def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _tiny_run(tmp_path: Path, name: str) -> RunConfig:
    return RunConfig(
        dataset="toy", seed=1, data_options=TINY,
        old_model=ModelSpec(dim=8, options={"hidden": 16}), new_model=ModelSpec(dim=8, options={"hidden": 16}),
        old_train=TrainConfig(epochs=2, batch_size=32), new_train=TrainConfig(epochs=2, batch_size=32),
        method=MethodConfig(name="ndpp", eps=0.3, k=2, warmup_epochs=1), output_dir=str(tmp_path / name),
    )


def _without_seconds(history: dict) -> dict:
    return {side: [{k: v for k, v in r.items() if k != "seconds"} for r in records] for side, records in history.items()}


def test_tensorboard_log_holds_the_history_and_changes_no_number(tmp_path):
    pytest.importorskip("tensorboard")
    logged = run_training(_tiny_run(tmp_path, "logged"), progress=False, log="tensorboard")
    plain = run_training(_tiny_run(tmp_path, "plain"), progress=False)
    assert logged == plain
    history = json.loads((tmp_path / "logged" / "history.json").read_text())
    assert _without_seconds(history) == _without_seconds(json.loads((tmp_path / "plain" / "history.json").read_text()))
    for name in ("old.pt", "new-ndpp.pt"):
        a, _ = load_checkpoint(tmp_path / "logged" / name)
        b, _ = load_checkpoint(tmp_path / "plain" / name)
        for key, value in a["net"].items():
            assert torch.equal(value, b["net"][key]), (name, key)
    assert not list((tmp_path / "plain").rglob("events.out.tfevents.*"))

    scalars = _scalars(tmp_path / "logged" / "tensorboard")
    expected = {}
    for side, records in history.items():
        for record in records:
            for key, value in record.items():
                if key not in ("epoch", "steps"):
                    expected.setdefault(f"{side}/{key}", []).append((record["epoch"], value))
    last = history["new"][-1]["epoch"]
    for pair, side in (("new_new", "self"), ("new_old", "cross"), ("old_old", "old")):
        for key, value in logged[pair].items():
            if key != "n_queries":
                expected[f"eval/{side}/{key}"] = [(last, value)]
    expected["eval/compatibility_gain"] = [(last, logged["compatibility_gain"])]
    assert {"new/loss", "new/loss_comp", "new/delta_norm_mean", "new/crowding_old", "new/crowding_pseudo_old",
            "new/crowding_new", "old/loss", "eval/self/mAP@100", "eval/cross/mAP@100"} <= set(scalars)
    assert set(scalars) == set(expected)
    for tag, points in expected.items():  # TensorBoard stores float32
        assert scalars[tag] == [(step, float(np.float32(v))) for step, v in points], tag
    assert history["new"][1]["delta_norm_mean"] > 0  # the perturbation after the warm-up epoch is logged


def test_log_setting_in_the_run_config_and_on_the_command_line(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    path = save_run_config(tmp_path / "run.yaml", _tiny_run(tmp_path, "run"))
    assert load_log_setting(path) is None
    path.write_text(path.read_text() + "log: tensorboard\n")
    assert load_log_setting(path) == "tensorboard"
    assert main(["train", "--config", str(path), "--quiet", "--log", "none"]) == 0
    assert not (tmp_path / "run" / "tensorboard").exists()
    capsys.readouterr()
    assert main(["train", "--config", str(path), "--quiet"]) == 0  # finished: evaluates, logs the evaluation
    assert "eval/self/mAP@100" in _scalars(tmp_path / "run" / "tensorboard")
    path.write_text(path.read_text().replace("log: tensorboard", "log: wandb"))
    assert main(["train", "--config", str(path), "--quiet"]) == 2
    assert "log must be one of ['tensorboard'] or none, got 'wandb'" in capsys.readouterr().err


def test_asking_for_tensorboard_without_it_names_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what a missing package looks like
    path = save_run_config(tmp_path / "run.yaml", _tiny_run(tmp_path, "run"))
    assert main(["train", "--config", str(path), "--quiet", "--log", "tensorboard"]) == 2
    assert "pip install 'bclviz[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before training


def test_documented_saving_block_writes_files_bclviz_loads(tmp_path, monkeypatch):
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "full_runs.md").read_text()
    (block,) = re.findall(r"```py\n(.*?)```", text, flags=re.S)
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 128))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    exec(compile(block, "docs/full_runs.md", "exec"), {"model": model})
    x = torch.rand(4, 3, 224, 224)
    for kind, name in (("torchscript", "old_production.pt"), ("export", "old_production.pt2")):
        old = load_frozen_model(kind, Path("models") / name, dim=128, input_shape=(3, 224, 224))
        with torch.no_grad():
            torch.testing.assert_close(old(x), F.normalize(model(x), dim=1))
