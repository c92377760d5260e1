"""Tuning studies on the toy: 1 vs 2 workers, the study's cost per trial, and (``--search``) how close a search gets.

Usage (from the repository root)::

    .venv/bin/python bench/tuning.py [--epochs 4] [--threads 1] [--search] [--budget 12] [--search-seeds 3]
                                     [--train-per-class N]

One old model is trained on the default toy (``default_experiment("toy")``, the new
models' epochs set by ``--epochs``; ``--train-per-class`` shrinks the data for a smoke
test), then:

- **workers**: a 12-trial grid (six baselines, NDPP and ODPP at three eps) through
  :func:`bclviz.sweep.run_sweep` in a fresh in-memory study, first with 1 worker (the
  baseline, in this process), then with 2 worker processes. ``speedup`` = wall(1) /
  wall(2); the two give the same numbers (``same_numbers``).
- **storage overhead**: the same 12 trials once more in a journal file
  (:mod:`bclviz.study`), with training replaced by handing back the records already
  trained, so what is timed is the study alone: creating, claiming, completing and
  reading back each trial. ``overhead_per_trial`` = that time per trial / the mean
  toy trial's time (the 1-worker wall / 12), against a target below 0.05.
- **search** (``--search``): the Pareto front of a dense grid (NDPP and ODPP, eps in
  0, 0.2, ..., 1.0, k in 2, 5, 8: 36 trials) against a TPE search of the same space
  with ``--budget`` trials, for ``--search-seeds`` sampler seeds. ``hv_ratio`` is the
  hypervolume of the search's front over the grid's (self vs cross, from the worst
  point of either as reference), ``front_hits`` how many of the grid's front points
  the search matched or beat.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, set_threads  # noqa: E402

from bclviz.config import MethodConfig, default_experiment  # noqa: E402
from bclviz.experiment import run_experiment  # noqa: E402
from bclviz.sweep import run_sweep, sweep_grid  # noqa: E402

KEY = "mAP@100"


def _numbers(records) -> list:
    return [(r["label"], r["self"], r["cross"]) for r in records]


def bench_workers(result, cfg) -> dict:
    grid = sweep_grid(methods=("ndpp", "odpp"), eps=(0.2, 0.4, 0.8))
    assert len(grid) == 12
    walls, records = {}, {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        records[workers] = run_sweep(result.data, result.old, cfg, grid, cache_dir=None, progress=False,
                                     workers=workers)
        walls[workers] = time.perf_counter() - t0
    return {"trials": len(grid), "wall_1_worker": round(walls[1], 2), "wall_2_workers": round(walls[2], 2),
            "speedup": round(walls[1] / walls[2], 3), "same_numbers": _numbers(records[1]) == _numbers(records[2]),
            "trial_seconds": walls[1] / len(grid), "records": records[1], "grid": grid}


def bench_storage(result, cfg, grid, records, trial_seconds: float, rounds: int = 3) -> dict:
    """The study's own cost per trial: training swapped for the records trained above."""
    import bclviz.trials as trials_module

    raw = {MethodConfig(**r["settings"]): {"seed": r["per_seed"][0]["seed"], "self": r["self"], "cross": r["cross"],
                                           "seconds": r["seconds"], "settings": r["settings"]} for r in records}
    real = trials_module.train_and_score
    trials_module.train_and_score = lambda cfg_, data, old, method, scorer, **kw: (None, raw[method])
    per_trial = []
    try:
        for _ in range(rounds):
            with tempfile.TemporaryDirectory(prefix="bclviz-tune-bench-") as folder:
                t0 = time.perf_counter()
                again = run_sweep(result.data, result.old, cfg, grid, cache_dir=folder, progress=False, workers=1)
                per_trial.append((time.perf_counter() - t0) / len(grid))
    finally:
        trials_module.train_and_score = real
    assert _numbers(again) == _numbers(records)
    seconds = statistics.median(per_trial)
    return {"storage": "journal file", "study_seconds_per_trial": round(seconds, 4),
            "overhead_per_trial": round(seconds / trial_seconds, 4), "target": 0.05,
            "target_met": seconds / trial_seconds < 0.05}


