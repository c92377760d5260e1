"""Wall time of `bclviz demo --dataset toy` as a user runs it, against the same demo in one process.

Usage (from the repository root)::

    .venv/bin/python bench/demo_time.py [--seeds 3] [--workers 2] [--baseline]

Runs ``bclviz demo --dataset toy --out TMP --quiet --seeds S`` as a child process (a
fresh interpreter: imports, data, old model, every method x seed, results.json and
report.html, everything a user waits for) with ``--workers W`` trial worker processes,
and times it from start to exit; its children's CPU time is read from
``resource.getrusage(RUSAGE_CHILDREN)``. With ``--baseline`` the same demo runs once
more with ``--workers 1`` (every model trained in the demo's own process, as before
trial workers existed), and ``speedup`` = baseline wall / demo wall. ``verdicts`` are
the demo's NDPP/ODPP self-test verdicts against ``proto`` (they do not depend on the
worker count). The target is ``wall_seconds`` <= 60 on 2 idle cores.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, emit, environment  # noqa: E402


def run_demo(seeds: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bclviz-demo-bench-") as out:
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bclviz.cli", "demo", "--dataset", "toy", "--out", out, "--quiet",
                        "--seeds", str(seeds), "--workers", str(workers)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        results = json.loads((Path(out) / "results.json").read_text(encoding="utf-8"))
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    verdicts = {name: rec["vs_proto"]["self"]["verdict"] for name, rec in results["methods"].items()
                if name in ("ndpp", "odpp") and "vs_proto" in rec}
    return {"workers": workers, "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2), "verdicts": verdicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="new-model seeds (the demo's default is 3)")
    parser.add_argument("--workers", type=int, default=2, help="trial worker processes of the timed demo")
    parser.add_argument("--baseline", action="store_true", help="also time the demo in one process")
    args = parser.parse_args()
    demo = run_demo(args.seeds, args.workers)
    result = {"benchmark": "demo_time", "seeds": args.seeds, **demo, "target_seconds": 60,
              "target_met": demo["wall_seconds"] <= 60}
    if args.baseline:
        base = run_demo(args.seeds, 1)
        result["baseline"] = base
        result["speedup"] = round(base["wall_seconds"] / demo["wall_seconds"], 3)
    result["env"] = environment()
    emit(result)


if __name__ == "__main__":
    main()
