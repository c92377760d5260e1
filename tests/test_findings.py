import json

import pytest

from bclviz.config import TrainConfig
from bclviz.experiment import ModelSpec
from bclviz.findings import dataset_findings, findings_grid, findings_markdown, generate_findings

TINY = dict(
    data_options=dict(num_superclasses=3, siblings=2, coarse_dim=4, fine_dim=4, train_per_class=30, eval_per_class=6),
    old_model=ModelSpec(dim=8, options={"hidden": 16}), new_model=ModelSpec(dim=8, options={"hidden": 16}),
    old_train=TrainConfig(epochs=2, batch_size=32), new_train=TrainConfig(epochs=2, batch_size=32),
)


def test_grid_covers_defaults_and_both_budget_modes():
    grid = findings_grid(eps=(0.3,))
    names = [(m.name, m.eps, m.eps_mode) for m in grid]
    assert ("proto", 0.4, "absolute") in names and ("hot_refresh", 0.4, "absolute") in names
    assert ("ndpp", 0.3, "relative") in names and ("odpp", 0.3, "absolute") in names
    assert len(names) == len(set(names))
    # the default grid: eps up to 1.0 with absolute budgets, the relative mode at the largest eps
    names = [(m.name, m.eps, m.eps_mode) for m in findings_grid()]
    for method in ("ndpp", "odpp"):
        assert [(e, mode) for n, e, mode in names if n == method] == [
            (0.4, "absolute"), (0.2, "absolute"), (1.0, "absolute"), (1.0, "relative")]
    assert {n for n, _, _ in names} >= {"independent", "l2", "bct", "proto", "lce", "hot_refresh"}
    assert [(m.name, m.eps_mode) for m in findings_grid(grid="tax")] == [("independent", "absolute"), ("proto", "absolute")]
    with pytest.raises(ValueError, match=r"grid must be one of \['full', 'tax'\], got 'big'"):
        findings_grid(grid="big")
    # fewer baselines: independent and proto stay (the tax needs them)
    lean = [(m.name, m.eps, m.eps_mode) for m in findings_grid(eps=(0.4, 1.0), baselines=("lce",))]
    assert [n for n, _, _ in lean[:3]] == ["independent", "proto", "lce"] and len(lean) == 3 + 2 + 2 + 2
    with pytest.raises(ValueError, match=r"baselines must be among .*, got \['bct2'\]"):
        findings_grid(baselines=("bct2",))
    absolute = findings_grid(eps=(0.4, 1.0), baselines=(), modes=("absolute",))
    assert [m.eps_mode for m in absolute] == ["absolute"] * 6 and len(absolute) == 2 + 2 + 2
    with pytest.raises(ValueError, match=r"modes must be a non-empty subset of \['absolute', 'relative'\]"):
        findings_grid(modes=("nearest-angle",))


def test_findings_report_is_generated_from_measurements(tmp_path):
    f = dataset_findings("toy", seeds=2, eps=(0.3,), cache_root=tmp_path, overrides=TINY, progress=False)
    labels = [r["label"] for r in f["rows"]]
    assert "proto" in labels and "ndpp eps=0.3 relative" in labels
    for r in f["rows"]:
        assert (r["label"] == "proto") == ("vs" not in r)
        if "vs" in r:
            d = r["vs"]["self"]
            assert d["verdict"] in ("better", "worse", "no clear difference")
            assert d["verdict"] != "better" or d["mean_diff"] - d["half_width"] > 0
    text = findings_markdown([f], command="bclviz findings --datasets toy")
    assert "## toy" in text and "| proto |" in text and "bclviz findings --datasets toy" in text
    # summary (header + one dataset) and the dataset's table (header + one row per setting)
    assert text.count("\n| ") == 2 + len(f["rows"]) + 1
    assert f["tax"]["seeds"] == 2 and f["tax"]["metric"] == f["headline"] and f["headroom"]["value"] >= 0
    # a rerun reads every (setting, seed) from the cache and gives the same numbers
    again = dataset_findings("toy", seeds=2, eps=(0.3,), cache_root=tmp_path, overrides=TINY, progress=False)
    assert [r["self"] for r in again["rows"]] == [r["self"] for r in f["rows"]]
    # ... and reports the training time the cache recorded, not the replay's
    assert f["train_minutes"] > 0 and again["train_minutes"] == f["train_minutes"]
    assert f["threads"] >= 1


