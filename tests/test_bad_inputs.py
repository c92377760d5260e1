"""Catalogue of malformed inputs: each one must raise an error that names the problem.

Every entry of ``CASES`` is one bad input to one public function, with the exception
type and the words the message must contain.

Documented behaviours that are deliberately *not* errors (a class with a single sample)
are asserted at the end of the file.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bclviz import (
    ExperimentConfig,
    MethodConfig,
    ModelSpec,
    TrainConfig,
    average_compatibility,
    compatibility_matrix,
    crowding,
    default_experiment,
    drift,
    evaluate,
    load_dataset,
    ndpp,
    odpp,
    pseudo_old,
    recognisability,
)
from bclviz.checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from bclviz.cli import main
from bclviz.data import images, splits
from bclviz.data.base import Labeled
from bclviz.data.gldv2 import load_gldv2_retrieval, load_gldv2_train
from bclviz.data.glyphs import make_glyphs
from bclviz.data.inshop import load_inshop
from bclviz.experiment import build_new_model
from bclviz.features import load as load_embeddings
from bclviz.inspection import inspect_embeddings
from bclviz.runconfig import RunConfig, apply_overrides, load_run_config, save_run_config
from bclviz.train import class_prototypes, train_new, train_old

C, D = 5, 4
GEN = torch.Generator().manual_seed(0)
P_OLD = torch.randn(C, D, generator=GEN)
P_NEW = torch.randn(C, D, generator=GEN)
Q = torch.randn(12, D, generator=GEN)
YQ = torch.arange(12) % 3
TINY_SPEC = ModelSpec(dim=8, options={"hidden": 16})
FAST = TrainConfig(epochs=1, batch_size=64)


@dataclass
class Env:
    """What a case may use: a temporary folder, monkeypatch and the tiny trained old model."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest

    @property
    def data(self):
        return self.request.getfixturevalue("tiny_toy")

    @property
    def old(self):
        return self.request.getfixturevalue("tiny_old")

    def new_model(self, dim: int = 8):
        return build_new_model(self.data, ModelSpec(dim=dim, options={"hidden": 16}))

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return path

    def checkpoint(self, name: str = "ck.pt", meta: dict | None = None) -> Path:
        meta = {"config": {"eps": 0.4, "method": "ndpp"}, "epoch": 0} if meta is None else meta
        return save_checkpoint(self.tmp / name, {"model": {"w": torch.arange(1000.0)}}, meta)


def with_nan(x: torch.Tensor, row: int = 1, col: int = 2) -> torch.Tensor:
    x = x.clone()
    x[row, col] = float("nan")
    return x


def relabel(data: Labeled, mapping: dict[int, int]) -> Labeled:
    y = data.y.clone()
    for a, b in mapping.items():
        y[data.y == a] = b
    return Labeled(data.x, y)


def _truncated_checkpoint(env: Env):
    path = env.checkpoint()
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return load_checkpoint(path)


def _weights_with_json(env: Env, text: str | None):
    """A weights file as torch.save writes it, with ``text`` as its .json metadata (None: no .json)."""
    path = env.tmp / "ck.pt"
    torch.save({"model": {"w": torch.arange(1000.0)}}, path)
    if text is not None:
        Path(str(path) + ".json").write_text(text, encoding="utf-8")
    return load_checkpoint(path)


def _checkpoint_weights_missing(env: Env):
    path = env.checkpoint()
    path.unlink()
    return load_checkpoint(path)


def _fashion_mnist_missing(env: Env):
    env.monkeypatch.delenv(images.FASHION_MNIST_ENV, raising=False)
    env.monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST", env.tmp / "debian")
    env.monkeypatch.setattr(images, "CACHE_FASHION_MNIST", env.tmp / "cache")
    return images.load_fashion_mnist(env.tmp / "fmnist")


def _gldv2_without_index(env: Env):
    (env.tmp / "gldv2").mkdir()
    return load_gldv2_retrieval(env.tmp / "gldv2")


def _inshop_root(env: Env, partition: str | None):
    root = env.tmp / "inshop"
    root.mkdir()
    if partition is not None:
        (root / "list_eval_partition.txt").write_text(partition, encoding="utf-8")
    return root


# ---------------------------------------------------------------------------- embeddings files
E_OLD = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
E_NEW = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
E_Y = np.array([0, 1, 2, 0, 1, 2])


def _npy(tmp: Path, name: str, arr, *, allow_pickle: bool = False) -> Path:
    path = tmp / name
    np.save(path, arr, allow_pickle=allow_pickle)
    return path


def _emb(env: Env, old=E_OLD, new=E_NEW, labels=E_Y, **kw):
    """load_embeddings on .npy files old.npy / new.npy / labels.npy written from the arrays given."""
    t = env.tmp
    return load_embeddings(_npy(t, "old.npy", old), _npy(t, "new.npy", new), _npy(t, "labels.npy", labels), **kw)


def _emb_with_file(env: Env, name: str, content: bytes | None = None, writer=None):
    """load_embeddings with ``name`` (written raw, or by ``writer(path)``) as the old embeddings."""
    path = env.tmp / name
    if writer is not None:
        writer(path)
    else:
        path.write_bytes(content)
    return load_embeddings(path, _npy(env.tmp, "new.npy", E_NEW), _npy(env.tmp, "labels.npy", E_Y))


def _npz(tmp: Path, **arrays) -> Path:
    np.savez(tmp / "emb.npz", **arrays)
    return tmp / "emb.npz"


