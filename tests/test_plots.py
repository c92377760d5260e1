import math
import re

import numpy as np
import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bclviz.evaluation import average_compatibility, evaluate
from bclviz.plots import (
    PALETTE, class_colors, compatibility_matrix_figure, pareto_front, partial_backfill,
    partial_backfill_curve, pseudo_old_trace_updates, similarity_heatmaps, three_spaces_figure,
    tradeoff_figure, trace_uid, tradeoff_points, training_curves, update_pseudo_old,
)
from bclviz.views import preferred_method, result_blocks, three_spaces_from_result
from bclviz.projection import SpaceProjection, project_spaces
from bclviz.train import embed


@pytest.fixture(scope="session")
def experiment(tiny_experiment):
    return tiny_experiment[1]


def _trace(fig, uid):
    (trace,) = [t for t in fig.data if t.uid == uid]
    return trace


def _xy(trace):
    cols = [trace.x, trace.y] + ([trace.z] if getattr(trace, "z", None) is not None else [])
    return np.column_stack([np.asarray(c, dtype=float) for c in cols])


def _coords(k=2, n=12, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "old_features": rng.normal(size=(n, k)), "new_features": rng.normal(size=(n, k)),
        "old_protos": rng.normal(size=(c, k)), "pseudo_old_protos": rng.normal(size=(c, k)),
        "new_protos": rng.normal(size=(c, k)),
    }, np.arange(n) % c


@pytest.mark.parametrize("k", [2, 3])
def test_three_spaces_traces_hold_the_coordinates(k):
    coords, labels = _coords(k)
    fig = three_spaces_figure(coords, labels)
    expected = {
        "old_features": "old_features", "pseudo_space_features": "old_features",
        "new_features": "new_features", "old_protos": "old_protos", "old_protos_ghost": "old_protos",
        "pseudo_old_protos": "pseudo_old_protos", "new_protos": "new_protos",
    }
    for uid, block in expected.items():
        trace = _trace(fig, uid)
        assert isinstance(trace, go.Scatter3d if k == 3 else go.Scatter)
        np.testing.assert_array_equal(_xy(trace), coords[block])
    arrows = _xy(_trace(fig, "pseudo_old_arrows")).reshape(3, 3, k)
    np.testing.assert_array_equal(arrows[:, 0], coords["old_protos"])
    np.testing.assert_array_equal(arrows[:, 1], coords["pseudo_old_protos"])
    assert np.isnan(arrows[:, 2]).all()
    # a class has the same colour in every panel
    feature_colours = class_colors(labels)
    for uid in ("old_features", "pseudo_space_features", "new_features"):
        assert list(_trace(fig, uid).marker.color) == feature_colours
    for uid in ("old_protos", "pseudo_old_protos", "new_protos"):
        assert list(_trace(fig, uid).marker.color) == [PALETTE[0], PALETTE[1], PALETTE[2]]
    assert feature_colours[:3] == [PALETTE[0], PALETTE[1], PALETTE[2]]


def test_pseudo_old_updates_match_a_rebuilt_figure():
    coords, labels = _coords()
    fig = three_spaces_figure(coords, labels)
    moved = coords["old_protos"] + 0.5
    updates = pseudo_old_trace_updates(coords["old_protos"], moved)
    assert set(updates) == {"pseudo_old_protos", "pseudo_old_arrows"}
    update_pseudo_old(fig, coords["old_protos"], moved)
    rebuilt = three_spaces_figure(dict(coords, pseudo_old_protos=moved), labels)
    for trace, ref in zip(fig.data, rebuilt.data):
        np.testing.assert_array_equal(_xy(trace), _xy(ref))
    np.testing.assert_array_equal(_xy(_trace(fig, "pseudo_old_protos")), moved)
    # a FigureWidget replaces uids; the builder's ids survive in meta
    widget = go.FigureWidget(three_spaces_figure(coords, labels))
    update_pseudo_old(widget, coords["old_protos"], moved)
    for trace, ref in zip(widget.data, rebuilt.data):
        assert trace.meta == ref.uid
        np.testing.assert_array_equal(_xy(trace), _xy(ref))


def test_three_spaces_bad_input():
    coords, labels = _coords()
    with pytest.raises(ValueError, match="lacks \\['new_protos'\\]"):
        three_spaces_figure({k: v for k, v in coords.items() if k != "new_protos"}, labels)
    with pytest.raises(ValueError, match="expected 3"):
        three_spaces_figure(dict(coords, new_protos=np.zeros((4, 2))), labels)
    with pytest.raises(ValueError, match="2 or 3 columns"):
        three_spaces_figure({k: np.zeros((v.shape[0], 4)) for k, v in coords.items()}, labels)
    with pytest.raises(ValueError, match="labels has 5 labels"):
        three_spaces_figure(coords, labels[:5])


