from bclviz.config import TrainConfig
from bclviz.experiment import ModelSpec
from bclviz.findings import dataset_findings, findings_grid, findings_markdown

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
    assert text.count("\n| ") == len(f["rows"]) + 1  # header + one row per setting
    # a rerun reads every (setting, seed) from the cache and gives the same numbers
    again = dataset_findings("toy", seeds=2, eps=(0.3,), cache_root=tmp_path, overrides=TINY, progress=False)
    assert [r["self"] for r in again["rows"]] == [r["self"] for r in f["rows"]]
