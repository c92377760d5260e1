"""Tests for bclviz.data.images (offline: digits, local Fashion-MNIST, tiny IDX files)."""

from __future__ import annotations

import gzip
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bclviz.data import images
from bclviz.data.images import (
    FASHION_MNIST_ENV,
    image_bcl_data,
    load_digits_arrays,
    load_fashion_mnist,
    read_idx,
)

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not DEBIAN.exists(),
    reason=f"Fashion-MNIST not installed at {DEBIAN} (apt-get install dataset-fashion-mnist)",
)


def write_idx(path: Path, array: np.ndarray, *, gz: bool, magic: int | None = None) -> Path:
    """Write ``array`` (uint8) as an IDX file; ``magic`` overrides the real one."""
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else (2051 if array.ndim == 3 else 2049)
    header = magic.to_bytes(4, "big") + b"".join(s.to_bytes(4, "big") for s in array.shape)
    payload = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def write_raw(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def write_fashion(folder: Path, *, gz: bool, n_train: int = 40, n_test: int = 20, seed: int = 0):
    """Tiny Fashion-MNIST look-alike: 4x4 images, 10 classes, labels cycling 0..9."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 4)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 4)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz=gz)
    return arrays


@pytest.fixture
def no_default_places(tmp_path, monkeypatch):
    """Point every default search place at empty folders."""
    empty = tmp_path / "empty"
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST", empty / "debian")
    monkeypatch.setattr(images, "CACHE_FASHION_MNIST", empty / "cache")
    return empty


# ----------------------------------------------------------------------------- digits
def test_digits_arrays():
    x, y = load_digits_arrays()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert sorted(y.unique().tolist()) == list(range(10))
    x[0] = -1.0  # callers get their own copy
    assert float(load_digits_arrays()[0].min()) == 0.0


def test_digits_without_scikit_learn_names_the_lab_extra(monkeypatch):
    images._digits_uint8.cache_clear()  # else the arrays would come from memory
    monkeypatch.setitem(sys.modules, "sklearn", None)  # "not installed"
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    for load in (load_digits_arrays, lambda: image_bcl_data("digits")):
        with pytest.raises(ImportError, match=r"scikit-learn.*pip install 'bclviz\[lab\]'"):
            load()


def test_module_imports_without_scikit_learn():
    code = ("import sys; sys.modules['sklearn'] = None; import bclviz.data.images as m; "
            "assert callable(m.image_bcl_data)")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- IDX files
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_load_fashion_mnist_from_tiny_idx_files(tmp_path, no_default_places, gz, layout):
    folder = tmp_path / "fm" if layout == "flat" else tmp_path / "fm" / "FashionMNIST" / "raw"
    arrays = write_fashion(folder, gz=gz)
    x_tr, y_tr, x_te, y_te = load_fashion_mnist(tmp_path / "fm")
    assert x_tr.shape == (40, 1, 4, 4) and x_te.shape == (20, 1, 4, 4)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    expected = arrays["train-images-idx3-ubyte"][:, None] / 255.0
    np.testing.assert_allclose(x_tr.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(y_te.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert 0.0 <= float(x_tr.min()) and float(x_tr.max()) <= 1.0


def test_search_order_and_env_var(tmp_path, no_default_places, monkeypatch):
    write_fashion(tmp_path / "root", gz=False, n_train=30)
    write_fashion(tmp_path / "env", gz=True, n_train=50)
    write_fashion(no_default_places / "debian", gz=True, n_train=70)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "env"))
    assert len(load_fashion_mnist(tmp_path / "root")[1]) == 30
    assert len(load_fashion_mnist(tmp_path / "nothing-here")[1]) == 50
    monkeypatch.delenv(FASHION_MNIST_ENV)
    assert len(load_fashion_mnist()[1]) == 70


def test_cache_place_is_under_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setattr(images, "CACHE_FASHION_MNIST", None)  # the default
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):  # resolved at each call
        monkeypatch.setenv("BCLVIZ_CACHE", str(tmp_path / name))
        assert images.fashion_mnist_cache_dir() == tmp_path / name / "fashion-mnist"
        assert images.fashion_mnist_search_paths()[-1] == tmp_path / name / "fashion-mnist"
    write_fashion(tmp_path / "b" / "fashion-mnist", gz=True, n_train=30)
    assert len(load_fashion_mnist()[1]) == 30


def test_download_goes_to_the_cache_root(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setattr(images, "CACHE_FASHION_MNIST", None)
    monkeypatch.setenv("BCLVIZ_CACHE", str(tmp_path / "root"))
    targets = []

    def fake_download(root, train, download):  # what torchvision writes, without internet
        targets.append(Path(root))
        write_fashion(Path(root) / "FashionMNIST" / "raw", gz=False, n_train=20)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_download)
    assert len(load_fashion_mnist(download=True)[1]) == 20
    assert targets == [tmp_path / "root" / "fashion-mnist"]


def test_loaded_tensors_are_fresh_copies(tmp_path, no_default_places):
    write_fashion(tmp_path, gz=True)
    first = load_fashion_mnist(tmp_path)
    first[0].zero_()
    assert float(load_fashion_mnist(tmp_path)[0].max()) > 0


def test_missing_data_names_every_place(tmp_path, no_default_places, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "from-env"))
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist(tmp_path / "my-root")
    message = str(err.value)
    for place in ("my-root", "from-env", str(no_default_places / "debian"),
                  str(no_default_places / "cache"), "FashionMNIST/raw",
                  "train-images-idx3-ubyte", "apt-get install dataset-fashion-mnist",
                  "download=True"):
        assert place in message


def test_incomplete_folder_is_not_used(tmp_path, no_default_places):
    write_fashion(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "images", array, gz=gz)
    np.testing.assert_array_equal(read_idx(path, magic=2051), array)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: write_idx(p, np.zeros(5), gz=False), "expected IDX magic number 2051"),
        (lambda p: write_idx(p, np.zeros((2, 2, 2)), gz=True, magic=1234), "got 1234"),
        (lambda p: write_raw(p, b"\x00\x00"), "too short"),
        (lambda p: write_raw(p, b"\x1f\x8bnot gzip at all"), "not a readable IDX file"),
    ],
)
def test_malformed_idx_names_the_file(tmp_path, make, match):
    path = make(tmp_path / "bad-images")
    with pytest.raises(ValueError, match=match) as err:
        read_idx(path, magic=2051)
    assert str(path) in str(err.value)


def test_truncated_idx_and_count_mismatch(tmp_path, no_default_places):
    path = write_idx(tmp_path / "x", np.zeros((3, 2, 2)), gz=False)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"header says shape \(3, 2, 2\)"):
        read_idx(path, magic=2051)
    write_fashion(tmp_path / "fm", gz=False)
    write_idx(tmp_path / "fm" / "t10k-labels-idx1-ubyte", np.zeros(7), gz=False)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte holds 7 labels"):
        load_fashion_mnist(tmp_path / "fm")


@needs_fashion
def test_fashion_mnist_from_debian_package(no_default_places, monkeypatch):
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST", DEBIAN)
    x_tr, y_tr, x_te, y_te = load_fashion_mnist()
    assert x_tr.shape == (60000, 1, 28, 28) and x_te.shape == (10000, 1, 28, 28)
    assert x_tr.dtype == torch.float32 and y_te.dtype == torch.int64
    assert float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0
    assert torch.bincount(y_te).tolist() == [1000] * 10
    data = image_bcl_data("fashion-mnist", seed=0)
    assert len(data.new_train) == 20000 and len(data.query) == 2000
    assert data.input_shape == (1, 28, 28)


# ----------------------------------------------------------------------------- BCL data
SETTINGS = ["extended-data", "extended-class"]
PROTOCOLS = ["closed-set", "open-set"]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_digits_bcl_data(setting, protocol):
    data = image_bcl_data("digits", seed=0, setting=setting, protocol=protocol, old_ratio=0.3)
    c, c_old = data.num_classes, data.num_old_classes
    assert data.input_shape == (1, 8, 8) and data.new_train.x.shape[1:] == (1, 8, 8)
    assert data.query_is_gallery and data.query is data.gallery
    assert sorted(data.new_train.y.unique().tolist()) == list(range(c))
    assert sorted(data.old_train.y.unique().tolist()) == list(range(c_old))
    assert set(data.old_train.y.tolist()) <= set(data.new_train.y.tolist())
    assert c == (10 if protocol == "closed-set" else 7)
    if setting == "extended-class":
        assert c_old == math.ceil(0.3 * c)
        assert len(data.old_train) == int((data.new_train.y < c_old).sum())
    else:
        assert c_old == c
        counts = torch.bincount(data.old_train.y) / torch.bincount(data.new_train.y)
        assert bool(((counts >= 0.3) & (counts < 0.4)).all())
    eval_classes = set(data.query.y.tolist())
    if protocol == "closed-set":
        assert eval_classes == set(range(c))
    else:
        assert eval_classes == set(range(c, 10))
    assert len(data.new_train) + len(data.query) == 1797
    assert data.info["seed"] == 0 and data.info["setting"] == setting
    assert data.info["protocol"] == protocol and data.info["n_new_train"] == len(data.new_train)
    assert sorted(data.info["class_ids"] + (
        [] if protocol == "closed-set" else data.info["eval_class_ids"])) == list(range(10))


def _old_rows_in_new(data) -> bool:
    def rows(part):
        return {(tuple(x.flatten().tolist()), int(y)) for x, y in zip(part.x, part.y)}

    return rows(data.old_train) <= rows(data.new_train)


def test_digits_old_train_is_subset_of_new_train_with_same_labels():
    data = image_bcl_data("digits", seed=1, setting="extended-class", protocol="closed-set")
    assert _old_rows_in_new(data)


def test_digits_bcl_data_is_deterministic_by_seed():
    a = image_bcl_data("digits", seed=3, setting="extended-class", max_train=500, max_eval=200)
    b = image_bcl_data("digits", seed=3, setting="extended-class", max_train=500, max_eval=200)
    c = image_bcl_data("digits", seed=4, setting="extended-class", max_train=500, max_eval=200)
    for part in ("old_train", "new_train", "query"):
        assert torch.equal(getattr(a, part).x, getattr(b, part).x)
        assert torch.equal(getattr(a, part).y, getattr(b, part).y)
    assert len(a.new_train) == 500 and len(a.query) == 200
    assert not torch.equal(a.new_train.x, c.new_train.x)
    assert torch.bincount(a.query.y).min() >= 2  # leave-one-out has a match per class


def test_fashion_bcl_data_from_tiny_files(tmp_path, no_default_places):
    write_fashion(tmp_path, gz=True, n_train=100, n_test=50)
    data = image_bcl_data("fashion-mnist", root=tmp_path, protocol="open-set",
                          setting="extended-class", old_ratio=0.5, seed=0)
    assert data.input_shape == (1, 4, 4)
    assert data.num_classes == 7 and data.num_old_classes == 4
    assert len(data.new_train) == 70 and len(data.query) == 15  # t10k images of 3 classes
    assert set(data.query.y.tolist()) == {7, 8, 9}
    closed = image_bcl_data("fashion-mnist", root=tmp_path, max_train=50, max_eval=30, seed=0)
    assert len(closed.new_train) == 50 and len(closed.query) == 30
    assert torch.bincount(closed.new_train.y).tolist() == [5] * 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "cifar"}, r"name must be one of \('digits', 'fashion-mnist'\), got 'cifar'"),
        ({"setting": "extended_data"}, "setting must be one of"),
        ({"protocol": "open"}, "protocol must be one of"),
        ({"max_eval": 1}, "max_eval must be an integer >= 2"),
        ({"max_train": 5}, "max_train=5 keeps only 5 of the 10 training classes"),
        ({"setting": "extended-class", "old_ratio": 1.0},
         r"old_ratio must be in \(0, 1\), got 1.0"),
        ({"seed": -1}, "seed"),
    ],
)
def test_image_bcl_data_bad_arguments(kwargs, match):
    kwargs = {"name": "digits", **kwargs}
    with pytest.raises(ValueError, match=match):
        image_bcl_data(**kwargs)


def test_fashion_scenarios_from_tiny_files(tmp_path, no_default_places):
    from bclviz.data import load_dataset
    from bclviz.data.scenarios import FASHION_MNIST_CLASSES, FASHION_MNIST_SUPERCLASSES
    from bclviz.models import BlockAverage

    write_fashion(tmp_path, gz=False, n_train=100, n_test=50)
    coarse = load_dataset("fashion-mnist", scenario="coarse-old", root=tmp_path)
    names = list(FASHION_MNIST_SUPERCLASSES)
    assert coarse.num_old_classes == 4 and coarse.info["superclasses"] == names
    by_class = {FASHION_MNIST_CLASSES[c]: names[g] for c, g in zip(coarse.info["class_ids"], coarse.old_class_of.tolist())}
    assert by_class["Sneaker"] == by_class["Ankle boot"] == by_class["Sandal"] == "footwear"
    assert by_class["Shirt"] == by_class["Coat"] == "tops" and by_class["Bag"] == "bags"
    assert torch.equal(coarse.old_train.y, coarse.old_class_of[coarse.new_train.y])
    lowres = load_dataset("fashion-mnist", scenario="lowres-old", root=tmp_path)
    assert isinstance(lowres.old_view, BlockAverage) and lowres.old_view.factor == 4
    assert lowres.num_old_classes == 10 and len(lowres.old_train) == len(lowres.new_train)  # old_ratio 1
    weak = load_dataset("fashion-mnist", scenario="weak-old", root=tmp_path)
    assert (weak.num_classes, weak.num_old_classes) == (10, 3) and weak.info["setting"] == "extended-class"
    v1 = load_dataset("fashion-mnist", scenario="default-v1", root=tmp_path)
    direct = image_bcl_data("fashion-mnist", root=tmp_path)
    assert torch.equal(v1.old_train.x, direct.old_train.x) and torch.equal(v1.query.y, direct.query.y)