def test_findings_markdown_shows_tax_and_headroom():
    def row(label, method, self_, **extra):
        return {"label": label, "method": method, "self": self_, "self_ci": 0.01, "cross": 0.4, "cross_ci": 0.01,
                "compatible": True, **extra}

    same = {"mean_diff": 0.0, "half_width": 0.01, "verdict": "no clear difference"}
    f = {"dataset": "glyphs", "seeds": 5, "k": 100, "headline": "mAP@100", "reference": "proto", "old_old": 0.3,
         "num_classes": 60, "minutes": 1.0,
         "rows": [row("independent", "independent", 0.80, vs={"self": same, "cross": same}),
                  row("proto", "proto", 0.70), row("ndpp", "ndpp", 0.71, vs={"self": same, "cross": same})],
         "tax": {"metric": "mAP@100", "tax": 0.1, "half_width": 0.02, "verdict": "above zero"},
         "headroom": {"value": 0.0412, "k": 5, "crowding_old": 0.61, "crowding_new": 0.40}}
    text = findings_markdown([f], command="bclviz findings --datasets glyphs")
    assert "1.0 minutes wall-clock on the machine that generated it." in text
    f["train_minutes"] = 12.34
    text = findings_markdown([f], command="bclviz findings --datasets glyphs")
    assert "12.3 minutes of new-model training (every setting and seed), 1.0 minutes wall-clock" in text
    f["threads"] = 1
    assert "1.0 minutes wall-clock on the machine that generated it, 1 CPU thread per model." in \
        findings_markdown([f], command="bclviz findings --datasets glyphs")
    del f["threads"]
    assert "| glyphs | 0.300 | 0.800 ± 0.010 | 0.700 ± 0.010 | +0.100 ± 0.020 (above zero) | 0.041 (k = 5) |" in text
    assert ("The compatibility tax (independent self minus proto self) is +0.100 ± 0.020 (above zero): aligning "
            "with the old model costs the new model self-test") in text
    assert "The headroom (mean old-space excess crowding that the independent model undoes, k = 5) is 0.041" in text
    f["tax"] = {"metric": "mAP@100", "tax": None, "half_width": None, "verdict": None, "reason": "proto not run"}
    text = findings_markdown([f], command="bclviz findings --datasets glyphs")
    assert "| n/a (proto not run) |" in text and "The compatibility tax" not in text


def test_tax_grid_findings_and_the_json_next_to_the_markdown(tmp_path, monkeypatch):
    f = dataset_findings("toy", seeds=2, cache_root=tmp_path / "cache", overrides=TINY, progress=False, grid="tax")
    assert [r["label"] for r in f["rows"]] == ["independent", "proto"] and f["grid"] == "tax"
    assert f["tax"]["seeds"] == 2
    text = findings_markdown([f], command="bclviz findings --datasets toy --grid tax")
    assert "only independent and proto ran (the tax grid" in text and "compatibility tax" in text
    # generate_findings writes the same summaries as JSON next to the markdown
    calls = []
    monkeypatch.setattr("bclviz.findings.dataset_findings", lambda d, **kw: calls.append((d, kw["grid"])) or f)
    out = generate_findings(["toy"], out=tmp_path / "docs" / "findings.md", grid="tax", progress=False)
    assert calls == [("toy", "tax")] and out.read_text() == findings_markdown(
        [f], command=f"bclviz findings --datasets toy --seeds 5 --out {tmp_path / 'docs' / 'findings.md'}")
    saved = json.loads((tmp_path / "docs" / "findings.json").read_text())
    assert saved["findings"][0]["rows"] == json.loads(json.dumps(f["rows"])) and saved["command"].startswith("bclviz")


