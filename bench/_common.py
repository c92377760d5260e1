"""Helpers shared by the benchmarks: timing, peak memory of a child process, JSON output.

Every benchmark prints exactly one JSON object as its last stdout line (:func:`emit`),
so a driver can read ``json.loads(stdout.splitlines()[-1])``. Timings on a shared
machine are noisy; benchmarks therefore report ratios against a baseline measured in
the same run, and :func:`environment` records the load average next to the numbers.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

__all__ = [
    "timed", "environment", "emit", "reset_peak_rss", "current_rss_mib", "peak_rss_mib",
    "measure_peak", "run_child", "set_threads",
]

ROOT = Path(__file__).resolve().parent.parent


def timed(fn: Callable[[], object], *, repeat: int = 1, warmup: int = 0) -> tuple[float, object]:
    """Run ``fn`` ``warmup + repeat`` times; return (median seconds of the timed runs, last result)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def set_threads(n: int | None) -> None:
    """Use ``n`` threads in torch and faiss (and in child processes); None keeps the defaults.

    On a shared machine a 2-thread op waits at every barrier for a thread that another
    process has descheduled; one thread is then far more stable, and a result that holds
    on one thread holds on two idle cores.
    """
    if n is None:
        return
    os.environ["OMP_NUM_THREADS"] = str(n)  # inherited by run_child
    import torch

    torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass


def environment() -> dict:
    """Machine facts printed next to every result (cores, load, thread counts, versions)."""
    import numpy as np
    import torch

    env = {
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    try:
        import faiss

        env["faiss"] = faiss.__version__
        env["faiss_threads"] = faiss.omp_get_max_threads()
    except ImportError:  # pragma: no cover - faiss is installed in the project venv
        pass
    return env


def emit(result: dict) -> None:
    """Print ``result`` as one JSON line (the benchmark's last stdout line)."""
    print(json.dumps(result, sort_keys=False), flush=True)


# --- memory -----------------------------------------------------------------------
# Peak memory is the resident-set high-water mark of a fresh child process. The child
# builds its inputs, resets the kernel's high-water mark (``/proc/self/clear_refs``,
# Linux >= 4.0) so that input construction does not mask the function's own peak,
# reads its resident size, runs the function once and reports ``ru_maxrss`` minus
# that baseline. tracemalloc would miss torch and faiss allocations.


def current_rss_mib() -> float:
    """Resident set size of this process now, MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """``ru_maxrss`` of this process, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure_peak(fn: Callable[[], object]) -> dict:
    """Run ``fn`` once in this (child) process; peak RSS growth over the baseline, MiB."""
    import gc

    gc.collect()
    reset = reset_peak_rss()
    base = current_rss_mib() if reset else peak_rss_mib()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return {"peak_mib": round(peak_rss_mib() - base, 1), "baseline_mib": round(base, 1),
            "seconds": seconds, "hwm_reset": reset}


def run_child(args: list[str], *, timeout: float = 1800) -> dict:
    """Run ``python <args>`` from the repository root; return its last stdout line as JSON."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed with code {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
