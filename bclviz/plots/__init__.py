"""Plot builders: arrays in, ``plotly.graph_objects.Figure`` out (never shown here).

One module per kind of figure (``spaces``, ``tradeoff``, ``diagnostics``); everything
is importable from ``bclviz.plots``.

- :func:`three_spaces_figure` -- old | pseudo-old | new spaces side by side, with arrows
  from old to pseudo-old prototypes; :func:`pseudo_old_trace_updates` gives the arrays a
  widget assigns when only the pseudo-old prototypes move.
- :func:`tradeoff_figure` -- self-test vs cross-test with the compatibility criterion
  line and the Pareto front (:func:`pareto_front`, :func:`tradeoff_points`).
- :func:`similarity_heatmaps`, :func:`training_curves`,
  :func:`compatibility_matrix_figure`, :func:`partial_backfill_curve` (data from the
  pure :func:`partial_backfill`).

Adapters that embed with trained models or fit projections (``result_blocks``,
``three_spaces_from_result``, ``preferred_method``) live in :mod:`bclviz.views`; the old
names here still work and warn.
"""

import warnings

from ._common import PALETTE, class_colors, trace_uid
from .diagnostics import (
    compatibility_matrix_figure,
    partial_backfill,
    partial_backfill_curve,
    similarity_heatmaps,
    training_curves,
)
from .spaces import SPACE_BLOCKS, pseudo_old_trace_updates, three_spaces_figure, update_pseudo_old
from .tradeoff import pareto_front, sweep_points, tradeoff_figure, tradeoff_points

__all__ = [
    "PALETTE", "class_colors", "three_spaces_figure", "pseudo_old_trace_updates",
    "update_pseudo_old",
    "pareto_front", "tradeoff_points", "tradeoff_figure", "similarity_heatmaps",
    "training_curves", "compatibility_matrix_figure", "partial_backfill",
    "partial_backfill_curve", "trace_uid", "sweep_points", "SPACE_BLOCKS",
]



_MOVED_TO_VIEWS = ("preferred_method", "result_blocks", "three_spaces_from_result")


def __getattr__(name: str):
    if name in _MOVED_TO_VIEWS:
        from .. import views

        warnings.warn(f"bclviz.plots.{name} moved to bclviz.views.{name}", DeprecationWarning, stacklevel=2)
        return getattr(views, name)
    raise AttributeError(f"module 'bclviz.plots' has no attribute {name!r}")