def test_findings_json_reads_back_into_tradeoff_points(tmp_path):
    from bclviz.findings import findings_points, findings_summary, load_findings
    from bclviz.plots import tradeoff_figure

    def row(label, method, self_, ci=0.01):
        return {"label": label, "method": method, "self": self_, "self_ci": ci, "cross": 0.5, "cross_ci": ci,
                "compatible": True}

    full = {"dataset": "glyphs", "scenario": "weak-old", "grid": "full", "old_old": 0.3,
            "rows": [row("proto", "proto", 0.7), row("ndpp eps=1.0", "ndpp", 0.72, ci=None)]}
    tax = {**full, "scenario": "lowres-old", "grid": "tax", "rows": full["rows"][:1]}
    path = tmp_path / "findings.json"
    path.write_text(json.dumps({"command": "bclviz findings", "findings": [tax, full]}))
    found = load_findings(path)
    assert findings_summary(found, "glyphs") == full  # the full grid first
    assert findings_summary(found, "glyphs", "lowres-old") == tax
    with pytest.raises(KeyError, match=r"no findings for dataset='digits'.*\('glyphs', 'weak-old', 'full', 1.0\)"):
        findings_summary(found, "digits")
    points = findings_points(full)
    assert [(p["label"], p.get("self_err")) for p in points] == [("proto", 0.01), ("ndpp eps=1.0", None), ("old", None)]
    assert points[-1]["self"] == points[-1]["cross"] == 0.3
    fig = tradeoff_figure(points, old_old=full["old_old"])
    assert list(fig.data[0].error_y.array) == [0.01]
    with pytest.raises(FileNotFoundError, match="generate them with `bclviz findings`"):
        load_findings(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="is not a findings.json"):
        load_findings(tmp_path / "bad.json")


def test_findings_cli_passes_grid_eps_and_baselines(tmp_path, monkeypatch, capsys):
    from bclviz import cli

    seen = {}

    def fake(datasets, **kw):
        seen.update(kw, datasets=datasets)
        return tmp_path / "f.md"

    monkeypatch.setattr("bclviz.findings.generate_findings", fake)
    assert cli.main(["findings", "--datasets", "glyphs", "--grid", "full", "--eps", "0.4,1.0", "--baselines",
                     "independent,proto", "--modes", "absolute", "--out", str(tmp_path / "f.md"), "--quiet"]) == 0
    assert seen["datasets"] == ["glyphs"] and seen["grid"] == "full" and seen["eps"] == (0.4, 1.0)
    assert seen["baselines"] == ("independent", "proto") and seen["modes"] == ("absolute",)
    assert seen["command"] == (f"bclviz findings --datasets glyphs --grid full --eps 0.4,1.0 --baselines "
                               f"independent,proto --modes absolute --seeds 5 --out {tmp_path / 'f.md'}")
    assert cli.main(["findings", "--datasets", "toy", "--out", str(tmp_path / "f.md"), "--quiet"]) == 0
    assert seen["eps"] == (0.2, 0.4, 1.0) and "--eps" not in seen["command"] and "--grid" not in seen["command"]
    assert cli.main(["findings", "--eps", "a,b", "--out", str(tmp_path / "f.md")]) == 2
    assert "could not convert string to float" in capsys.readouterr().err
    assert seen["lams"] == (1.0,)
    assert cli.main(["findings", "--datasets", "toy", "--lam", "1,10", "--out", str(tmp_path / "f.md"), "--quiet"]) == 0
    assert seen["lams"] == (1.0, 10.0) and " --lam 1,10 " in seen["command"]
    assert cli.main(["findings", "--lam", "strict", "--out", str(tmp_path / "f.md")]) == 2
    assert "--lam must be comma-separated numbers, got 'strict'" in capsys.readouterr().err


