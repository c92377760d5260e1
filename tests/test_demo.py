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


@pytest.mark.slow
def test_toy_demo_writes_results(tmp_path, capsys):
    assert main(["demo", "--dataset", "toy", "--out", str(tmp_path), "--quiet"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dataset"] == "toy" and res["seed"] == 0 and res["k"] == 100
    assert set(res["methods"]) == set(list_methods()) - {"independent"}
    m_oo = res["old"]["self"]["mAP@100"]
    assert 0.1 < m_oo < 0.9, "the old model must be meaningful but imperfect"
    assert res["independent"]["cross"]["mAP@100"] < m_oo  # no compatibility without a BCL term
    for name, rec in res["methods"].items():
        for side in ("self", "cross"):
            assert set(rec[side]) >= {"mAP@100", "R@1", "R@5", "R@10"}
            assert all(0 <= rec[side][k] <= 1 for k in ("mAP@100", "R@1", "R@5", "R@10"))
        assert rec["compatible"] == (rec["cross"]["mAP@100"] > m_oo)
        assert rec["seconds"] > 0 and math.isfinite(rec["update_gain"])
    assert "ndpp" in capsys.readouterr().out
    html = (tmp_path / "report.html").read_text()
    assert "<script src=" not in html and "three-spaces" in html and "tradeoff" in html
