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
from .proxies import format_headroom
from .readouts import format_tax
from .stats import paired_comparison, tax_from_seeds
from .sweep import run_sweep, setting_label

__all__ = ["findings_grid", "dataset_findings", "findings_settings", "findings_markdown", "generate_findings"]

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
    return base + ("" if m.eps_mode == "absolute" else f" {m.eps_mode}")


def dataset_findings(dataset: str, *, seeds: int = 5, eps: Sequence[float] = (0.2, 0.4, 0.8),
                     reference: str = "proto", cache_root: str | Path | None = None,
                     overrides: dict | None = None, progress: bool = True, scenario: str | None = None,
                     workers: int | None = None) -> dict:
    """Train and evaluate the findings grid on one dataset in one of its update scenarios
    (None: the dataset's default); return its summary dict. Records are cached under
    ``cache_root/<dataset>/<scenario>``."""
    cfg = default_experiment(dataset, scenario=scenario, seeds=seeds, methods=(), reference=reference,
                             **(overrides or {}))
    t0 = time.perf_counter()
    base = run_experiment(dataclasses.replace(cfg, seeds=1), progress=progress, workers=workers)
    grid = findings_grid(eps)
    root = cache_dir("findings") if cache_root is None else Path(cache_root)
    folder = root / dataset if cfg.scenario is None else root / dataset / cfg.scenario
    records = run_sweep(base.data, base.old, cfg, grid, cache_dir=folder, progress=progress, workers=workers)
    key = base.results["headline"]
    ref = next(r for r, m in zip(records, grid) if m == MethodConfig(name=reference))
    rows = []
    for rec, m in zip(records, grid):
        row = {"label": _label(m), "method": m.name, "self": rec["self"][key], "self_ci": rec["self_ci"][key],
               "cross": rec["cross"][key], "cross_ci": rec["cross_ci"][key], "compatible": rec["compatible"]}
        if m != MethodConfig(name=reference):
            row["vs"] = paired_comparison(rec["per_seed"], ref["per_seed"], key)
        rows.append(row)
    return {"dataset": dataset, "scenario": cfg.scenario, "seeds": seeds, "k": cfg.k, "headline": key,
            "reference": reference, "old_old": base.results["old"]["self"][key], "rows": rows,
            "num_classes": base.data.num_classes, "minutes": (time.perf_counter() - t0) / 60,
            **_readouts(records, grid, key, base.results)}


def _readouts(records: Sequence[dict], grid: Sequence[MethodConfig], key: str, base_results: dict) -> dict:
    """``tax`` (independent vs proto self, paired over the sweep's seeds) and ``headroom``
    (of the first seed's independent model) of one dataset's findings."""
    by_setting = {m: r for m, r in zip(grid, records)}
    ind, proto = by_setting.get(MethodConfig(name="independent")), by_setting.get(MethodConfig(name="proto"))
    tax = (tax_from_seeds(ind["per_seed"], proto["per_seed"], key) if ind and proto else
           {"metric": key, "tax": None, "half_width": None, "verdict": None,
            "reason": "independent and proto must both be in the grid"})
    return {"tax": tax, "headroom": base_results.get("headroom")}


def _setting_name(f: dict) -> str:
    """``dataset (scenario)``, or the dataset alone when it has no scenario."""
    return f["dataset"] if not f.get("scenario") else f"{f['dataset']} ({f['scenario']})"


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
    parts = [f"On {_setting_name(f)} ({f['num_classes']} classes, {f['seeds']} seeds, M(old, old) = {f['old_old']:.3f}), "
             f"{len(better)} of {len(perturb)} NDPP/ODPP settings have a self-test {f.get('headline', 'mAP@' + str(f['k']))} clearly above "
             f"{ref} (paired 95% interval above zero)" + (f": {', '.join(better)}" if better else "") + "; "
             f"{len(worse)} are clearly below" + (f" ({', '.join(worse)})" if worse else "") + "; the rest are "
             "within the seed noise."]
    parts.append(f"Cross-test is clearly lower than {ref}'s for {len(cross_worse)} of them."
                 if cross_worse else f"No setting has a cross-test clearly below {ref}'s.")
    parts.append(f"Settings that miss the compatibility criterion: {', '.join(incompatible)}."
                 if incompatible else "Every compatibility method meets the criterion M(new, old) > M(old, old).")
    parts += _readout_sentences(f)
    return " ".join(parts)


_TAX_READING = {
    "above zero": "aligning with the old model costs the new model self-test, which a relaxation may win back",
    "below zero": "proto is above independent: aligning costs nothing here, so a relaxation has no tax to win back",
    "no clear difference": "aligning costs no measurable self-test, so a relaxation has no tax to win back",
}