def _truncated_npy(path: Path) -> None:
    np.save(path, np.ones((100, 8), dtype=np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _features_folder(env: Env, *names: str) -> Path:
    folder = env.tmp / "features"
    folder.mkdir()
    arrays = {"old_features.npy": E_OLD, "new_features.npy": E_NEW, "labels.npy": E_Y}
    for name in names:
        np.save(folder / name, arrays[name])
    return folder


def _with_value(x: np.ndarray, row: int, value: float) -> np.ndarray:
    x = x.copy()
    x[row] = value
    return x


# ------------------------------------------------------------------ your own models (bclviz.external, bclviz.runlog)
def _scripted(env: Env, in_dim: int = 8, dim: int = 4) -> Path:
    """A traced TorchScript module (n, in_dim) -> (n, dim), saved in tmp."""
    import warnings

    path = env.tmp / "old_ts.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        torch.jit.save(torch.jit.trace(torch.nn.Linear(in_dim, dim).eval(), torch.zeros(2, in_dim)), str(path))
    return path


def _frozen(path: Path, kind: str = "torchscript", *, dim: int = 8):
    from bclviz.external import load_frozen_model

    return load_frozen_model(kind, path, dim=dim, input_shape=(8,))


def _saved(env: Env, obj, name: str = "weights.pth") -> Path:
    torch.save(obj, env.tmp / name)
    return env.tmp / name


def _squeezenet(input_shape=(3, 32, 32), **options):
    from bclviz.models import create_model

    return create_model("torchvision:squeezenet1_1", input_shape=input_shape, dim=8, **options)


def _hub_weights_missing(env: Env):
    env.monkeypatch.setattr(torch.hub, "_hub_dir", str(env.tmp / "hub"))
    return _squeezenet(weights="IMAGENET1K_V1")


def _tensorboard_missing(env: Env):
    import sys

    from bclviz.runlog import open_run_log

    env.monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what a missing package looks like
    return open_run_log("tensorboard", env.tmp / "run")


def _frozen_spec(name: str = "torchscript", **options) -> ModelSpec:
    return ModelSpec(name, 16, options or {"path": "old.pt"})


PARTITION_HEADER = "image_name item_id evaluation_status\n"

# (callable(env), exception type, regex the message must match), one per bad input.
CASES = [
    # ------------------------------------------------------------------ perturb: shapes
    pytest.param(lambda e: ndpp(P_OLD[0], P_NEW, eps=0.1, k=2), ValueError, r"old_protos must be 2-D .*got shape \(4,\)", id="ndpp-old-protos-1d"),
    pytest.param(lambda e: ndpp(P_OLD[..., None], P_NEW, eps=0.1, k=2), ValueError, r"old_protos must be 2-D .*\(5, 4, 1\)", id="ndpp-old-protos-3d"),
    pytest.param(lambda e: ndpp(P_OLD, P_NEW[:, :3], eps=0.1, k=2), ValueError, r"share the embedding dimension.*old d=4 and new d=3", id="ndpp-old-new-dims-differ"),
    pytest.param(lambda e: ndpp(P_OLD, P_NEW[:4], eps=0.1, k=2), ValueError, r"one row per class.*5 old and 4 new", id="ndpp-old-new-classes-differ"),
    pytest.param(lambda e: ndpp(torch.zeros(C, D), P_NEW, eps=0.1, k=2), ValueError, r"old_protos has all-zero rows", id="ndpp-zero-prototype"),
    pytest.param(lambda e: pseudo_old(P_OLD, torch.zeros(C, 3)), ValueError, r"delta has dimension 3, expected 4", id="pseudo-old-delta-dim"),
    pytest.param(lambda e: pseudo_old(P_OLD, torch.zeros(C - 1, D)), ValueError, r"delta has 4 rows, expected 5", id="pseudo-old-delta-rows"),
    pytest.param(lambda e: odpp(P_OLD, P_NEW, eps=0.1, k=2, init=torch.zeros(3, D)), ValueError, r"init has 3 rows, expected 5", id="odpp-init-rows"),
    # ------------------------------------------------------------------ perturb: dtypes
    pytest.param(lambda e: ndpp(torch.ones(C, D, dtype=torch.bool), P_NEW, eps=0.1, k=2), TypeError, r"old_protos must hold real numbers, got dtype torch.bool", id="ndpp-bool-dtype"),
    pytest.param(lambda e: ndpp(np.ones((C, D), dtype=complex), P_NEW, eps=0.1, k=2), TypeError, r"old_protos must hold real numbers, got dtype complex", id="ndpp-complex-dtype"),
    pytest.param(lambda e: ndpp(P_OLD, torch.ones(C, D, dtype=torch.complex64), eps=0.1, k=2), TypeError, r"new_protos must hold real numbers", id="ndpp-complex-tensor"),
    pytest.param(lambda e: ndpp(np.full((C, D), "a"), P_NEW, eps=0.1, k=2), TypeError, r"old_protos must hold real numbers, got dtype <U1", id="ndpp-string-dtype"),
    pytest.param(lambda e: ndpp(P_OLD.tolist(), P_NEW, eps=0.1, k=2), TypeError, r"old_protos must be a torch.Tensor or numpy.ndarray, got list", id="ndpp-python-list"),
    # ------------------------------------------------------------------ perturb: values
    pytest.param(lambda e: ndpp(with_nan(P_OLD), P_NEW, eps=0.1, k=2), ValueError, r"old_protos contains NaN or Inf values in 1 row", id="ndpp-nan-old"),
    pytest.param(lambda e: ndpp(P_OLD, torch.full((C, D), math.inf), eps=0.1, k=2), ValueError, r"new_protos contains NaN or Inf values in 5 row", id="ndpp-inf-new"),
    pytest.param(lambda e: pseudo_old(P_OLD, torch.full((C, D), math.nan)), ValueError, r"delta contains NaN or Inf", id="pseudo-old-nan-delta"),
    pytest.param(lambda e: ndpp(P_OLD, P_NEW, eps=-0.1, k=2), ValueError, r"eps must be a finite number >= 0, got -0.1", id="ndpp-eps-negative"),
    pytest.param(lambda e: ndpp(P_OLD, P_NEW, eps=math.nan, k=2), ValueError, r"eps must be a finite number >= 0, got nan", id="ndpp-eps-nan"),
    pytest.param(lambda e: ndpp(P_OLD, P_NEW, eps="0.1", k=2), TypeError, r"eps must be a number, got str", id="ndpp-eps-string"),
    pytest.param(lambda e: odpp(P_OLD, P_NEW, eps=-1.0, k=2), ValueError, r"eps must be a finite number >= 0", id="odpp-eps-negative"),
    pytest.param(lambda e: ndpp(P_OLD, P_NEW, eps=0.1, k=C), ValueError, r"k must be smaller than the number of classes \(5\), got k=5", id="ndpp-k-equals-classes"),
    pytest.param(lambda e: odpp(P_OLD, P_NEW, eps=0.1, k=7), ValueError, r"k must be smaller than the number of classes \(5\), got k=7", id="odpp-k-above-classes"),
    pytest.param(lambda e: odpp(P_OLD, P_NEW, eps=0.1), ValueError, r"k must be smaller than the number of classes \(5\), got k=8", id="odpp-default-k-with-5-classes"),
    pytest.param(lambda e: ndpp(P_OLD, P_NEW, eps=0.1, k=0), ValueError, r"k must be a positive integer, got 0", id="ndpp-k-zero"),
    pytest.param(lambda e: ndpp(P_OLD, P_NEW, eps=0.1, k=2, eps_mode="rel"), ValueError, r"eps_mode must be one of \['absolute', 'relative', 'nearest-angle'\], got 'rel'", id="ndpp-unknown-eps-mode"),
    pytest.param(lambda e: odpp(P_OLD, P_NEW, eps=0.1, k=2, steps=-1), ValueError, r"steps must be an integer >= 0, got -1", id="odpp-steps-negative"),
    pytest.param(lambda e: odpp(P_OLD, P_NEW, eps=0.1, k=2, lr=0.0), ValueError, r"lr must be > 0", id="odpp-lr-zero"),
    pytest.param(lambda e: odpp(P_OLD, P_NEW, eps=0.1, k=2, gamma=-1.0), ValueError, r"gamma must be a finite number >= 0", id="odpp-gamma-negative"),
    # ------------------------------------------------------------------ proxies
    pytest.param(lambda e: crowding(P_OLD[:1]), ValueError, r"protos must have at least 2 row", id="crowding-single-class"),
    pytest.param(lambda e: drift(P_OLD[:4], P_OLD), ValueError, r"prototype sets differ in size: 4 vs 5", id="drift-sizes-differ"),
    pytest.param(lambda e: recognisability(Q[:, :D], torch.full((12,), C), P_OLD), ValueError, r"labels contains label 5, out of range for 5 classes", id="recognisability-label-out-of-range"),
    pytest.param(lambda e: recognisability(Q, torch.full((12,), -1), P_OLD), ValueError, r"labels contains negative labels", id="recognisability-negative-label"),
    pytest.param(lambda e: recognisability(Q, torch.zeros(12), P_OLD), TypeError, r"labels must hold integer class labels, got dtype torch.float32", id="recognisability-float-labels"),
    # ------------------------------------------------------------------ evaluation
    pytest.param(lambda e: evaluate(Q, YQ, Q, YQ, k=0, backend="torch"), ValueError, r"k must be a positive integer, got 0", id="evaluate-k-zero"),
    pytest.param(lambda e: evaluate(Q, YQ, Q, YQ, backend="annoy"), ValueError, r"backend must be one of \('faiss', 'torch'\), got 'annoy'", id="evaluate-unknown-backend"),
    pytest.param(lambda e: evaluate(Q, YQ, Q[:, :3], YQ, backend="torch"), ValueError, r"query has dimension 4 but gallery has dimension 3", id="evaluate-dims-differ"),
    pytest.param(lambda e: evaluate(with_nan(Q, 5, 0), YQ, Q, YQ, backend="torch"), ValueError, r"query contains NaN or Inf values in 1 row", id="evaluate-nan-query"),
    pytest.param(lambda e: evaluate(Q, YQ, Q.clone().fill_(math.inf), YQ, backend="torch"), ValueError, r"gallery contains NaN or Inf", id="evaluate-inf-gallery"),
    pytest.param(lambda e: evaluate(Q[:0], YQ[:0], Q, YQ, backend="torch"), ValueError, r"query must have at least 1 row", id="evaluate-empty-query"),
    pytest.param(lambda e: evaluate(Q[:5], YQ[:5], Q, YQ, exclude_self=True, backend="torch"), ValueError, r"exclude_self=True .* same number of rows; got 5 and 12", id="evaluate-exclude-self-sizes"),
    pytest.param(lambda e: evaluate(Q, YQ[:5], Q, YQ, backend="torch"), ValueError, r"query_labels has 5 labels but the features have 12 rows", id="evaluate-labels-length"),
    pytest.param(lambda e: evaluate(Q, YQ[:, None], Q, YQ, backend="torch"), ValueError, r"query_labels must be 1-D, got shape \(12, 1\)", id="evaluate-labels-2d"),
    pytest.param(lambda e: evaluate(Q, YQ.float(), Q, YQ, backend="torch"), TypeError, r"query_labels must hold integer class labels", id="evaluate-float-labels"),
    pytest.param(lambda e: evaluate(Q, YQ, Q, YQ, recall_at="1", backend="torch"), ValueError, r"recall_at must be a sequence of positive integers", id="evaluate-recall-at-string"),
    pytest.param(
        lambda e: evaluate(Q, np.array(list("abc") * 4), Q, np.array(list("abc") * 4), backend="torch"),
        TypeError, r"query_labels must hold integer class labels",
        id="evaluate-string-labels",
    ),
    pytest.param(lambda e: compatibility_matrix([Q, Q], [Q], YQ, YQ, backend="torch"), ValueError, r"must list the same models .*got 2 and 1", id="compat-matrix-model-count"),
    pytest.param(lambda e: compatibility_matrix([Q], [Q], YQ, YQ, metric="mAP@5", backend="torch"), ValueError, r"metric must be one of .*got 'mAP@5'", id="compat-matrix-unknown-metric"),
    pytest.param(lambda e: average_compatibility(np.ones((1, 1))), ValueError, r"square \(T, T\) with T >= 2, got shape \(1, 1\)", id="avg-compat-1x1"),
    pytest.param(lambda e: average_compatibility(np.array([[1.0, np.nan], [np.nan, 1.0]])), ValueError, r"NaN or Inf on or below the diagonal", id="avg-compat-nan"),
    # ------------------------------------------------------------------ class prototypes
    pytest.param(lambda e: class_prototypes(Q[:6], torch.tensor([0, 0, 2, 2, 3, 3]), 4), ValueError, r"class\(es\) \[1\] have no training samples", id="class-prototypes-empty-class"),
    pytest.param(lambda e: class_prototypes(Q[:6], torch.tensor([0, 1, 2, 3, 3, 5]), 4), ValueError, r"5.*num_classes=4|label 5, out of range for 4 classes", id="class-prototypes-label-out-of-range"),
    pytest.param(
        lambda e: class_prototypes(Q[:6], torch.tensor([0, 1, 2, 3, 3, -1]), 4), ValueError, r"negative label",
        id="class-prototypes-negative-label",
    ),
    pytest.param(
        lambda e: class_prototypes(Q[:6], torch.tensor([0.0, 1, 2, 3, 3, 2]), 4), TypeError, r"labels must hold integer class labels",
        id="class-prototypes-float-labels",
    ),
    pytest.param(
        lambda e: class_prototypes(Q[:5], torch.tensor([0, 1, 2, 3, 3, 2]), 4), ValueError, r"labels has 6 labels but the features have 5 rows",
        id="class-prototypes-length-mismatch",
    ),
    pytest.param(
        lambda e: class_prototypes(with_nan(Q[:6]), torch.tensor([0, 1, 2, 3, 3, 2]), 4), ValueError, r"features contains NaN or Inf",
        id="class-prototypes-nan-features",
    ),
    # ------------------------------------------------------------------ training
    pytest.param(lambda e: train_new(e.new_model(dim=16), e.data.new_train, e.old, num_classes=e.data.num_classes, cfg=FAST, progress=False),
                 ValueError, r"old and new embedding dimensions differ \(old 8, new 16\)", id="train-new-dims-differ"),
    pytest.param(lambda e: train_new(e.new_model(), e.data.new_train, e.old, num_classes=e.data.num_classes, cfg=FAST, method="ndppp", progress=False),
                 ValueError, r"MethodConfig.name must be one of \[.*'ndpp'.*\], got 'ndppp'", id="train-new-unknown-method"),
    pytest.param(lambda e: train_new(e.new_model(), relabel(e.data.new_train, {2: 3}), e.old, num_classes=e.data.num_classes, cfg=FAST, progress=False),
                 ValueError, r"class\(es\) \[2\] have no training samples", id="train-new-label-gap"),
    pytest.param(lambda e: train_new(e.new_model(), relabel(e.data.new_train, {5: 6}), e.old, num_classes=e.data.num_classes, cfg=FAST, progress=False),
                 ValueError, r"labels must lie in \[0, 6\), got range \[0, 6\]", id="train-new-label-out-of-range"),
    pytest.param(lambda e: train_old(e.new_model(), Labeled(e.data.old_train.x, e.data.old_train.y.float()), num_classes=3, cfg=FAST, progress=False),
                 TypeError, r"labels must be int64, got torch.float32", id="train-old-float-labels"),
    pytest.param(lambda e: train_old(e.new_model(), Labeled(with_nan(e.data.old_train.x), e.data.old_train.y), num_classes=3, cfg=FAST, progress=False),
                 ValueError, r"training inputs contain NaN or Inf", id="train-old-nan-inputs"),
    pytest.param(lambda e: train_old(e.new_model(), Labeled(e.data.old_train.x[:0], e.data.old_train.y[:0]), num_classes=3, cfg=FAST, progress=False),
                 ValueError, r"the training set is empty", id="train-old-empty"),
    pytest.param(lambda e: train_old(e.new_model(), Labeled(e.data.old_train.x[:, :5], e.data.old_train.y), num_classes=3, cfg=FAST, progress=False),
                 ValueError, r"expected 8 input features per row, got 5", id="train-old-input-width"),
    pytest.param(lambda e: Labeled(Q, YQ[:5]), ValueError, r"x has 12 rows but y has 5 labels", id="labeled-length-mismatch"),
    pytest.param(
        lambda e: train_old(e.new_model(), relabel(e.data.old_train, {1: 2}), num_classes=3, cfg=FAST, progress=False),
        ValueError, r"class\(es\) \[1\] have no training samples",
        id="train-old-label-gap",
    ),
    # ------------------------------------------------------------------ configs
    pytest.param(lambda e: TrainConfig(epochs=0), ValueError, r"TrainConfig.epochs must be a positive integer, got 0", id="trainconfig-epochs-zero"),
    pytest.param(lambda e: TrainConfig(head="softmax"), ValueError, r"TrainConfig.head must be one of \['cosface', 'arcface'\], got 'softmax'", id="trainconfig-unknown-head"),
    pytest.param(lambda e: TrainConfig(batch_size="32"), ValueError, r"TrainConfig.batch_size must be a positive integer, got '32'", id="trainconfig-batch-size-string"),
    pytest.param(lambda e: MethodConfig(name="ndppp"), ValueError, r"MethodConfig.name must be one of .*got 'ndppp'", id="methodconfig-unknown-method"),
    pytest.param(lambda e: MethodConfig(eps=-0.2), ValueError, r"MethodConfig.eps must be a finite number >= 0, got -0.2", id="methodconfig-eps-negative"),
    pytest.param(lambda e: MethodConfig(k=0), ValueError, r"MethodConfig.k must be a positive integer, got 0", id="methodconfig-k-zero"),
    pytest.param(lambda e: MethodConfig(neighbor_search="hnsw"), ValueError, r"MethodConfig.neighbor_search must be one of .*got 'hnsw'", id="methodconfig-unknown-neighbor-search"),
    pytest.param(lambda e: ExperimentConfig(old_model=ModelSpec(dim=8), new_model=ModelSpec(dim=16)), ValueError, r"old and new embedding dimensions differ \(8 vs 16\)", id="experiment-dims-differ"),
    pytest.param(lambda e: ExperimentConfig(methods=(MethodConfig(), MethodConfig())), ValueError, r"methods must have distinct names", id="experiment-duplicate-methods"),
    pytest.param(
        lambda e: ExperimentConfig(k=0), ValueError, r"k must be .*got 0",
        id="experiment-k-zero",
    ),
    pytest.param(
        lambda e: ExperimentConfig(methods=("ndpp",)), ValueError, r"methods.*MethodConfig",
        id="experiment-methods-as-strings",
    ),
    pytest.param(lambda e: RunConfig(dataset="mnist"), ValueError, r"ExperimentConfig.dataset must be one of \[.*\], got 'mnist'", id="runconfig-unknown-dataset"),
    pytest.param(lambda e: default_experiment("mnist"), ValueError, r"no default experiment for dataset 'mnist'; choose one of", id="default-experiment-unknown-dataset"),
    # ------------------------------------------------------------------ datasets
    pytest.param(lambda e: load_dataset("mnist"), ValueError, r"unknown dataset 'mnist'; choose one of", id="load-dataset-unknown"),
    pytest.param(lambda e: load_dataset("toy", foo=1), (TypeError, ValueError), r"'?foo'?", id="load-dataset-unknown-option"),
    pytest.param(lambda e: load_dataset("toy", eval_per_class=1), ValueError, r"eval_per_class must be >= 2 for leave-one-out", id="toy-eval-per-class-one"),
    pytest.param(lambda e: load_dataset("toy", old_ratio=1.0), ValueError, r"old_ratio must be in \(0, 1\), got 1.0", id="toy-old-ratio-one"),
    pytest.param(_fashion_mnist_missing, FileNotFoundError, r"(?s)Fashion-MNIST not found.*fmnist.*apt-get install", id="fashion-mnist-missing"),
    pytest.param(lambda e: images.read_idx(e.write("bad-idx", "not an idx file"), magic=2051), ValueError, r"bad-idx: expected IDX magic number 2051", id="fashion-mnist-corrupt-idx"),
    pytest.param(lambda e: load_dataset("gldv2"), ValueError, r"dataset 'gldv2' needs data_options.root", id="gldv2-no-root"),
    pytest.param(lambda e: load_dataset("gldv2", root=e.tmp / "nope"), FileNotFoundError, r"gldv2 root .*nope does not exist", id="gldv2-root-missing"),
    pytest.param(lambda e: load_gldv2_train(e.tmp), FileNotFoundError, r"GLDv2 train list .*train_clean.csv not found", id="gldv2-train-csv-missing"),
    pytest.param(_gldv2_without_index, FileNotFoundError, r"GLDv2 index list .*index.csv not found", id="gldv2-index-csv-missing"),
    pytest.param(lambda e: load_dataset("gldv2", root=e.tmp, foo=1), ValueError, r"unknown data_options \['foo'\] for dataset 'gldv2'", id="gldv2-unknown-option"),
    pytest.param(lambda e: load_dataset("inshop", root=e.tmp / "nope"), FileNotFoundError, r"inshop root .*nope does not exist", id="inshop-root-missing"),
    pytest.param(lambda e: load_inshop(_inshop_root(e, None)), FileNotFoundError, r"In-shop partition file .*list_eval_partition.txt not found", id="inshop-partition-missing"),
    pytest.param(lambda e: load_inshop(_inshop_root(e, "3\n" + PARTITION_HEADER + "img/a.jpg id_1 train\n")),
                 ValueError, r"list_eval_partition.txt: line 1 says 3 images but the file lists 1", id="inshop-partition-count"),
    pytest.param(lambda e: load_inshop(_inshop_root(e, "1\n" + PARTITION_HEADER + "img/a.jpg id_1 training\n")),
                 ValueError, r"list_eval_partition.txt, line 3: expected .*status", id="inshop-partition-bad-status"),
    pytest.param(lambda e: load_inshop(_inshop_root(e, "1\n" + PARTITION_HEADER + "img/a.jpg id_1 train\n")),
                 FileNotFoundError, r"references 1 image\(s\) that do not exist, first: .*img/a.jpg", id="inshop-image-missing"),
    pytest.param(lambda e: load_dataset("imagefolder", root=e.tmp / "nope"), FileNotFoundError, r"imagefolder root .*nope does not exist", id="imagefolder-root-missing"),
    pytest.param(lambda e: load_dataset("cifar100", root=e.tmp), FileNotFoundError, r"holds no cifar-100-python/ folder", id="cifar100-missing"),
    pytest.param(lambda e: make_glyphs(font_dir=e.tmp, cache_dir=None), FileNotFoundError, r"no TrueType fonts \(\*.ttf\) found in", id="glyphs-no-fonts"),
    # ------------------------------------------------------------------ your own embeddings (bclviz.features.load)
    pytest.param(lambda e: load_embeddings(e.tmp / "missing.npy", E_NEW, E_Y), FileNotFoundError, r"old file .*missing.npy does not exist", id="embeddings-file-missing"),
    pytest.param(lambda e: _emb_with_file(e, "old.csv", b"1,2,3\n"), ValueError, r"old.csv: unknown file type '.csv'; old must be a .npy, .npz or .pt file", id="embeddings-unknown-suffix"),
    pytest.param(lambda e: _emb_with_file(e, "old.npy", b"not numpy at all"), ValueError, r"old.npy is not a .npy file \(no NumPy header\)", id="embeddings-npy-not-numpy"),
    pytest.param(lambda e: _emb_with_file(e, "old.npy", writer=_truncated_npy), ValueError, r"old.npy is truncated", id="embeddings-npy-truncated"),
    pytest.param(lambda e: _emb_with_file(e, "old.npy", writer=lambda p: np.save(p, np.array([{"a": 1}]), allow_pickle=True)),
                 ValueError, r"old.npy holds Python objects \(dtype object\), which bclviz never unpickles", id="embeddings-npy-pickled-objects"),
    pytest.param(lambda e: _emb_with_file(e, "old.npz", writer=lambda p: np.savez(p, old=np.array([{"a": 1}], dtype=object))),
                 ValueError, r"old.npz holds Python objects \(dtype object\)", id="embeddings-npz-pickled-objects"),
    pytest.param(lambda e: _emb_with_file(e, "old.npz", b"PK\x03\x04 broken zip"), ValueError, r"old.npz is not a readable .npz file", id="embeddings-npz-corrupt"),
    pytest.param(lambda e: _emb_with_file(e, "old.pt", writer=lambda p: torch.save({"old": torch.ones(6, 3), "hook": print}, p)),
                 ValueError, r"old.pt cannot be read with torch.load\(weights_only=True\).*never unpickles code", id="embeddings-pt-pickled-callable"),
    pytest.param(lambda e: _emb_with_file(e, "old.pt", writer=lambda p: torch.save([torch.ones(6, 3)], p)),
                 ValueError, r"old.pt holds a list; expected a tensor or a dict of tensors", id="embeddings-pt-list"),
    pytest.param(lambda e: _emb_with_file(e, "old.npz", writer=lambda p: np.savez(p, a=E_OLD, b=E_OLD)),
                 ValueError, r"old.npz holds several arrays \['a', 'b'\] but none named 'old'", id="embeddings-npz-no-such-key"),
    pytest.param(lambda e: load_embeddings(_npz(e.tmp, old=E_OLD, new=E_NEW)), ValueError,
                 r"emb.npz holds \['new', 'old'\]; a bundle needs the keys \['old', 'new', 'labels'\].*missing \['labels'\]", id="embeddings-bundle-missing-labels"),
    pytest.param(lambda e: load_embeddings(_npz(e.tmp, old=E_OLD, new=E_NEW, labels=E_Y, extra=E_Y)), ValueError,
                 r"emb.npz holds .*unknown \['extra'\]", id="embeddings-bundle-unknown-key"),
    pytest.param(lambda e: load_embeddings(_npy(e.tmp, "all.npy", E_OLD)), ValueError, r"all.npy holds a single array; pass old, new and labels separately", id="embeddings-single-array-alone"),
    pytest.param(lambda e: load_embeddings(_features_folder(e, "old_features.npy", "labels.npy")), FileNotFoundError,
                 r"features folder .*features lacks \['new_features.npy'\].*bclviz extract --config", id="embeddings-folder-without-new-features"),
    pytest.param(lambda e: load_embeddings(E_OLD, E_NEW), ValueError, r"pass old, new and labels .*got old and new only", id="embeddings-labels-not-given"),
    pytest.param(lambda e: load_embeddings(E_OLD.tolist(), E_NEW, E_Y), TypeError, r"old must be a path, a numpy.ndarray or a torch.Tensor, got list", id="embeddings-python-list"),
    pytest.param(lambda e: _emb(e, old=E_OLD[:, 0]), ValueError, r"old.npy: old embeddings must be 2-D \(items, dim\), got shape \(6,\)", id="embeddings-1d"),
    pytest.param(lambda e: _emb(e, new=E_NEW[..., None]), ValueError, r"new.npy: new embeddings must be 2-D \(items, dim\), got shape \(6, 3, 1\)", id="embeddings-3d"),
    pytest.param(lambda e: _emb(e, old=E_OLD[:0]), ValueError, r"old.npy: old embeddings is empty, shape \(0, 3\)", id="embeddings-empty"),
    pytest.param(lambda e: _emb(e, old=E_OLD > 0), TypeError, r"old.npy: old embeddings must hold real numbers, got dtype bool", id="embeddings-bool-dtype"),
    pytest.param(lambda e: _emb(e, new=np.full((6, 3), "a")), TypeError, r"new.npy: new embeddings must hold real numbers, got dtype <U1", id="embeddings-string-dtype"),
    pytest.param(lambda e: _emb(e, new=_with_value(E_NEW, 2, np.nan)), ValueError, r"new.npy: new embeddings contain NaN or Inf values in 1 row\(s\) \(first: row 2\)", id="embeddings-nan-row"),
    pytest.param(lambda e: load_embeddings(_with_value(E_OLD, 4, np.inf), E_NEW, E_Y), ValueError, r"old \(in-memory array\): old embeddings contain NaN or Inf values in 1 row\(s\) \(first: row 4\)", id="embeddings-inf-in-memory"),
    pytest.param(lambda e: _emb(e, old=_with_value(E_OLD, 1, 0.0)), ValueError, r"old.npy: old embeddings have 1 all-zero row\(s\) \(first: row 1\).*failed to embed", id="embeddings-zero-row"),
    pytest.param(lambda e: _emb(e, new=E_NEW[:5]), ValueError, r"old.npy has 6 rows but .*new.npy has 5: 1 item\(s\) missing from one side", id="embeddings-row-counts-differ"),
    pytest.param(lambda e: _emb(e, new=np.ones((6, 4), dtype=np.float32)), ValueError, r"old.npy has dimension 3 but .*new.npy has dimension 4; .*same dimension", id="embeddings-dims-differ"),
    pytest.param(lambda e: _emb(e, labels=E_Y.astype(float)), TypeError, r"labels.npy: labels must be integer class ids or strings, got dtype float64; .*astype\(np.int64\)", id="embeddings-float-labels"),
    pytest.param(lambda e: _emb(e, labels=E_Y[:, None]), ValueError, r"labels.npy: labels must be 1-D \(one per item\), got shape \(6, 1\)", id="embeddings-labels-2d"),
    pytest.param(lambda e: _emb(e, labels=E_Y[:5]), ValueError, r"labels.npy: 5 labels for 6 items \(.*old.npy has 6 rows\); give one label per item", id="embeddings-labels-count"),
    pytest.param(lambda e: _emb(e, labels=E_Y - 1), ValueError, r"labels.npy: labels contain negative values \(min -1\)", id="embeddings-negative-labels"),
    pytest.param(lambda e: _emb(e, labels=np.full(6, 3)), ValueError, r"labels.npy: every item has the label 3; .*at least 2 classes", id="embeddings-single-class"),
    pytest.param(lambda e: load_embeddings(E_OLD, E_NEW, E_Y.astype(object)), TypeError, r"labels must be integer class ids or strings, got dtype object", id="embeddings-object-labels"),
    pytest.param(lambda e: load_embeddings(E_OLD, E_NEW, E_Y, old_ids=np.arange(6), new_ids=np.arange(1, 7)), ValueError,
                 r"items missing from one side: 1 id\(s\) of .* are not in .*\(first: \[0\]\) and 1 .*\(first: \[6\]\)", id="embeddings-ids-missing-on-one-side"),
    pytest.param(lambda e: load_embeddings(E_OLD, E_NEW, E_Y, old_ids=np.array([0, 1, 2, 3, 4, 4]), new_ids=np.arange(6)), ValueError,
                 r"item ids repeat", id="embeddings-ids-repeat"),
    pytest.param(lambda e: load_embeddings(E_OLD, E_NEW, E_Y, old_ids=np.arange(6)), ValueError, r"item ids must be given for both sides", id="embeddings-ids-one-side"),
    pytest.param(lambda e: _emb(e, query=np.array([0, 6])), ValueError, r"query row indices must lie in \[0, 6\), got range \[0, 6\]", id="embeddings-query-index-out-of-range"),
    pytest.param(lambda e: _emb(e, query=np.ones(6, dtype=bool)), ValueError, r"the query/gallery split leaves no gallery item", id="embeddings-query-everything"),
    pytest.param(lambda e: _emb(e, query=np.ones(5, dtype=bool)), ValueError, r"the query mask has 5 entries but there are 6 items", id="embeddings-query-mask-length"),
    pytest.param(lambda e: _emb(e, query=np.array([0.0, 1.0])), TypeError, r"query must be a boolean mask or integer row indices, got dtype float64", id="embeddings-query-float"),
    pytest.param(lambda e: load_embeddings(_npz(e.tmp, old=E_OLD, new=E_NEW, labels=E_Y, query=np.arange(2)), query=np.arange(3)),
                 ValueError, r"query is given twice: in .*emb.npz\['query'\] and as an argument", id="embeddings-query-twice"),
    pytest.param(lambda e: inspect_embeddings(load_embeddings(E_OLD, E_NEW, E_Y), method=MethodConfig(name="l2")), ValueError,
                 r"method.name must be one of \['ndpp', 'odpp'\], got 'l2'", id="inspect-non-perturbing-method"),
    # ------------------------------------------------------------------ splits
    pytest.param(lambda e: splits.closed_set(np.array([0.0, 1.0]), test_ratio=0.5, seed=0), TypeError, r"y must hold integer class labels, got dtype float64", id="splits-float-labels"),
    pytest.param(lambda e: splits.closed_set(np.zeros(0, dtype=int), test_ratio=0.5, seed=0), ValueError, r"y must not be empty", id="splits-empty"),
    pytest.param(lambda e: splits.closed_set(np.arange(4), test_ratio=1.0, seed=0), ValueError, r"test_ratio must be in \(0, 1\), got 1.0", id="closed-set-test-ratio-one"),
    pytest.param(lambda e: splits.closed_set(np.arange(4), test_ratio=0.5, seed=-1), ValueError, r"seed must be a non-negative integer, got -1", id="splits-seed-negative"),
    pytest.param(lambda e: splits.open_set(np.zeros(4, dtype=int), train_ratio=0.5, seed=0), ValueError, r"open_set needs at least 2 classes in y, got 1", id="open-set-one-class"),
    pytest.param(lambda e: splits.sequential(np.arange(4), fractions=(0.5, 0.3), mode="class", seed=0), ValueError, r"fractions must be strictly increasing", id="sequential-not-increasing"),
    pytest.param(lambda e: splits.relabel(np.array([0, 5]), np.array([0, 1])), ValueError, r"class ids not in class_order: \[5\]", id="relabel-unknown-class"),
    # ------------------------------------------------------------------ checkpoints
    pytest.param(lambda e: load_checkpoint(e.checkpoint(), expect={"config": {"eps": 0.3, "method": "ndpp"}}),
                 CheckpointMismatch, r"another configuration \(config.eps: checkpoint 0.4 vs expected 0.3\)", id="checkpoint-other-config"),
    pytest.param(lambda e: load_checkpoint(e.checkpoint(), expect={"config": {"eps": 0.4, "method": "ndpp", "k": 3}}),
                 CheckpointMismatch, r"config.k: checkpoint '<missing>' vs expected 3", id="checkpoint-missing-setting"),
    pytest.param(_truncated_checkpoint, ValueError, r"ck.pt is truncated or corrupt", id="checkpoint-truncated"),
    pytest.param(lambda e: _weights_with_json(e, None), FileNotFoundError, r"checkpoint file .*ck.pt.json does not exist", id="checkpoint-json-missing"),
    pytest.param(_checkpoint_weights_missing, FileNotFoundError, r"checkpoint file .*ck.pt does not exist", id="checkpoint-weights-missing"),
    pytest.param(lambda e: _weights_with_json(e, '{"format": "bclviz-check'), ValueError, r"ck.pt.json is not valid JSON", id="checkpoint-json-corrupt"),
    pytest.param(lambda e: _weights_with_json(e, '{"epoch": 3}'), ValueError, r"ck.pt.json is not a bclviz checkpoint", id="checkpoint-json-not-bclviz"),
    pytest.param(
        lambda e: _weights_with_json(e, "[1, 2]"), ValueError, r"ck.pt.json is not a bclviz checkpoint",
        id="checkpoint-json-not-object",
    ),
    # ------------------------------------------------------------------ YAML run configs
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "dataset: toy\nmethod:\n  name: ndpp\n  eps: [0.3\nseed: 1\n")),
                 ValueError, r"run.yaml: malformed YAML at line \d+, column \d+", id="yaml-syntax-error"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "dataset: toy\n\tseed: 1\n")),
                 ValueError, r"run.yaml: malformed YAML at line 2, column 1: found character '\\t'", id="yaml-tab-indent"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "dataset: toy\nepochs: 3\n")),
                 ValueError, r"run.yaml: unknown setting\(s\) \['epochs'\]; allowed: \['dataset'", id="yaml-unknown-key"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "new_train:\n  epochz: 3\n")),
                 ValueError, r"run.yaml: unknown TrainConfig setting\(s\) \['epochz'\]", id="yaml-unknown-nested-key"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "new_train:\n  epochs: many\n")),
                 ValueError, r"run.yaml: TrainConfig.epochs must be a positive integer, got 'many'", id="yaml-wrong-type"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "method: ndpp\n")),
                 ValueError, r"run.yaml: section 'method' must be a mapping of settings", id="yaml-section-not-mapping"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "old_model: {dim: 8}\nnew_model: {dim: 16}\n")),
                 ValueError, r"run.yaml: old and new embedding dimensions differ \(8 vs 16\)", id="yaml-dims-differ"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "method:\n  eps: -0.3\n")),
                 ValueError, r"run.yaml: MethodConfig.eps must be a finite number >= 0, got -0.3", id="yaml-eps-negative"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "")), ValueError, r"run.yaml: the run config is empty", id="yaml-empty"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "- toy\n- 3\n")), ValueError, r"run.yaml: expected a mapping of settings, got list", id="yaml-not-a-mapping"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "dataset: !!python/object/apply:os.system ['true']\n")),
                 ValueError, r"run.yaml: malformed YAML at line 1.*could not determine a constructor", id="yaml-python-tag"),
    pytest.param(lambda e: load_run_config(e.tmp / "missing.yaml"), FileNotFoundError, r"run config .*missing.yaml does not exist", id="yaml-file-missing"),
    pytest.param(lambda e: apply_overrides(RunConfig(), ["method.epz=0.3"]), ValueError, r"unknown setting 'method.epz' .*allowed: \['method.name'", id="override-unknown-key"),
    pytest.param(lambda e: apply_overrides(RunConfig(), ["method.eps"]), ValueError, r"must look like key=value", id="override-without-value"),
    pytest.param(lambda e: apply_overrides(RunConfig(), ["method=ndpp"]), ValueError, r"'method' is a group of settings", id="override-group"),
    pytest.param(lambda e: apply_overrides(RunConfig(), ["method.eps=abc"]), ValueError, r"MethodConfig.eps must be a finite number >= 0, got 'abc'", id="override-wrong-type"),
    # ------------------------------------------------------------------ your own models: frozen old model files
    pytest.param(lambda e: _frozen(e.tmp / "nope.pt"), FileNotFoundError, r"old model file .*nope.pt does not exist", id="frozen-file-missing"),
    pytest.param(lambda e: _frozen(_saved(e, {"w": torch.zeros(2)})), ValueError,
                 r"weights.pth was not written by torch.jit.save \(name: torchscript\); it was written by torch.save", id="frozen-state-dict-not-torchscript"),
    pytest.param(lambda e: _frozen(e.write("junk.pt", "not a model")), ValueError,
                 r"junk.pt was not written by torch.jit.save \(name: torchscript\); save the old model with torch.jit.save", id="frozen-not-a-model-file"),
    pytest.param(lambda e: _frozen(_scripted(e), "export"), ValueError,
                 r"was not written by torch.export.save \(name: export\); it was written by torch.jit.save: use name: torchscript", id="frozen-wrong-kind"),
    pytest.param(lambda e: _frozen(_scripted(e, dim=4)), ValueError,
                 r"outputs \(2, 4\) for inputs of shape \(2, 8\); expected \(2, 8\): old_model.dim must be", id="frozen-wrong-output-dim"),
    pytest.param(lambda e: _frozen(_scripted(e, in_dim=5, dim=8)), ValueError,
                 r"old_ts.pt fails on a batch of shape \(2, 8\) \(the data's inputs\)", id="frozen-wrong-input-shape"),
    pytest.param(lambda e: ExperimentConfig(old_model=_frozen_spec(), new_model=_frozen_spec()), ValueError,
                 r"new_model.name is 'torchscript', a frozen model file, which can only be the old model", id="frozen-as-new-model"),
    pytest.param(lambda e: ExperimentConfig(old_model=_frozen_spec("export", file="old.pt2"), new_model=ModelSpec(dim=16)), ValueError,
                 r"old_model.options of a 'export' model must be exactly \{path: FILE\}", id="frozen-without-path"),
    pytest.param(lambda e: train_old(_frozen(_scripted(e, dim=8)), e.data.old_train, num_classes=3, progress=False), ValueError,
                 r"old_ts.pt is a frozen model file: it is used as it is, never trained", id="frozen-trained"),
    # ------------------------------------------------------------------ your own models: torchvision architectures
    pytest.param(lambda e: ExperimentConfig(old_model=ModelSpec("torchvision:resnet19", 16), new_model=ModelSpec(dim=16)), ValueError,
                 r"old_model.name: unknown torchvision architecture 'resnet19' .*'resnet18'", id="torchvision-unknown-arch"),
    pytest.param(lambda e: _squeezenet(weights=e.tmp / "nope.pth"), FileNotFoundError, r"weights file .*nope.pth does not exist", id="torchvision-weights-missing"),
    pytest.param(lambda e: _squeezenet(weights=_saved(e, [1, 2])), ValueError, r"weights.pth holds a list, not a state dict", id="torchvision-weights-not-state-dict"),
    pytest.param(lambda e: _squeezenet(weights=_saved(e, {"foo": torch.zeros(1)})), ValueError,
                 r"does not fit the architecture: missing keys \['features.0.weight'.*unexpected keys \['foo'\]", id="torchvision-weights-do-not-fit"),
    pytest.param(lambda e: _squeezenet(weights=_saved(e, {"features.0.weight": torch.zeros(1)})), ValueError,
                 r"does not fit the architecture: .*size mismatch for features.0.weight", id="torchvision-weights-wrong-shape"),
    pytest.param(_hub_weights_missing, FileNotFoundError,
                 r"SqueezeNet1_1_Weights.IMAGENET1K_V1 are not in torch's hub cache .*bclviz never downloads", id="torchvision-hub-weights-not-cached"),
    pytest.param(lambda e: _squeezenet(weights="IMAGENET9K_V9"), ValueError,
                 r"unknown weights 'IMAGENET9K_V9' for squeezenet1_1; choose one of \['IMAGENET1K_V1'\]", id="torchvision-unknown-weights-name"),
    pytest.param(lambda e: _squeezenet(weights="ResNet18_Weights.IMAGENET1K_V1"), ValueError,
                 r"weights 'ResNet18_Weights.IMAGENET1K_V1' are not weights of squeezenet1_1 \(SqueezeNet1_1_Weights\)", id="torchvision-weights-of-another-arch"),
    pytest.param(lambda e: _squeezenet((3, 16, 16)), ValueError,
                 r"cannot take inputs of shape \(3, 16, 16\) .*set options.resize", id="torchvision-input-too-small"),
    pytest.param(lambda e: _squeezenet(num_classes=10), ValueError, r"num_classes is not an option", id="torchvision-num-classes"),
    pytest.param(lambda e: _squeezenet(foo=1), ValueError, r"option\(s\) \['foo'\] not accepted by torchvision", id="torchvision-unknown-option"),
    pytest.param(lambda e: _squeezenet(resize=0), ValueError, r"resize must be a positive side or \[height, width\], got 0", id="torchvision-bad-resize"),
    # ------------------------------------------------------------------ run logs
    pytest.param(_tensorboard_missing, ImportError, r"TensorBoard logging needs the tensorboard package: pip install 'bclviz\[tensorboard\]'", id="tensorboard-missing"),
    pytest.param(lambda e: load_run_config(e.write("run.yaml", "log: wandb\n")), ValueError,
                 r"run.yaml: log must be one of \['tensorboard'\] or none, got 'wandb'", id="run-config-unknown-log"),
]


