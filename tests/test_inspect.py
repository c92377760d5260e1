"""bclviz.inspection, the inspect report, the explorer over embeddings, `bclviz extract` + `bclviz inspect`.

Every number is checked against a naive reference or the function bclviz already has
for it (class_prototypes, crowding, headroom, evaluate, ndpp/odpp, recognisability).
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bclviz import features, inspection
from bclviz.cli import main
from bclviz.config import MethodConfig, TrainConfig
from bclviz.evaluation import evaluate
from bclviz.experiment import ModelSpec
from bclviz.perturb import ndpp, odpp, pseudo_old
from bclviz.proxies import crowding, drift, headroom, recognisability
from bclviz.runconfig import RunConfig, save_run_config
from bclviz.train import class_prototypes

C, PER, D = 8, 12, 8


def crowded_embeddings(seed: int = 0):
    """Old space: classes 2i and 2i+1 share a centre (collapsed siblings); new space: 8 separate centres."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), PER)
    old_centres = rng.normal(size=(C // 2, D))[np.arange(C) // 2]
    new_centres = 2 * np.eye(C, D)  # orthogonal: every pair apart
    old = (old_centres[y] + 0.3 * rng.normal(size=(C * PER, D))) * rng.uniform(0.5, 3, size=(C * PER, 1))
    new = new_centres[y] + 0.3 * rng.normal(size=(C * PER, D))
    return old.astype(np.float32), new.astype(np.float32), y * 10 + 5  # labels 5, 15, ...: remapped


@pytest.fixture(scope="module")
def emb():
    return features.load(*crowded_embeddings())


@pytest.fixture(scope="module")
def insp(emb):
    return inspection.inspect_embeddings(emb, method=MethodConfig(name="ndpp", eps=0.3), backend="torch")


def naive_prototypes(x, y, c):
    out = []
    for cls in range(c):
        rows = [x[i] / np.linalg.norm(x[i]) for i in range(len(y)) if y[i] == cls]
        mean = np.mean(rows, axis=0)
        out.append(mean / np.linalg.norm(mean))
    return np.array(out)


# ----------------------------------------------------------------------------- prototypes
@pytest.mark.parametrize("block", [5, 7, 65536])
def test_prototypes_match_a_naive_loop_for_any_block(emb, block):
    p = inspection.prototypes(emb.old, emb.labels, C, block=block)
    np.testing.assert_allclose(p.numpy(), naive_prototypes(emb.old, emb.labels, C), rtol=1e-5, atol=1e-6)
    unit = F.normalize(torch.from_numpy(np.asarray(emb.old)), dim=1)
    torch.testing.assert_close(p, class_prototypes(unit, torch.from_numpy(emb.labels), C))
    assert p.dtype == torch.float32


def test_prototypes_of_a_memory_map_and_of_float16(emb, tmp_path):
    np.save(tmp_path / "old.npy", emb.old)
    mapped = np.load(tmp_path / "old.npy", mmap_mode="r")
    torch.testing.assert_close(inspection.prototypes(mapped, emb.labels, C, block=10),
                               inspection.prototypes(emb.old, emb.labels, C))
    half = inspection.prototypes(emb.old.astype(np.float16), emb.labels, C)
    np.testing.assert_allclose(half.numpy(), naive_prototypes(emb.old.astype(np.float16).astype(np.float64),
                                                              emb.labels, C), atol=2e-3)


def test_prototypes_reject_bad_labels(emb):
    with pytest.raises(ValueError, match=r"class\(es\) \[8\] have no rows"):
        inspection.prototypes(emb.old, emb.labels, C + 1)
    with pytest.raises(ValueError, match="out of range for 7 classes"):
        inspection.prototypes(emb.old, emb.labels, C - 1)
    with pytest.raises(ValueError, match="negative class indices"):
        inspection.prototypes(emb.old, emb.labels - 1, C)


# ----------------------------------------------------------------------------- crowded pairs
def test_crowded_pairs_match_the_full_similarity_matrix(insp):
    p_o, p_n = insp.old_protos.double(), insp.new_protos.double()
    s_o, s_n = p_o @ p_o.T, p_n @ p_n.T
    s_o.fill_diagonal_(-math.inf)
    nearest = s_o.argmax(1)
    pairs = inspection.crowded_pairs(insp.old_protos, insp.new_protos, top=None)
    listed = {frozenset((p["class"], p["neighbor"])) for p in pairs}
    assert listed == {frozenset((c, int(nearest[c]))) for c in range(C)}  # every class's pair, once
    assert len(pairs) == len(listed)
    for p in pairs:
        c, j = p["class"], p["neighbor"]
        assert j == int(nearest[c])
        assert p["cos_old"] == pytest.approx(float(s_o[c, j]), abs=1e-5)
        assert p["cos_new"] == pytest.approx(float(s_n[c, j]), abs=1e-5)
        assert p["excess"] == pytest.approx(max(0.0, p["cos_old"] - p["cos_new"]), abs=1e-7)
    assert [p["cos_old"] for p in pairs] == sorted((p["cos_old"] for p in pairs), reverse=True)
    # collapsed siblings are the crowded pairs, and the new model separates them
    assert {frozenset((p["class"], p["neighbor"])) for p in pairs} == {frozenset((2 * i, 2 * i + 1)) for i in range(4)}
    assert all(p["cos_old"] > 0.9 and p["excess"] > 0.3 for p in pairs)
    assert len(inspection.crowded_pairs(insp.old_protos, insp.new_protos, top=2)) == 2


def test_results_hold_the_proxies_of_the_prototypes(emb, insp):
    r, p_o, p_n, q = insp.results, insp.old_protos, insp.new_protos, insp.pseudo_old
    assert (r["items"], r["dim"], r["classes"], r["queries"], r["gallery"]) == (C * PER, D, C, C * PER, C * PER)
    assert r["class_names"] == [str(10 * c + 5) for c in range(C)]
    assert r["crowding"] == {"old": crowding(p_o), "new": crowding(p_n), "pseudo_old": crowding(q)}
    assert r["headroom"] == {"value": headroom(p_o, p_n, k=5), "k": 5, "crowding_old": crowding(p_o),
                             "crowding_new": crowding(p_n)}
    assert r["headroom"]["value"] > 0.2 and r["crowding"]["old"] > r["crowding"]["new"]
    same = inspection.inspect_embeddings(features.load(emb.old, emb.old, emb.labels), retrieval_k=None)
    assert same.results["headroom"]["value"] == 0.0  # a new model that changes nothing undoes no crowding
    assert same.results["perturbation"]["delta_mean"] == 0.0
    assert r["crowded_pairs"] == inspection.crowded_pairs(p_o, p_n, class_names=emb.class_names)
    assert r["crowded_pairs"][0]["class_name"] == emb.class_names[r["crowded_pairs"][0]["class"]]
    pert = r["perturbation"]
    assert pert["drift_deg"] == pytest.approx(math.degrees(drift(q, p_o)))
    assert pert["delta_mean"] == pytest.approx(float(insp.delta.norm(dim=1).mean()))
    assert pert["recognisability_items"] == C * PER  # fewer items than RECOGNISABILITY_ITEMS: all of them
    assert pert["recognisability_old"] == recognisability(torch.from_numpy(emb.old), torch.from_numpy(emb.labels), p_o)
    assert pert["recognisability_pseudo_old"] == pytest.approx(
        recognisability(torch.from_numpy(emb.old), torch.from_numpy(emb.labels), q))
    json.dumps(r)  # JSON-ready


def test_recognisability_on_a_seeded_sample_of_items(emb, monkeypatch):
    monkeypatch.setattr(inspection, "RECOGNISABILITY_ITEMS", 30)
    a = inspection.inspect_embeddings(emb, retrieval_k=None, seed=4).results["perturbation"]
    rows = np.sort(np.random.default_rng(4).choice(emb.n, 30, replace=False))
    p_o = inspection.prototypes(emb.old, emb.labels, C)
    assert a["recognisability_items"] == 30
    assert a["recognisability_old"] == recognisability(torch.from_numpy(emb.old[rows]), torch.from_numpy(emb.labels[rows]), p_o)
    assert inspection.inspect_embeddings(emb, retrieval_k=None, seed=4).results["perturbation"] == a  # same seed
    others = {inspection.inspect_embeddings(emb, retrieval_k=None, seed=s).results["perturbation"]["recognisability_old"]
              for s in range(5)}
    assert len(others) > 1  # the seed draws the items


# ----------------------------------------------------------------------------- perturbation
def test_pseudo_old_is_the_method_training_uses(insp):
    torch.testing.assert_close(insp.delta, ndpp(insp.old_protos, insp.new_protos, eps=0.3, k=5))
    torch.testing.assert_close(insp.pseudo_old, pseudo_old(insp.old_protos, insp.delta))
    assert insp.method == MethodConfig(name="ndpp", eps=0.3, k=5)  # k resolved: NDPP's default
    assert float(insp.delta.norm(dim=1).max()) <= 0.3 + 1e-6
    assert insp.results["crowding"]["pseudo_old"] < insp.results["crowding"]["old"]


def test_odpp_setting_and_k_capped_at_classes_minus_one(emb):
    o = inspection.inspect_embeddings(emb, method=MethodConfig(name="odpp", eps=0.2, gamma=0.5), retrieval_k=None)
    assert o.method.k == C - 1  # ODPP's default 8 capped at C - 1
    torch.testing.assert_close(o.delta, odpp(o.old_protos, o.new_protos, eps=0.2, k=C - 1, gamma=0.5))
    assert o.results["perturbation"]["gamma"] == 0.5 and o.results["retrieval"] is None
    assert "gamma" not in inspection.inspect_embeddings(emb, retrieval_k=None).results["perturbation"]
    with pytest.raises(ValueError, match=r"method.name must be one of \['ndpp', 'odpp'\], got 'proto'"):
        inspection.inspect_embeddings(emb, method=MethodConfig(name="proto"))


def test_same_inputs_same_numbers(emb, insp):
    again = inspection.inspect_embeddings(emb, method=MethodConfig(name="ndpp", eps=0.3), backend="torch")
    assert again.results == insp.results
    assert torch.equal(again.pseudo_old, insp.pseudo_old)


# ----------------------------------------------------------------------------- retrieval
def test_leave_one_out_retrieval_is_bclviz_evaluate(emb, insp):
    ret = insp.results["retrieval"]
    old, new, y = emb.old, emb.new, emb.labels
    assert ret["new_new"] == evaluate(new, y, new, y, exclude_self=True, backend="torch")
    assert ret["new_old"] == evaluate(new, y, old, y, exclude_self=True, backend="torch")
    assert ret["old_old"] == evaluate(old, y, old, y, exclude_self=True, backend="torch")
    assert ret["protocol"] == "leave-one-out" and ret["metric"] == "mAP@100"
    assert ret["compatible"] == (ret["new_old"]["mAP@100"] > ret["old_old"]["mAP@100"])
    # siblings collapse in the old space: the new embeddings retrieve better
    assert ret["new_new"]["mAP@100"] > ret["old_old"]["mAP@100"] + 0.2


def test_split_retrieval_is_bclviz_evaluate(emb):
    query = np.arange(emb.n) % 4 == 0
    split = features.load(emb.old, emb.new, emb.labels, query=query)
    ret = inspection.retrieval(split, k=10)
    q, g, y = query, ~query, emb.labels
    assert ret["new_old"] == evaluate(emb.new[q], y[q], emb.old[g], y[g], k=10)
    assert ret["old_old"] == evaluate(emb.old[q], y[q], emb.old[g], y[g], k=10)
    assert ret["new_new"]["n_queries"] == q.sum() and ret["protocol"] == "query/gallery"
    assert set(ret["new_new"]) == {"mAP@10", "R@1", "R@5", "R@10", "n_queries"}


# ----------------------------------------------------------------------------- views, report, explorer
def test_three_spaces_figure_of_embeddings(emb, insp):
    from bclviz.views import embedding_blocks, three_spaces_from_embeddings

    blocks, labels = embedding_blocks(emb, insp, max_points=50, seed=3)
    assert blocks["old_features"].shape == (50, D) and labels.shape == (50,)
    again, _ = embedding_blocks(emb, insp, max_points=50, seed=3)
    np.testing.assert_array_equal(again["new_features"], blocks["new_features"])  # same seed, same items
    fig = three_spaces_from_embeddings(emb, insp, projection="pca", max_points=50, random_state=3)
    traces = {t.uid: t for t in fig.data}
    assert {"old_protos", "pseudo_old_protos", "new_protos", "pseudo_old_arrows"} <= set(traces)
    assert len(traces["pseudo_old_protos"].x) == C and traces["old_protos"].text[0] == emb.class_names[0]
    assert "ndpp eps=0.3 k=5" in fig.layout.title.text


def test_inspection_report(emb, insp, tmp_path):
    from bclviz.report import write_inspection_report

    path = write_inspection_report(tmp_path / "out" / "report.html", emb, insp, projection_method="pca")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("Plotly.newPlot") == 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, flags=re.I)
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]
    ret = insp.results["retrieval"]
    row = re.search(r"<tr><td>M\(new, old\)</td>(.*?)</tr>", text).group(1)
    assert re.findall(r"<td>(.*?)</td>", row)[0] == f"{ret['new_old']['mAP@100']:.3f}"
    top = insp.results["crowded_pairs"][0]
    assert f"<tr><td>{top['class_name']}</td><td>{top['neighbor_name']}</td><td>{top['cos_old']:.3f}</td>" in text
    assert f"{insp.results['headroom']['value']:.3f} (k = 5" in text


