"""Perturbation-explorer update latency on the default toy experiment.

Usage (from the repository root)::

    .venv/bin/python bench/widget_latency.py [--n 20] [--seed 0]

Trains the default toy (``default_experiment("toy")``) with only the NDPP method (the
explorer's reference model; old and independent models are trained as always), builds
``PerturbationExplorer(result, projection="pca")`` and times slider moves with
:func:`bclviz.widgets.explorer.measure_latency` (an eps sweep of ``--n`` values, each a
full recompute + figure update) for NDPP and then ODPP. A k sweep is timed as well.

Top-level ``median_ms`` / ``p95_ms`` are the worst (largest) of the per-method eps-sweep
figures, so the target holds only when it holds for both methods. The last stdout line
is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, set_threads  # noqa: E402

from bclviz.config import MethodConfig  # noqa: E402
from bclviz.experiment import default_experiment, run_experiment  # noqa: E402


def k_sweep(explorer, values) -> dict:
    """Time k-slider moves (recompute + update); the slider is put back afterwards."""
    start = explorer.k_slider.value
    times = []
    try:
        for k in values:
            if k == explorer.k_slider.value:
                continue
            t0 = time.perf_counter()
            explorer.k_slider.value = k
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        explorer.k_slider.value = start
    return {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)), "n": len(times)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="slider values per sweep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch/faiss threads (default: the libraries' choice)")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from bclviz.widgets.explorer import PerturbationExplorer, measure_latency

    cfg = dataclasses.replace(default_experiment("toy", seed=args.seed), methods=(MethodConfig(name="ndpp"),))
    t0 = time.perf_counter()
    result = run_experiment(cfg, progress=False)
    train_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    explorer = PerturbationExplorer(result, projection="pca", method="ndpp")
    build_seconds = time.perf_counter() - t0
    num_classes = int(explorer.old_protos.shape[0])
    k_values = [int(k) for k in np.unique(np.linspace(1, min(num_classes - 1, 16), 8).round())]

    methods = {}
    for method in ("ndpp", "odpp"):
        explorer.method_toggle.value = method
        methods[method] = measure_latency(explorer, n=args.n)
        methods[method]["k_sweep"] = k_sweep(explorer, k_values)
    worst = max(methods, key=lambda m: methods[m]["median_ms"])
    out = {
        "median_ms": round(max(m["median_ms"] for m in methods.values()), 2),
        "p95_ms": round(max(m["p95_ms"] for m in methods.values()), 2),
        "worst_method": worst,
        "methods": {name: {key: (round(v, 2) if isinstance(v, float) else v) for key, v in m.items() if key != "k_sweep"}
                    | {"k_sweep": {key: round(v, 2) if isinstance(v, float) else v
                                   for key, v in m["k_sweep"].items()}}
                    for name, m in methods.items()},
        "classes": num_classes,
        "features_shown": int(explorer.features.shape[0]),
        "projection": explorer.projection.method_,
        "build_seconds": round(build_seconds, 2),
        "train_seconds": round(train_seconds, 1),
        "median_all_eps_ms": round(statistics.median(m["median_ms"] for m in methods.values()), 2),
        "env": environment(),
    }
    emit(out)
    return out


if __name__ == "__main__":
    main()
