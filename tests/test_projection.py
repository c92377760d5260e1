import numpy as np
import pytest
import torch

from bclviz.projection import SpaceProjection, clear_projection_cache, project_spaces


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def blocks():
    rng = np.random.default_rng(0)
    centers = _unit(rng.normal(size=(4, 8)))
    y = np.repeat(np.arange(4), 25)
    old = _unit(centers[y] + 0.3 * rng.normal(size=(100, 8)))
    new = _unit(centers[y] + 0.2 * rng.normal(size=(100, 8)))
    return {
        "old_features": old,
        "new_features": torch.from_numpy(new).float(),  # torch and numpy blocks mix
        "old_protos": centers,
        "pseudo_old_protos": _unit(centers + 0.1 * rng.normal(size=(4, 8))),
        "new_protos": _unit(centers + 0.05 * rng.normal(size=(4, 8))),
    }


def test_pca_is_pca_of_normalised_rows(blocks):
    proj = SpaceProjection(method="pca").fit(blocks)
    assert proj.method_ == "pca" and proj.n_components_ == 2 and proj.dim_ == 8
    assert list(proj.embedding_) == list(blocks)
    stacked = np.concatenate([np.asarray(b, dtype=float) for b in blocks.values()])
    stacked = _unit(stacked)
    centred = stacked - stacked.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    got = np.concatenate(list(proj.embedding_.values()))
    ref = centred @ vt[:2].T
    signs = np.sign((got * ref).sum(0))  # components are defined up to sign
    np.testing.assert_allclose(got, ref * signs, atol=1e-9)


