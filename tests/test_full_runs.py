"""Full runs on the real benchmark layouts: lazy images, dataset builders, CLI and docs.

Every dataset is a tiny fixture written in tmp_path in its real layout (16x16 images,
a handful of classes); every run is one epoch of a small model.
"""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bclviz.cli import main
from bclviz.data import BENCHMARK_NAMES, DATASETS, load_dataset
from bclviz.data.formats import ImageListDataset, load_image_folder
from bclviz.data.gldv2 import gldv2_image_path
from bclviz.data.lazy import IMAGENET_MEAN, IMAGENET_STD, LazyImages
from bclviz.data.registry import BENCHMARKS

REPO = Path(__file__).resolve().parents[1]
SIZE = 16


def _image(path: Path, seed: int, fmt: str = "JPEG") -> Path:
    """A 16x16 image: a colour per ``seed // 10`` (the class) and a block per ``seed``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.random.default_rng(seed // 10).integers(0, 256, 3)
    pixels = np.clip(base + rng.integers(-30, 30, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    r, c = rng.integers(0, SIZE - 4, 2)
    pixels[r : r + 4, c : c + 4] = 255 - base
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt)
    return path


def _gid(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- fixtures
GLD_TRAIN = {lm: [_gid(f"t{lm}-{i}") for i in range(4)] for lm in (11, 12, 13, 14, 15, 16)}
GLD_INDEX = [_gid(f"x{i}") for i in range(10)]
GLD_SOLUTION = [  # query id, relevant index positions, usage
    (_gid("q0"), [0, 1], "Private"), (_gid("q1"), [2], "Private"), (_gid("q2"), [3, 4, 5], "Private"),
    (_gid("q3"), [6], "Public"), (_gid("q4"), [], "Ignored"), (_gid("q5"), [7], "Private"),
]  # fmt: skip


def make_gldv2(root: Path) -> Path:
    """GLDv2 layout: train_clean.csv, index.csv, retrieval_solution_v2.1.csv, train/ index/ test/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train_clean.csv").write_text(
        "landmark_id,images\n" + "".join(f"{lm},{' '.join(ids)}\n" for lm, ids in GLD_TRAIN.items()))
    (root / "index.csv").write_text("id\n" + "".join(f"{i}\n" for i in GLD_INDEX))
    (root / "retrieval_solution_v2.1.csv").write_text("id,images,Usage\n" + "".join(
        f"{q},{' '.join(GLD_INDEX[p] for p in rel) or 'None'},{u}\n" for q, rel, u in GLD_SOLUTION))
    for lm, ids in GLD_TRAIN.items():
        for n, i in enumerate(ids):
            _image(gldv2_image_path(root, "train", i), 10 * lm + n)
    for n, i in enumerate(GLD_INDEX):
        _image(gldv2_image_path(root, "index", i), 500 + 10 * n)
    for n, (q, rel, _) in enumerate(GLD_SOLUTION):  # a query looks like its first relevant image
        _image(gldv2_image_path(root, "test", q), 500 + 10 * rel[0] + 1 if rel else 900 + n)
    return root


def make_inshop(root: Path) -> Path:
    """In-shop layout: list_eval_partition.txt and img/<gender>/<category>/<item>/<view>.jpg."""
    rows = []
    for item in range(1, 7):
        rows += [(f"img/WOMEN/Dresses/id_{item:08d}/{v:02d}_1_front.jpg", f"id_{item:08d}", "train")
                 for v in range(3)]
    for item in range(101, 105):
        rows.append((f"img/MEN/Denim/id_{item:08d}/01_1_front.jpg", f"id_{item:08d}", "query"))
        rows += [(f"img/MEN/Denim/id_{item:08d}/0{v}_2_side.jpg", f"id_{item:08d}", "gallery") for v in (2, 3)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "list_eval_partition.txt").write_text(
        f"{len(rows)}\nimage_name item_id evaluation_status\n" + "".join(f"{a} {b} {c}\n" for a, b, c in rows))
    for n, (name, item, _) in enumerate(rows):
        _image(root / name, 10 * int(item[3:]) + n % 10)
    return root


