"""Per-epoch training cost of every registered method relative to ``independent``.

Usage (from the repository root)::

    .venv/bin/python bench/train_overhead.py [--epochs 6] [--rounds 2] [--methods ndpp odpp]

On the default toy data (``default_experiment("toy")``) one old model is trained, then
each registered method (:func:`bclviz.methods.list_methods`) trains the same new model
architecture with the same data, seeds and number of steps, at its default
:class:`~bclviz.config.MethodConfig` (NDPP/ODPP refresh once per epoch after one warm-up
epoch). The epoch time is the ``seconds`` field of the trainer's history, which covers
the refresh, every optimiser step and the per-epoch proxies.

After an untimed warm-up run, a method's epoch time is the median over all epochs
after the first, pooled over ``--rounds`` rounds; the rounds run the methods in rotated
orders, so background load on a shared machine is spread over all methods. ``overhead[m]`` = epoch time of ``m`` /
epoch time of ``independent``. ``overhead_cpu`` is the same ratio of process CPU time
per epoch (read at the trainer's per-epoch callback), which other processes on a
shared machine disturb much less than wall time, above all with ``--threads 1``.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, set_threads  # noqa: E402

from bclviz.config import MethodConfig  # noqa: E402
from bclviz.data import load_dataset  # noqa: E402
from bclviz.experiment import build_new_model, build_old_model, default_experiment  # noqa: E402
from bclviz.methods import list_methods  # noqa: E402
from bclviz.train import train_new, train_old  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6, help="new-model epochs per method and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--methods", nargs="*", default=None,
                        help="methods to time besides independent (default: all registered)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not counted)")

    set_threads(args.threads)
    cfg = default_experiment("toy", seed=args.seed)
    data = load_dataset(cfg.dataset, seed=cfg.seed, **cfg.data_options)
    torch.manual_seed(cfg.seed)
    old = train_old(build_old_model(data, cfg.old_model), data.old_train, num_classes=data.num_old_classes,
                    cfg=dataclasses.replace(cfg.old_train, seed=cfg.seed), progress=False)
    new_cfg = dataclasses.replace(cfg.new_train, seed=cfg.seed + 1, epochs=args.epochs)
    methods = list_methods() if args.methods is None else ["independent", *args.methods]
    methods = list(dict.fromkeys(methods))  # independent first, no duplicates

    # untimed warm-up: the first training in a process pays one-off allocator and
    # kernel initialisation costs that would otherwise land on whichever method runs first
    torch.manual_seed(cfg.seed + 1)
    train_new(build_new_model(data, cfg.new_model), data.new_train, old, num_classes=data.num_classes,
              cfg=dataclasses.replace(new_cfg, epochs=2, max_steps=100), method="independent", progress=False)

    epoch_times: dict[str, list[float]] = {m: [] for m in methods}
    epoch_cpu: dict[str, list[float]] = {m: [] for m in methods}
    steps: dict[str, int] = {}
    for r in range(args.rounds):
        order = methods[r % len(methods):] + methods[: r % len(methods)]
        for name in order:
            torch.manual_seed(cfg.seed + 1)
            model = build_new_model(data, cfg.new_model)
            marks = []  # process CPU time at the end of each epoch
            t0 = time.perf_counter()
            res = train_new(model, data.new_train, old, num_classes=data.num_classes, cfg=new_cfg,
                            method=MethodConfig(name=name), progress=False,
                            callback=lambda record: marks.append(time.process_time()))
            total = time.perf_counter() - t0
            epoch_times[name] += [h["seconds"] for h in res.history[1:]]
            epoch_cpu[name] += [b - a for a, b in zip(marks, marks[1:])]
            steps[name] = sum(h["steps"] for h in res.history)
            print(f"round {r} {name}: {total:.1f} s, epochs {[round(h['seconds'], 2) for h in res.history]}",
                  file=sys.stderr, flush=True)
    if len(set(steps.values())) != 1:
        raise RuntimeError(f"methods ran different numbers of steps: {steps}")
    median = {m: statistics.median(t) for m, t in epoch_times.items()}
    cpu = {m: statistics.median(t) for m, t in epoch_cpu.items()}
    base = median["independent"]
    out = {
        "independent_epoch_seconds": round(base, 4),
        "overhead": {m: round(median[m] / base, 3) for m in methods if m != "independent"},
        "epoch_seconds": {m: round(v, 4) for m, v in median.items()},
        "overhead_cpu": {m: round(cpu[m] / cpu["independent"], 3) for m in methods if m != "independent"},
        "epoch_cpu_seconds": {m: round(v, 4) for m, v in cpu.items()},
        "threads": torch.get_num_threads(),
        "steps_per_method": steps[methods[0]],
        "epochs": args.epochs,
        "rounds": args.rounds,
        "classes": data.num_classes,
        "train_samples": len(data.new_train),
        "env": environment(),
    }
    emit(out)
    return out


if __name__ == "__main__":
    main()
