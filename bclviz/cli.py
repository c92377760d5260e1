"""Command line: ``bclviz demo`` (and the entry point for further subcommands).

Arguments are parsed into the same dataclasses the notebooks use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS

    parser = argparse.ArgumentParser(prog="bclviz", description="Backward-compatible learning toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="train old, independent and every method at default settings; write results.json",
    )
    demo.add_argument("--dataset", choices=DATASETS, default="toy")
    demo.add_argument("--out", type=Path, required=True, help="output folder")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _format_table(results: dict) -> str:
    key = f"mAP@{results['k']}"
    oo = results["old"]["self"][key]
    rows = [f"{'model':<14}{'self ' + key:>14}{'cross ' + key:>15}{'R@1':>8}  compatible",
            f"{'old':<14}{oo:>14.3f}{'':>15}{results['old']['self']['R@1']:>8.3f}",
            f"{'independent':<14}{results['independent']['self'][key]:>14.3f}"
            f"{results['independent']['cross'][key]:>15.3f}{results['independent']['self']['R@1']:>8.3f}"]
    for name, rec in results["methods"].items():
        rows.append(f"{name:<14}{rec['self'][key]:>14.3f}{rec['cross'][key]:>15.3f}"
                    f"{rec['self']['R@1']:>8.3f}  {'yes' if rec['compatible'] else 'no'}")
    return "\n".join(rows)


def _demo(args) -> int:
    from .experiment import default_experiment, run_experiment
    from .io import write_json

    if args.seed < 0:
        raise SystemExit(f"bclviz demo: --seed must be >= 0, got {args.seed}")
    cfg = default_experiment(args.dataset, seed=args.seed)
    result = run_experiment(cfg, progress=not args.quiet)
    path = write_json(args.out / "results.json", result.results)
    print(_format_table(result.results))
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
