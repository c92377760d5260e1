"""Training curve of the new model: self-test after every epoch (not a timing).

Trains the old model and one independent new model of a dataset's scenario, and scores
the new model's self-test (the headline metric) after each epoch. It is the measurement
behind the new-model epoch counts of the ``weak-old`` scenarios (data/README.md, the
plateau table):

    .venv/bin/python bench/plateau.py --dataset glyphs --scenario weak-old --epochs 60 --replicates 0 1

Prints one JSON object as its last stdout line: ``curves`` (replicate -> the self-test
after each epoch), ``old_old`` and the settings; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from _common import emit, environment, set_threads


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="glyphs")
    parser.add_argument("--scenario", default=None, help="default: the dataset's default scenario")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--replicates", type=int, nargs="+", default=[0], help="new-model seeds (replicate ids)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from bclviz.config import MethodConfig, default_experiment
    from bclviz.data import load_dataset
    from bclviz.pipeline import build_new_model, new_model_seed, train_old_model
    from bclviz.scoring import Scorer
    from bclviz.train import train_new

    cfg = default_experiment(args.dataset, scenario=args.scenario, seed=0)
    data = load_dataset(args.dataset, seed=cfg.seed, **cfg.data_options)
    old = train_old_model(cfg, data, progress=False)
    scorer = Scorer(data, k=cfg.k)
    old_old = scorer.score(old.model, old.model)[scorer.key]
    curves = {}
    for r in args.replicates:
        seed = new_model_seed(cfg, r)
        model = build_new_model(data, cfg.new_model, seed=seed)
        curve: list[float] = []
        t0 = time.perf_counter()

        def after_epoch(rec, model=model, curve=curve, r=r, t0=t0):
            curve.append(round(scorer.score(model, model)[scorer.key], 4))
            scorer.forget(model)
            print(f"replicate {r} epoch {rec['epoch'] + 1}: {curve[-1]} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)

        train_new(model, data.new_train, old, num_classes=data.num_classes,
                  cfg=dataclasses.replace(cfg.new_train, seed=seed, epochs=args.epochs),
                  method=MethodConfig(name="independent"), progress=False, callback=after_epoch,
                  old_classes=data.old_class_of)
        curves[str(r)] = curve
    result = {"dataset": args.dataset, "scenario": cfg.scenario, "metric": scorer.key, "epochs": args.epochs,
              "old_old": old_old, "curves": curves, "environment": environment()}
    emit(result)
    return result


if __name__ == "__main__":
    main()