def test_three_spaces_from_result_uses_the_trained_state(experiment):
    fig = three_spaces_from_result(experiment, "ndpp", projection="pca")
    blocks, labels = result_blocks(experiment, "ndpp")
    data = experiment.data
    np.testing.assert_array_equal(blocks["old_features"], embed(experiment.old.model, data.query.x).numpy())
    np.testing.assert_array_equal(blocks["new_features"], embed(experiment.new["ndpp"].model, data.query.x).numpy())
    np.testing.assert_array_equal(blocks["pseudo_old_protos"], experiment.new["ndpp"].state["pseudo_old"].numpy())
    np.testing.assert_array_equal(labels, data.query.y.numpy())
    proj = project_spaces(blocks, method="pca")
    for uid in ("old_features", "new_features", "old_protos", "pseudo_old_protos", "new_protos"):
        np.testing.assert_allclose(_xy(_trace(fig, uid)), proj.embedding_[uid], atol=1e-12)
    assert "ndpp" in fig.layout.title.text and "pca" in fig.layout.title.text
    # a fitted projection places the blocks with transform, giving the same picture
    again = three_spaces_from_result(experiment, projection=proj)
    np.testing.assert_allclose(_xy(_trace(again, "pseudo_old_protos")), proj.embedding_["pseudo_old_protos"], atol=1e-12)
    unfitted = SpaceProjection(method="pca", n_components=3)
    three_d = three_spaces_from_result(experiment, "proto", projection=unfitted)
    assert isinstance(_trace(three_d, "new_protos"), go.Scatter3d) and unfitted.n_components_ == 3
    with pytest.raises(ValueError, match="'odpp' was not trained"):
        three_spaces_from_result(experiment, "odpp", projection="pca")


def test_preferred_method():
    assert preferred_method(["proto", "odpp", "ndpp"]) == "ndpp"
    assert preferred_method(["independent", "proto", "odpp"]) == "odpp"
    assert preferred_method(["independent", "proto"]) == "proto"
    with pytest.raises(ValueError):
        preferred_method([])


def _brute_front(points):
    front = []
    for i, p in enumerate(points):
        if math.isnan(p["self"]) or math.isnan(p["cross"]):
            continue
        dominated = any(
            q["self"] >= p["self"] and q["cross"] >= p["cross"] and (q["self"] > p["self"] or q["cross"] > p["cross"])
            for q in points if not (math.isnan(q["self"]) or math.isnan(q["cross"]))
        )
        if not dominated:
            front.append(i)
    return front


values = st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5, float("nan")]) | st.floats(0, 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(values, values), max_size=12))
def test_pareto_front_matches_brute_force(pairs):
    points = [dict(self=s, cross=c) for s, c in pairs]
    assert pareto_front(points) == _brute_front(points)


def test_tradeoff_figure_data():
    points = [
        dict(label="ndpp eps=0.2", method="ndpp", self=0.80, cross=0.50, settings=dict(eps=0.2), self_err=0.01),
        dict(label="ndpp eps=0.4", method="ndpp", self=0.85, cross=0.45, settings=dict(eps=0.4)),
        dict(label="proto", method="proto", self=0.70, cross=0.55),
        dict(label="odpp", method="odpp", self=0.75, cross=0.44),  # dominated by ndpp eps=0.4
    ]
    fig = tradeoff_figure(points, old_old=0.47, metric="mAP@100")
    crit = _trace(fig, "criterion")
    assert list(crit.x) == [0.47, 0.47] and min(crit.y) < 0.70 and max(crit.y) > 0.85
    ndpp = _trace(fig, "points-ndpp")
    assert list(ndpp.x) == [0.50, 0.45] and list(ndpp.y) == [0.80, 0.85]
    assert list(ndpp.error_y.array) == [0.01, 0.0] and ndpp.error_x.array is None
    assert "eps = 0.2" in ndpp.text[0] and "ndpp eps=0.2" in ndpp.text[0]
    pareto = _trace(fig, "pareto")
    assert list(zip(pareto.x, pareto.y)) == [(0.45, 0.85), (0.50, 0.80), (0.55, 0.70)]
    assert {t.uid for t in fig.data} == {"points-ndpp", "points-proto", "points-odpp", "criterion", "pareto"}
    with pytest.raises(ValueError, match="old_old"):
        tradeoff_figure(points, old_old=float("nan"))