@pytest.mark.parametrize(("call", "error", "match"), CASES)
def test_bad_input_raises_clear_error(call, error, match, tmp_path, monkeypatch, request):
    with pytest.raises(error, match=match):
        call(Env(tmp_path, monkeypatch, request))


# ---------------------------------------------------------------------------- CLI
def _good_config(tmp: Path) -> Path:
    return save_run_config(tmp / "run.yaml", RunConfig(output_dir=str(tmp / "run")))


CLI_CASES = [
    pytest.param(lambda t: ["train", "--config", str(t / "missing.yaml")], r"bclviz train: error: run config .*missing.yaml does not exist", id="cli-config-missing"),
    pytest.param(lambda t: ["evaluate", "--config", str(t / "missing.yaml")], r"bclviz evaluate: error: run config .*missing.yaml does not exist", id="cli-evaluate-config-missing"),
    pytest.param(lambda t: ["train", "--config", str(_good_config(t)), "--set", "method.epz=1"],
                 r"bclviz train: error: unknown setting 'method.epz' in override", id="cli-set-unknown-key"),
    pytest.param(lambda t: ["train", "--config", str(_good_config(t)), "--set", "method.eps=-1"],
                 r"bclviz train: error: overrides: MethodConfig.eps must be a finite number >= 0, got -1", id="cli-set-eps-negative"),
    pytest.param(lambda t: ["train", "--config", str(_good_config(t)), "--set", "new_train.epochs"],
                 r"bclviz train: error: override 'new_train.epochs' must look like key=value", id="cli-set-without-value"),
    pytest.param(lambda t: ["train", "--config", str(_write(t, "bad.yaml", "dataset: toy\nmethod: {name: ndpp\n"))],
                 r"bclviz train: error: .*bad.yaml: malformed YAML at line \d+", id="cli-yaml-syntax-error"),
    pytest.param(lambda t: ["evaluate", "--config", str(_good_config(t))],
                 r"bclviz evaluate: error: checkpoint .*old.pt does not exist; train the run first with `bclviz train --config ", id="cli-evaluate-before-train"),
    pytest.param(
        lambda t: ["train", "--config", str(_write(t, "opts.yaml", f"data_options: {{foo: 1}}\noutput_dir: {t / 'run'}\n")), "--quiet"],
        r"bclviz train: error: .*foo",
        id="cli-unknown-data-option",
    ),
    pytest.param(lambda t: ["inspect", "--old", str(t / "missing.npy"), "--new", str(_npy(t, "new.npy", E_NEW)),
                            "--labels", str(_npy(t, "labels.npy", E_Y)), "--out", str(t / "out")],
                 r"bclviz inspect: error: old file .*missing.npy does not exist", id="cli-inspect-file-missing"),
    pytest.param(lambda t: ["inspect", "--features", str(t), "--old", str(t / "old.npy"), "--out", str(t / "out")],
                 r"bclviz inspect: error: give either --features or --old, --new, --labels, not both", id="cli-inspect-features-and-files"),
    pytest.param(lambda t: ["inspect", "--old", str(_npy(t, "old.npy", E_OLD)), "--out", str(t / "out")],
                 r"bclviz inspect: error: missing \['--new', '--labels'\]: give --old, --new and --labels, or --features DIR", id="cli-inspect-files-missing"),
    pytest.param(lambda t: ["inspect", "--old", str(_npy(t, "old.npy", E_OLD)), "--new", str(_npy(t, "new.npy", E_NEW)),
                            "--labels", str(_npy(t, "labels.npy", E_Y * 0.5)), "--out", str(t / "out")],
                 r"bclviz inspect: error: .*labels.npy: labels must be integer class ids or strings, got dtype float64", id="cli-inspect-float-labels"),
    pytest.param(lambda t: ["inspect", "--features", str(t), "--out", str(t / "out")],
                 r"bclviz inspect: error: features folder .* lacks \['old_features.npy', 'new_features.npy', 'labels.npy'\]", id="cli-inspect-empty-folder"),
    pytest.param(lambda t: ["train", "--config", str(_write(t, "frozen.yaml", f"old_model: {{name: torchscript, dim: 16, options: {{path: {t / 'missing.pt'}}}}}\noutput_dir: {t / 'run'}\n")), "--quiet"],
                 r"bclviz train: error: old model file .*missing.pt does not exist", id="cli-train-old-model-file-missing"),
]


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("argv", "message"), CLI_CASES)
def test_cli_bad_input_exits_2_with_message(argv, message, tmp_path, capsys):
    args = argv(tmp_path)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_cli_demo_unknown_dataset_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--dataset", "mnist", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --dataset: invalid choice: 'mnist'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- fail early
