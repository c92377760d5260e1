"""Loaders of the real benchmark formats, on tiny fixtures written in each real layout."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bclviz.data.cifar import cifar_protocol_from_arrays, load_cifar100
from bclviz.data.formats import (
    ImageList,
    ImageListDataset,
    load_image_folder,
    split_extended_class,
    split_extended_data,
)
from bclviz.data.gldv2 import (
    gldv2_image_path,
    load_gldv2_retrieval,
    load_gldv2_train,
    map_at_k_relevance,
)
from bclviz.data.inshop import load_inshop


def _image(path: Path, value: int = 0, fmt: str = "JPEG") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), (value % 256, 40, 200)).save(path, fmt)
    return path


def _gid(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- GLDv2
# landmark id -> image ids, in file order
TRAIN = {7: [_gid(f"t7-{i}") for i in range(3)], 2: [_gid(f"t2-{i}") for i in range(2)],
         40: [_gid("t40-0")]}  # fmt: skip
INDEX = [_gid(f"x{i}") for i in range(5)]
SOLUTION = [  # query id, relevant index ids, usage
    (_gid("q0"), [INDEX[3], INDEX[1]], "Private"),
    (_gid("q1"), [INDEX[0]], "Public"),
    (_gid("q2"), None, "Ignored"),
    (_gid("q3"), [INDEX[4]], "Private"),
]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_gldv2(root: Path) -> Path:
    rows = [(i, lm) for lm, ids in TRAIN.items() for i in ids]
    _write(root / "train.csv", "id,url,landmark_id\n"
           + "".join(f"{i},https://example.org/{i}.jpg,{lm}\n" for i, lm in rows))
    _write(root / "train_ids.csv", "id,landmark_id\n" + "".join(f"{i},{lm}\n" for i, lm in rows))
    _write(root / "train_clean.csv", "landmark_id,images\n"
           + "".join(f"{lm},{' '.join(ids)}\n" for lm, ids in TRAIN.items()))
    _write(root / "index.csv", "id\n" + "".join(f"{i}\n" for i in INDEX))
    _write(root / "retrieval_solution_v2.1.csv", "id,images,Usage\n" + "".join(
        f"{q},{' '.join(rel) if rel else 'None'},{u}\n" for q, rel, u in SOLUTION))
    for n, (i, _) in enumerate(rows):
        _image(gldv2_image_path(root, "train", i), n)
    for n, i in enumerate(INDEX):
        _image(gldv2_image_path(root, "index", i), n)
    for n, (q, _, _) in enumerate(SOLUTION):
        _image(gldv2_image_path(root, "test", q), n)
    return root


@pytest.fixture(scope="module")
def gld_root(tmp_path_factory):
    return make_gldv2(tmp_path_factory.mktemp("gldv2"))


@pytest.mark.parametrize("csv", ["train.csv", "train_ids.csv", "train_clean.csv"])
def test_gldv2_train_layouts(gld_root, csv):
    data = load_gldv2_train(gld_root, csv=csv)
    ids = [i for ids in TRAIN.values() for i in ids]
    assert len(data) == 6 and data.class_ids == (2, 7, 40) and data.root == gld_root
    np.testing.assert_array_equal(data.labels, [1, 1, 1, 0, 0, 2])
    assert data.labels.dtype == np.int64
    assert data.paths == tuple(gld_root / "train" / i[0] / i[1] / i[2] / f"{i}.jpg" for i in ids)
    assert all(p.is_file() for p in data.paths)


def test_gldv2_train_min_images_per_class(gld_root):
    data = load_gldv2_train(gld_root, min_images_per_class=2)
    assert data.class_ids == (2, 7) and len(data) == 5
    np.testing.assert_array_equal(data.labels, [1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="no image left"):
        load_gldv2_train(gld_root, min_images_per_class=4)


def test_gldv2_train_errors(tmp_path):
    root = make_gldv2(tmp_path / "gld")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_gldv2_train(root, csv="missing.csv")
    _write(root / "bad.csv", "id,landmark\nabcdef,3\n")
    with pytest.raises(ValueError, match=r"bad\.csv.*'id,landmark_id' or 'landmark_id,images'"):
        load_gldv2_train(root, csv="bad.csv")
    _write(root / "bad.csv", "id,landmark_id\nabcdef,3\nabcdeg,x3\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 3: landmark_id 'x3'"):
        load_gldv2_train(root, csv="bad.csv", check_files=False)
    _write(root / "bad.csv", "id,landmark_id\nabcdef,3,4\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 2: expected 2 comma-separated fields"):
        load_gldv2_train(root, csv="bad.csv", check_files=False)
    missing = gldv2_image_path(root, "train", TRAIN[2][1])
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=f"train_clean.csv references 1 .*{missing.name}"):
        load_gldv2_train(root)
    assert len(load_gldv2_train(root, check_files=False)) == 6


def test_gldv2_retrieval(gld_root):
    split = load_gldv2_retrieval(gld_root)
    assert split.usage == ("Private", "Private") and len(split.query) == 2
    assert split.query.paths == tuple(gldv2_image_path(gld_root, "test", q)
                                      for q, _, u in SOLUTION if u == "Private")
    assert split.index.paths == tuple(gldv2_image_path(gld_root, "index", i) for i in INDEX)
    assert split.query.num_classes == 0 and (split.index.labels == -1).all()
    assert [r.tolist() for r in split.relevant] == [[1, 3], [4]]
    both = load_gldv2_retrieval(gld_root, usage=("Public", "Private", "Ignored"))
    assert both.usage == ("Private", "Public", "Ignored", "Private")
    assert [r.tolist() for r in both.relevant] == [[1, 3], [0], [], [4]]
    with pytest.raises(ValueError, match="usage must be"):
        load_gldv2_retrieval(gld_root, usage=("Secret",))


def test_gldv2_retrieval_errors(tmp_path):
    root = make_gldv2(tmp_path / "gld")
    solution = root / "retrieval_solution_v2.1.csv"
    text = solution.read_text()
    _write(solution, text.replace(INDEX[4], "ffffffffffffffff"))
    with pytest.raises(ValueError, match=r"line 5: relevant id 'f{16}' is not listed in .*index"):
        load_gldv2_retrieval(root)
    _write(solution, text.replace("id,images,Usage", "id,images"))
    with pytest.raises(ValueError, match=r"solution_v2\.1\.csv: header .*'id,images,Usage'"):
        load_gldv2_retrieval(root)
    solution.unlink()
    with pytest.raises(FileNotFoundError, match=r"retrieval_solution_v2\.1\.csv"):
        load_gldv2_retrieval(root)
    _write(solution, text)
    gldv2_image_path(root, "index", INDEX[0]).unlink()
    with pytest.raises(FileNotFoundError, match=f"index.csv references 1 image.*{INDEX[0]}"):
        load_gldv2_retrieval(root)
    assert len(load_gldv2_retrieval(root, check_files=False).index) == 5


def test_format_names_reexported_from_benchmarks():
    import bclviz.data.benchmarks as benchmarks

    assert benchmarks.load_gldv2_train is load_gldv2_train
    assert benchmarks.load_inshop is load_inshop
    # the format names that bclviz.data.benchmarks held before the split into formats/cifar
    assert benchmarks.ImageList is ImageList and benchmarks.load_image_folder is load_image_folder
    assert benchmarks.split_extended_class is split_extended_class
    assert benchmarks.load_cifar100 is load_cifar100
    assert benchmarks.cifar_protocol_from_arrays is cifar_protocol_from_arrays
    with pytest.raises(AttributeError, match="no attribute 'load_nothing'"):
        benchmarks.load_nothing


def _official_map(predictions, solution, max_predictions=100):
    """The official GLDv2 loop (duplicates skipped, divisor min(|R|, k)) on id lists."""
    total = 0.0
    for key, prediction in predictions.items():
        ap, seen, correct = 0.0, set(), 0
        for i in range(min(len(prediction), max_predictions)):
            if prediction[i] not in seen:
                if prediction[i] in solution[key]:
                    correct += 1
                    ap += correct / (i + 1)
                seen.add(prediction[i])
        total += ap / min(len(solution[key]), max_predictions)
    return total / len(solution)


def test_map_at_k_hand_computed():
    ranked = np.array([[3, 1, 7, 1, 5], [2, 0, 4, 6, 8]])
    relevant = [np.array([1, 5, 9]), np.array([2])]
    # query 0: hits at ranks 2 and 5 (the repeated 1 at rank 4 is a miss): (1/2 + 2/5) / 3
    assert map_at_k_relevance(ranked, relevant) == pytest.approx(((0.5 + 0.4) / 3 + 1.0) / 2)
    # k=2: only rank 2 counts, divisor min(3, 2) = 2
    assert map_at_k_relevance(ranked, relevant, k=2) == pytest.approx((0.5 / 2 + 1.0) / 2)
    assert map_at_k_relevance(torch.from_numpy(ranked), relevant, k=2) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="query 1 has no relevant"):
        map_at_k_relevance(ranked, [relevant[0], []])
    with pytest.raises(ValueError, match="same number"):
        map_at_k_relevance(ranked, relevant[:1])


def test_map_at_k_matches_official_loop():
    rng = np.random.default_rng(0)
    ranked = rng.integers(0, 30, size=(20, 12))
    relevant = [rng.choice(30, size=rng.integers(1, 15), replace=False) for _ in range(20)]
    predictions = {q: ranked[q].tolist() for q in range(20)}
    solution = {q: set(relevant[q].tolist()) for q in range(20)}
    for k in (1, 5, 100):
        assert map_at_k_relevance(ranked, relevant, k=k) == pytest.approx(
            _official_map(predictions, solution, k))


# ----------------------------------------------------------------------------- In-shop
INSHOP = [  # image_name, item_id, status
    ("img/WOMEN/Dresses/id_00000001/01_1_front.jpg", "id_00000001", "train"),
    ("img/WOMEN/Dresses/id_00000005/01_1_front.jpg", "id_00000005", "train"),
    ("img/WOMEN/Dresses/id_00000001/01_2_side.jpg", "id_00000001", "train"),
    ("img/MEN/Denim/id_00000003/02_1_front.jpg", "id_00000003", "query"),
    ("img/MEN/Denim/id_00000002/01_1_front.jpg", "id_00000002", "query"),
    ("img/MEN/Denim/id_00000002/01_2_side.jpg", "id_00000002", "gallery"),
    ("img/MEN/Denim/id_00000004/01_1_front.jpg", "id_00000004", "gallery"),
    ("img/MEN/Denim/id_00000002/01_3_back.jpg", "id_00000002", "gallery"),
]


def make_inshop(root: Path, rows=INSHOP) -> Path:
    body = "".join(f"{name}            {item} {status}\n" for name, item, status in rows)
    _write(root / "list_eval_partition.txt",
           f"{len(rows)}\nimage_name item_id evaluation_status\n{body}")
    for n, (name, _, _) in enumerate(rows):
        _image(root / name, n)
    return root


def test_inshop(tmp_path):
    root = make_inshop(tmp_path / "inshop")
    data = load_inshop(root)
    assert list(data) == ["train", "query", "gallery"]
    assert [len(data[k]) for k in data] == [3, 2, 3]
    assert data["train"].class_ids == ("id_00000001", "id_00000005")
    np.testing.assert_array_equal(data["train"].labels, [0, 1, 0])
    assert data["query"].class_ids == data["gallery"].class_ids == (
        "id_00000002", "id_00000003", "id_00000004")
    np.testing.assert_array_equal(data["query"].labels, [1, 0])
    np.testing.assert_array_equal(data["gallery"].labels, [0, 2, 0])
    assert data["gallery"].paths[1] == root / INSHOP[6][0]


def test_inshop_errors(tmp_path):
    root = make_inshop(tmp_path / "inshop")
    partition = root / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    _write(partition, "\n".join(lines[:3] + ["img/a.jpg id_1"] + lines[4:]) + "\n")
    with pytest.raises(ValueError, match=r"list_eval_partition\.txt, line 4: expected"):
        load_inshop(root)
    _write(partition, "\n".join(lines[:5] + ["img/a.jpg id_1 validation"] + lines[6:]) + "\n")
    with pytest.raises(ValueError, match=r"line 6: .*validation'"):
        load_inshop(root)
    _write(partition, "\n".join(["7"] + lines[1:]) + "\n")
    with pytest.raises(ValueError, match="line 1 says 7 images but the file lists 8"):
        load_inshop(root)
    _write(partition, "\n".join(lines[:1] + ["image_name item_id"] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match="line 2: expected the header"):
        load_inshop(root)
    _write(partition, "\n".join(lines) + "\n")
    (root / INSHOP[4][0]).unlink()
    with pytest.raises(FileNotFoundError, match="01_1_front.jpg"):
        load_inshop(root)
    assert len(load_inshop(root, check_files=False)["query"]) == 2
    partition.unlink()
    with pytest.raises(FileNotFoundError, match=r"list_eval_partition\.txt"):
        load_inshop(root)


# ----------------------------------------------------------------------------- folders
def test_image_folder(tmp_path):
    root = tmp_path / "folder"
    _image(root / "cat" / "b.png", fmt="PNG")
    _image(root / "cat" / "sub" / "a.JPG")
    _image(root / "ant" / "x.jpeg")
    _write(root / "ant" / "notes.txt", "not an image")
    _write(root / ".cache" / "y.jpg", "hidden")
    data = load_image_folder(root)
    assert data.class_ids == ("ant", "cat")
    assert data.paths == (root / "ant/x.jpeg", root / "cat/b.png", root / "cat/sub/a.JPG")
    np.testing.assert_array_equal(data.labels, [0, 1, 1])
    (root / "dog").mkdir()
    with pytest.raises(ValueError, match="class folder .*dog holds no image"):
        load_image_folder(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty holds no class sub-folders"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")


def test_dataset_items(gld_root):
    data = load_gldv2_train(gld_root)
    ds = ImageListDataset(data, image_size=(8, 12))
    image, label, index = ds[4]
    assert image.shape == (3, 8, 12) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert (label, index) == (0, 4) and ds[-1][1:] == (2, 5)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=6)))
    assert batch[0].shape == (6, 3, 8, 12)
    assert batch[1].tolist() == data.labels.tolist() and batch[2].tolist() == list(range(6))
    ds = ImageListDataset(load_gldv2_retrieval(gld_root).query, lambda im: torch.tensor(im.size))
    assert ds[0][0].tolist() == [6, 5] and ds[0][1] == -1


def test_image_list_validation(tmp_path):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        ImageList((tmp_path / "a", tmp_path / "b"), np.array([0, 2]), ("x", "y"), tmp_path)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ImageList((tmp_path / "a", tmp_path / "b"), np.array([0]), ("x",), tmp_path)
    with pytest.raises(ValueError, match="all labels -1"):
        ImageList((tmp_path / "a",), np.array([0]), (), tmp_path)
    data = ImageList(["a", "b"], [1, 0], ["x", "y"], str(tmp_path))
    assert data.paths == (Path("a"), Path("b")) and not data.labels.flags.writeable
    assert repr(data) == f"ImageList(2 images, 2 classes, root={str(tmp_path)!r})"


# ----------------------------------------------------------------------------- splits
def _ten_classes(tmp_path) -> ImageList:
    y = np.repeat(np.arange(10), np.arange(1, 11))  # class c has c + 1 images
    paths = tuple(tmp_path / f"{i}.jpg" for i in range(len(y)))
    return ImageList(paths, y, tuple(f"L{c}" for c in range(10)), tmp_path)


def test_split_extended_class(tmp_path):
    data = _ten_classes(tmp_path)
    old, new = split_extended_class(data, ratio=0.3, seed=1)
    assert old.num_classes == 3 and new.num_classes == 10
    assert old.class_ids == new.class_ids[:3] and sorted(new.class_ids) == sorted(data.class_ids)
    assert set(old.labels.tolist()) == {0, 1, 2}
    label_in_new = dict(zip(new.paths, new.labels.tolist()))
    assert all(label_in_new[p] == lab for p, lab in zip(old.paths, old.labels.tolist()))
    original = {p: data.class_ids[lab] for p, lab in zip(data.paths, data.labels)}
    assert all(new.class_ids[lab] == original[p] for p, lab in zip(new.paths, new.labels))
    assert len(old) == sum(int(c[1:]) + 1 for c in old.class_ids)
    again, _ = split_extended_class(data, ratio=0.3, seed=1)
    assert again.paths == old.paths and again.class_ids == old.class_ids
    first, _ = split_extended_class(data, ratio=0.3, seed=None)
    assert first.class_ids == ("L0", "L1", "L2")
    with pytest.raises(ValueError, match="unlabeled"):
        split_extended_class(ImageList((tmp_path,), [-1], (), tmp_path))


def test_split_extended_data(tmp_path):
    data = _ten_classes(tmp_path)
    old, new = split_extended_data(data, ratio=0.5, seed=3)
    assert new is data and old.class_ids == data.class_ids
    np.testing.assert_array_equal(np.bincount(old.labels), np.ceil(np.arange(1, 11) * 0.5))
    assert set(old.paths) <= set(data.paths)
    label_of = dict(zip(data.paths, data.labels.tolist()))
    assert all(label_of[p] == lab for p, lab in zip(old.paths, old.labels.tolist()))
    assert split_extended_data(data, ratio=0.5, seed=3)[0].paths == old.paths


# ----------------------------------------------------------------------------- CIFAR-100
def test_cifar100_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*download=True") as err:
        load_cifar100(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_cifar_protocol_from_arrays():
    gen = torch.Generator().manual_seed(0)
    y_train, y_test = torch.arange(6).repeat(4), torch.arange(6).repeat_interleave(2)
    x_train = torch.rand(len(y_train), 3, 4, 4, generator=gen)
    x_test = torch.rand(len(y_test), 3, 4, 4, generator=gen)
    data = cifar_protocol_from_arrays(x_train, y_train, x_test, y_test.numpy(), old_classes=3)
    assert (data.num_classes, data.num_old_classes, data.input_shape) == (6, 3, (3, 4, 4))
    assert torch.equal(data.old_train.y, y_train[y_train < 3])
    assert torch.equal(data.old_train.x, x_train[y_train < 3])
    assert data.new_train.x is x_train and data.query_is_gallery
    assert data.query is data.gallery and torch.equal(data.query.y, y_test)
    with pytest.raises(ValueError, match=r"old_classes must be an integer in \[1, 6\)"):
        cifar_protocol_from_arrays(x_train, y_train, x_test, y_test, old_classes=6)
    with pytest.raises(ValueError, match="every label 0..C-1"):
        cifar_protocol_from_arrays(x_train, y_train + 1, x_test, y_test)


@pytest.mark.skipif(not os.environ.get("BCLVIZ_CIFAR100"),
                    reason="set BCLVIZ_CIFAR100 to a folder holding cifar-100-python/")
def test_cifar100_real():
    x_train, y_train, x_test, y_test = load_cifar100(os.environ["BCLVIZ_CIFAR100"])
    assert x_train.shape == (50000, 3, 32, 32) and x_test.shape == (10000, 3, 32, 32)
    assert 0 <= float(x_train.min()) and float(x_train.max()) <= 1
    assert torch.equal(torch.bincount(y_train), torch.full((100,), 500))
    assert torch.equal(torch.bincount(y_test), torch.full((100,), 100))
