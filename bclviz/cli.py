"""Command line: ``bclviz demo``, ``findings``, ``train``, ``evaluate``, ``extract``, ``inspect`` and ``tune``.

Arguments are parsed into the same dataclasses the notebooks use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

#: ``bclviz findings`` defaults (bclviz.findings.DEFAULT_EPS and BASELINES, as typed)
_FINDINGS_EPS = "0.2,0.4,1.0"
_FINDINGS_BASELINES = "independent,l2,bct,proto,lce,hot_refresh"


def build_parser() -> argparse.ArgumentParser:
    from .data.registry import list_datasets

    DEMO_DATASETS = list_datasets("demo")

    parser = argparse.ArgumentParser(prog="bclviz", description="Backward-compatible learning toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="train old, independent and every method at default settings; write results.json and report.html",
    )
    demo.add_argument("--dataset", choices=DEMO_DATASETS, default="toy")
    demo.add_argument("--scenario", default=None,
                      help="the dataset's update scenario, e.g. weak-old, lowres-old, coarse-old, default-v1 "
                           "(default: the dataset's default; data/README.md lists them)")
    demo.add_argument("--out", type=Path, required=True, help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="data split and old-model seed")
    demo.add_argument("--seeds", type=int, default=3,
                      help="new-model seeds per method (mean, 95%% interval, paired comparison); default 3")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    workers_help = ("processes training the new models in parallel (default: $BCLVIZ_WORKERS, else one per "
                    "core; 1 on a GPU); never changes a number")
    demo.add_argument("--workers", type=int, default=None, help=workers_help)
    findings = sub.add_parser("findings", help="regenerate docs/findings.md: all methods, eps grid, several seeds")
    findings.add_argument("--datasets", default="toy,digits,fashion-mnist,glyphs",
                          help="comma-separated dataset names (default: toy,digits,fashion-mnist,glyphs)")
    findings.add_argument("--scenario", default=None,
                          help="comma-separated update scenarios run for every dataset, or 'all' (every "
                               "scenario each dataset declares); default: each dataset's default scenario")
    findings.add_argument("--grid", choices=("auto", "full", "tax"), default="auto",
                          help="full: every baseline and NDPP/ODPP over eps; tax: independent and proto only; "
                               "auto (default): full on each dataset's default scenario and wherever the tax grid "
                               "finds a tax above zero, tax on the others")
    findings.add_argument("--eps", default=_FINDINGS_EPS,
                          help="comma-separated eps of the full grid (absolute budgets; relative at the largest)")
    findings.add_argument("--baselines", default=_FINDINGS_BASELINES,
                          help="comma-separated baselines of the full grid (independent and proto always run)")
    findings.add_argument("--modes", default="absolute,relative",
                          help="budget modes of NDPP/ODPP in the full grid (relative runs at the largest eps)")
    findings.add_argument("--lam", default="1",
                          help="comma-separated weights of the compatibility term (MethodConfig.lam); each "
                               "(dataset, scenario) runs at every one, e.g. 1,10 for the default and strict alignment")
    findings.add_argument("--seeds", type=int, default=5)
    findings.add_argument("--out", type=Path, default=Path("docs/findings.md"),
                          help="the markdown; findings.json (the same summaries) is written next to it")
    findings.add_argument("--quiet", action="store_true", help="no progress bars")
    findings.add_argument("--workers", type=int, default=None, help=workers_help)
    for name, text in [
        ("train", "train (or resume) the old and the new model of a run config; works under torchrun"),
        ("evaluate", "self/cross evaluation of a run config's trained checkpoints"),
        ("extract", "cache both models' features and prototypes of the training set as .npy files (for bclviz inspect)"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, required=True, help="YAML run config (see export_config)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting, e.g. --set method.eps=0.3 (repeatable)")
        p.add_argument("--scenario", default=None,
                       help="use the data of this update scenario (same as --set scenario=NAME); the "
                            "config's models and training stay")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "train":
            p.add_argument("--log", choices=("tensorboard", "none"), default=None,
                           help="also write the training history and the evaluation as TensorBoard scalars to "
                                "<output_dir>/tensorboard (default: the run config's `log`, else none)")
    _add_inspect(sub)
    _add_tune(sub)
    return parser


def _add_inspect(sub) -> None:
    from .config import MethodConfig

    p = sub.add_parser(
        "inspect", help="your own old/new embeddings: prototypes, crowding, headroom, retrieval as they are, "
                        "pseudo-old preview; writes inspection.json, the prototypes and report.html")
    p.add_argument("--old", type=Path, help="old-model embeddings (n, d): .npy, .npz or .pt")
    p.add_argument("--new", type=Path, help="new-model embeddings of the same items, same row order")
    p.add_argument("--labels", type=Path, help="class of each item (n,): integers or strings")
    p.add_argument("--features", type=Path,
                   help="instead of --old/--new/--labels: a folder written by `bclviz extract`, or one .npz/.pt "
                        "file holding old, new and labels")
    p.add_argument("--query", type=Path, help="query items (boolean mask or row indices); the others form the "
                                              "gallery (default: leave-one-out over all items)")
    p.add_argument("--old-ids", type=Path, help="item ids of the --old rows (with --new-ids: align rows by id)")
    p.add_argument("--new-ids", type=Path, help="item ids of the --new rows")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--method", choices=("ndpp", "odpp"), default="ndpp", help="perturbation previewed (default ndpp)")
    p.add_argument("--eps", type=float, default=MethodConfig.eps, help=f"its magnitude (default {MethodConfig.eps})")
    p.add_argument("--k", type=int, default=None, help="old-space neighbours (default: the method's, at most C - 1)")
    p.add_argument("--map-k", type=int, default=100, help="cut-off of mAP@k in the retrieval baseline (default 100)")
    p.add_argument("--projection", choices=("auto", "umap", "pca"), default="auto",
                   help="projection of the report's three-space figure (auto: UMAP; pca is fastest)")
    p.add_argument("--seed", type=int, default=0, help="seed of the items drawn for the figure")


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="a grid or a multi-objective search of settings in an Optuna study; writes the "
                                    "trials, the Pareto front and the best compatible settings as run configs")
    p.add_argument("--config", type=Path, required=True, help="YAML run config: data, models, training, seeds, "
                                                              "and the method whose other settings every trial keeps")
    p.add_argument("--space", type=Path, default=None,
                   help="YAML space file with a 'grid' or a 'search' section (docs/tuning.md); "
                        "default: the default grid")
    p.add_argument("--trials", type=int, default=None,
                   help="search: settings to sample in all (default 20); grid: at most this many trials here")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes training trials (default: $BCLVIZ_WORKERS, else one per "
                        "core; 1 on a GPU)")
    p.add_argument("--storage", default=None,
                   help="journal file path or database URL (sqlite:///tune.db, postgresql://...) shared by every "
                        "process of the study (default: a journal file under the cache root)")
    p.add_argument("--study", default=None, help="study name (default: derived from the data and the config)")
    p.add_argument("--launch", default=None, metavar="COMMAND",
                   help="run each trial as this job instead of in local workers, e.g. \"torchrun --standalone "
                        "--nproc_per_node=8 -m bclviz.cli train\" (seed replicate 0 only: seeds: 1)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/<dataset>-tune)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the run config, e.g. --set seeds=3 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _tune(args) -> int:
    from .runconfig import apply_overrides, load_run_config
    from .space import load_space
    from .tune import format_result, tune_from_config

    if args.trials is not None and args.trials < 1:
        raise ValueError(f"--trials must be >= 1, got {args.trials}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    run_cfg = apply_overrides(load_run_config(args.config), args.overrides)
    space = None if args.space is None else load_space(args.space)
    result, out = tune_from_config(run_cfg, space=space, trials=args.trials, workers=args.workers,
                                   storage=args.storage, study_name=args.study, out=args.out,
                                   progress=not args.quiet, launch=args.launch)
    print(format_result(result))
    print(f"wrote {out}/trials.json, pareto.json, study.json and {len(result.best)} run config(s) in {out}/configs")
    return 0


def _format_table(results: dict) -> str:
    """Plain-text table: mean +- 95% half-width over seeds, and the paired verdict; then the
    compatibility tax and the headroom (``docs/metrics.md``)."""
    key, ref = f"mAP@{results['k']}", results.get("reference", "proto")

    def pm(rec, side):
        if side not in rec:
            return ""
        half = rec.get(f"{side}_ci", {}).get(key)
        return f"{rec[side][key]:.3f}" + ("" if half is None else f" +- {half:.3f}")

    def versus(rec, side):
        d = rec.get(f"vs_{ref}", {}).get(side)
        return "" if d is None else f"{d['mean_diff']:+.3f} {d['verdict']}"

    rows = [f"{'model':<13}{'self ' + key:>22}{'cross ' + key:>22}  compatible  {'self vs ' + ref:<32}cross vs {ref}"]
    rows.append(f"{'old':<13}{pm(results['old'], 'self'):>22}")
    rows.append(f"{'independent':<13}{pm(results['independent'], 'self'):>22}{pm(results['independent'], 'cross'):>22}")
    for name, rec in results["methods"].items():
        rows.append(f"{name:<13}{pm(rec, 'self'):>22}{pm(rec, 'cross'):>22}  {'yes' if rec['compatible'] else 'no':<10}  "
                    f"{versus(rec, 'self'):<32}{versus(rec, 'cross')}")
    from .proxies import format_headroom
    from .readouts import format_tax, tax_of

    tax = tax_of(results)
    rows.append(f"compatibility tax (independent self - proto self, {tax['metric']}): {format_tax(tax)}")
    if "headroom" in results:
        rows.append(f"headroom (old-space crowding the independent model undoes): {format_headroom(results['headroom'])}")
    return "\n".join(rows)


def _demo(args) -> int:
    from .config import default_experiment
    from .experiment import run_experiment
    from .io import write_json

    if args.seed < 0:
        raise SystemExit(f"bclviz demo: --seed must be >= 0, got {args.seed}")
    if args.seeds < 1:
        raise SystemExit(f"bclviz demo: --seeds must be >= 1, got {args.seeds}")
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"bclviz demo: --workers must be >= 1, got {args.workers}")
    cfg = default_experiment(args.dataset, seed=args.seed, seeds=args.seeds, scenario=args.scenario)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot write {args.out}: {err.strerror or err}") from err
    from .views import warm_up_umap

    warm_up_umap()  # the report's projection compiles while the models train
    result = run_experiment(cfg, progress=not args.quiet, workers=args.workers)
    path = write_json(args.out / "results.json", result.results)
    from .report import write_report

    report = write_report(args.out / "report.html", result)
    print(_format_table(result.results))
    print(f"wrote {path} and {report}")
    return 0


def _run(args) -> int:
    import json

    from .distributed import init_from_env, is_main
    from .runconfig import apply_overrides, load_log_setting, load_run_config
    from .runner import extract_features, run_evaluation, run_training

    scenario = [] if args.scenario is None else [f"scenario={args.scenario}"]
    run_cfg = apply_overrides(load_run_config(args.config), [*scenario, *args.overrides])
    if args.command == "train":
        log = load_log_setting(args.config) if args.log is None else args.log
        info = init_from_env()
        try:
            out = run_training(run_cfg, progress=not args.quiet, log=log)
            if is_main():
                print(json.dumps(out, indent=2))
        finally:
            if info.enabled:
                import torch.distributed as dist

                dist.destroy_process_group()
        return 0
    if args.command == "evaluate":
        out = run_evaluation(run_cfg, config_file=str(args.config))
    else:
        out = {"features": str(extract_features(run_cfg, config_file=str(args.config)))}
    print(json.dumps(out, indent=2))
    return 0


def _inspect(args) -> int:
    from .config import MethodConfig
    from .features import load
    from .inspection import inspect_embeddings
    from .io import write_json, write_npy
    from .proxies import format_headroom

    files = {"--old": args.old, "--new": args.new, "--labels": args.labels}
    if args.features is not None:
        given = [name for name, value in files.items() if value is not None]
        if given:
            raise ValueError(f"give either --features or {', '.join(files)}, not both (got --features and {given})")
        sources = (args.features,)
    else:
        missing = [name for name, value in files.items() if value is None]
        if missing:
            raise ValueError(f"missing {missing}: give --old, --new and --labels, or --features DIR")
        sources = (args.old, args.new, args.labels)
    emb = load(*sources, query=args.query, old_ids=args.old_ids, new_ids=args.new_ids)
    insp = inspect_embeddings(emb, method=MethodConfig(name=args.method, eps=args.eps, k=args.k),
                              retrieval_k=args.map_k)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot write {args.out}: {err.strerror or err}") from err
    for name in ("old_protos", "new_protos", "pseudo_old"):
        write_npy(args.out / f"{name}.npy", getattr(insp, name).numpy())
    path = write_json(args.out / "inspection.json", insp.results)
    try:  # the report needs the lab extra (plotly, scikit-learn); the numbers above do not
        from .report import write_inspection_report
    except ImportError as err:
        report = None
        print(f"bclviz inspect: report.html not written: {err}; install the lab extra (pip install -e '.[lab]')",
              file=sys.stderr)
    else:
        report = write_inspection_report(args.out / "report.html", emb, insp, projection_method=args.projection,
                                         seed=args.seed)
    r, ret = insp.results, insp.results["retrieval"]
    key = ret["metric"]
    print(f"{r['items']} items, {r['classes']} classes, d = {r['dim']}")
    print(f"crowding old {r['crowding']['old']:.3f}, new {r['crowding']['new']:.3f}; "
          f"headroom {format_headroom(r['headroom'])}")
    print(f"{key}: M(new, new) {ret['new_new'][key]:.3f}, M(new, old) {ret['new_old'][key]:.3f}, "
          f"M(old, old) {ret['old_old'][key]:.3f} ({ret['protocol']})")
    print(f"wrote {path}{'' if report is None else f', {report}'} and old_protos.npy, new_protos.npy, pseudo_old.npy")
    return 0


def _findings(args) -> int:
    from .findings import generate_findings

    datasets = [d for d in args.datasets.split(",") if d]
    scenarios = None if args.scenario is None else (
        "all" if args.scenario == "all" else [s for s in args.scenario.split(",") if s])
    command = (f"bclviz findings --datasets {','.join(datasets)}"
               + ("" if args.scenario is None else f" --scenario {args.scenario}")
               + ("" if args.grid == "auto" else f" --grid {args.grid}")
               + ("" if args.eps == _FINDINGS_EPS else f" --eps {args.eps}")
               + ("" if args.baselines == _FINDINGS_BASELINES else f" --baselines {args.baselines}")
               + ("" if args.modes == "absolute,relative" else f" --modes {args.modes}")
               + ("" if args.lam == "1" else f" --lam {args.lam}")
               + f" --seeds {args.seeds} --out {args.out}")
    try:
        eps = tuple(float(e) for e in args.eps.split(",") if e)
        baselines = tuple(b for b in args.baselines.split(",") if b)
        try:
            lams = tuple(float(v) for v in args.lam.split(",") if v)
        except ValueError:
            raise ValueError(f"--lam must be comma-separated numbers, got {args.lam!r}") from None
        out = generate_findings(datasets, out=args.out, seeds=args.seeds, progress=not args.quiet,
                                command=command, scenarios=scenarios, workers=args.workers, grid=args.grid,
                                eps=eps, baselines=baselines, modes=tuple(m for m in args.modes.split(",") if m),
                                lams=lams)
    except ValueError as err:
        print(f"bclviz findings: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "findings":
        return _findings(args)
    if args.command == "tune":
        try:
            return _tune(args)
        except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: a failed trial, named
            print(f"bclviz tune: error: {err}", file=sys.stderr)
            return 2
    if args.command == "inspect":
        try:
            return _inspect(args)
        except (OSError, ValueError, TypeError) as err:
            print(f"bclviz inspect: error: {err}", file=sys.stderr)
            return 2
    try:
        return _demo(args) if args.command == "demo" else _run(args)
    except (OSError, ValueError, ImportError) as err:  # ImportError: an optional package (e.g. --log tensorboard)
        print(f"bclviz {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
