"""Generate ``docs/findings.md``: what bclviz measures, with intervals, per dataset.

For each (dataset, update scenario): the compatibility tax and headroom, and, on the
full grid, every method at default settings plus NDPP and ODPP over an eps grid (in the
absolute budget mode, and the relative one at the largest eps), each over several seeds
(data split and old model fixed), compared with a reference method (default ``proto``)
paired by seed. The paragraph per setting is written from the verdicts, so the document
says where perturbation helps, where it hurts and where the difference is within the
seed noise. Every (setting, seed) is cached under ``cache_root/<dataset>/<scenario>``
(default ``findings/`` under the cache root, :mod:`bclviz.cache`), so an interrupted run
resumes from any working directory. Next to the markdown, ``findings.json`` holds the
same summaries for notebooks (``notebooks/03_real_images.ipynb`` plots from it).

Grids (:data:`GRIDS`): ``full`` (every baseline, NDPP/ODPP over eps) and ``tax``
(``independent`` and ``proto`` only: the tax and the headroom). ``generate_findings``
runs the full grid on each dataset's default scenario and the tax grid on its other
scenarios unless told otherwise (``grid="auto"``); where the tax grid finds a tax above
zero at some weight, it runs the full grid there too (the tax grid's trials are part of
it), so NDPP/ODPP are measured wherever strict alignment has a cost to win back.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Sequence

from .cache import cache_dir
from .config import MethodConfig, default_experiment
from .experiment import run_experiment
from .io import write_json, write_text
from .methods import perturbing_methods
from .proxies import format_headroom
from .readouts import format_tax
from .stats import paired_comparison, tax_from_seeds
from .sweep import run_sweep, setting_label
from .trials import trial_threads

__all__ = ["GRIDS", "DEFAULT_EPS", "findings_grid", "dataset_findings", "findings_settings", "findings_markdown",
           "generate_findings", "load_findings", "findings_summary", "findings_points"]

BASELINES = ("independent", "l2", "bct", "proto", "lce", "hot_refresh")
#: the grids a (dataset, scenario) can run: every setting, or what the tax needs
GRIDS = ("full", "tax")
#: eps of the full grid (absolute budgets; the relative mode runs at the largest)
DEFAULT_EPS = (0.2, 0.4, 1.0)


def findings_grid(eps: Sequence[float] = DEFAULT_EPS, grid: str = "full",
                  baselines: Sequence[str] = BASELINES,
                  modes: Sequence[str] = ("absolute", "relative"), lam: float = 1.0) -> list[MethodConfig]:
    """The settings of one (dataset, scenario).

    ``full``: ``baselines`` (default: every one; ``independent`` and ``proto`` are always
    run, the tax needs them) and the perturbing methods (NDPP, ODPP) at defaults, then each
    perturbing method over ``eps`` with absolute budgets and at ``max(eps)`` with relative
    ones (``eps_mode="relative"``: the most crowded class gets the whole eps, see
    docs/method.md); ``modes`` leaves either out. ``tax``: ``independent`` and ``proto``.
    ``lam``: the weight of every compatibility term (``MethodConfig.lam``; ``independent``
    has none and keeps the default, so its trials are shared across ``lam``).
    """
    return [m if m.name == "independent" else dataclasses.replace(m, lam=lam)
            for m in _grid(eps, grid, baselines, modes)]


def _grid(eps, grid, baselines, modes) -> list[MethodConfig]:
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {list(GRIDS)}, got {grid!r}")
    if grid == "tax":
        return [MethodConfig(name="independent"), MethodConfig(name="proto")]
    eps = tuple(eps)
    if not eps:
        raise ValueError("eps must hold at least one magnitude")
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"baselines must be among {list(BASELINES)}, got {unknown}")
    chosen = [b for b in BASELINES if b in {*baselines, "independent", "proto"}]
    if not modes or set(modes) - {"absolute", "relative"}:
        raise ValueError(f"modes must be a non-empty subset of ['absolute', 'relative'], got {list(modes)}")
    perturbing = perturbing_methods()
    grid_ = [MethodConfig(name=m) for m in chosen] + [MethodConfig(name=m) for m in perturbing]
    for mode, values in (("absolute", eps), ("relative", (max(eps),))):
        if mode not in modes:
            continue
        for name in perturbing:
            for e in values:
                m = MethodConfig(name=name, eps=e, eps_mode=mode)
                if m not in grid_:
                    grid_.append(m)
    return grid_


def _label(m: MethodConfig) -> str:
    base = setting_label(m)
    return base + ("" if m.eps_mode == "absolute" else f" {m.eps_mode}")


def _lam_of(f: dict) -> float:
    return float(f.get("lam", 1.0))


def dataset_findings(dataset: str, *, seeds: int = 5, eps: Sequence[float] = DEFAULT_EPS,
                     reference: str = "proto", cache_root: str | Path | None = None,
                     overrides: dict | None = None, progress: bool = True, scenario: str | None = None,
                     workers: int | None = None, grid: str = "full", baselines: Sequence[str] = BASELINES,
                     modes: Sequence[str] = ("absolute", "relative"), lam: float = 1.0) -> dict:
    """Train and evaluate the findings grid (:func:`findings_grid`) on one dataset in one of
    its update scenarios (None: the dataset's default), with compatibility weight ``lam``;
    return its summary dict. Records are cached under ``cache_root/<dataset>/<scenario>``."""
    cfg = default_experiment(dataset, scenario=scenario, seeds=seeds, methods=(), reference=reference,
                             **(overrides or {}))
    t0 = time.perf_counter()
    base = run_experiment(dataclasses.replace(cfg, seeds=1), progress=progress, workers=workers)
    kind, grid = grid, findings_grid(eps, grid, baselines, modes, lam=lam)
    root = cache_dir("findings") if cache_root is None else Path(cache_root)
    folder = root / dataset if cfg.scenario is None else root / dataset / cfg.scenario
    records = run_sweep(base.data, base.old, cfg, grid, cache_dir=folder, progress=progress, workers=workers)
    key = base.results["headline"]
    ref_cfg = MethodConfig(name=reference, **({} if reference == "independent" else {"lam": lam}))
    ref = next(r for r, m in zip(records, grid) if m == ref_cfg)
    rows = []
    for rec, m in zip(records, grid):
        row = {"label": _label(m), "method": m.name, "self": rec["self"][key], "self_ci": rec["self_ci"][key],
               "cross": rec["cross"][key], "cross_ci": rec["cross_ci"][key], "compatible": rec["compatible"]}
        if m != ref_cfg:
            row["vs"] = paired_comparison(rec["per_seed"], ref["per_seed"], key)
        rows.append(row)
    return {"dataset": dataset, "scenario": cfg.scenario, "grid": kind, "lam": lam, "seeds": seeds, "k": cfg.k,
            "headline": key,
            "reference": reference, "old_old": base.results["old"]["self"][key], "rows": rows,
            "num_classes": base.data.num_classes, "minutes": (time.perf_counter() - t0) / 60,
            "train_minutes": sum(r["seconds"] for r in records) / 60, "threads": trial_threads(),
            **_readouts(records, grid, key, base.results)}


def _readouts(records: Sequence[dict], grid: Sequence[MethodConfig], key: str, base_results: dict) -> dict:
    """``tax`` (independent vs proto self, paired over the sweep's seeds) and ``headroom``
    (of the first seed's independent model) of one dataset's findings."""
    by_setting = {dataclasses.replace(m, lam=1.0): r for m, r in zip(grid, records)}
    ind, proto = by_setting.get(MethodConfig(name="independent")), by_setting.get(MethodConfig(name="proto"))
    tax = (tax_from_seeds(ind["per_seed"], proto["per_seed"], key) if ind and proto else
           {"metric": key, "tax": None, "half_width": None, "verdict": None,
            "reason": "independent and proto must both be in the grid"})
    return {"tax": tax, "headroom": base_results.get("headroom")}


def _setting_name(f: dict) -> str:
    """``dataset (scenario)``, or the dataset alone when it has no scenario; ``, lam 10``
    added when the compatibility weight is not the default 1."""
    lam = "" if _lam_of(f) == 1.0 else f", lam {_lam_of(f):g}"
    if not f.get("scenario"):
        return f["dataset"] + (f" ({lam[2:]})" if lam else "")
    return f"{f['dataset']} ({f['scenario']}{lam})"


def _pm(mean, half):
    return f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}"


def _paragraph(f: dict) -> str:
    ref = f["reference"]
    perturbing = perturbing_methods()
    perturb = [r for r in f["rows"] if r["method"] in perturbing]
    if not perturb:  # the tax grid
        proto = next((r for r in f["rows"] if r["method"] == "proto"), None)
        head = (f"On {_setting_name(f)} ({f['num_classes']} classes, {f['seeds']} seeds, M(old, old) = "
                f"{f['old_old']:.3f}) only independent and proto ran (the tax grid; `--grid auto` runs the "
                "full grid on the dataset's default scenario and wherever the tax is above zero).")
        crit = ("" if proto is None else " proto meets the compatibility criterion." if proto["compatible"]
                else " proto misses the compatibility criterion M(new, old) > M(old, old).")
        return " ".join([head + crit, *_readout_sentences(f)])
    better = [r["label"] for r in perturb if r["vs"]["self"]["verdict"] == "better"]
    worse = [r["label"] for r in perturb if r["vs"]["self"]["verdict"] == "worse"]
    cross_worse = [r["label"] for r in perturb if r["vs"]["cross"]["verdict"] == "worse"]
    incompatible = [r["label"] for r in f["rows"] if not r["compatible"] and r["method"] != "independent"]
    parts = [f"On {_setting_name(f)} ({f['num_classes']} classes, {f['seeds']} seeds, M(old, old) = {f['old_old']:.3f}), "
             f"{len(better)} of {len(perturb)} NDPP/ODPP settings have a self-test {f.get('headline', 'mAP@' + str(f['k']))} clearly above "
             f"{ref} (paired 95% interval above zero)" + (f": {', '.join(better)}" if better else "") + "; "
             f"{len(worse)} are clearly below" + (f" ({', '.join(worse)})" if worse else "") + "; the rest are "
             "within the seed noise."]
    parts.append(f"Cross-test is clearly lower than {ref}'s for {len(cross_worse)} of the {len(perturb)}: "
                 f"{', '.join(cross_worse)}."
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
                  f"{_cost(f)}.", ""]
    return "\n".join(lines)


def _cost(f: dict) -> str:
    """What one summary cost: the new models' training time as the sweep recorded it (a
    replay from the cache keeps it) and this run's wall-clock time."""
    wall = f"{f['minutes']:.1f} minutes wall-clock on the machine that generated it"
    if f.get("threads") is not None:
        wall += f", {f['threads']} CPU thread{'s' if f['threads'] != 1 else ''} per model"
    if f.get("train_minutes") is None:
        return wall
    return f"{f['train_minutes']:.1f} minutes of new-model training (every setting and seed), {wall}"


def findings_settings(datasets: Sequence[str], scenarios: Sequence[str] | str | None = None,
                      grid: str = "auto") -> list[tuple[str, str | None, str]]:
    """The (dataset, scenario, grid) triples of a findings run: each dataset in its default
    scenario (``scenarios=None``), in each of ``scenarios`` (every one must be declared by
    every dataset: ``ValueError`` naming the valid ones), or in all it declares (``"all"``).
    ``grid``: one of :data:`GRIDS` for every setting, or ``"auto"``: the full grid on each
    dataset's default scenario (and on datasets without scenarios), the tax grid elsewhere
    (:func:`generate_findings` then widens a tax grid whose tax is above zero to the full one)."""
    from .data.registry import get_dataset, list_scenarios

    if grid != "auto" and grid not in GRIDS:
        raise ValueError(f"grid must be 'auto' or one of {list(GRIDS)}, got {grid!r}")
    if scenarios is None:
        pairs = [(d, None) for d in datasets]
    elif isinstance(scenarios, str) and scenarios == "all":
        pairs = [(d, s) for d in datasets for s in (list_scenarios(d) or [None])]
    else:
        names = [scenarios] if isinstance(scenarios, str) else list(scenarios)
        for d in datasets:
            for s in names:
                get_dataset(d).scenario(s)
        pairs = [(d, s) for d in datasets for s in names]

    def kind(d: str, s: str | None) -> str:
        if grid != "auto":
            return grid
        return "full" if s is None or s == get_dataset(d).default_scenario else "tax"

    return [(d, s, kind(d, s)) for d, s in pairs]


def generate_findings(datasets: Sequence[str], *, out: str | Path = "docs/findings.md", seeds: int = 5,
                      eps: Sequence[float] = DEFAULT_EPS, cache_root: str | Path | None = None,
                      progress: bool = True, command: str | None = None,
                      scenarios: Sequence[str] | str | None = None, workers: int | None = None,
                      grid: str = "auto", baselines: Sequence[str] = BASELINES,
                      modes: Sequence[str] = ("absolute", "relative"), lams: Sequence[float] = (1.0,)) -> Path:
    """Run :func:`dataset_findings` for every (dataset, scenario, grid) of
    :func:`findings_settings` and every compatibility weight in ``lams``, and write the
    markdown and, next to it, ``findings.json`` (the summaries: ``{"command": ...,
    "findings": [...]}``), each atomically. With ``grid="auto"``, a (dataset, scenario,
    weight) whose tax grid shows a tax above zero is run again on the full grid, and the
    full summary replaces the tax one."""
    lams = [float(v) for v in lams]
    if not lams or any(not v > 0 for v in lams):
        raise ValueError(f"lams must be one or more weights > 0, got {lams}")
    common = {"seeds": seeds, "eps": eps, "cache_root": cache_root, "progress": progress, "workers": workers,
              "baselines": baselines, "modes": modes}
    found = []
    for d, s, g in findings_settings(datasets, scenarios, grid):
        for lam in lams:
            summary = dataset_findings(d, scenario=s, grid=g, lam=lam, **common)
            if grid == "auto" and g == "tax" and (summary.get("tax") or {}).get("verdict") == "above zero":
                summary = dataset_findings(d, scenario=s, grid="full", lam=lam, **common)
            found.append(summary)
    command = command or f"bclviz findings --datasets {','.join(datasets)} --seeds {seeds} --out {out}"
    write_json(Path(out).with_name("findings.json"), {"command": command, "findings": found})
    return write_text(out, findings_markdown(found, command=command))


#: where ``bclviz findings`` writes by default, next to the package in a source checkout
DEFAULT_FINDINGS_JSON = Path(__file__).resolve().parents[1] / "docs" / "findings.json"


def load_findings(path: str | Path | None = None) -> dict:
    """The summaries written by :func:`generate_findings` (``findings.json``; default: the
    checkout's ``docs/findings.json``). ``FileNotFoundError`` says how to generate it."""
    path = DEFAULT_FINDINGS_JSON if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no findings at {path}; generate them with `bclviz findings` (docs/findings.md "
                                "names the command), or pass the path of a findings.json")
    found = json.loads(path.read_text())
    if not isinstance(found, dict) or not isinstance(found.get("findings"), list):
        raise ValueError(f"{path} is not a findings.json (no 'findings' list)")
    return found


def findings_summary(found: dict, dataset: str, scenario: str | None = None, grid: str | None = None,
                     lam: float | None = None) -> dict:
    """The summary of ``dataset`` (in ``scenario``, on ``grid``, at compatibility weight
    ``lam``; any when None) from :func:`load_findings`, the full grid and then the default
    weight 1 first; ``KeyError`` listing what there is."""
    hits = [f for f in found["findings"] if f["dataset"] == dataset and scenario in (None, f.get("scenario"))
            and grid in (None, f.get("grid", "full")) and (lam is None or _lam_of(f) == float(lam))]
    if not hits:
        have = [(f["dataset"], f.get("scenario"), f.get("grid", "full"), _lam_of(f)) for f in found["findings"]]
        raise KeyError(f"no findings for dataset={dataset!r}, scenario={scenario!r}, grid={grid!r}, lam={lam!r}; "
                       f"there are {have}")
    return sorted(hits, key=lambda f: (f.get("grid", "full") != "full", _lam_of(f) != 1.0))[0]


def findings_points(summary: dict) -> list[dict]:
    """Points for :func:`bclviz.plots.tradeoff_figure` from one findings summary: every
    setting with its 95% half-widths as error bars, and the old model."""
    points = []
    for r in summary["rows"]:
        point = {"label": r["label"], "method": r["method"], "self": r["self"], "cross": r["cross"],
                 "settings": {"setting": r["label"]}}
        point.update({f"{side}_err": r[f"{side}_ci"] for side in ("self", "cross") if r.get(f"{side}_ci") is not None})
        points.append(point)
    old = summary["old_old"]
    return points + [{"label": "old", "method": "old", "self": old, "cross": old, "settings": {}}]