def test_explorer_over_embeddings_follows_the_pure_function(emb, insp):
    from bclviz.widgets import explorer_state
    from bclviz.widgets.explorer import PerturbationExplorer

    ex = PerturbationExplorer.from_embeddings(emb, insp, projection="pca", max_points=60)
    assert ex.result is None and ex.params == {"method": "ndpp", "eps": 0.3, "k": 5, "gamma": 0.1}
    torch.testing.assert_close(ex.state["pseudo_old"], insp.pseudo_old)
    assert "M(new, old)" in ex.readouts_html.value and "headroom of the new model" in ex.readouts_html.value
    ex.eps_slider.value = 0.7
    want = explorer_state(insp.old_protos, insp.new_protos, method="ndpp", eps=0.7, k=5,
                          features=ex.features, labels=ex.labels)
    torch.testing.assert_close(ex.state["pseudo_old"], want["pseudo_old"])
    trace = ex.traces["pseudo_old_protos"]
    np.testing.assert_allclose(np.column_stack([trace.x, trace.y]), ex.projection.place(want["pseudo_old"]),
                               rtol=1e-6, atol=1e-9)
    assert ex.state["proxies"] == want["proxies"]
    assert ex.features.shape[0] == ex.labels.shape[0] == 60
    light = PerturbationExplorer.from_embeddings(emb, method="odpp", eps=0.2, projection="pca")
    torch.testing.assert_close(light.old_protos, insp.old_protos)  # prototypes only, no retrieval
    assert light.params["method"] == "odpp" and light.params["k"] == C - 1 and "M(new" not in light.readouts_html.value