def make_imagefolder(root: Path, classes: int = 4, per_class: int = 5) -> Path:
    for c in range(classes):
        for i in range(per_class):
            _image(root / f"class_{c}" / f"{i}.png", 10 * c + i, fmt="PNG")
    return root


@pytest.fixture(scope="module")
def gld_root(tmp_path_factory):
    return make_gldv2(tmp_path_factory.mktemp("gldv2"))


@pytest.fixture(scope="module")
def inshop_root(tmp_path_factory):
    return make_inshop(tmp_path_factory.mktemp("inshop"))


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("folder"))


def write_config(path: Path, text: str, **subs) -> Path:
    path.write_text(text.format(**subs))
    return path


TINY_MODELS = """
old_model: {{name: {model}, dim: 16, options: {options}}}
new_model: {{name: {model}, dim: 16, options: {options}}}
old_train: {{epochs: 1, batch_size: 8}}
new_train: {{epochs: 1, batch_size: 8}}
method: {{name: ndpp, eps: 0.3, k: 2, warmup_epochs: 0}}
output_dir: {out}
"""
PAIRS = ("old_old", "new_new", "new_old")


def _check_scores(metrics: dict, n_queries: int) -> None:
    for pair in PAIRS:
        scores = metrics[pair]
        assert set(scores) == {"mAP@100", "R@1", "R@5", "R@10", "n_queries"}
        assert scores["n_queries"] == n_queries
        assert all(0 <= scores[key] <= 1 for key in ("mAP@100", "R@1", "R@5", "R@10"))
        assert scores["R@1"] <= scores["R@5"] <= scores["R@10"]
    key = metrics["headline"]
    assert metrics["compatible"] == (metrics["new_old"][key] > metrics["old_old"][key])