def test_pca_transform_of_fitted_points_equals_embedding(blocks):
    proj = SpaceProjection(method="pca", n_components=3).fit(blocks)
    for name, x in blocks.items():
        np.testing.assert_allclose(proj.transform(x), proj.embedding_[name], rtol=0, atol=1e-12)
    # scale does not matter: rows are normalised first
    np.testing.assert_allclose(proj.transform(5 * blocks["old_protos"]), proj.embedding_["old_protos"], atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_raw_and_auto_for_small_d(d):
    rng = np.random.default_rng(d)
    blocks = {"a": _unit(rng.normal(size=(10, d))), "b": _unit(rng.normal(size=(3, d)))}
    for method in ("raw", "auto"):
        proj = SpaceProjection(method=method).fit(blocks)
        assert proj.method_ == "raw" and proj.n_components_ == d and proj.model_ is None
        np.testing.assert_array_equal(proj.embedding_["a"], blocks["a"])
        np.testing.assert_array_equal(proj.embedding_["b"], blocks["b"])
        np.testing.assert_array_equal(proj.transform(blocks["b"]), blocks["b"])


def test_auto_is_umap_above_three_dims():
    assert SpaceProjection()._check_params(4) == "umap"


@pytest.mark.parametrize(
    "kwargs, blocks, match",
    [
        (dict(method="tsne"), {"a": np.ones((5, 4))}, "method must be one of"),
        (dict(method="raw"), {"a": np.ones((5, 4))}, "d <= 3"),
        (dict(method="pca"), {"a": np.ones((5, 4)), "b": np.ones((5, 3))}, "share the embedding dimension"),
        (dict(method="pca", n_components=5), {"a": np.ones((5, 4))}, "n_components=5"),
        (dict(method="pca", n_components=0), {"a": np.ones((5, 4))}, "n_components"),
        (dict(method="pca"), {}, "non-empty"),
        (dict(method="pca"), {"a": np.full((5, 4), np.nan)}, "NaN"),
    ],
)
def test_bad_input_raises(kwargs, blocks, match):
    with pytest.raises(ValueError, match=match):
        SpaceProjection(**kwargs).fit(blocks)


def test_transform_checks(blocks):
    with pytest.raises(ValueError, match="not fitted"):
        SpaceProjection().transform(np.ones((2, 8)))
    proj = SpaceProjection(method="pca").fit(blocks)
    with pytest.raises(ValueError, match="dimension 3, expected 8"):
        proj.transform(np.ones((2, 3)))


def test_init_stores_hyperparameters_only():
    proj = SpaceProjection(method="pca", n_components=3, random_state=7)
    assert proj.get_params() == dict(method="pca", n_components=3, random_state=7, n_neighbors=15, min_dist=0.1,
                                     max_fit_rows=None)
    assert not hasattr(proj, "embedding_")


def test_cache_hits_and_misses(blocks):
    clear_projection_cache()
    a = project_spaces(blocks, method="pca")
    copy = {k: (v.clone() if isinstance(v, torch.Tensor) else v.copy()) for k, v in blocks.items()}
    assert project_spaces(copy, method="pca") is a  # equal values, different objects
    changed = dict(copy, old_protos=copy["old_protos"] * 1.0001)
    assert project_spaces(changed, method="pca") is not a
    renamed = {("x" + k): v for k, v in blocks.items()}
    assert project_spaces(renamed, method="pca") is not a
    assert project_spaces(blocks, method="pca", random_state=1) is not a
    assert project_spaces(blocks, method="pca", n_components=3) is not a
    assert project_spaces(blocks, method="pca") is a


def test_deterministic_with_fixed_seed(blocks):
    a = SpaceProjection(method="pca", random_state=3).fit(blocks)
    b = SpaceProjection(method="pca", random_state=3).fit(blocks)
    for name in blocks:
        np.testing.assert_array_equal(a.embedding_[name], b.embedding_[name])


def test_umap_joint_fit_and_transform(blocks):
    """The one UMAP fit of the test suite (~11 s of numba compilation on first use)."""
    proj = SpaceProjection(method="umap", random_state=0, n_neighbors=10).fit(blocks)
    assert proj.method_ == "umap" and proj.n_components_ == 2
    assert {k: v.shape for k, v in proj.embedding_.items()} == {
        k: (np.asarray(v).shape[0], 2) for k, v in blocks.items()
    }
    assert all(np.isfinite(v).all() for v in proj.embedding_.values())
    # fitted rows land exactly on their embedding (eps = 0 draws zero-length arrows)
    np.testing.assert_array_equal(proj.transform(blocks["old_protos"]), proj.embedding_["old_protos"])
    # a slightly moved point lands near its class: closer to its own cluster centre than to others
    rng = np.random.default_rng(1)
    moved = _unit(blocks["old_features"][:20] + 0.01 * rng.normal(size=(20, 8)))
    placed = proj.transform(moved)
    feats = proj.embedding_["old_features"]
    centres = np.stack([feats[c * 25 : (c + 1) * 25].mean(0) for c in range(4)])
    nearest = np.linalg.norm(placed[:, None] - centres[None], axis=2).argmin(1)
    own = np.linalg.norm(feats[:20][:, None] - centres[None], axis=2).argmin(1)
    assert (nearest == own).mean() >= 0.9
    # the fast placement used by live widgets: exact on fitted rows, near the class otherwise
    np.testing.assert_allclose(proj.place(blocks["old_protos"]), proj.embedding_["old_protos"], atol=1e-6)
    fast = np.linalg.norm(proj.place(moved)[:, None] - centres[None], axis=2).argmin(1)
    assert (fast == own).mean() >= 0.9


def test_place_equals_transform_for_pca(blocks):
    proj = SpaceProjection(method="pca").fit(blocks)
    np.testing.assert_allclose(proj.place(blocks["new_features"]), proj.transform(blocks["new_features"]))


# --- production sizes: a stratified fit sample, the rest placed ---------------------


def test_stratified_rows_cover_every_class_and_are_seeded():
    from bclviz.projection import stratified_rows

    rng = np.random.default_rng(0)
    y = np.concatenate([np.full(500, 0), np.full(3, 1), np.full(40, 2), rng.integers(3, 60, 2000)])
    rows = stratified_rows(y, 200, seed=1)
    assert rows.size == 200 and np.all(np.diff(rows) > 0)  # sorted, distinct, exactly the cap
    assert set(y[rows]) == set(y)  # every class
    counts = np.bincount(y[rows])
    assert counts[1] == 3  # a small class keeps all its rows ...
    assert counts[0] <= counts[1:].max() + 1  # ... and a large one gets no more than a fair share
    np.testing.assert_array_equal(stratified_rows(y, 200, seed=1), rows)
    assert not np.array_equal(stratified_rows(y, 200, seed=2), rows)
    np.testing.assert_array_equal(stratified_rows(y[:150], 200), np.arange(150))  # fewer rows: all
    many = np.arange(300) % 250  # more classes than the cap: one row per class
    assert set(many[stratified_rows(many, 100)]) == set(range(250))


def test_sampled_pca_fit_places_the_rest_and_equals_a_fit_on_the_sample(blocks):
    n = {name: len(b) for name, b in blocks.items()}
    labels = {"old_features": np.repeat(np.arange(4), 25), "new_features": np.repeat(np.arange(4), 25),
              "old_protos": np.arange(4), "pseudo_old_protos": np.arange(4), "new_protos": np.arange(4)}
    proj = SpaceProjection(method="pca", max_fit_rows=60, random_state=3).fit(blocks, labels)
    assert proj.fit_rows_.size == 60 and sum(n.values()) == 212
    stacked = np.concatenate([np.asarray(b, dtype=float) for b in blocks.values()])
    strata = np.concatenate(list(labels.values()))
    assert set(strata[proj.fit_rows_]) == set(range(4))
    # fitting equals a plain fit on the sample's rows; every row (fitted or not) is placed by transform
    plain = SpaceProjection(method="pca", random_state=3).fit({"sample": stacked[proj.fit_rows_]})
    got = np.concatenate(list(proj.embedding_.values()))
    np.testing.assert_allclose(got[proj.fit_rows_], plain.embedding_["sample"], atol=1e-9)
    np.testing.assert_allclose(got, plain.transform(stacked), atol=1e-9)
    for name, x in blocks.items():
        np.testing.assert_allclose(proj.place(x), proj.embedding_[name], atol=1e-12)
    again = SpaceProjection(method="pca", max_fit_rows=60, random_state=3).fit(blocks, labels)
    np.testing.assert_array_equal(again.fit_rows_, proj.fit_rows_)  # same seed, same sample
    # every row fitted when the cap is not reached
    assert SpaceProjection(method="pca", max_fit_rows=500).fit(blocks).fit_rows_.size == 212
    with pytest.raises(ValueError, match="not in blocks"):
        SpaceProjection(method="pca", max_fit_rows=60).fit(blocks, {"protos": np.arange(4)})


def test_project_spaces_keys_the_sample_by_its_labels(blocks):
    clear_projection_cache()
    a = {name: np.zeros(len(b), dtype=int) for name, b in blocks.items()}
    b = {name: np.arange(len(x)) % 4 for name, x in blocks.items()}
    pa = project_spaces(blocks, method="pca", max_fit_rows=50, labels=a)
    assert project_spaces(blocks, method="pca", max_fit_rows=50, labels=a) is pa
    assert project_spaces(blocks, method="pca", max_fit_rows=50, labels=b) is not pa