# ----------------------------------------------------------------------------- CLI
def test_cli_inspect_writes_report_results_and_prototypes(emb, tmp_path, capsys):
    old, new, y = crowded_embeddings()
    for name, arr in (("old", old), ("new", new), ("labels", y)):
        np.save(tmp_path / f"{name}.npy", arr)
    out = tmp_path / "out"
    argv = ["inspect", "--old", str(tmp_path / "old.npy"), "--new", str(tmp_path / "new.npy"),
            "--labels", str(tmp_path / "labels.npy"), "--out", str(out), "--projection", "pca", "--eps", "0.3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["inspection.json", "new_protos.npy", "old_protos.npy",
                                                     "pseudo_old.npy", "report.html"]
    results = json.loads((out / "inspection.json").read_text())
    want = inspection.inspect_embeddings(features.load(tmp_path / "old.npy", tmp_path / "new.npy",
                                                       tmp_path / "labels.npy"), method=MethodConfig(eps=0.3))
    assert results == json.loads(json.dumps(want.results))
    np.testing.assert_array_equal(np.load(out / "pseudo_old.npy"), want.pseudo_old.numpy())
    np.testing.assert_array_equal(np.load(out / "old_protos.npy"), want.old_protos.numpy())
    assert f"headroom {results['headroom']['value']:.3f}" in printed
    assert f"M(new, old) {results['retrieval']['new_old']['mAP@100']:.3f}" in printed
    assert "Plotly.newPlot" in (out / "report.html").read_text(encoding="utf-8")


