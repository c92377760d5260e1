"""Retrieval evaluation cost: ``bclviz.evaluation.evaluate`` vs raw faiss vs a naive loop.

Usage (from the repository root)::

    .venv/bin/python bench/retrieval.py --queries 1000 --gallery 1000000 --dim 256

Synthetic unit-norm features: ``--classes`` class centres, labels drawn uniformly, each
feature its class centre plus Gaussian noise, generated in chunks with
``np.random.default_rng(seed)`` straight into one float32 gallery array (1,000,000 x 256
is 1 GiB; no other copy is made here).

Three ways to get mAP@k (k = 100) and R@1:

- ``bclviz``: :func:`bclviz.evaluation.evaluate` (input checks, normalisation check,
  ``faiss.knn``, metrics);
- ``faiss``: the exhaustive inner-product search alone, ``faiss.knn(q, g, k)``, which is
  the lower bound for any exact evaluation;
- ``naive``: the style of many research repositories -- per query, similarities to the
  whole gallery, a full ``argsort``, then AP@k. Its cost per query is measured on a few
  queries first; when the extrapolated total exceeds ``--naive-budget`` seconds the loop
  is skipped and ``naive_seconds_estimated`` is reported (``naive_skipped: true``).

``bclviz`` and ``faiss`` are timed ``--repeat`` times, interleaved, and the fastest run
of each is kept (the machine is shared; the minimum is the least disturbed run). The
naive loop's AP on the sampled queries is compared with ``evaluate`` on the same
queries (``naive_max_ap_diff``). The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, set_threads  # noqa: E402


def make_split(n: int, centres: np.ndarray, rng: np.random.Generator, *, noise: float,
               chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 unit rows around ``centres`` and their (n,) int64 labels, in chunks."""
    classes, dim = centres.shape
    x = np.empty((n, dim), dtype=np.float32)
    y = rng.integers(0, classes, size=n, dtype=np.int64)
    scale = np.float32(noise / np.sqrt(dim))
    for s in range(0, n, chunk):
        block = x[s : s + chunk]
        rng.standard_normal(out=block, dtype=np.float32)
        block *= scale
        block += centres[y[s : s + chunk]]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
    return x, y


def naive_ap(q: np.ndarray, ql: np.ndarray, g: np.ndarray, gl: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP@k (divisor min(R, k)) and hit@1 by a full sort of the gallery per query."""
    aps, hits = np.empty(q.shape[0]), np.empty(q.shape[0])
    for i in range(q.shape[0]):
        sims = g @ q[i]
        order = np.argsort(-sims)
        rel = gl[order] == ql[i]
        n_rel = rel.sum()
        top = rel[:k]
        precision = np.cumsum(top) / np.arange(1, k + 1)
        aps[i] = (precision * top).sum() / min(n_rel, k) if n_rel else np.nan
        hits[i] = top[0]
    return aps, hits


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, required=True)
    parser.add_argument("--gallery", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=3.0, help="noise norm relative to the centre norm")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch/faiss threads (default: the libraries' choice)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--naive-budget", type=float, default=60.0,
                        help="run the naive loop only when its estimated time is below this (s)")
    parser.add_argument("--naive-sample", type=int, default=5, help="queries timed for the estimate")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    import faiss

    from bclviz.evaluation import evaluate

    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.classes, args.dim)).astype(np.float32) / np.float32(np.sqrt(args.dim))
    t0 = time.perf_counter()
    g, gl = make_split(args.gallery, centres, rng, noise=args.noise)
    q, ql = make_split(args.queries, centres, rng, noise=args.noise)
    generate_seconds = time.perf_counter() - t0

    # warm-up: imports, thread pools
    evaluate(q[:8], ql[:8], g[:1000], gl[:1000], k=10, recall_at=(1,))

    def run_bclviz():
        return evaluate(q, ql, g, gl, k=args.k, recall_at=(1,))

    def run_faiss():
        return faiss.knn(q, g, args.k, metric=faiss.METRIC_INNER_PRODUCT)

    times = {"bclviz": [], "faiss": []}
    scores = None
    for _ in range(args.repeat):
        for name, fn in (("faiss", run_faiss), ("bclviz", run_bclviz)):
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            if name == "bclviz":
                scores = out
    result = {
        "queries": args.queries, "gallery": args.gallery, "dim": args.dim, "classes": args.classes,
        "k": args.k,
        "bclviz_seconds": round(min(times["bclviz"]), 4),
        "faiss_seconds": round(min(times["faiss"]), 4),
        "ratio_bclviz_to_faiss": round(min(times["bclviz"]) / min(times["faiss"]), 3),
        "bclviz_runs": [round(t, 3) for t in times["bclviz"]],
        "faiss_runs": [round(t, 3) for t in times["faiss"]],
        f"mAP@{args.k}": round(scores[f"mAP@{args.k}"], 5),
        "R@1": round(scores["R@1"], 5),
        "generate_seconds": round(generate_seconds, 2),
    }

    # naive loop: time a sample, extrapolate, run it all only when affordable
    n_sample = min(args.naive_sample, args.queries)
    naive_ap(q[:1], ql[:1], g, gl, args.k)  # warm-up
    t0 = time.perf_counter()
    sample_ap, _ = naive_ap(q[:n_sample], ql[:n_sample], g, gl, args.k)
    per_query = (time.perf_counter() - t0) / n_sample
    estimate = per_query * args.queries
    ref = evaluate(q[:n_sample], ql[:n_sample], g, gl, k=args.k, recall_at=(1,))
    result["naive_max_ap_diff"] = float(abs(np.nanmean(sample_ap) - ref[f"mAP@{args.k}"]))
    result["naive_seconds_per_query"] = round(per_query, 5)
    if estimate <= args.naive_budget:
        t0 = time.perf_counter()
        aps, hits = naive_ap(q, ql, g, gl, args.k)
        result["naive_seconds"] = round(time.perf_counter() - t0, 3)
        result["naive_skipped"] = False
        result["naive_mAP_diff"] = float(abs(np.nanmean(aps) - scores[f"mAP@{args.k}"]))
        result["naive_R@1_diff"] = float(abs(np.mean(hits) - scores["R@1"]))
        naive = result["naive_seconds"]
    else:
        result["naive_seconds_estimated"] = round(estimate, 1)
        result["naive_skipped"] = True
        naive = estimate
    result["ratio_naive_to_bclviz"] = round(naive / result["bclviz_seconds"], 1)
    result["env"] = environment()
    emit(result)
    return result


if __name__ == "__main__":
    main()
