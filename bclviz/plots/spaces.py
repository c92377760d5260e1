"""The old | pseudo-old | new spaces figure and the arrays its widgets update."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._common import PALETTE, _keep_uids, _labels, _rows, _scatter, _xyz, class_colors

SPACE_BLOCKS = ("old_features", "new_features", "old_protos", "pseudo_old_protos", "new_protos")


def _segments(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Polyline start[0], end[0], NaN, start[1], ... (3C, k): one trace draws C arrows."""
    seg = np.full((start.shape[0], 3, start.shape[1]), np.nan)
    seg[:, 0], seg[:, 1] = start, end
    return seg.reshape(-1, start.shape[1])


def pseudo_old_trace_updates(old_proto_coords, pseudo_coords) -> dict[str, dict[str, np.ndarray]]:
    """Arrays to assign when only the pseudo-old prototypes move.

    Parameters
    ----------
    old_proto_coords, pseudo_coords : array, shape (C, 2) or (C, 3)
        Projected old and pseudo-old prototypes (e.g. ``projection.transform(q)``).

    Returns
    -------
    dict
        Trace uid -> ``{"x": ..., "y": ...[, "z": ...]}`` for the traces
        ``"pseudo_old_protos"`` and ``"pseudo_old_arrows"`` of :func:`three_spaces_figure`.
    """
    start = _rows(old_proto_coords, "old_proto_coords")
    end = _rows(pseudo_coords, "pseudo_coords", dim=start.shape[1])
    if start.shape != end.shape or start.shape[1] not in (2, 3):
        raise ValueError(
            f"old_proto_coords and pseudo_coords must both be (C, 2) or (C, 3), got "
            f"{start.shape} and {end.shape}"
        )
    return {"pseudo_old_protos": _xyz(end), "pseudo_old_arrows": _xyz(_segments(start, end))}


def update_pseudo_old(fig: go.Figure, old_proto_coords, pseudo_coords) -> None:
    """Apply :func:`pseudo_old_trace_updates` to ``fig`` (a Figure or FigureWidget) in place."""
    updates = pseudo_old_trace_updates(old_proto_coords, pseudo_coords)
    with fig.batch_update():
        for uid, values in updates.items():
            fig.update_traces(values, selector=lambda t, uid=uid: uid in (t.uid, t.meta))


def three_spaces_figure(
    coords: Mapping[str, object],
    labels,
    *,
    proto_labels=None,
    class_names: Sequence[str] | None = None,
    titles: Sequence[str] = ("old space", "pseudo-old space", "new space"),
    palette: Sequence[str] = PALETTE,
    height: int = 450,
) -> go.Figure:
    """Old | pseudo-old | new spaces side by side, coloured by class.

    Parameters
    ----------
    coords : mapping
        Projected coordinates, each (n, 2) or (n, 3) (3-D panels): ``"old_features"`` and
        ``"new_features"`` (n, .) of the same items, ``"old_protos"``,
        ``"pseudo_old_protos"`` and ``"new_protos"`` (C, .). E.g. a fitted
        :class:`bclviz.projection.SpaceProjection`'s ``embedding_``.
    labels : array of int, shape (n,)
        Class of each feature row.
    proto_labels : array of int, shape (C,), optional
        Class of each prototype row; default ``0 .. C-1``.
    class_names : sequence of str, optional
        Hover name of class id ``c`` is ``class_names[c]``; default ``"class c"``.

    Returns
    -------
    go.Figure
        Traces with stable uids (copied into ``meta``, which ``go.FigureWidget``
        keeps while it replaces uids): panel 1 ``old_features``, ``old_protos``; panel 2
        ``pseudo_space_features`` (the old features again), ``old_protos_ghost``,
        ``pseudo_old_arrows`` (one NaN-separated polyline, however many classes),
        ``pseudo_old_protos``; panel 3 ``new_features``, ``new_protos``. 2-D traces of
        more than :data:`~bclviz.plots._common.WEBGL_POINTS` points (features, prototype
        sets, arrows of 10,000 classes) are ``go.Scattergl`` (WebGL), the others ``go.Scatter``.
    """
    missing = [b for b in SPACE_BLOCKS if b not in coords]
    if missing:
        raise ValueError(f"coords lacks {missing}; it needs the keys {list(SPACE_BLOCKS)}")
    k = _rows(coords["old_features"], "coords['old_features']").shape[1]
    if k not in (2, 3):
        raise ValueError(f"coordinates must have 2 or 3 columns, got {k}")
    c = {b: _rows(coords[b], f"coords[{b!r}]", dim=k) for b in SPACE_BLOCKS}
    n, n_protos = c["old_features"].shape[0], c["old_protos"].shape[0]
    for b, rows in (("new_features", n), ("pseudo_old_protos", n_protos), ("new_protos", n_protos)):
        if c[b].shape[0] != rows:
            raise ValueError(f"coords[{b!r}] has {c[b].shape[0]} rows, expected {rows}")
    y = _labels(labels, "labels", n)
    py = np.arange(n_protos) if proto_labels is None else _labels(proto_labels, "proto_labels", n_protos)

    def name(cls):
        return str(class_names[cls]) if class_names is not None else f"class {cls}"

    f_text, p_text = [name(v) for v in y], [name(v) for v in py]
    f_col, p_col = class_colors(y, palette=palette), class_colors(py, palette=palette)
    f_size, p_size = (3, 7) if k == 3 else (5, 14)
    moved = "square" if k == 3 else "star"  # Scatter3d has no star symbol
    hover = "%{text}<extra>%{fullData.name}</extra>"

    def feats(block, uid, show):
        return _scatter(c[block], mode="markers", uid=uid, name=block.replace("_", " "),
                        legendgroup=block, showlegend=show, text=f_text, hovertemplate=hover,
                        marker=dict(color=f_col, size=f_size, opacity=0.55))

    def protos(block, uid, symbol="diamond", **kw):
        marker = dict(color=p_col, size=p_size, symbol=symbol, line=dict(color="black", width=1))
        return _scatter(c[block], mode="markers", uid=uid, name=kw.pop("label", block.replace("_", " ")),
                        text=p_text, hovertemplate=hover, marker=marker, **kw)

    panels = [
        [feats("old_features", "old_features", True), protos("old_protos", "old_protos")],
        [feats("old_features", "pseudo_space_features", False),
         protos("old_protos", "old_protos_ghost", "diamond-open", label="old protos (origin)",
                opacity=0.5, legendgroup="old_protos", showlegend=False),
         _scatter(_segments(c["old_protos"], c["pseudo_old_protos"]), mode="lines",
                  uid="pseudo_old_arrows", name="old -> pseudo-old", hoverinfo="skip",
                  line=dict(color="black", width=2)),
         protos("pseudo_old_protos", "pseudo_old_protos", moved)],
        [feats("new_features", "new_features", True), protos("new_protos", "new_protos")],
    ]
    specs = [[{"type": "scene" if k == 3 else "xy"}] * 3]
    fig = make_subplots(rows=1, cols=3, subplot_titles=list(titles), specs=specs,
                        horizontal_spacing=0.04)
    for col, traces in enumerate(panels, start=1):
        for trace in traces:
            fig.add_trace(trace, row=1, col=col)
    if k == 2:
        for col in (2, 3):
            fig.update_xaxes(matches="x", row=1, col=col)
            fig.update_yaxes(matches="y", row=1, col=col)
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False)
    fig.update_layout(height=height, margin=dict(l=20, r=20, t=50, b=20), legend=dict(orientation="h"))
    return _keep_uids(fig)
