"""NDPP / ODPP time and peak memory versus the number of classes C and dimension d.

Usage (from the repository root)::

    .venv/bin/python bench/perturb_scale.py --classes 81313 --dim 256 [--k K] [--seed S]

Prototypes are random with realistic crowding: classes come in clusters of
``--cluster-size`` siblings; ``P_o = normalize(centre + noise_o)`` (siblings crowd in
the old space) and ``P_n = normalize(P_o + noise_n)`` (the new model separates them
more). Each function runs at its defaults (``MethodConfig`` eps, k, gamma, steps, lr) in
a fresh child process, which reports its wall time (after a warm-up on a tiny problem)
and its peak resident-memory growth over the inputs (see ``_common.measure_peak``).

The child also times the class-neighbour search inside the call (``*_knn_seconds``,
``odpp_knn_calls``) and the same call again with the neighbour lists already known
(``*_cached_knn_seconds``): the cost a training refresh or a slider move would have if
the old-space neighbours, which never change during training, were computed once.

Where a dense C x C reference fits (``C <= --dense-max``, default 20000) a third child
runs a straightforward dense NDPP (full ``S_o``, ``S_n``, ``topk``, same formula); the
parent reports ``dense_ndpp_seconds``, ``speedup_vs_dense`` (cold ``ndpp`` call, kNN
search included), ``speedup_vs_dense_cached_knn`` (neighbour lists known, as in every
training refresh after the first) and the largest absolute difference between the two
deltas.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, environment, measure_peak, run_child, set_threads  # noqa: E402

from bclviz import perturb  # noqa: E402
from bclviz.config import MethodConfig  # noqa: E402

DEFAULTS = MethodConfig()


def make_prototypes(classes: int, dim: int, *, cluster_size: int = 8, seed: int = 0,
                    old_noise: float = 0.35, new_noise: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Crowded old prototypes and less crowded new ones, both (C, d) unit rows, float32.

    Siblings (``cluster_size`` classes around one centre) have old cosine about
    ``1 / (1 + old_noise**2)``; the new prototypes add independent noise, which pulls
    siblings apart, so most old-space neighbour pairs carry excess crowding.
    """
    gen = torch.Generator().manual_seed(seed)
    n_clusters = max(1, -(-classes // cluster_size))
    centres = F.normalize(torch.randn(n_clusters, dim, generator=gen), dim=1)
    assign = torch.randperm(classes, generator=gen) % n_clusters
    p_o = torch.randn(classes, dim, generator=gen).mul_(old_noise / dim**0.5).add_(centres[assign])
    p_o = F.normalize(p_o, dim=1)
    p_n = torch.randn(classes, dim, generator=gen).mul_(new_noise / dim**0.5).add_(p_o)
    return p_o, F.normalize(p_n, dim=1)


def dense_ndpp(old_protos: torch.Tensor, new_protos: torch.Tensor, *, eps: float, k: int) -> torch.Tensor:
    """Straightforward dense NDPP: full C x C similarity matrices, one topk, no blocks."""
    p_o, p_n = F.normalize(old_protos, dim=1), F.normalize(new_protos, dim=1)
    s_o_full = p_o @ p_o.T
    s_n_full = p_n @ p_n.T
    s_o_full.fill_diagonal_(float("-inf"))
    s_o, idx = s_o_full.topk(k, dim=1)
    s_n = s_n_full.gather(1, idx)
    w = (s_o - s_n).clamp_min(0)

    def unit_tangent(v, p):  # (C, k, d) projected on the tangent planes at p (C, d)
        t = v - (v * p[:, None]).sum(-1, keepdim=True) * p[:, None]
        n = t.norm(dim=-1, keepdim=True)
        return torch.where(n > 1e-6, t / n.clamp_min(1e-30), torch.zeros_like(t)), n > 1e-6

    u_old, ok = unit_tangent(p_o[:, None] - p_o[idx], p_o)
    u_new, _ = unit_tangent(p_n[:, None] - p_n[idx], p_o)
    r = (w[..., None] * torch.where(ok, u_old, u_new)).sum(1)
    return eps * r / r.norm(dim=1, keepdim=True).clamp_min(1.0)


def _functions(k: int | None):
    k_ndpp = k if k is not None else 5
    k_odpp = k if k is not None else 8
    return {
        "ndpp": lambda po, pn: perturb.ndpp(po, pn, eps=DEFAULTS.eps, k=k_ndpp),
        "odpp": lambda po, pn: perturb.odpp(po, pn, eps=DEFAULTS.eps, k=k_odpp, steps=DEFAULTS.odpp_steps,
                                            gamma=DEFAULTS.gamma, lr=DEFAULTS.odpp_lr),
        "dense": lambda po, pn: dense_ndpp(po, pn, eps=DEFAULTS.eps, k=k_ndpp),
        # the same calls with the approximate (faiss IVF) old-neighbour search
        "ndpp_ivf": lambda po, pn: perturb.ndpp(po, pn, eps=DEFAULTS.eps, k=k_ndpp,
                                                neighbors=perturb.old_neighbors(po, k_ndpp, search="ivf")),
        "odpp_ivf": lambda po, pn: perturb.odpp(po, pn, eps=DEFAULTS.eps, k=k_odpp, steps=DEFAULTS.odpp_steps,
                                                gamma=DEFAULTS.gamma, lr=DEFAULTS.odpp_lr,
                                                neighbors=perturb.old_neighbors(po, k_odpp, search="ivf")),
    }
CHILDREN = ("ndpp", "odpp", "dense", "ndpp_ivf", "odpp_ivf")


def child(args) -> dict:
    """Run one function once on fresh inputs; time, peak memory, kNN share, cached rerun."""
    fn = _functions(args.k)[args.child]
    small_o, small_n = make_prototypes(64, args.dim, seed=args.seed + 1)
    fn(small_o, small_n)  # warm-up: imports, thread pools
    import faiss  # noqa: F401  (class_neighbors imports it lazily for C > 4096)
    p_o, p_n = make_prototypes(args.classes, args.dim, cluster_size=args.cluster_size, seed=args.seed)

    knn = {"seconds": 0.0, "calls": 0, "cache": {}}
    original = perturb.class_neighbors

    def timed_neighbors(protos, kk, **kw):
        t0 = time.perf_counter()
        out = original(protos, kk, **kw)
        knn["seconds"] += time.perf_counter() - t0
        knn["calls"] += 1
        knn["cache"][kk] = out
        return out

    perturb.class_neighbors = timed_neighbors
    out = {}
    result = {}
    stats = measure_peak(lambda: out.setdefault("delta", fn(p_o, p_n)))
    result.update(seconds=stats["seconds"], peak_mib=stats["peak_mib"], hwm_reset=stats["hwm_reset"],
                  child_baseline_mib=round(stats["baseline_mib"], 1))
    if args.child != "dense":
        result.update(knn_seconds=knn["seconds"], knn_calls=knn["calls"])
        perturb.class_neighbors = lambda protos, kk, **kw: knn["cache"][kk]
        t0 = time.perf_counter()
        fn(p_o, p_n)
        result["cached_knn_seconds"] = time.perf_counter() - t0
    perturb.class_neighbors = original
    if args.save:
        np.save(args.save, out["delta"].numpy())
        if knn["cache"]:
            np.save(args.save.replace(".npy", "_knn.npy"), knn["cache"][max(knn["cache"])].numpy())
    return result


def _compare_ivf(result: dict, saved: dict, name: str, k: int, *, cluster_size: int, seed: int) -> None:
    """Recall@k of the IVF neighbour lists against the exact ones, and how far the
    perturbation computed from them is from the exact-search one."""
    exact_knn = np.load(saved[name].replace(".npy", "_knn.npy"))[:, :k]
    ivf_knn = np.load(saved[f"{name}_ivf"].replace(".npy", "_knn.npy"))[:, :k]
    hits = sum(len(set(a) & set(b)) for a, b in zip(exact_knn.tolist(), ivf_knn.tolist()))
    result[f"{name}_ivf_recall_at_k"] = round(hits / exact_knn.size, 4)
    a, b = np.load(saved[name]), np.load(saved[f"{name}_ivf"])
    err = np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    result[f"{name}_ivf_rows_differing"] = int((np.abs(a - b).max(axis=1) > 1e-5).sum())
    result[f"{name}_ivf_delta_rel_err_p99"] = round(float(np.quantile(err, 0.99)), 4)
    result[f"{name}_ivf_delta_rel_err_mean"] = round(float(err.mean()), 5)
    if name == "odpp":
        # ODPP's Adam steps amplify small gradient differences, so its deltas differ
        # row by row; what matters is the objective each reaches (on the exact lists)
        p_o, p_n = make_prototypes(result["classes"], result["dim"], cluster_size=cluster_size, seed=seed)
        nbr = torch.from_numpy(np.load(saved[name].replace(".npy", "_knn.npy"))).long()
        obj = {key: perturb.odpp_objective(p_o, p_n, torch.from_numpy(np.load(saved[key])), k=k,
                                           gamma=DEFAULTS.gamma, neighbors=nbr) for key in (name, f"{name}_ivf")}
        start = perturb.odpp_objective(p_o, p_n, torch.zeros_like(p_o), k=k, gamma=DEFAULTS.gamma, neighbors=nbr)
        result["odpp_objective_start"] = round(start, 6)
        result["odpp_objective"] = round(obj[name], 6)
        result["odpp_ivf_objective"] = round(obj[f"{name}_ivf"], 6)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--k", type=int, default=None, help="neighbours for both (default: NDPP 5, ODPP 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cluster-size", type=int, default=8)
    parser.add_argument("--dense-max", type=int, default=20000,
                        help="largest C for the dense reference (2 C^2 float32 similarities)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch/faiss threads in the children (default: the libraries' choice)")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(CHILDREN))
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    if args.child:
        res = child(args)
        emit(res)
        return res

    common = ["bench/perturb_scale.py", "--classes", str(args.classes), "--dim", str(args.dim),
              "--seed", str(args.seed), "--cluster-size", str(args.cluster_size)]
    if args.k is not None:
        common += ["--k", str(args.k)]
    if args.threads is not None:
        common += ["--threads", str(args.threads)]
    result = {"classes": args.classes, "dim": args.dim, "k_ndpp": args.k or 5, "k_odpp": args.k or 8,
              "eps": DEFAULTS.eps, "odpp_steps": DEFAULTS.odpp_steps}
    run_dense = args.classes <= args.dense_max and "dense" not in args.skip
    with tempfile.TemporaryDirectory() as tmp:
        saved = {}
        for name in CHILDREN:
            if name in args.skip or (name == "dense" and not run_dense):
                continue
            saved[name] = str(Path(tmp) / f"{name}.npy")
            res = run_child([*common, "--child", name, "--save", saved[name]])
            prefix = "dense_ndpp" if name == "dense" else name
            result[f"{prefix}_seconds"] = round(res["seconds"], 4)
            result[f"{prefix}_peak_mib"] = res["peak_mib"]
            for key in ("knn_seconds", "knn_calls", "cached_knn_seconds"):
                if key in res:
                    result[f"{prefix}_{key}"] = round(res[key], 4) if key != "knn_calls" else res[key]
            result["child_baseline_mib"] = res["child_baseline_mib"]
            result["hwm_reset"] = res["hwm_reset"]
        if run_dense and "ndpp" in saved:
            result["speedup_vs_dense"] = round(result["dense_ndpp_seconds"] / result["ndpp_seconds"], 2)
            result["speedup_vs_dense_cached_knn"] = round(
                result["dense_ndpp_seconds"] / result["ndpp_cached_knn_seconds"], 2)
            if "ndpp_ivf" in saved:
                result["speedup_vs_dense_ivf"] = round(result["dense_ndpp_seconds"] / result["ndpp_ivf_seconds"], 2)
            a, b = np.load(saved["ndpp"]), np.load(saved["dense"])
            result["max_abs_diff_vs_dense"] = float(np.abs(a - b).max())
            differing = np.flatnonzero(np.abs(a - b).max(axis=1) > 1e-5)
            result["rows_differing_vs_dense"] = int(differing.size)
            if differing.size:
                # a differing row should be a near-tie at the k-th neighbour, which the
                # two searches break differently: report the float64 gap there
                p_o, _ = make_prototypes(args.classes, args.dim, cluster_size=args.cluster_size, seed=args.seed)
                p64 = p_o.double()
                sims = p64[differing[:100]] @ p64.T
                sims[torch.arange(sims.shape[0]), torch.as_tensor(differing[:100])] = -np.inf
                top = sims.topk(result["k_ndpp"] + 1, dim=1).values
                result["kth_neighbour_gap_differing_rows"] = float((top[:, -2] - top[:, -1]).max())
        for name, k in (("ndpp", result["k_ndpp"]), ("odpp", result["k_odpp"])):
            if name in saved and f"{name}_ivf" in saved:
                _compare_ivf(result, saved, name, k, cluster_size=args.cluster_size, seed=args.seed)
        if "ndpp" in saved:
            d = np.load(saved["ndpp"])
            norms = np.linalg.norm(d, axis=1)
            result["ndpp_moved_fraction"] = round(float((norms > 1e-6).mean()), 4)
            result["ndpp_delta_norm_mean"] = round(float(norms.mean()), 4)
    result["env"] = environment()
    emit(result)
    return result


if __name__ == "__main__":
    main()