def test_train_new_refuses_k_at_least_classes_before_training(tiny_toy, tiny_old):
    epochs = []
    model = build_new_model(tiny_toy, TINY_SPEC)
    with pytest.raises(ValueError, match=r"k must be smaller than the number of classes \(6\), got k=6"):
        train_new(model, tiny_toy.new_train, tiny_old, num_classes=tiny_toy.num_classes, cfg=TrainConfig(epochs=2, batch_size=64),
                  method=MethodConfig(name="ndpp", k=6, warmup_epochs=1), progress=False, callback=epochs.append)
    assert epochs == []


# ---------------------------------------------------------------------------- properties
finite = st.floats(-10, 10, allow_nan=False, width=32)
shapes = st.tuples(st.integers(3, 7), st.integers(1, 5))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=shapes, data=st.data(), bad=st.sampled_from([math.nan, math.inf, -math.inf]), which=st.sampled_from(["old", "new"]))
def test_non_finite_prototypes_always_raise(shape, data, bad, which):
    c, d = shape
    old = np.asarray(data.draw(st.lists(finite, min_size=c * d, max_size=c * d)), dtype=np.float32).reshape(c, d) + 20.0
    new = old[::-1].copy()
    row, col = data.draw(st.integers(0, c - 1)), data.draw(st.integers(0, d - 1))
    (old if which == "old" else new)[row, col] = bad
    with pytest.raises(ValueError, match=rf"{which}_protos contains NaN or Inf values in 1 row"):
        ndpp(old, new, eps=0.2, k=1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 20), d=st.integers(1, 6), data=st.data(), bad=st.sampled_from([math.nan, math.inf]))