def test_findings_at_a_stricter_compatibility_weight(tmp_path, monkeypatch):
    """--lam: every compatible method of the grid trains with that weight; independent has
    none and its trials are shared; the tax compares it with proto at that weight."""
    grid = findings_grid(eps=(0.4,), baselines=("l2",), modes=("absolute",), lam=5.0)
    assert {(m.name, m.lam) for m in grid} == {("independent", 1.0), ("proto", 5.0), ("l2", 5.0), ("ndpp", 5.0),
                                              ("odpp", 5.0)}
    plain = dataset_findings("toy", seeds=2, cache_root=tmp_path, overrides=TINY, progress=False, grid="tax")
    strict = dataset_findings("toy", seeds=2, cache_root=tmp_path, overrides=TINY, progress=False, grid="tax", lam=5.0)
    assert (plain["lam"], strict["lam"]) == (1.0, 5.0)
    assert strict["rows"][0]["self"] == plain["rows"][0]["self"]  # the same independent trials
    assert strict["rows"][1]["self"] != plain["rows"][1]["self"]  # proto trained with lam 5
    assert strict["tax"]["aligned"] == pytest.approx(strict["rows"][1]["self"])
    from bclviz.findings import findings_summary

    found = {"findings": [strict, plain]}
    assert findings_summary(found, "toy") is plain and findings_summary(found, "toy", lam=5) is strict
    with pytest.raises(KeyError, match="lam=3"):
        findings_summary(found, "toy", lam=3)
    text = findings_markdown([plain, strict], command="c")
    assert "## toy (coarse-view)\n" in text and "## toy (coarse-view, lam 5)\n" in text
    calls = []
    monkeypatch.setattr("bclviz.findings.dataset_findings", lambda d, **kw: calls.append((d, kw["lam"])) or strict)
    generate_findings(["toy"], out=tmp_path / "f.md", lams=(1, 10), progress=False)
    assert calls == [("toy", 1.0), ("toy", 10.0)]
    with pytest.raises(ValueError, match="lams must be one or more weights > 0"):
        generate_findings(["toy"], out=tmp_path / "f.md", lams=(0,), progress=False)


def test_auto_grid_widens_to_the_full_grid_where_the_tax_is_above_zero(tmp_path, monkeypatch):
    """NDPP/ODPP are measured wherever strict alignment has a cost: a non-default scenario
    whose tax grid finds a tax above zero at some weight runs the full grid at that weight."""
    def tax(verdict):
        return {"metric": "mAP@100", "tax": 0.02, "half_width": 0.01, "verdict": verdict}

    verdicts = {1.0: "below zero", 10.0: "no clear difference", 30.0: "above zero"}
    calls = []

    def fake(dataset, **kw):
        calls.append((kw["scenario"], kw["grid"], kw["lam"]))
        return {"dataset": dataset, "scenario": kw["scenario"], "grid": kw["grid"], "lam": kw["lam"],
                "tax": tax(verdicts[kw["lam"]]) if kw["scenario"] != "coarse-view" else tax("above zero")}

    monkeypatch.setattr("bclviz.findings.dataset_findings", fake)
    monkeypatch.setattr("bclviz.findings.findings_markdown", lambda found, command: "")
    generate_findings(["toy"], out=tmp_path / "f.md", scenarios="all", lams=(1, 10, 30), progress=False)
    # coarse-view is the toy's default scenario: the full grid at every weight, never twice
    assert calls == [("coarse-view", "full", 1.0), ("coarse-view", "full", 10.0), ("coarse-view", "full", 30.0),
                     ("default-v1", "tax", 1.0), ("default-v1", "tax", 10.0),
                     ("default-v1", "tax", 30.0), ("default-v1", "full", 30.0)]
    saved = json.loads((tmp_path / "findings.json").read_text())["findings"]
    assert [(f["scenario"], f["grid"], f["lam"]) for f in saved][3:] == [
        ("default-v1", "tax", 1.0), ("default-v1", "tax", 10.0), ("default-v1", "full", 30.0)]
    calls.clear()  # an explicit grid is kept as asked
    generate_findings(["toy"], out=tmp_path / "f.md", scenarios=["default-v1"], grid="tax", lams=(30,),
                      progress=False)
    assert calls == [("default-v1", "tax", 30.0)]
