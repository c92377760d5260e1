"""The headless demo end to end, and run_experiment's determinism on a tiny config."""

import json
import math

import pytest

from bclviz.cli import main
from bclviz.config import MethodConfig, TrainConfig
from bclviz.experiment import default_experiment, run_experiment
from bclviz.methods import list_methods


def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def test_run_experiment_is_deterministic():
    cfg = default_experiment(
        "toy", seed=2,
        data_options=dict(num_superclasses=3, siblings=2, train_per_class=40, eval_per_class=8),
        old_train=TrainConfig(epochs=2), new_train=TrainConfig(epochs=2),
        methods=(MethodConfig(name="ndpp"), MethodConfig(name="odpp")),
    )
    a = run_experiment(cfg, progress=False).results
    b = run_experiment(cfg, progress=False).results
    assert json.dumps(_strip_timing(a), sort_keys=True) == json.dumps(_strip_timing(b), sort_keys=True)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """`bclviz demo --dataset toy` run twice with the same seed (one new-model seed each,
    to keep CI short; the default is three), its new models trained in two worker processes."""
    outs = []
    for run in ("a", "b"):
        out = tmp_path_factory.mktemp(f"demo-{run}")
        assert main(["demo", "--dataset", "toy", "--out", str(out), "--quiet", "--seeds", "1",
                     "--workers", "2"]) == 0
        outs.append(out)
    return outs


@pytest.mark.slow
def test_toy_demo_writes_results(demo_runs):
    out = demo_runs[0]
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "toy" and res["seed"] == 0 and res["k"] == 100 and res["seeds"] == [1]
    assert set(res["methods"]) == set(list_methods()) - {"independent"}
    m_oo = res["old"]["self"]["mAP@100"]
    assert 0.1 < m_oo < 0.9, "the old model must be meaningful but imperfect"
    assert res["independent"]["cross"]["mAP@100"] < m_oo  # no compatibility without a BCL term
    for name, rec in res["methods"].items():
        for side in ("self", "cross"):
            assert set(rec[side]) >= {"mAP@100", "R@1", "R@5", "R@10"}
            assert all(0 <= rec[side][k] <= 1 for k in ("mAP@100", "R@1", "R@5", "R@10"))
            assert rec[side] == rec["per_seed"][0][side]  # one seed: the mean is that seed's value
        assert rec["compatible"] == (rec["cross"]["mAP@100"] > m_oo)
        assert rec["seconds"] > 0 and math.isfinite(rec["update_gain"])
        assert (name == "proto") == ("vs_proto" not in rec)
    html = (out / "report.html").read_text()
    assert "<script src=" not in html and "three-spaces" in html and "tradeoff" in html


@pytest.mark.slow
def test_demo_twice_with_the_same_seed_writes_the_same_results(demo_runs):
    a, b = (json.loads((out / "results.json").read_text()) for out in demo_runs)
    assert json.dumps(_strip_timing(a), sort_keys=True) == json.dumps(_strip_timing(b), sort_keys=True)
    assert a != _strip_timing(a)  # the timing fields were there, and only they were removed
