"""Intervals over seeds: how sure a comparison is.

Definitions (also in ``docs/metrics.md``):

- Mean and 95% interval of ``n`` per-seed values ``v``: ``mean(v) +- h`` with
  ``h = t_{0.975, n-1} * s / sqrt(n)``, ``s`` the sample standard deviation (``n - 1``
  in the denominator) and ``t`` Student's t quantile. With one seed, ``h`` is NaN.
- Paired difference against a reference method: ``d_i = v_i - r_i`` for the same seed
  ``i``; its mean and interval as above. The verdict is ``"better"`` when the whole
  interval is above 0, ``"worse"`` when it is below 0, ``"no clear difference"`` when it
  contains 0, and ``"no interval (1 seed)"`` when there is a single seed (no interval,
  so no verdict).
- Compatibility tax: ``independent`` self-test minus ``proto`` self-test on the headline
  metric, paired by seed (:func:`compatibility_tax`); its verdict says whether the
  interval lies ``"above zero"`` (aligning costs self-test), ``"below zero"`` or
  contains 0.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

__all__ = ["mean_interval", "paired_difference", "verdict", "summarise_seeds", "paired_comparison", "NO_INTERVAL",
           "compatibility_tax", "tax_from_seeds"]

#: the verdict when there is no interval (a single seed)
NO_INTERVAL = "no interval (1 seed)"


def _t_quantile(df: int, confidence: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def mean_interval(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half_width)`` of the Student-t interval; half-width NaN for one value."""
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_interval needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    n = len(v)
    mean = sum(v) / n
    if n == 1:
        return mean, float("nan")
    s = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    return mean, _t_quantile(n - 1, confidence) * s / math.sqrt(n)


def verdict(mean: float, half_width: float) -> str:
    """``"better"`` / ``"worse"`` when the interval excludes 0, ``"no clear difference"``
    when it contains 0, :data:`NO_INTERVAL` without an interval (one seed)."""
    if half_width is None or math.isnan(half_width):
        return NO_INTERVAL
    if mean - half_width > 0:
        return "better"
    if mean + half_width < 0:
        return "worse"
    return "no clear difference"


def paired_difference(values: Sequence[float], reference: Sequence[float], *, confidence: float = 0.95) -> dict:
    """Mean paired difference ``values - reference`` (same seeds), its interval and verdict.

    ``half_width`` is ``None`` with a single seed (no interval; verdict :data:`NO_INTERVAL`).
    """
    if len(values) != len(reference):
        raise ValueError(f"paired values need the same seeds: {len(values)} vs {len(reference)} values")
    mean, half = mean_interval([a - b for a, b in zip(values, reference)], confidence=confidence)
    return {"mean_diff": mean, "half_width": None if math.isnan(half) else half, "verdict": verdict(mean, half)}


def summarise_seeds(per_seed: list[dict]) -> dict:
    """Mean and 95% half-width of every metric over per-seed records (``self``/``cross``).

    With a single seed the half-width is ``None`` (JSON ``null``): no interval.
    """
    out = {}
    for side in ("self", "cross"):
        if side not in per_seed[0]:
            continue
        stats = {m: mean_interval([r[side][m] for r in per_seed]) for m in per_seed[0][side]}
        out[side] = {m: v[0] for m, v in stats.items()}
        out[f"{side}_ci"] = {m: None if math.isnan(v[1]) else v[1] for m, v in stats.items()}
    return out


def paired_comparison(per_seed: list[dict], reference: list[dict], key: str) -> dict:
    """Paired-by-seed differences of ``key`` (e.g. mAP@100) against a reference method."""
    return {side: paired_difference([r[side][key] for r in per_seed], [r[side][key] for r in reference])
            for side in ("self", "cross")}


_TAX_VERDICTS = {"better": "above zero", "worse": "below zero"}


def tax_from_seeds(independent: Sequence[Mapping], aligned: Sequence[Mapping], key: str) -> dict:
    """Compatibility tax from per-seed records: ``independent`` self minus ``aligned`` self.

    Parameters
    ----------
    independent, aligned : per-seed records (``{"self": {key: value, ...}, ...}``) of the
        independent model and of the aligned method (``proto``), in the same seed order.
    key : the metric, e.g. ``"mAP@100"`` (the dataset's headline).

    Returns
    -------
    dict with ``metric``, ``tax`` (mean paired difference), ``half_width`` (95%,
    ``None`` with one seed), ``verdict`` (``"above zero"``: aligning costs self-test,
    ``"below zero"``, ``"no clear difference"`` or :data:`NO_INTERVAL`), ``independent``
    and ``aligned`` (the two means) and ``seeds``.
    """
    if not independent:
        raise ValueError("tax_from_seeds needs at least one per-seed record")
    ind = [float(r["self"][key]) for r in independent]
    ali = [float(r["self"][key]) for r in aligned]
    d = paired_difference(ind, ali)
    return {"metric": key, "tax": d["mean_diff"], "half_width": d["half_width"],
            "verdict": _TAX_VERDICTS.get(d["verdict"], d["verdict"]),
            "independent": sum(ind) / len(ind), "aligned": sum(ali) / len(ali), "seeds": len(ind)}


def compatibility_tax(results: Mapping, *, aligned: str = "proto", metric: str | None = None) -> dict:
    """The compatibility tax of a ``results.json`` dict (:func:`bclviz.run_experiment`).

    ``M(ind, ind) - M(proto, proto)`` on ``metric``, default ``results["headline"]``
    (``mAP@k`` when absent),
    paired by seed over ``results["independent"]["per_seed"]`` and
    ``results["methods"][aligned]["per_seed"]`` (:func:`tax_from_seeds`). When either
    was not run, returns ``{"metric", "tax": None, "half_width": None, "verdict": None,
    "reason"}`` with the reason in words.
    """
    key = metric or results.get("headline") or f"mAP@{results['k']}"
    records = {"independent": (results.get("independent") or {}).get("per_seed"),
               aligned: ((results.get("methods") or {}).get(aligned) or {}).get("per_seed")}
    missing = [name for name, per_seed in records.items() if not per_seed]
    if missing:
        return {"metric": key, "tax": None, "half_width": None, "verdict": None,
                "reason": f"{' and '.join(missing)} not run (the tax compares independent with {aligned})"}
    return tax_from_seeds(records["independent"], records[aligned], key)
