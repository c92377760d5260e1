"""Jupyter widgets (ipywidgets 8 + plotly ``FigureWidget``), thin views over pure functions.

- :class:`PerturbationExplorer` -- eps / k / gamma sliders and the NDPP/ODPP switch over
  the pseudo-old space, with live proxies (:func:`explorer_state` is the pure core).
- :class:`TrainingLab` -- "train this setting" in the background, the trade-off plot,
  and config export.
- :class:`ParetoMonitor` -- the self vs cross plot and its Pareto front, growing as a
  sweep's or a study's trials finish (``run_sweep(..., callback=monitor.update)``).

ipywidgets and plotly are imported when a widget is built, not when this package is.
"""

from .explorer import PerturbationExplorer, default_k, explorer_state, format_proxies, measure_latency
from .lab import TrainingLab, train_setting
from .pareto import ParetoMonitor

__all__ = [
    "ParetoMonitor", "PerturbationExplorer", "TrainingLab", "default_k", "explorer_state", "format_proxies",
    "measure_latency", "train_setting",
]
