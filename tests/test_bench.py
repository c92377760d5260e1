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


@pytest.mark.slow
def test_inspect_scale_reports_inspect_baseline_and_explorer_latency():
    res = _run("bench/inspect_scale.py", "--n", "6000", "--classes", "2500", "--dim", "16", "--threads", "1",
               "--updates", "2")
    assert res["inspect_seconds"] > 0 and res["baseline_seconds"] > 0 and res["inspect_to_baseline"] > 0
    assert res["inspect_peak_mib"] >= 0 and res["baseline_peak_mib"] >= 0
    assert res["prototypes_max_abs_diff"] < 1e-5  # the numpy baseline computes the same prototypes
    ex = res["explorer"]
    assert ex["classes"] == 2500 and not ex["exact_proxies"]  # candidate lists above 2,000 classes
    assert "Scattergl" in ex["trace_types"] and ex["traces"] == 8  # one arrow trace, not one per class
    for method in ("ndpp", "odpp"):
        m = ex["methods"][method]
        assert m["median_ms"] > 0 and m["n"] == 2 and 0 <= m["redraw_median_ms"] <= m["median_ms"] * 5
        assert set(m["proxy_diff_vs_exact"]) == {"crowding_pseudo_old", "recognisability"}
    assert set(res["explorer_target_met"]) == {"ndpp", "odpp"}


@pytest.mark.slow
def test_tuning_bench_times_workers_storage_and_the_search():
    res = _run("bench/tuning.py", "--epochs", "1", "--threads", "1", "--train-per-class", "60", "--search",
               "--budget", "4", "--search-seeds", "2")
    workers = res["workers"]
    assert workers["trials"] == 12 and workers["same_numbers"] is True  # 2 workers: the numbers of 1
    assert workers["speedup"] == pytest.approx(workers["wall_1_worker"] / workers["wall_2_workers"], rel=0.01)
    storage = res["storage"]
    assert storage["study_seconds_per_trial"] > 0
    assert storage["overhead_per_trial"] == pytest.approx(storage["study_seconds_per_trial"] / res["trial_seconds"],
                                                          rel=0.05)
    search = res["search"]
    assert search["dense_grid_trials"] == 36 and [r["seed"] for r in search["runs"]] == [0, 1]
    assert all(r["hv_ratio"] > 0 for r in search["runs"])  # above 1: the search beat the grid
