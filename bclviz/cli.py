"""Command line: ``bclviz demo`` (and the entry point for further subcommands).

Arguments are parsed into the same dataclasses the notebooks use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


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
    findings.add_argument("--seeds", type=int, default=5)
    findings.add_argument("--out", type=Path, default=Path("docs/findings.md"))
    findings.add_argument("--quiet", action="store_true", help="no progress bars")
    findings.add_argument("--workers", type=int, default=None, help=workers_help)
    for name, text in [
        ("train", "train (or resume) the old and the new model of a run config; works under torchrun"),
        ("evaluate", "self/cross evaluation of a run config's trained checkpoints"),
        ("extract", "cache old-model features and prototypes as .npy files"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, required=True, help="YAML run config (see export_config)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting, e.g. --set method.eps=0.3 (repeatable)")
        p.add_argument("--scenario", default=None,
                       help="use the data of this update scenario (same as --set scenario=NAME); the "
                            "config's models and training stay")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


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
    from .runconfig import apply_overrides, load_run_config
    from .runner import extract_features, run_evaluation, run_training

    scenario = [] if args.scenario is None else [f"scenario={args.scenario}"]
    run_cfg = apply_overrides(load_run_config(args.config), [*scenario, *args.overrides])
    if args.command == "train":
        info = init_from_env()
        try:
            out = run_training(run_cfg, progress=not args.quiet)
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


def _findings(args) -> int:
    from .findings import generate_findings

    datasets = [d for d in args.datasets.split(",") if d]
    scenarios = None if args.scenario is None else (
        "all" if args.scenario == "all" else [s for s in args.scenario.split(",") if s])
    command = (f"bclviz findings --datasets {','.join(datasets)}"
               + ("" if args.scenario is None else f" --scenario {args.scenario}")
               + f" --seeds {args.seeds} --out {args.out}")
    try:
        out = generate_findings(datasets, out=args.out, seeds=args.seeds, progress=not args.quiet,
                                command=command, scenarios=scenarios, workers=args.workers)
    except ValueError as err:
        print(f"bclviz findings: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "findings":
        return _findings(args)
    try:
        return _demo(args) if args.command == "demo" else _run(args)
    except (OSError, ValueError) as err:
        print(f"bclviz {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
