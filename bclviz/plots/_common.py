"""Shared pieces of the plot builders: palette, trace uids, input checks."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from .._validate import as_features, as_labels

PALETTE: tuple[str, ...] = tuple(qualitative.Dark24 + qualitative.Light24)
#: a 2-D trace with more points than this is drawn with WebGL (``go.Scattergl``): SVG
#: slows down past a few thousand markers, WebGL draws 10,000 classes' prototypes at once
WEBGL_POINTS = 2000
_UID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def trace_uid(*parts: object) -> str:
    """A trace uid from ``parts``: empty parts dropped, the rest joined with ``-``, and
    anything outside ``[A-Za-z0-9_-]`` replaced by ``_``.

    plotly.js builds CSS selectors from uids, so a ``:``, ``/``, space or bracket in one
    raises a JavaScript error in the browser (the figure then stops updating).
    ``trace_uid("points", "ndpp") == "points-ndpp"``.
    """
    return "-".join(_UID_UNSAFE.sub("_", str(p)) for p in parts if str(p))


def _rows(x, name: str, *, dim: int | None = None) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    elif not isinstance(x, np.ndarray):
        x = np.asarray(x, dtype=float)
    return as_features(x, name, dim=dim).double().numpy()


def _labels(y, name: str, n: int) -> np.ndarray:
    y = y.detach().cpu() if hasattr(y, "detach") else np.asarray(y)
    return as_labels(y, name, n=n).numpy()


def class_colors(labels, *, palette: Sequence[str] = PALETTE) -> list[str]:
    """Colour of each class id: ``palette[id % len(palette)]``, the same in every panel."""
    return [palette[int(c) % len(palette)] for c in np.asarray(labels).ravel()]


def _xyz(coords: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip("xyz", coords.T))


def _scatter(coords: np.ndarray, **kw) -> go.Scatter | go.Scattergl | go.Scatter3d:
    """A trace of ``coords`` (n, 2) or (n, 3): ``Scatter3d`` for 3 columns, ``Scattergl``
    above :data:`WEBGL_POINTS` rows (NaN rows still break lines), else ``Scatter``."""
    if coords.shape[1] == 3:
        return go.Scatter3d(**_xyz(coords), **kw)
    return (go.Scattergl if coords.shape[0] > WEBGL_POINTS else go.Scatter)(**_xyz(coords), **kw)



def _keep_uids(fig: go.Figure) -> go.Figure:
    """Copy each trace's uid into ``meta``: ``go.FigureWidget`` replaces uids, keeps meta."""
    for trace in fig.data:
        trace.meta = trace.uid
    return fig