def _readout_sentences(f: dict) -> list[str]:
    """The tax and headroom sentences of a dataset's paragraph (none when absent)."""
    out = []
    tax = f.get("tax")
    if tax and tax.get("tax") is not None:
        reading = _TAX_READING.get(tax["verdict"], "one seed gives no interval")
        out.append(f"The compatibility tax (independent self minus proto self) is {format_tax(tax, plus_minus='±')}: "
                   f"{reading}.")
    room = f.get("headroom")
    if room and room.get("value") is not None:
        out.append(f"The headroom (mean old-space excess crowding that the independent model undoes, "
                   f"k = {room['k']}) is {room['value']:.3f}"
                   + (f", with nearest-prototype crowding {room['crowding_old']:.3f} old and "
                      f"{room['crowding_new']:.3f} new." if "crowding_old" in room and "crowding_new" in room else "."))
    return out


def _summary_table(all_findings: Sequence[dict]) -> list[str]:
    """One row per dataset: M(old, old), independent and proto self, the tax and the headroom
    (what perturbation can win, ``docs/metrics.md``); no rows without tax or headroom."""
    if not any("tax" in f or "headroom" in f for f in all_findings):
        return []
    lines = ["| dataset | M(old, old) | independent self | proto self | compatibility tax | headroom |",
             "|---|---|---|---|---|---|"]
    for f in all_findings:
        rows = {r["label"]: r for r in f["rows"]}
        cells = [_setting_name(f), f"{f['old_old']:.3f}"]
        cells += [_pm(rows[n]["self"], rows[n]["self_ci"]) if n in rows else "–" for n in ("independent", "proto")]
        room = f.get("headroom") or {}
        cells += [format_tax(f.get("tax"), plus_minus="±"),
                  "–" if room.get("value") is None else f"{room['value']:.3f} (k = {room['k']})"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def findings_markdown(all_findings: Sequence[dict], *, command: str) -> str:
    """The findings document from :func:`dataset_findings` summaries."""
    lines = ["# Findings", "",
             "Generated by `" + command + "`; do not edit by hand. Numbers are mAP@100 means over seeds "
             "± the 95% Student-t half-width; \"vs\" columns are differences to the reference method paired by "
             "seed, with the verdict defined in `docs/metrics.md`.", ""]
    lines += _summary_table(all_findings)
    for f in all_findings:
        ref = f["reference"]
        lines += [f"## {_setting_name(f)}", "", _paragraph(f), "",
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
        lines += ["", f"M(old, old) = {f['old_old']:.3f}; compatibility tax {format_tax(f.get('tax'), plus_minus='±')}; "
                  f"headroom {format_headroom(f.get('headroom'))}; "
                  f"{f['minutes']:.1f} minutes on the machine that generated it.", ""]
    return "\n".join(lines)


def findings_settings(datasets: Sequence[str], scenarios: Sequence[str] | str | None = None) -> list[tuple[str, str | None]]:
    """The (dataset, scenario) pairs of a findings run: each dataset in its default
    scenario (``scenarios=None``), in each of ``scenarios`` (every one must be declared by
    every dataset: ``ValueError`` naming the valid ones), or in all it declares (``"all"``)."""
    from .data.registry import get_dataset, list_scenarios

    if scenarios is None:
        return [(d, None) for d in datasets]
    if isinstance(scenarios, str) and scenarios == "all":
        return [(d, s) for d in datasets for s in (list_scenarios(d) or [None])]
    names = [scenarios] if isinstance(scenarios, str) else list(scenarios)
    for d in datasets:
        for s in names:
            get_dataset(d).scenario(s)
    return [(d, s) for d in datasets for s in names]


def generate_findings(datasets: Sequence[str], *, out: str | Path = "docs/findings.md", seeds: int = 5,
                      eps: Sequence[float] = (0.2, 0.4, 0.8), cache_root: str | Path | None = None,
                      progress: bool = True, command: str | None = None,
                      scenarios: Sequence[str] | str | None = None, workers: int | None = None) -> Path:
    """Run :func:`dataset_findings` for every dataset (in each of ``scenarios``, see
    :func:`findings_settings`) and write the markdown atomically."""
    found = [dataset_findings(d, seeds=seeds, eps=eps, cache_root=cache_root, progress=progress, scenario=s,
                              workers=workers)
             for d, s in findings_settings(datasets, scenarios)]
    command = command or f"bclviz findings --datasets {','.join(datasets)} --seeds {seeds} --out {out}"
    return write_text(out, findings_markdown(found, command=command))