def test_tradeoff_figure_tax_segment():
    points = [dict(label="proto", method="proto", self=0.70, cross=0.55),
              dict(label="independent", method="independent", self=0.80, cross=0.20),
              dict(label="old", method="old", self=0.40, cross=0.40)]
    tax = {"metric": "mAP@100", "tax": 0.1, "half_width": 0.02, "verdict": "above zero"}
    fig = tradeoff_figure(points, old_old=0.40, tax=tax)
    seg = _trace(fig, "tax")
    assert list(seg.x) == [0.20, 0.55] and list(seg.y) == [0.80, 0.70] and seg.meta == "tax"
    assert seg.name == "compatibility tax (mAP@100): +0.100 &plusmn; 0.020 (above zero)"
    assert [a.text for a in fig.layout.annotations if a.text.startswith("tax")] == ["tax +0.100 &plusmn; 0.020 (above zero)"]
    no_tax = {**tax, "tax": None, "half_width": None, "verdict": None, "reason": "proto not run"}
    for fig in (tradeoff_figure(points, old_old=0.4), tradeoff_figure(points, old_old=0.4, tax=no_tax),
                tradeoff_figure(points[1:], old_old=0.4, tax=tax)):  # no proto point: nothing to join
        assert "tax" not in {t.uid for t in fig.data}


def test_tradeoff_points_from_results(experiment):
    results = experiment.results
    points = tradeoff_points(results)
    by_label = {p["label"]: p for p in points}
    assert list(by_label) == ["proto", "ndpp", "independent", "old"]
    assert by_label["ndpp"]["self"] == results["methods"]["ndpp"]["self"]["mAP@100"]
    assert by_label["ndpp"]["cross"] == results["methods"]["ndpp"]["cross"]["mAP@100"]
    assert by_label["ndpp"]["settings"]["eps"] == 0.4
    assert by_label["old"]["self"] == by_label["old"]["cross"] == results["old"]["self"]["mAP@100"]
    assert tradeoff_points(results, metric="R@1", include_references=False)[0]["self"] == results["methods"]["proto"]["self"]["R@1"]
    with pytest.raises(ValueError, match="metric must be one of"):
        tradeoff_points(results, metric="mAP@5")


def test_similarity_heatmaps_are_gram_matrices(experiment):
    state = experiment.new["ndpp"].state
    fig = similarity_heatmaps(state["old_protos"], state["pseudo_old"], 2 * state["new_protos"])
    for trace, key in zip(fig.data, ("old_protos", "pseudo_old", "new_protos")):
        p = state[key].double().numpy()
        p = p / np.linalg.norm(p, axis=1, keepdims=True)
        np.testing.assert_allclose(np.asarray(trace.z), p @ p.T, atol=1e-12)
        assert trace.coloraxis == "coloraxis"
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (-1, 1)
    with pytest.raises(ValueError, match="same number of rows"):
        similarity_heatmaps(state["old_protos"], state["pseudo_old"][:3], state["new_protos"])


def test_training_curves_plot_the_history(experiment):
    history = experiment.new["ndpp"].history
    fig = training_curves(history)
    for key in ("loss", "loss_comp", "delta_norm_max", "crowding_pseudo_old"):
        trace = _trace(fig, key)
        assert list(trace.y) == [rec[key] for rec in history]
        assert list(trace.x) == [rec["epoch"] for rec in history]
    runs = {"old": experiment.old.history, "ndpp": history}
    fig = training_curves(runs)
    assert [t.uid for t in fig.data if t.uid.startswith("old-")] == ["old-loss"]  # old has losses only
    assert list(_trace(fig, "ndpp-crowding_new").y) == [rec["crowding_new"] for rec in history]
    with pytest.raises(ValueError, match="history is empty"):
        training_curves([])


def _css_safe(fig):
    # plotly.js builds CSS selectors from uids; ':' '/' ' ' '(' break them in the browser
    return all(re.fullmatch(r"[A-Za-z0-9_-]+", t.uid) for t in fig.data)


def test_trace_uid_is_css_safe():
    assert trace_uid("points", "ndpp") == "points-ndpp"
    assert trace_uid("", "loss") == "loss"
    assert trace_uid("reference", "M(old, old)") == "reference-M_old__old_"
    assert trace_uid("run/a:b", 3) == "run_a_b-3"


def test_every_builder_emits_css_safe_uids(experiment):
    history = experiment.new["ndpp"].history
    curves = training_curves({"old/run 1": experiment.old.history, "ndpp:x": history})
    tradeoff = tradeoff_figure(tradeoff_points(experiment.results), old_old=0.3)
    state = experiment.new["ndpp"].state
    heat = similarity_heatmaps(state["old_protos"], state["pseudo_old"], state["new_protos"])
    backfill = partial_backfill_curve({"a/b": [{"fraction": 0.0, "mAP@100": 0.1}, {"fraction": 1.0, "mAP@100": 0.2}]},
                                      references={"M(old, old)": 0.4})
    for fig in (curves, tradeoff, heat, backfill):
        assert _css_safe(fig), [t.uid for t in fig.data]


