"""Generate ``docs/findings.md``: what bclviz measures, with intervals, per dataset.

For each dataset: every method at default settings plus NDPP and ODPP over a small eps
grid in both budget modes, each over several seeds (data split and old model fixed),
compared with a reference method (default ``proto``) paired by seed. The paragraph per
dataset is written from the verdicts, so the document says where perturbation helps,
where it hurts and where the difference is within the seed noise. Every (setting, seed)
is cached under ``cache_root/<dataset>`` (default ``findings/`` under the cache root,
:mod:`bclviz.cache`), so an interrupted run resumes from any working directory.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Sequence

from .cache import cache_dir
from .config import MethodConfig, default_experiment
from .experiment import run_experiment
from .io import write_text
from .methods import perturbing_methods
from .stats import paired_comparison
from .sweep import run_sweep, setting_label

__all__ = ["findings_grid", "dataset_findings", "findings_markdown", "generate_findings"]

BASELINES = ("independent", "l2", "bct", "proto", "lce", "hot_refresh")


def findings_grid(eps: Sequence[float] = (0.2, 0.4, 0.8)) -> list[MethodConfig]:
    """Baselines and the perturbing methods (NDPP, ODPP) at defaults, then each perturbing
    method over ``eps`` in both budget modes."""
    perturbing = perturbing_methods()
    grid = [MethodConfig(name=m) for m in BASELINES] + [MethodConfig(name=m) for m in perturbing]
    for mode in ("absolute", "relative"):
        for name in perturbing:
            for e in eps:
                m = MethodConfig(name=name, eps=e, eps_mode=mode)
                if m not in grid:
                    grid.append(m)
    return grid


def _label(m: MethodConfig) -> str:
    base = setting_label(m)
    return base + (" relative" if m.eps_mode == "relative" else "")


def dataset_findings(dataset: str, *, seeds: int = 5, eps: Sequence[float] = (0.2, 0.4, 0.8),
                     reference: str = "proto", cache_root: str | Path | None = None,
                     overrides: dict | None = None, progress: bool = True) -> dict:
    """Train and evaluate the findings grid on one dataset; return its summary dict."""
    cfg = default_experiment(dataset, seeds=seeds, methods=(), reference=reference, **(overrides or {}))
    t0 = time.perf_counter()
    base = run_experiment(dataclasses.replace(cfg, seeds=1), progress=progress)
    grid = findings_grid(eps)
    root = cache_dir("findings") if cache_root is None else Path(cache_root)
    records = run_sweep(base.data, base.old, cfg, grid, cache_dir=root / dataset, progress=progress)
    key = base.results["headline"]
    ref = next(r for r, m in zip(records, grid) if m == MethodConfig(name=reference))
    rows = []
    for rec, m in zip(records, grid):
        row = {"label": _label(m), "method": m.name, "self": rec["self"][key], "self_ci": rec["self_ci"][key],
               "cross": rec["cross"][key], "cross_ci": rec["cross_ci"][key], "compatible": rec["compatible"]}
        if m != MethodConfig(name=reference):
            row["vs"] = paired_comparison(rec["per_seed"], ref["per_seed"], key)
        rows.append(row)
    return {"dataset": dataset, "seeds": seeds, "k": cfg.k, "headline": key, "reference": reference,
            "old_old": base.results["old"]["self"][key], "rows": rows,
            "num_classes": base.data.num_classes, "minutes": (time.perf_counter() - t0) / 60}


def _pm(mean, half):
    return f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}"


def _paragraph(f: dict) -> str:
    ref = f["reference"]
    perturbing = perturbing_methods()
    perturb = [r for r in f["rows"] if r["method"] in perturbing]
    better = [r["label"] for r in perturb if r["vs"]["self"]["verdict"] == "better"]
    worse = [r["label"] for r in perturb if r["vs"]["self"]["verdict"] == "worse"]
    cross_worse = [r["label"] for r in perturb if r["vs"]["cross"]["verdict"] == "worse"]
    incompatible = [r["label"] for r in f["rows"] if not r["compatible"] and r["method"] != "independent"]
    parts = [f"On {f['dataset']} ({f['num_classes']} classes, {f['seeds']} seeds, M(old, old) = {f['old_old']:.3f}), "
             f"{len(better)} of {len(perturb)} NDPP/ODPP settings have a self-test {f.get('headline', 'mAP@' + str(f['k']))} clearly above "
             f"{ref} (paired 95% interval above zero)" + (f": {', '.join(better)}" if better else "") + "; "
             f"{len(worse)} are clearly below" + (f" ({', '.join(worse)})" if worse else "") + "; the rest are "
             "within the seed noise."]
    parts.append(f"Cross-test is clearly lower than {ref}'s for {len(cross_worse)} of them."
                 if cross_worse else f"No setting has a cross-test clearly below {ref}'s.")
    parts.append(f"Settings that miss the compatibility criterion: {', '.join(incompatible)}."
                 if incompatible else "Every compatibility method meets the criterion M(new, old) > M(old, old).")
    return " ".join(parts)


def findings_markdown(all_findings: Sequence[dict], *, command: str) -> str:
    """The findings document from :func:`dataset_findings` summaries."""
    lines = ["# Findings", "",
             "Generated by `" + command + "`; do not edit by hand. Numbers are mAP@100 means over seeds "
             "± the 95% Student-t half-width; \"vs\" columns are differences to the reference method paired by "
             "seed, with the verdict defined in `docs/metrics.md`.", ""]
    for f in all_findings:
        ref = f["reference"]
        lines += [f"## {f['dataset']}", "", _paragraph(f), "",
                  f"| setting | self | cross | compatible | self vs {ref} | cross vs {ref} |",
                  "|---|---|---|---|---|---|"]
        for r in f["rows"]:
            vs = r.get("vs")
            cells = [r["label"], _pm(r["self"], r["self_ci"]), _pm(r["cross"], r["cross_ci"]),
                     "yes" if r["compatible"] else "no"]
            for side in ("self", "cross"):
                cells.append("–" if vs is None else f"{vs[side]['mean_diff']:+.3f} "
                             f"({'±' + format(vs[side]['half_width'], '.3f') + ', ' if vs[side]['half_width'] is not None else ''}"
                             f"{vs[side]['verdict']})")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"M(old, old) = {f['old_old']:.3f}; {f['minutes']:.1f} minutes on the machine that generated it.", ""]
    return "\n".join(lines)


def generate_findings(datasets: Sequence[str], *, out: str | Path = "docs/findings.md", seeds: int = 5,
                      eps: Sequence[float] = (0.2, 0.4, 0.8), cache_root: str | Path | None = None,
                      progress: bool = True, command: str | None = None) -> Path:
    """Run :func:`dataset_findings` for every dataset and write the markdown atomically."""
    found = [dataset_findings(d, seeds=seeds, eps=eps, cache_root=cache_root, progress=progress) for d in datasets]
    command = command or f"bclviz findings --datasets {','.join(datasets)} --seeds {seeds} --out {out}"
    return write_text(out, findings_markdown(found, command=command))
