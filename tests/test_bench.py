"""The scaling benchmarks run from a checkout and report what docs/performance.md quotes
(tiny sizes here; `make bench` runs the real ones)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> dict:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_perturb_scale_reports_every_child_and_the_ivf_comparison():
    res = _run("bench/perturb_scale.py", "--classes", "3000", "--dim", "32", "--threads", "1")
    for name in ("ndpp", "odpp", "dense_ndpp", "ndpp_ivf", "odpp_ivf"):
        assert res[f"{name}_seconds"] > 0 and res[f"{name}_peak_mib"] >= 0
    assert res["rows_differing_vs_dense"] == 0 and res["max_abs_diff_vs_dense"] < 1e-5
    assert 0.9 < res["ndpp_ivf_recall_at_k"] <= 1 and 0.9 < res["odpp_ivf_recall_at_k"] <= 1
    # ODPP lowers its objective with either neighbour search
    assert res["odpp_objective"] < 0.5 * res["odpp_objective_start"]
    assert res["odpp_ivf_objective"] < 0.5 * res["odpp_objective_start"]


@pytest.mark.slow
def test_retrieval_bench_agrees_with_faiss_and_the_naive_loop():
    res = _run("bench/retrieval.py", "--queries", "50", "--gallery", "2000", "--dim", "16", "--threads", "1",
               "--repeat", "1")
    assert {"bclviz_seconds", "faiss_seconds", "naive_seconds"} <= set(res)
    assert res["bclviz_seconds"] > 0 and res["faiss_seconds"] > 0
    assert not res["naive_skipped"] and res["naive_mAP_diff"] < 1e-9 and res["naive_max_ap_diff"] < 1e-9


@pytest.mark.slow
def test_train_throughput_plain_loop_computes_what_the_trainer_computes():
    res = _run("bench/train_throughput.py", "--workloads", "digits", "--threads", "1", "--digits-epochs", "3",
               "--rounds", "1", "--methods", "independent", "proto")
    assert res["same_weights"] is True  # the plain loops end with bclviz's weights, bit for bit
    ratios = res["ratio"]["digits"]["1"]
    assert set(ratios) == {"independent", "proto"} and all(r > 0 for r in ratios.values())
    assert res["runs"][0]["pairs_per_method"] == 1


@pytest.mark.slow
def test_plateau_curve_scores_every_epoch():
    res = _run("bench/plateau.py", "--dataset", "toy", "--epochs", "2", "--replicates", "0", "1")
    assert res["metric"] == "mAP@100" and set(res["curves"]) == {"0", "1"}
    assert all(len(c) == 2 and all(0 <= v <= 1 for v in c) for c in res["curves"].values())
    assert res["curves"]["0"] != res["curves"]["1"]  # two seeds, two curves