def test_compatibility_matrix_figure():
    m = np.array([[0.5, np.nan, np.nan], [0.55, 0.7, np.nan], [0.45, 0.72, 0.8]])
    fig = compatibility_matrix_figure(m, ["old", "new1", "new2"])
    z = np.asarray(fig.data[0].z, dtype=float)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(m))
    np.testing.assert_array_equal(z[~np.isnan(m)], m[~np.isnan(m)])
    assert fig.data[0].text[0][1] == "" and fig.data[0].text[2][1] == "0.720"
    assert f"AC = {average_compatibility(m):.3f}" in fig.layout.title.text and "AC = 0.667" in fig.layout.title.text
    with pytest.raises(ValueError, match="distinct"):
        compatibility_matrix_figure(m, ["a", "a", "b"])


def test_partial_backfill_endpoints_are_cross_and_self_test(experiment):
    data, results = experiment.data, experiment.results
    q_new = embed(experiment.new["ndpp"].model, data.query.x)
    g_old = embed(experiment.old.model, data.gallery.x)
    g_new = embed(experiment.new["ndpp"].model, data.gallery.x)
    records = partial_backfill(q_new, data.query.y, g_old, g_new, data.gallery.y,
                               fractions=[0.0, 0.5, 1.0], seed=3, k=100, exclude_self=data.query_is_gallery)
    rec = results["methods"]["ndpp"]
    assert records[0]["mAP@100"] == pytest.approx(rec["cross"]["mAP@100"], abs=1e-9)
    assert records[-1]["mAP@100"] == pytest.approx(rec["self"]["mAP@100"], abs=1e-9)
    n = len(data.gallery)
    assert [r["n_backfilled"] for r in records] == [0, round(n / 2), n]
    # the middle point is the seeded mixture
    perm = np.random.default_rng(3).permutation(n)[: round(n / 2)]
    mixed = g_old.clone()
    mixed[perm] = g_new[perm]
    ref = evaluate(q_new, data.query.y, mixed, data.gallery.y, k=100, exclude_self=data.query_is_gallery)
    assert records[1]["mAP@100"] == pytest.approx(ref["mAP@100"], abs=1e-9)
    fig = partial_backfill_curve({"ndpp": records}, references={"M(old, old)": 0.4})
    assert list(_trace(fig, "backfill-ndpp").y) == [r["mAP@100"] for r in records]
    assert list(_trace(fig, "reference-M_old__old_").y) == [0.4, 0.4]
    with pytest.raises(ValueError, match="fractions"):
        partial_backfill(q_new, data.query.y, g_old, g_new, data.gallery.y, fractions=[1.5])


def test_moved_adapters_still_import_from_plots_with_a_warning():
    import bclviz.plots as plots_module
    import bclviz.views as views_module

    with pytest.warns(DeprecationWarning, match="moved to bclviz.views.result_blocks"):
        assert plots_module.result_blocks is views_module.result_blocks
    with pytest.raises(AttributeError):
        plots_module.no_such_builder


def test_plot_modules_never_embed_or_project():
    """Plot builders take arrays: nothing under bclviz/plots imports the trainer or a projection."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "bclviz" / "plots"
    for path in folder.glob("*.py"):
        text = path.read_text()
        for forbidden in ("from ..train", "from ..projection", "import umap", "embed("):
            assert forbidden not in text, (path.name, forbidden)


def test_large_traces_use_webgl_and_one_arrow_trace():
    from bclviz.plots._common import WEBGL_POINTS

    c = 3000  # prototype sets and arrows above WEBGL_POINTS, features below
    coords, labels = _coords(2, n=300, c=c, seed=1)
    fig = three_spaces_figure(coords, labels)
    assert len(fig.data) == 8  # one trace per block, however many classes
    for uid in ("old_protos", "old_protos_ghost", "pseudo_old_protos", "new_protos", "pseudo_old_arrows"):
        assert isinstance(_trace(fig, uid), go.Scattergl) and _trace(fig, uid).meta == uid
    for uid in ("old_features", "pseudo_space_features", "new_features"):
        assert isinstance(_trace(fig, uid), go.Scatter)
    arrows = _xy(_trace(fig, "pseudo_old_arrows")).reshape(c, 3, 2)
    np.testing.assert_array_equal(arrows[:, 1], coords["pseudo_old_protos"])
    assert np.isnan(arrows[:, 2]).all() and 3 * c > WEBGL_POINTS
    moved = coords["pseudo_old_protos"] + 1.0
    widget = go.FigureWidget(fig)
    update_pseudo_old(widget, coords["old_protos"], moved)
    (trace,) = [t for t in widget.data if t.meta == "pseudo_old_protos"]
    np.testing.assert_array_equal(_xy(trace), moved)
