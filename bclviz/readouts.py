"""The compatibility tax as tables, reports, plots and widgets show it.

:func:`tax_of` reads a ``results.json`` dict's tax (``results["tax"]``, written by
:func:`bclviz.experiment.run_experiment`), computing it from the per-seed records for
results written before it existed or for another metric; :func:`format_tax` is its
one-line text. The numbers themselves come from :func:`bclviz.stats.compatibility_tax`.
"""

from __future__ import annotations

from collections.abc import Mapping

from .stats import compatibility_tax

__all__ = ["tax_of", "format_tax"]


def tax_of(results: Mapping, *, metric: str | None = None) -> dict:
    """The compatibility tax of ``results`` on ``metric`` (default: its headline metric)."""
    tax = results.get("tax")
    if tax and (metric is None or tax.get("metric") == metric):
        return tax
    return compatibility_tax(results, metric=metric)


def format_tax(tax: Mapping | None, *, plus_minus: str = "+-") -> str:
    """One-line text of a :func:`~bclviz.stats.compatibility_tax` record, e.g.
    ``"+0.027 +- 0.010 (above zero)"``; ``"n/a (<reason>)"`` when there is no tax."""
    if not tax or tax.get("tax") is None:
        return f"n/a ({(tax or {}).get('reason', 'not computed')})"
    half = "" if tax.get("half_width") is None else f" {plus_minus} {tax['half_width']:.3f}"
    return f"{tax['tax']:+.3f}{half} ({tax['verdict']})"