# ----------------------------------------------------------------------------- lazy images
def test_lazy_images_match_eager_decoding(folder_root):
    images = load_image_folder(folder_root)
    lazy = LazyImages(images, image_size=(12, 10), workers=3)
    eager = torch.stack([ImageListDataset(images, image_size=(12, 10))[i][0] for i in range(len(images))])
    assert lazy.shape == eager.shape == (20, 3, 12, 10) and len(lazy) == 20
    idx = torch.tensor([7, 0, 19, 7])
    torch.testing.assert_close(lazy[idx], eager[idx], rtol=0, atol=0)
    torch.testing.assert_close(lazy[3:9], eager[3:9], rtol=0, atol=0)
    torch.testing.assert_close(lazy[-1], eager[-1], rtol=0, atol=0)
    torch.testing.assert_close(lazy[np.arange(20) % 3 == 0], eager[::3], rtol=0, atol=0)
    assert lazy[idx].dtype == torch.float32 and 0 <= float(lazy[:].min()) and float(lazy[:].max()) <= 1
    sub = lazy.take(torch.tensor([4, 2]))
    assert isinstance(sub, LazyImages) and sub.shape == (2, 3, 12, 10)
    torch.testing.assert_close(sub[:], eager[[4, 2]], rtol=0, atol=0)
    one = LazyImages(images, image_size=(12, 10), workers=1, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(one[5], (eager[5] - mean) / std)
    with pytest.raises(IndexError, match="out of range"):
        lazy[torch.tensor([20])]


def test_labeled_subset_and_trainer_keep_inputs_lazy(folder_root):
    from bclviz.train import embed

    data = load_dataset("imagefolder", root=folder_root, image_size=SIZE, seed=1)
    assert isinstance(data.new_train.x, LazyImages) and isinstance(data.old_train.x, LazyImages)
    part = data.new_train.subset(torch.tensor([1, 0]))
    assert isinstance(part.x, LazyImages)
    torch.testing.assert_close(part.x[:], data.new_train.x[torch.tensor([1, 0])], rtol=0, atol=0)
    torch.manual_seed(0)
    from bclviz.models import create_model

    model = create_model("cnn", input_shape=data.input_shape, dim=8, width=4)
    f = embed(model, data.new_train.x, batch_size=5)
    torch.testing.assert_close(f, embed(model, data.new_train.x[:], batch_size=64))


# ----------------------------------------------------------------------------- builders
def test_registry_lists_every_benchmark():
    assert set(BENCHMARKS) == set(BENCHMARK_NAMES) and set(BENCHMARK_NAMES) <= set(DATASETS)


@pytest.mark.parametrize("name", BENCHMARK_NAMES)
def test_missing_root_names_it(tmp_path, name, capsys):
    with pytest.raises(ValueError, match="data_options.root"):
        load_dataset(name)
    missing = tmp_path / "not-here"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_dataset(name, root=missing)
    cfg = write_config(tmp_path / "run.yaml", "dataset: {name}\ndata_options: {{root: {root}}}\noutput_dir: {out}\n",
                       name=name, root=missing, out=tmp_path / "run")
    assert main(["train", "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and ("download" in err or "folder" in err)


def test_unknown_data_option_is_named(folder_root):
    with pytest.raises(ValueError, match=r"unknown data_options \['image_sise'\].*image_size"):
        load_dataset("imagefolder", root=folder_root, image_sise=32)


def test_gldv2_builder(gld_root):
    data = load_dataset("gldv2", root=gld_root, image_size=SIZE, seed=0)
    assert data.num_classes == 6 and data.num_old_classes == 2  # ceil(0.3 * 6)
    assert len(data.new_train) == 24 and len(data.old_train) == 8
    assert data.input_shape == (3, SIZE, SIZE) and data.headline is None and not data.query_is_gallery
    private = [(q, rel) for q, rel, u in GLD_SOLUTION if u == "Private"]
    assert data.query.x.image_list.paths == tuple(gldv2_image_path(gld_root, "test", q) for q, _ in private)
    assert [r.tolist() for r in data.relevance] == [rel for _, rel in private]
    assert (data.query.y == -1).all() and (data.gallery.y == -1).all() and len(data.gallery) == 10
    # old classes keep their labels in the new training set
    old_paths = data.old_train.x.image_list.paths
    label_of = dict(zip(data.new_train.x.image_list.paths, data.new_train.y.tolist()))
    assert [label_of[p] for p in old_paths] == data.old_train.y.tolist()

    small = load_dataset("gldv2", root=gld_root, image_size=SIZE, seed=3, max_queries=2, max_index=5,
                         max_classes=4, max_images=9)
    assert small.num_classes == 4 and len(small.new_train) == 9
    assert len(small.query) == 2 and len(small.gallery) == 5
    index_paths = data.gallery.x.image_list.paths
    for q, rel in zip(small.query.x.image_list.paths, small.relevance):
        full = next(r for p, r in zip(data.query.x.image_list.paths, data.relevance) if p == q)
        assert [small.gallery.x.image_list.paths[i] for i in rel] == [index_paths[i] for i in full]


def test_inshop_builder(inshop_root):
    data = load_dataset("inshop", root=inshop_root, image_size=SIZE, seed=0)
    assert data.num_classes == 6 and data.num_old_classes == 2 and data.headline == "R@1"
    assert len(data.query) == 4 and len(data.gallery) == 8
    for q, y in zip(data.query.x.image_list.paths, data.query.y.tolist()):
        same = [p for p, g in zip(data.gallery.x.image_list.paths, data.gallery.y.tolist()) if g == y]
        assert len(same) == 2 and all(p.parent == q.parent for p in same)
    small = load_dataset("inshop", root=inshop_root, image_size=SIZE, max_eval_classes=2)
    assert len(small.query) == 2 and len(small.gallery) == 4


def test_imagefolder_builder_is_closed_set(folder_root):
    data = load_dataset("imagefolder", root=folder_root, image_size=SIZE, seed=2, test_ratio=0.2)
    assert data.query_is_gallery and data.query is data.gallery
    assert data.num_classes == 4 and data.num_old_classes == 2 and len(data.query) == 4
    assert len(data.new_train) == 16 and set(data.query.y.tolist()) == {0, 1, 2, 3}
    class_ids = data.info["class_ids"]
    for path, y in zip(data.query.x.image_list.paths, data.query.y.tolist()):
        assert path.parent.name == class_ids[y]
    for path, y in zip(data.new_train.x.image_list.paths, data.new_train.y.tolist()):
        assert path.parent.name == class_ids[y]
    assert not set(data.query.x.image_list.paths) & set(data.new_train.x.image_list.paths)


def test_cifar100_builder(tmp_path, monkeypatch):
    import bclviz.data.benchmarks as benchmarks

    (tmp_path / "cifar-100-python").mkdir()
    g = torch.Generator().manual_seed(0)
    arrays = (torch.rand(40, 3, 32, 32, generator=g), torch.arange(40) % 4,
              torch.rand(8, 3, 32, 32, generator=g), torch.arange(8) % 4)
    monkeypatch.setattr(benchmarks, "load_cifar100", lambda root, download=False: arrays)
    data = load_dataset("cifar100", root=tmp_path, image_size=SIZE, max_classes=3)
    assert data.num_classes == 3 and data.num_old_classes == 2 and data.query_is_gallery
    assert data.new_train.x.shape == (30, 3, SIZE, SIZE) and len(data.query) == 6
    assert data.old_train.y.tolist() == [y for y in data.new_train.y.tolist() if y < 2]


# ----------------------------------------------------------------------------- CLI runs
def test_gldv2_train_then_evaluate(tmp_path, gld_root, capsys):
    from bclviz.runconfig import load_run_config
    from bclviz.runner import load_trained
    from bclviz.train import embed

    cfg = write_config(tmp_path / "gldv2.yaml", "dataset: gldv2\ndata_options: {{root: {root}, image_size: 16}}\n"
                       + TINY_MODELS, root=gld_root, model="resnet18", options="{}", out=tmp_path / "run")
    assert main(["train", "--config", str(cfg), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "gldv2" and metrics["headline"] == "mAP@100"
    _check_scores(metrics, n_queries=4)
    capsys.readouterr()
    assert main(["evaluate", "--config", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out) == metrics

    # mAP@100 against a naive per-query reference on the trained models
    run_cfg = load_run_config(cfg)
    old, new = load_trained(run_cfg)
    data = load_dataset("gldv2", **run_cfg.data_options)
    q, g = embed(new.model, data.query.x), embed(old.model, data.gallery.x)
    aps = []
    for row, rel in zip((q @ g.T).argsort(dim=1, descending=True).tolist(), data.relevance):
        hits = [i for i, r in enumerate(row[:100], 1) if r in set(rel.tolist())]
        aps.append(sum(n / rank for n, rank in enumerate(hits, 1)) / min(len(rel), 100))
    assert metrics["new_old"]["mAP@100"] == pytest.approx(np.mean(aps), abs=1e-6)


def test_inshop_train_then_evaluate(tmp_path, inshop_root, capsys):
    cfg = write_config(tmp_path / "inshop.yaml", "dataset: inshop\ndata_options: {{root: {root}, image_size: 16}}\n"
                       + TINY_MODELS, root=inshop_root, model="cnn", options="{width: 4}", out=tmp_path / "run")
    assert main(["train", "--config", str(cfg), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["headline"] == "R@1"
    _check_scores(metrics, n_queries=4)
    capsys.readouterr()
    assert main(["evaluate", "--config", str(cfg)]) == 0
    assert json.loads(capsys.readouterr().out) == metrics


# ----------------------------------------------------------------------------- docs and examples
def test_toy_example_runs_as_documented(tmp_path, monkeypatch, capsys):
    """The toy block of docs/full_runs.md, run from a fresh folder exactly as written."""
    doc = (REPO / "docs" / "full_runs.md").read_text()
    assert "bclviz train --config examples/toy_ndpp.yaml" in doc
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "toy_ndpp.yaml").write_text((REPO / "examples" / "toy_ndpp.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    config = "examples/toy_ndpp.yaml"
    assert main(["train", "--config", config, "--quiet"]) == 0
    metrics = json.loads((tmp_path / "runs" / "toy-ndpp" / "metrics.json").read_text())
    assert metrics["dataset"] == "toy" and 0 <= metrics["new_old"]["mAP@100"] <= 1
    capsys.readouterr()
    assert main(["train", "--config", config, "--quiet"]) == 0  # finished: resumes, trains nothing
    assert json.loads(capsys.readouterr().out) == metrics
    assert main(["evaluate", "--config", config]) == 0
    assert json.loads(capsys.readouterr().out) == metrics
    assert main(["extract", "--config", config]) == 0
    folder = Path(json.loads(capsys.readouterr().out)["features"])
    from bclviz.cache import cache_dir

    assert folder.parent == cache_dir("features") and folder.name.startswith("toy-")
    assert (folder / "old_features.npy").is_file() and not (tmp_path / "data").exists()


def _doc_configs() -> dict[str, dict]:
    """The YAML run configs of docs/full_runs.md, by the file name in their first comment."""
    text = (REPO / "docs" / "full_runs.md").read_text()
    blocks = re.findall(r"```yaml\n# (\S+\.yaml)\n(.*?)```", text, flags=re.S)
    return {name: yaml.safe_load(body) for name, body in blocks}


def test_documented_configs_run_on_fixtures(tmp_path, gld_root, inshop_root, monkeypatch):
    """Each documented benchmark config, shrunk by --set overrides, runs on its fixture."""
    from bclviz.runconfig import run_config_from_dict

    configs = _doc_configs()
    assert {"gldv2_ndpp.yaml", "inshop_ndpp.yaml"} <= set(configs)
    for name, values in configs.items():
        run_config_from_dict(values, source=name)  # every documented config is valid
    monkeypatch.chdir(tmp_path)
    shrink = ["data_options.image_size=16", "old_train.epochs=1", "new_train.epochs=1", "old_train.batch_size=8",
              "new_train.batch_size=8", "old_model.name=cnn", "new_model.name=cnn", "old_model.dim=8",
              "new_model.dim=8", "method.k=2", "data_options.workers=2"]
    for name, root in (("gldv2_ndpp.yaml", gld_root), ("inshop_ndpp.yaml", inshop_root)):
        (tmp_path / name).write_text(yaml.safe_dump(configs[name]))
        sets = [f"data_options.root={root}", *shrink]
        assert main(["train", "--config", name, "--quiet", *[a for s in sets for a in ("--set", s)]]) == 0
        out = tmp_path / configs[name]["output_dir"]
        assert (out / "metrics.json").is_file()


def test_notebook_export_block_runs(tmp_path, monkeypatch):
    from bclviz.runconfig import load_run_config

    text = (REPO / "docs" / "full_runs.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/full_runs.md", "exec"), {})
    toy, full = load_run_config("toy_ndpp.yaml"), load_run_config("gldv2_ndpp_notebook.yaml")
    assert toy.dataset == "toy" and toy.method.eps == 0.3
    assert full.dataset == "gldv2" and full.data_options["root"] == "data/gldv2"
    assert (full.old_model.name, full.old_model.dim) == ("resnet18", 256)


@pytest.mark.distributed
def test_torchrun_two_processes_on_gldv2_fixture(tmp_path, gld_root):
    """`torchrun --nproc_per_node=2 -m bclviz.cli train` on lazily loaded GLDv2 images."""
    import os
    import subprocess
    import sys

    cfg = write_config(tmp_path / "gldv2.yaml", "dataset: gldv2\ndata_options: {{root: {root}, image_size: 16}}\n"
                       + TINY_MODELS, root=gld_root, model="cnn", options="{width: 4}", out=tmp_path / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run([*torchrun, "-m", "bclviz.cli", "train", "--config", str(cfg), "--quiet"],
                   check=True, env=env, timeout=300, capture_output=True)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    _check_scores(metrics, n_queries=4)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [r["steps"] for r in history["new"]] == [3]  # 24 images, global batch 8
