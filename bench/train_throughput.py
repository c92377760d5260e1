"""bclviz's trainer against a plain, hand-written PyTorch loop doing the same work.

Usage (from the repository root)::

    .venv/bin/python bench/train_throughput.py [--workloads toy digits] [--threads 1 2]
        [--epochs 4] [--digits-epochs 6] [--rounds 2] [--methods independent proto ndpp odpp]

For every workload and thread count a fresh child process (``--child``) builds the data
and an old model, then compares, for each method, bclviz's epochs with those of a plain
loop on the same model, head, optimiser, batch size, data and number of steps:

- ``plain`` (the baseline of ``independent``): what a user writes by hand. The same new
  model (built with the same seed), the same cosine-margin head
  (:class:`bclviz.heads.MarginHead`, s = 30, m = 0.2, drawn from the same generator),
  ``torch.optim.Adam`` with the same lr and weight decay over the model's and the
  head's parameters. Per epoch: ``torch.randperm`` with a seeded generator, ``split``
  into batches; per step: index ``x`` and ``y``, ``f = model(x)``, ``loss = head(f, y)``,
  ``opt.zero_grad()``, ``loss.backward()``, ``opt.step()``. Nothing else: no loss
  logging, no prototypes, no per-epoch record.
- ``plain_proto`` (the baseline of ``proto``, ``ndpp`` and ``odpp``): ``plain`` with the
  compatibility term those methods compute, ``loss = head(f, y) + lam *
  prototype_alignment_loss(f, y, P, scale=30, margin=0.2)`` against fixed prototypes
  ``P`` (the old model's class prototypes of the training set, computed before timing).
- bclviz: :func:`bclviz.train.train_new` with the method at its default
  :class:`~bclviz.config.MethodConfig` (NDPP/ODPP refresh once per epoch after one
  warm-up epoch), ``progress=False``, no checkpoint.

Everything bclviz does beyond its baseline counts as overhead: the EMA of the new
prototypes (every step, every method), the per-step loss bookkeeping, the per-epoch
record (delta norms, three crowding proxies), the loader, and for NDPP/ODPP the
perturbation refresh once per epoch.

Timing is paired epoch by epoch, so that load from other processes hits both sides
alike: the trainer's per-epoch callback runs one epoch of the baseline loop, so the
two alternate (bclviz epoch 0, plain epoch 0, bclviz epoch 1, plain epoch 1, ...). A
bclviz epoch is the wall time from the end of one callback to the start of the next
(shuffle, every step, all per-epoch work); a plain epoch is timed inside the callback.
Epochs 0 and 1 are not counted; for each later epoch k the pair's ratio is
``bclviz_k / mean(plain_{k-1}, plain_k)`` (the plain epochs just before and after it,
which cancels a steady drift in load). ``ratio[m]`` is the median of those ratios over
all counted epochs of ``--rounds`` rounds (methods in rotated order); ``ratio_cpu`` is
the same with process CPU time; ``epoch_seconds`` are medians. An untimed warm-up of
every variant (2 epochs on at most 2,048 training samples) comes first, and checks that
the plain loop does the same computation: after it, ``plain``'s weights must equal
``independent``'s and ``plain_proto``'s ``proto``'s bit for bit (``same_weights``).

Workloads: ``toy`` (``default_experiment("toy")``: the MLP, 48,000 samples, batch 128,
375 steps per epoch) and ``digits`` (``default_experiment("digits")``: the small CNN,
width 32, on 8x8 digits, 1,253 samples, batch 64, 20 steps per epoch). The last stdout
line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, run_child, set_threads  # noqa: E402

METHODS = ("independent", "proto", "ndpp", "odpp")
BASELINE = {"independent": "plain", "proto": "plain_proto", "ndpp": "plain_proto", "odpp": "plain_proto"}
TARGETS = {"independent": 1.10, "proto": 1.15, "ndpp": 1.25, "odpp": 1.25}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def plain_epochs(data, model, head, cfg, *, protos=None, lam=1.0, comp_scale=30.0, comp_margin=0.2):
    """The hand-written reference loop (see the module docstring), one epoch per ``next()``."""
    import torch

    from bclviz.losses import prototype_alignment_loss

    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all, y_all = data.x, data.y
    model.train()
    head.train()
    while True:
        for idx in torch.randperm(len(y_all), generator=gen).split(cfg.batch_size):
            x, y = x_all[idx], y_all[idx]
            f = model(x)
            loss = head(f, y)
            if protos is not None:
                loss = loss + lam * prototype_alignment_loss(f, y, protos, scale=comp_scale, margin=comp_margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
        yield


def child(args) -> dict:
    set_threads(args.threads)
    import torch

    from bclviz.config import MethodConfig, default_experiment
    from bclviz.data import load_dataset
    from bclviz.heads import MarginHead
    from bclviz.pipeline import build_new_model, train_old_model
    from bclviz.train import class_prototypes, embed, train_new

    cfg = default_experiment(args.workload, seed=args.seed)
    cfg = dataclasses.replace(cfg, old_train=dataclasses.replace(cfg.old_train, epochs=args.old_epochs))
    data = load_dataset(cfg.dataset, seed=cfg.seed, **cfg.data_options)
    old = train_old_model(cfg, data, progress=False)
    train = data.new_train
    seed = cfg.seed + 1
    new_cfg = dataclasses.replace(cfg.new_train, seed=seed, epochs=args.epochs)
    mdefault = MethodConfig()
    warm = train
    if len(train) > 2048:  # a random subset for the warm-up, if it holds every class
        subset = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:2048])
        warm = subset if torch.unique(subset.y).numel() == data.num_classes else train
    protos_of = {}  # the old model's class prototypes of each training set (what train_new aligns proto to)
    for labeled in (train, warm):
        protos_of[id(labeled)] = class_prototypes(embed(old.model, labeled.x), labeled.y, data.num_classes)

    def plain(variant: str, labeled):
        model = build_new_model(data, cfg.new_model, seed=seed)
        gen = torch.Generator().manual_seed(new_cfg.seed + 7919)  # as bclviz's trainer draws its head
        head = MarginHead(model.dim, data.num_classes, kind=new_cfg.head, scale=new_cfg.scale,
                          margin=new_cfg.margin, generator=gen)
        epochs = plain_epochs(labeled, model, head, new_cfg, lam=mdefault.lam, comp_scale=mdefault.comp_scale,
                              comp_margin=mdefault.comp_margin,
                              protos=protos_of[id(labeled)] if variant == "plain_proto" else None)
        return model, epochs

    def bclviz(method: str, labeled, epochs: int, callback=None):
        model = build_new_model(data, cfg.new_model, seed=seed)
        train_new(model, labeled, old, num_classes=data.num_classes, cfg=dataclasses.replace(new_cfg, epochs=epochs),
                  method=MethodConfig(name=method), progress=False, callback=callback)
        return model

    # untimed warm-up (one-off allocator and kernel initialisation), and the check that
    # the plain loops compute what bclviz computes
    weights = {}
    for v in ["plain", *(["plain_proto"] if set(args.methods) - {"independent"} else []), *args.methods]:
        if v.startswith("plain"):
            model, epochs = plain(v, warm)
            next(epochs), next(epochs)
        else:
            model = bclviz(v, warm, 2)
        weights[v] = [p.detach().clone() for p in model.parameters()]
    same = {f"{BASELINE[m]}_vs_{m}": all(torch.equal(a, b) for a, b in zip(weights[BASELINE[m]], weights[m]))
            for m in ("independent", "proto") if m in args.methods}

    ratios: dict[str, list[float]] = {m: [] for m in args.methods}
    ratios_cpu: dict[str, list[float]] = {m: [] for m in args.methods}
    seconds: dict[str, list[float]] = {v: [] for v in [*args.methods, *{BASELINE[m] for m in args.methods}]}
    for r in range(args.rounds):
        for m in args.methods[r % len(args.methods):] + args.methods[: r % len(args.methods)]:
            _, baseline = plain(BASELINE[m], train)
            marks = []  # per epoch: (bclviz epoch ends = plain epoch starts, plain epoch ends = bclviz resumes)

            def callback(record):
                t_end = _clock()
                next(baseline)
                marks.append((t_end, _clock()))

            bclviz(m, train, args.epochs, callback)
            if len(marks) != args.epochs:
                raise RuntimeError(f"{m} ran {len(marks)} epochs, expected {args.epochs}")
            for c in (0, 1):  # wall, cpu
                b = [marks[k][0][c] - marks[k - 1][1][c] for k in range(1, len(marks))]  # bclviz epochs 1..
                p = [marks[k][1][c] - marks[k][0][c] for k in range(len(marks))]  # plain epochs 0..
                pair = [b[k - 1] / ((p[k - 1] + p[k]) / 2) for k in range(2, len(marks))]
                (ratios if c == 0 else ratios_cpu)[m].extend(pair)
                if c == 0:
                    seconds[m] += b[1:]
                    seconds[BASELINE[m]] += p[1:]
                    print(f"[{args.workload} t{args.threads}] round {r} {m}: bclviz {[round(t, 4) for t in b]} "
                          f"plain {[round(t, 4) for t in p]}", file=sys.stderr, flush=True)
    steps = -(-len(train) // new_cfg.batch_size)
    return {
        "workload": args.workload,
        "threads": torch.get_num_threads(),
        "ratio": {m: round(statistics.median(v), 3) for m, v in ratios.items()},
        "ratio_cpu": {m: round(statistics.median(v), 3) for m, v in ratios_cpu.items()},
        "ratio_quartiles": {m: [round(q, 3) for q in statistics.quantiles(v, n=4)] if len(v) > 1 else v
                            for m, v in ratios.items()},
        "epoch_seconds": {v: round(statistics.median(t), 5) for v, t in seconds.items()},
        "step_ms_plain": round(1000 * statistics.median(seconds[BASELINE[args.methods[0]]]) / steps, 3),
        "same_weights": same,
        "pairs_per_method": len(ratios[args.methods[0]]),
        "steps_per_epoch": steps,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "train_samples": len(train),
        "batch_size": new_cfg.batch_size,
        "model": dataclasses.asdict(cfg.new_model),
        "env": environment(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=["toy", "digits"], choices=["toy", "digits"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--epochs", type=int, default=4,
                        help="toy epochs per method and round (375 steps each; epochs 0 and 1 are not counted)")
    parser.add_argument("--digits-epochs", type=int, default=6,
                        help="digits epochs per method and round (20 steps each; epochs 0 and 1 are not counted)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old-epochs", type=int, default=2,
                        help="epochs of the old model (only its prototypes matter)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", default="toy", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.epochs, args.digits_epochs) < 3:
        parser.error("--epochs and --digits-epochs must be >= 3 (epochs 0 and 1 are not counted)")
    args.methods = list(dict.fromkeys(args.methods))
    if args.child:
        args.threads = args.threads[0]
        out = child(args)
        emit(out)
        return out

    runs = []
    for workload in args.workloads:
        epochs = args.epochs if workload == "toy" else args.digits_epochs
        for threads in args.threads:
            runs.append(run_child([__file__, "--child", "--workload", workload, "--threads", str(threads),
                                   "--epochs", str(epochs), "--rounds", str(args.rounds),
                                   "--old-epochs", str(args.old_epochs), "--seed", str(args.seed),
                                   "--methods", *args.methods]))
            print(f"{workload} threads {threads}: {runs[-1]['ratio']}", file=sys.stderr, flush=True)
    table = {w: {str(r["threads"]): r["ratio"] for r in runs if r["workload"] == w} for w in args.workloads}
    met = {w: {t: {m: ratio <= TARGETS[m] for m, ratio in row.items()} for t, row in rows.items()}
           for w, rows in table.items()}
    out = {
        "ratio": table,
        "targets": {m: TARGETS[m] for m in args.methods},
        "target_met": met,
        "all_targets_met": all(v for rows in met.values() for row in rows.values() for v in row.values()),
        "same_weights": all(v for r in runs for v in r["same_weights"].values()),
        "runs": runs,
        "env": environment(),
    }
    emit(out)
    return out


if __name__ == "__main__":
    main()
