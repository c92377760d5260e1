"""The Pareto front of self-test vs cross-test points (no plotting: the core profile uses it).

``bclviz tune`` picks the settings to export from it, the plots
(:func:`bclviz.plots.tradeoff_figure`) and the widgets draw it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["pareto_front", "record_front"]


def pareto_front(points: Sequence[Mapping]) -> list[int]:
    """Indices (ascending) of points no other point dominates in both ``self`` and ``cross``.

    ``j`` dominates ``i`` when ``self_j >= self_i`` and ``cross_j >= cross_i`` with at
    least one strict; equal points do not dominate each other. NaN points are left out.
    """
    vals = [(float(p["cross"]), float(p["self"])) for p in points]
    order = sorted((i for i, v in enumerate(vals) if not any(map(math.isnan, v))),
                   key=lambda i: (-vals[i][0], -vals[i][1]))
    front, best_above, pos = [], -math.inf, 0
    while pos < len(order):  # groups of equal cross, highest cross first
        end = pos
        while end < len(order) and vals[order[end]][0] == vals[order[pos]][0]:
            end += 1
        top = vals[order[pos]][1]
        if top > best_above:
            front += [i for i in order[pos:end] if vals[i][1] == top]
            best_above = top
        pos = end
    return sorted(front)


def record_front(records: Sequence[Mapping], metric: str, *, compatible_only: bool = False) -> list[int]:
    """Indices of the sweep records (:func:`bclviz.sweep.run_sweep`) on the Pareto front
    of their mean ``self``/``cross`` on ``metric``; ``compatible_only``: the front of the
    records that meet the compatibility criterion (the feasible front)."""
    chosen = [i for i, r in enumerate(records) if r["compatible"] or not compatible_only]
    points = [{"self": records[i]["self"][metric], "cross": records[i]["cross"][metric]} for i in chosen]
    return [chosen[j] for j in pareto_front(points)]