def test_non_finite_features_always_raise_in_evaluate(n, d, data, bad):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 3, n)
    x[data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, d - 1))] = bad
    side = data.draw(st.sampled_from(["query", "gallery"]))
    clean = np.ones_like(x)
    args = (x, y, clean, y) if side == "query" else (clean, y, x, y)
    with pytest.raises(ValueError, match=rf"{side} contains NaN or Inf values in 1 row"):
        evaluate(*args, backend="torch")


@settings(max_examples=30, deadline=None)
@given(eps=st.floats(max_value=-1e-12, allow_nan=False, allow_infinity=True), method=st.sampled_from([ndpp, odpp]))
def test_negative_eps_always_raises(eps, method):
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        method(P_OLD, P_NEW, eps=eps, k=2)


@settings(max_examples=20, deadline=None)
@given(c=st.integers(2, 8), extra=st.integers(0, 5), method=st.sampled_from([ndpp, odpp]))
def test_k_at_least_classes_always_raises(c, extra, method):
    p = torch.randn(c, 3, generator=torch.Generator().manual_seed(c))
    with pytest.raises(ValueError, match=rf"k must be smaller than the number of classes \({c}\), got k={c + extra}"):
        method(p, p.flip(0), eps=0.1, k=c + extra)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), c=st.integers(2, 6), data=st.data())
