"""bclviz.features.load: every source format gives the same Embeddings; labels, splits and ids.

Malformed inputs (each with its message) are in the catalogue of tests/test_bad_inputs.py.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from bclviz import features
from bclviz.features import BUNDLE_KEYS, FOLDER_FILES, Embeddings

N, D = 40, 6
RAW_LABELS = np.array([7, 3, 42, 3, 100, 7, 42, 100] * 5)  # 4 classes with gaps in their ids


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, D)).astype(np.float32), rng.normal(size=(N, D)).astype(np.float32), RAW_LABELS


def assert_same(emb: Embeddings, old, new, raw_labels):
    np.testing.assert_array_equal(np.asarray(emb.old), old)
    np.testing.assert_array_equal(np.asarray(emb.new), new)
    values = np.unique(raw_labels)
    assert emb.class_names == tuple(str(v) for v in values)
    np.testing.assert_array_equal(values[emb.labels], raw_labels)  # index c stands for class_names[c]
    assert emb.labels.dtype == np.int64
    assert (emb.n, emb.dim, emb.num_classes) == (len(raw_labels), old.shape[1], len(values))


def test_npy_files_are_memory_mapped(arrays, tmp_path):
    old, new, y = arrays
    paths = []
    for name, arr in zip(("old", "new", "labels"), arrays):
        np.save(tmp_path / f"{name}.npy", arr)
        paths.append(tmp_path / f"{name}.npy")
    emb = features.load(*paths)
    assert_same(emb, old, new, y)
    assert isinstance(emb.old, np.memmap) and isinstance(emb.new, np.memmap)  # nothing copied
    assert emb.sources == {"old": str(paths[0]), "new": str(paths[1]), "labels": str(paths[2])}
    assert emb.query is None and emb.split() == (None, None)


@pytest.mark.parametrize("form", ["npz-single", "npz-bundle", "pt-single", "pt-bundle", "numpy", "torch", "folder",
                                  "str-paths"])
def test_every_format_gives_the_same_embeddings(arrays, tmp_path, form):
    old, new, y = arrays
    if form == "npz-single":
        for name, arr in zip(("old", "new", "labels"), arrays):
            np.savez(tmp_path / f"{name}.npz", arr)
        emb = features.load(tmp_path / "old.npz", tmp_path / "new.npz", tmp_path / "labels.npz")
        assert emb.sources["old"] == f"{tmp_path / 'old.npz'}['arr_0']"
    elif form == "npz-bundle":
        np.savez(tmp_path / "emb.npz", old=old, new=new, labels=y)
        emb = features.load(tmp_path / "emb.npz")
        assert emb.sources["new"] == f"{tmp_path / 'emb.npz'}['new']"
    elif form == "pt-single":
        for name, arr in zip(("old", "new", "labels"), arrays):
            torch.save(torch.from_numpy(arr), tmp_path / f"{name}.pt")
        emb = features.load(tmp_path / "old.pt", tmp_path / "new.pt", tmp_path / "labels.pt")
    elif form == "pt-bundle":
        torch.save({k: torch.from_numpy(v) for k, v in zip(("old", "new", "labels"), arrays)}, tmp_path / "emb.pt")
        emb = features.load(tmp_path / "emb.pt")
    elif form == "numpy":
        emb = features.load(old, new, y)
        assert emb.sources == {key: f"{key} (in-memory array)" for key in ("old", "new", "labels")}
    elif form == "torch":
        emb = features.load(torch.from_numpy(old).requires_grad_(), torch.from_numpy(new), torch.from_numpy(y))
    elif form == "folder":
        for key, arr in zip(("old", "new", "labels"), arrays):
            np.save(tmp_path / FOLDER_FILES[key], arr)
        emb = features.load(tmp_path)
        assert isinstance(emb.old, np.memmap)
    else:
        for name, arr in zip(("old", "new", "labels"), arrays):
            np.save(tmp_path / f"{name}.npy", arr)
        emb = features.load(*(str(tmp_path / f"{n}.npy") for n in ("old", "new", "labels")))
    assert_same(emb, old, new, y)


def test_string_labels_and_other_dtypes(arrays):
    old, new, _ = arrays
    names = np.array(["shoe", "bag", "hat", "bag"] * 10)
    emb = features.load(old.astype(np.float16), new.astype(np.float64), names)
    assert emb.class_names == ("bag", "hat", "shoe")
    assert emb.labels.tolist()[:4] == [2, 0, 1, 0]
    assert emb.old.dtype == np.float16 and emb.new.dtype == np.float64  # kept as given
    ints = features.load(np.arange(1, N * D + 1, dtype=np.int8).reshape(N, D) % 5 + 1, new, names)
    assert ints.old.dtype == np.int8


def test_bfloat16_tensors_are_read():
    x = torch.randn(8, 3).to(torch.bfloat16)
    emb = features.load(x, x, torch.tensor([0, 1] * 4))
    np.testing.assert_array_equal(emb.old, x.float().numpy())


@pytest.mark.parametrize("query", ["mask", "indices", "file"])
def test_query_split(arrays, tmp_path, query):
    old, new, y = arrays
    rows = np.array([0, 5, 9, 33])
    mask = np.zeros(N, dtype=bool)
    mask[rows] = True
    q = {"mask": mask, "indices": rows[::-1].copy(), "file": tmp_path / "q.npy"}[query]
    np.save(tmp_path / "q.npy", mask)
    emb = features.load(old, new, y, query=q)
    np.testing.assert_array_equal(emb.query, mask)
    q_rows, g_rows = emb.split()
    np.testing.assert_array_equal(q_rows, rows)
    np.testing.assert_array_equal(g_rows, np.setdiff1d(np.arange(N), rows))


def test_query_in_a_bundle(arrays, tmp_path):
    old, new, y = arrays
    np.savez(tmp_path / "emb.npz", old=old, new=new, labels=y, query=np.arange(3))
    emb = features.load(tmp_path / "emb.npz")
    assert emb.query.sum() == 3 and emb.query[:3].all()


def test_ids_align_the_new_rows_to_the_old_order(arrays):
    old, new, y = arrays
    ids = np.array([f"item-{i}" for i in range(N)])
    perm = np.random.default_rng(1).permutation(N)
    emb = features.load(old, new[perm], y, old_ids=ids, new_ids=ids[perm])
    assert_same(emb, old, new, y)
    same = features.load(old, new, y, old_ids=np.arange(N), new_ids=np.arange(N))
    assert np.shares_memory(same.new, new)  # already aligned: no copy


def test_folder_with_optional_query(arrays, tmp_path):
    for key, arr in zip(("old", "new", "labels"), arrays):
        np.save(tmp_path / FOLDER_FILES[key], arr)
    np.save(tmp_path / FOLDER_FILES["query"], np.arange(N) < 10)
    emb = features.load(tmp_path)
    assert emb.query.sum() == 10 and emb.sources["query"] == str(tmp_path / "query.npy")


def test_scan_covers_every_block(arrays, monkeypatch):
    """NaN and zero rows are found in any row block, also the last, short one."""
    old, new, y = arrays
    monkeypatch.setattr(features, "_BLOCK", 7)
    bad = old.copy()
    bad[N - 1, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN or Inf values in 1 row\(s\) \(first: row 39\)"):
        features.load(bad, new, y)
    zero = new.copy()
    zero[[8, 20]] = 0
    with pytest.raises(ValueError, match=r"2 all-zero row\(s\) \(first: row 8\)"):
        features.load(old, zero, y)


def test_public_constants():
    assert BUNDLE_KEYS[:3] == ("old", "new", "labels")
    assert FOLDER_FILES["new"] == "new_features.npy"
    assert Path(FOLDER_FILES["old"]).suffix == ".npy"