def _hypervolume(points, ref) -> float:
    """Area that ``points`` ((self, cross), both maximised) dominate above ``ref``: a
    sweep over cross, highest first, adding each strip times the best self so far."""
    front = sorted({p for p in points if p[0] > ref[0] and p[1] > ref[1]}, key=lambda p: -p[1])
    area, best_self = 0.0, ref[0]
    for i, (s, c) in enumerate(front):
        best_self = max(best_self, s)
        below = front[i + 1][1] if i + 1 < len(front) else ref[1]
        area += (c - below) * (best_self - ref[0])
    return area


def bench_search(result, cfg, *, budget: int, seeds: int, workers: int) -> dict:
    from bclviz.pareto import pareto_front
    from bclviz.space import Range, SearchSpace
    from bclviz.tune import tune_study

    dense = [MethodConfig(name=m, eps=e, k=k) for m in ("ndpp", "odpp") for e in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
             for k in (2, 5, 8)]
    t0 = time.perf_counter()
    grid = run_sweep(result.data, result.old, cfg, dense, cache_dir=None, progress=False, workers=workers)
    grid_wall = time.perf_counter() - t0
    grid_points = [(r["self"][KEY], r["cross"][KEY]) for r in grid]
    space = SearchSpace(eps=Range(0.0, 1.0), k=Range(2, 8), baselines=(), startup=max(2, budget // 3))
    runs = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        found = tune_study(result.data, result.old, cfg, space=dataclasses.replace(space, seed=seed), trials=budget,
                           storage=None, workers=workers, progress=False)
        runs.append(([(r["self"][KEY], r["cross"][KEY]) for r in found.records], time.perf_counter() - t0))
    everything = grid_points + [p for pts, _ in runs for p in pts]
    ref = (min(p[0] for p in everything) - 1e-3, min(p[1] for p in everything) - 1e-3)
    grid_front = [grid_points[i] for i in pareto_front([{"self": s, "cross": c} for s, c in grid_points])]
    grid_hv = _hypervolume(grid_front, ref)
    out = []
    for seed, (pts, wall) in enumerate(runs):
        hits = sum(any(s >= gs and c >= gc for s, c in pts) for gs, gc in grid_front)
        out.append({"seed": seed, "hv_ratio": round(_hypervolume(pts, ref) / grid_hv, 4),
                    "front_hits": f"{hits}/{len(grid_front)}", "wall_seconds": round(wall, 1)})
    return {"dense_grid_trials": len(dense), "dense_grid_wall_seconds": round(grid_wall, 1), "budget": budget,
            "runs": out, "hv_ratio_mean": round(statistics.mean(r["hv_ratio"] for r in out), 4)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="new-model epochs of every trial (toy default: 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--search", action="store_true", help="also measure the search against a dense grid")
    parser.add_argument("--budget", type=int, default=12, help="search trials per search seed")
    parser.add_argument("--search-seeds", type=int, default=3)
    parser.add_argument("--train-per-class", type=int, default=None, help="toy training images per class")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    options = {} if args.train_per_class is None else {"train_per_class": args.train_per_class}
    cfg = default_experiment("toy", methods=(), data_options=options)
    cfg = dataclasses.replace(cfg, new_train=dataclasses.replace(cfg.new_train, epochs=args.epochs))
    result = run_experiment(cfg, progress=False, workers=1)
    workers = bench_workers(result, cfg)
    out = {"benchmark": "tuning", "epochs": args.epochs,
           "workers": {k: v for k, v in workers.items() if k not in ("records", "grid", "trial_seconds")},
           "trial_seconds": round(workers["trial_seconds"], 3),
           "storage": bench_storage(result, cfg, workers["grid"], workers["records"], workers["trial_seconds"])}
    if args.search:
        out["search"] = bench_search(result, cfg, budget=args.budget, seeds=args.search_seeds, workers=2)
    out["env"] = environment()
    emit(out)
    return out


if __name__ == "__main__":
    main()