def test_out_of_range_label_always_raises(n, c, data):
    rng = np.random.default_rng(n * 31 + c)
    labels = rng.integers(0, c, n)
    labels[data.draw(st.integers(0, n - 1))] = data.draw(st.one_of(st.integers(c, c + 50), st.integers(-50, -1)))
    with pytest.raises(ValueError, match=r"labels contains (label \d+, out of range for \d+ classes|negative labels)"):
        recognisability(rng.standard_normal((n, 3)).astype(np.float32), labels, rng.standard_normal((c, 3)))


# ---------------------------------------------------------------------------- single-sample classes
def test_single_sample_class_is_not_scored_in_leave_one_out_retrieval():
    """docs/metrics.md: a query with no relevant gallery item is left out of every metric."""
    x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1, 2])  # class 2 has a single sample
    out = evaluate(x, y, x, y, k=2, recall_at=(1,), exclude_self=True, backend="torch")
    assert out["n_queries"] == 4
    assert out["mAP@2"] == 1.0 and out["R@1"] == 1.0
    only_singletons = evaluate(x, torch.arange(5), x, torch.arange(5), exclude_self=True, backend="torch")
    assert only_singletons["n_queries"] == 0
    assert all(math.isnan(v) for key, v in only_singletons.items() if key != "n_queries")


def test_single_sample_class_stays_in_training_in_closed_set_split():
    y = np.array([0, 0, 0, 0, 1, 2, 2])
    train, test = splits.closed_set(y, test_ratio=0.5, seed=0)
    assert 4 in train and 4 not in test
    assert set(y[test]) == {0, 2} and set(y[train]) == {0, 1, 2}


def test_single_sample_class_prototype_is_its_normalised_feature():
    f = torch.tensor([[3.0, 4.0], [1.0, 0.0], [1.0, 0.0]])
    protos = class_prototypes(f, torch.tensor([0, 1, 1]), 2)
    torch.testing.assert_close(protos, torch.tensor([[0.6, 0.8], [1.0, 0.0]]))


def test_catalogue_is_long_enough_and_ids_are_distinct():
    ids = [p.id for p in CASES] + [p.id for p in CLI_CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 30
    json.dumps(ids)  # plain strings, listable in the report