TINY = dict(num_superclasses=3, siblings=2, coarse_dim=4, fine_dim=4, train_per_class=24, eval_per_class=6)


def test_extract_writes_new_features_and_inspect_reads_the_folder(tmp_path, capsys):
    from bclviz.runner import checkpoint_paths, extract_features, load_trained
    from bclviz.train import embed
    from bclviz.data import load_dataset

    run_cfg = RunConfig(
        dataset="toy", seed=1, data_options=TINY,
        old_model=ModelSpec(dim=8, options={"hidden": 16}), new_model=ModelSpec(dim=8, options={"hidden": 16}),
        old_train=TrainConfig(epochs=1, batch_size=32), new_train=TrainConfig(epochs=1, batch_size=32),
        method=MethodConfig(name="independent"), output_dir=str(tmp_path / "run"))
    cfg_path = save_run_config(tmp_path / "run.yaml", run_cfg)
    assert main(["train", "--config", str(cfg_path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["extract", "--config", str(cfg_path)]) == 0
    folder = Path(json.loads(capsys.readouterr().out)["features"])
    assert sorted(p.name for p in folder.iterdir()) == ["labels.npy", "new_features.npy", "new_protos.npy",
                                                        "old_features.npy", "old_protos.npy"]
    old, new = load_trained(run_cfg)
    data = load_dataset("toy", seed=1, **TINY)
    f_new = embed(new.model, data.new_train.x)
    np.testing.assert_allclose(np.load(folder / "new_features.npy"), f_new.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.load(folder / "old_features.npy"), embed(old.model, data.new_train.x).numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(np.load(folder / "new_protos.npy"),
                               class_prototypes(f_new, data.new_train.y, data.num_classes).numpy(), atol=1e-6)
    assert checkpoint_paths(run_cfg)[1].is_file()

    emb = features.load(folder)
    assert emb.n == len(data.new_train) and emb.num_classes == data.num_classes
    # extract's prototypes are inspect's prototypes (embed returns unit rows)
    np.testing.assert_allclose(inspection.prototypes(emb.new, emb.labels, emb.num_classes).numpy(),
                               np.load(folder / "new_protos.npy"), atol=1e-5)
    out = tmp_path / "inspect"
    assert main(["inspect", "--features", str(folder), "--out", str(out), "--projection", "pca"]) == 0
    results = json.loads((out / "inspection.json").read_text())
    assert results["sources"]["new"] == str(folder / "new_features.npy")
    f_new = np.array(emb.new)  # a writable copy of the memory map
    assert results["retrieval"]["new_new"] == evaluate(f_new, emb.labels, f_new, emb.labels, exclude_self=True)
    assert (out / "report.html").is_file()


def test_cli_inspect_without_the_lab_extra_writes_the_numbers(tmp_path, monkeypatch, capsys):
    """Without plotly/scikit-learn (core profile) the report is skipped with a message; the rest is written."""
    import sys

    old, new, y = crowded_embeddings()
    np.savez(tmp_path / "emb.npz", old=old, new=new, labels=y)
    monkeypatch.setitem(sys.modules, "bclviz.report", None)  # `from .report import ...` raises ImportError
    assert main(["inspect", "--features", str(tmp_path / "emb.npz"), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "report.html not written" in captured.err and "pip install -e '.[lab]'" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["inspection.json", "new_protos.npy",
                                                                    "old_protos.npy", "pseudo_old.npy"]
    assert json.loads((tmp_path / "out" / "inspection.json").read_text())["sources"]["old"].endswith("emb.npz['old']")
