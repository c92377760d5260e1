"""Plot builders: arrays in, ``plotly.graph_objects.Figure`` out (never shown here).

- :func:`three_spaces_figure` -- old | pseudo-old | new spaces side by side, with arrows
  from old to pseudo-old prototypes; :func:`pseudo_old_trace_updates` gives the arrays a
  widget assigns when only the pseudo-old prototypes move.
- :func:`tradeoff_figure` -- self-test vs cross-test with the compatibility criterion
  line and the Pareto front (:func:`pareto_front`, :func:`tradeoff_points`).
- :func:`similarity_heatmaps`, :func:`training_curves`,
  :func:`compatibility_matrix_figure`, :func:`partial_backfill_curve` (data from the
  pure :func:`partial_backfill`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ._validate import as_features, as_labels

__all__ = [
    "PALETTE", "class_colors", "three_spaces_figure", "pseudo_old_trace_updates",
    "update_pseudo_old", "result_blocks", "preferred_method", "three_spaces_from_result",
    "pareto_front", "tradeoff_points", "tradeoff_figure", "similarity_heatmaps",
    "training_curves", "compatibility_matrix_figure", "partial_backfill",
    "partial_backfill_curve", "trace_uid",
]

PALETTE: tuple[str, ...] = tuple(qualitative.Dark24 + qualitative.Light24)
SPACE_BLOCKS = ("old_features", "new_features", "old_protos", "pseudo_old_protos", "new_protos")
_PERTURBATION_METHODS = ("ndpp", "odpp")
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


def _scatter(coords: np.ndarray, **kw) -> go.Scatter | go.Scatter3d:
    return (go.Scatter3d if coords.shape[1] == 3 else go.Scatter)(**_xyz(coords), **kw)


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
        ``pseudo_old_arrows`` (one NaN-separated polyline), ``pseudo_old_protos``;
        panel 3 ``new_features``, ``new_protos``.
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


def _keep_uids(fig: go.Figure) -> go.Figure:
    """Copy each trace's uid into ``meta``: ``go.FigureWidget`` replaces uids, keeps meta."""
    for trace in fig.data:
        trace.meta = trace.uid
    return fig


def preferred_method(methods: Sequence[str]) -> str:
    """The method to show: ``ndpp``, else ``odpp``, else the first non-independent one."""
    methods = list(methods)
    for name in (*_PERTURBATION_METHODS, *(m for m in methods if m != "independent"), "independent"):
        if name in methods:
            return name
    raise ValueError("no trained new model to show; the experiment has no methods")


def result_blocks(result, method: str, *, max_points: int | None = 2000, seed: int = 0):
    """Embeddings to project for one method of an :class:`~bclviz.experiment.ExperimentResult`.

    Returns ``(blocks, labels)``: ``blocks`` maps :data:`SPACE_BLOCKS` to numpy arrays
    (old/new model features of ``result.data.query.x``, at most ``max_points`` rows drawn
    with ``seed``; the method's ``old_protos``, ``pseudo_old_protos``, ``new_protos``)
    and ``labels`` holds the classes of the feature rows.
    """
    from .train import embed

    if method not in result.new:
        raise ValueError(f"method {method!r} was not trained; available: {sorted(result.new)}")
    x, y = result.data.query.x, np.asarray(result.data.query.y)
    if max_points is not None and x.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_points, replace=False))
        x, y = x[keep], y[keep]
    state = result.new[method].state
    blocks = {
        "old_features": embed(result.old.model, x).numpy(),
        "new_features": embed(result.new[method].model, x).numpy(),
        "old_protos": state["old_protos"].numpy(),
        "pseudo_old_protos": state["pseudo_old"].numpy(),
        "new_protos": state["new_protos"].numpy(),
    }
    return blocks, y


def three_spaces_from_result(
    result, method: str | None = None, *, projection="auto", n_components: int = 2,
    random_state: int = 0, max_points: int | None = 2000,
) -> go.Figure:
    """:func:`three_spaces_figure` of a trained experiment.

    Parameters
    ----------
    result : ExperimentResult
    method : str, optional
        Key of ``result.new``; default :func:`preferred_method`.
    projection : {"auto", "umap", "pca", "raw"} or SpaceProjection
        A method name fits (or reuses, via :func:`bclviz.projection.project_spaces`)
        one joint projection; an unfitted ``SpaceProjection`` is fitted to the blocks;
        a fitted one places them with ``transform``.
    n_components : int, default 2
        2 or 3 (3-D panels) when ``projection`` is a method name.
    random_state : int, default 0
        Seed of the projection and of the feature subsample.
    max_points : int or None, default 2000
        At most this many query items are drawn (``None``: all).
    """
    from .projection import SpaceProjection, project_spaces

    method = preferred_method(list(result.new)) if method is None else method
    blocks, labels = result_blocks(result, method, max_points=max_points, seed=random_state)
    if isinstance(projection, SpaceProjection):
        if hasattr(projection, "embedding_"):
            coords = {b: projection.transform(v) for b, v in blocks.items()}
        else:
            coords = projection.fit(blocks).embedding_
    else:
        proj = project_spaces(blocks, method=projection, n_components=n_components,
                              random_state=random_state)
        projection, coords = proj, proj.embedding_
    fig = three_spaces_figure(coords, labels)
    fig.update_layout(title=f"{method}: old | pseudo-old | new ({projection.method_})")
    return fig


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


def tradeoff_points(results: Mapping, *, metric: str | None = None, include_references: bool = True) -> list[dict]:
    """Points for :func:`tradeoff_figure` from a ``results.json`` dict.

    One point per method (``label`` and ``method`` = its name, ``settings``), plus the
    ``independent`` model and the ``old`` model (self = cross = M(old, old)) when
    ``include_references``. ``metric`` defaults to ``f"mAP@{results['k']}"``.
    """
    metric = f"mAP@{results['k']}" if metric is None else metric
    if metric not in results["old"]["self"]:
        raise ValueError(f"metric must be one of {sorted(results['old']['self'])}, got {metric!r}")
    records = dict(results["methods"])
    points = [
        _with_errors(dict(label=name, method=name, self=rec["self"][metric], cross=rec["cross"][metric],
                          settings=rec.get("settings", {})), rec, metric)
        for name, rec in records.items()
    ]
    if include_references:
        ind, old = results["independent"], results["old"]["self"][metric]
        points.append(_with_errors(dict(label="independent", method="independent", self=ind["self"][metric],
                                        cross=ind["cross"][metric], settings={}), ind, metric))
        points.append(dict(label="old", method="old", self=old, cross=old, settings={}))
    return points


def sweep_points(records: Sequence[Mapping], *, metric: str = "mAP@100") -> list[dict]:
    """Points for :func:`tradeoff_figure` from sweep records (:func:`bclviz.sweep.run_sweep`)."""
    return [_with_errors(dict(label=r["label"], method=r.get("method", r["label"]), self=r["self"][metric],
                              cross=r["cross"][metric], settings=r.get("settings", {})), r, metric)
            for r in records]


def _with_errors(point: dict, record: Mapping, metric: str) -> dict:
    """Add ``self_err``/``cross_err`` (95% half-widths over seeds) when the record has them."""
    for side in ("self", "cross"):
        half = (record.get(f"{side}_ci") or {}).get(metric)
        if half is not None:
            point[f"{side}_err"] = half
    return point


def _hover(p: Mapping) -> str:
    settings = "<br>".join(f"{k} = {v}" for k, v in (p.get("settings") or {}).items())
    return f"<b>{p.get('label', p.get('method', ''))}</b>" + (f"<br>{settings}" if settings else "")


def tradeoff_figure(
    points: Sequence[Mapping], *, old_old: float, metric: str = "mAP@100", title: str | None = None,
) -> go.Figure:
    """Self-test (y) vs cross-test (x), one marker per point, grouped by ``method``.

    Parameters
    ----------
    points : sequence of mapping
        Fields ``label``, ``method``, ``self``, ``cross``; optional ``self_err``,
        ``cross_err`` (error bars) and ``settings`` (shown on hover).
    old_old : float
        ``M(old, old)``; the vertical line ``x = old_old`` is the compatibility
        criterion (compatible strictly to its right).

    Returns
    -------
    go.Figure
        One trace per method (uid ``trace_uid("points", method)``), the criterion line (uid
        ``"criterion"``) and the Pareto front (uid ``"pareto"``, sorted by cross); uids
        are copied into ``meta``.
    """
    if not points:
        raise ValueError("points is empty; give at least one {'self', 'cross', ...} mapping")
    old_old = float(old_old)
    if not math.isfinite(old_old):
        raise ValueError(f"old_old must be a finite number, got {old_old!r}")
    fig = go.Figure()
    methods = list(dict.fromkeys(str(p.get("method", p.get("label", ""))) for p in points))
    for i, m in enumerate(methods):
        group = [p for p in points if str(p.get("method", p.get("label", ""))) == m]
        err = {ax: dict(type="data", array=[float(p.get(f"{ax}_err", 0.0)) for p in group])
               for ax in ("self", "cross") if any(f"{ax}_err" in p for p in group)}
        fig.add_trace(go.Scatter(
            x=[float(p["cross"]) for p in group], y=[float(p["self"]) for p in group],
            mode="markers", name=m, uid=trace_uid("points", m), text=[_hover(p) for p in group],
            hovertemplate="%{text}<br>cross %{x:.4f}<br>self %{y:.4f}<extra></extra>",
            marker=dict(size=11, color=PALETTE[i % len(PALETTE)]),
            error_x=err.get("cross"), error_y=err.get("self"),
        ))
    ys = [float(p["self"]) for p in points if math.isfinite(float(p["self"]))] or [0.0, 1.0]
    lo, hi = min(ys), max(ys)
    pad = 0.05 * (hi - lo or 1.0)
    fig.add_trace(go.Scatter(x=[old_old, old_old], y=[lo - pad, hi + pad], mode="lines", uid="criterion",
                             name=f"criterion: cross = M(old, old) = {old_old:.3f}", hoverinfo="name",
                             line=dict(color="gray", dash="dash")))
    front = sorted(pareto_front(points), key=lambda i: float(points[i]["cross"]))
    fig.add_trace(go.Scatter(
        x=[float(points[i]["cross"]) for i in front], y=[float(points[i]["self"]) for i in front],
        mode="lines+markers", uid="pareto", name="Pareto front", text=[_hover(points[i]) for i in front],
        hovertemplate="%{text}<extra>Pareto front</extra>",
        line=dict(color="black", width=1), marker=dict(size=16, symbol="circle-open", color="black"),
    ))
    fig.add_annotation(x=old_old, y=hi + pad, text="compatible &#8594;", showarrow=False, xanchor="left")
    fig.update_layout(title=title or f"self-test vs cross-test ({metric})",
                      xaxis_title=f"cross-test {metric}: M(new, old)",
                      yaxis_title=f"self-test {metric}: M(new, new)")
    return _keep_uids(fig)


def similarity_heatmaps(
    old_protos, pseudo_old_protos, new_protos, *,
    titles: Sequence[str] = ("old", "pseudo-old", "new"),
) -> go.Figure:
    """Cosine similarities ``P P^T`` of three (C, d) prototype sets, one colour scale [-1, 1]."""
    p = _rows(old_protos, "old_protos")
    sets = [p, _rows(pseudo_old_protos, "pseudo_old_protos", dim=p.shape[1]),
            _rows(new_protos, "new_protos", dim=p.shape[1])]
    if {s.shape[0] for s in sets} != {p.shape[0]}:
        raise ValueError(f"prototype sets must have the same number of rows, got {[s.shape[0] for s in sets]}")
    fig = make_subplots(rows=1, cols=3, subplot_titles=list(titles), horizontal_spacing=0.05)
    for col, (s, t) in enumerate(zip(sets, titles), start=1):
        u = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-300)
        fig.add_trace(go.Heatmap(z=u @ u.T, coloraxis="coloraxis", name=t, uid=trace_uid("similarity", t),
                                 hovertemplate="class %{y} vs %{x}: %{z:.3f}<extra></extra>"), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(coloraxis=dict(colorscale="RdBu_r", cmin=-1, cmax=1),
                      title="prototype cosine similarity")
    return fig


_CURVES = (
    ("loss", ("loss", "loss_cls", "loss_comp")),
    ("perturbation norm", ("delta_norm_mean", "delta_norm_max")),
    ("crowding", ("crowding_old", "crowding_pseudo_old", "crowding_new")),
)


def training_curves(history: Sequence[Mapping] | Mapping[str, Sequence[Mapping]]) -> go.Figure:
    """Losses, perturbation norms and crowding per epoch (``TrainResult.history``).

    A mapping run name -> history draws one colour per run (dash style per quantity);
    keys a history lacks are skipped. Trace uids are ``trace_uid(run, key)`` (just the key for a
    single history); x is each record's ``epoch`` (else its index).
    """
    runs = dict(history) if isinstance(history, Mapping) else {"": list(history)}
    if not runs or any(len(h) == 0 for h in runs.values()):
        raise ValueError("history is empty; give TrainResult.history (a list of per-epoch dicts)")
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for t, _ in _CURVES])
    dashes = ("solid", "dash", "dot")
    for r, (run, recs) in enumerate(runs.items()):
        x = [rec.get("epoch", i) for i, rec in enumerate(recs)]
        for col, (_, keys) in enumerate(_CURVES, start=1):
            for j, key in enumerate(k for k in keys if any(k in rec for rec in recs)):
                color = PALETTE[(r if run else j) % len(PALETTE)]
                fig.add_trace(go.Scatter(
                    x=x, y=[float(rec.get(key, np.nan)) for rec in recs], mode="lines+markers",
                    name=f"{run}: {key}" if run else key, uid=trace_uid(run, key), legendgroup=run or key,
                    line=dict(color=color, dash=dashes[j % 3] if run else "solid"),
                ), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    return fig


def compatibility_matrix_figure(matrix, labels: Sequence[str] | None = None, *, metric: str = "mAP@100") -> go.Figure:
    """Heatmap of a lower-triangular compatibility matrix, values written in the cells.

    Rows are query models, columns gallery models; NaN cells (above the diagonal) stay
    blank. The title gives AC (:func:`bclviz.evaluation.average_compatibility`) when the
    matrix has at least two models.
    """
    from .evaluation import average_compatibility

    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
        raise ValueError(f"matrix must be square (T, T), got shape {m.shape}")
    labels = [f"model {t}" for t in range(m.shape[0])] if labels is None else [str(v) for v in labels]
    if len(labels) != m.shape[0] or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be {m.shape[0]} distinct names, got {labels}")
    text = [["" if math.isnan(v) else f"{v:.3f}" for v in row] for row in m]
    title = f"compatibility matrix ({metric})"
    if m.shape[0] >= 2:
        title += f", AC = {average_compatibility(m):.3f}"
    fig = go.Figure(go.Heatmap(z=m, x=labels, y=labels, text=text, texttemplate="%{text}", uid="matrix",
                               colorscale="Viridis", hoverongaps=False,
                               hovertemplate="query %{y} / gallery %{x}: %{z:.4f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="gallery model", yaxis_title="query model",
                      yaxis=dict(autorange="reversed"))
    return fig


def partial_backfill(
    query_new, query_labels, gallery_old, gallery_new, gallery_labels, *,
    fractions: Sequence[float] = tuple(np.linspace(0, 1, 11)), seed: int = 0, k: int = 100,
    exclude_self: bool = False,
) -> list[dict]:
    """Retrieval as a growing random share of the gallery is re-embedded by the new model.

    For each fraction ``f`` the first ``round(f * n_g)`` items of one permutation drawn
    with ``np.random.default_rng(seed)`` use ``gallery_new`` rows, the rest
    ``gallery_old`` rows (the backfilled sets are nested); queries are ``query_new``.
    ``f = 0`` is the cross-test ``M(n, o)``, ``f = 1`` the self-test ``M(n, n)``.

    Returns
    -------
    list of dict
        Per fraction: ``fraction``, ``n_backfilled`` and the metrics of
        :func:`bclviz.evaluation.evaluate`.
    """
    from .evaluation import evaluate

    g_old = _rows(gallery_old, "gallery_old")
    g_new = _rows(gallery_new, "gallery_new", dim=g_old.shape[1])
    if g_new.shape != g_old.shape:
        raise ValueError(f"gallery_old and gallery_new must have the same shape, got {g_old.shape} and {g_new.shape}")
    fracs = [float(f) for f in fractions]
    bad = [f for f in fracs if not 0.0 <= f <= 1.0]
    if not fracs or bad:
        raise ValueError(f"fractions must be a non-empty sequence of values in [0, 1], got {list(fractions)}")
    perm = np.random.default_rng(seed).permutation(g_old.shape[0])
    records = []
    for f in fracs:
        m = int(round(f * g_old.shape[0]))
        mixed = g_old.copy()
        mixed[perm[:m]] = g_new[perm[:m]]
        scores = evaluate(query_new, query_labels, mixed, gallery_labels, k=k, exclude_self=exclude_self)
        records.append(dict(fraction=f, n_backfilled=m, **scores))
    return records


def partial_backfill_curve(
    records: Sequence[Mapping] | Mapping[str, Sequence[Mapping]], *, metric: str = "mAP@100",
    references: Mapping[str, float] | None = None,
) -> go.Figure:
    """``metric`` against backfilled fraction (one line per method when a mapping).

    ``references`` (e.g. ``{"M(old, old)": 0.46}``) are drawn as horizontal dashed lines.
    """
    runs = dict(records) if isinstance(records, Mapping) else {"": list(records)}
    fig = go.Figure()
    for i, (run, recs) in enumerate(runs.items()):
        if not recs or metric not in recs[0]:
            raise ValueError(f"records of {run or 'the run'} lack metric {metric!r}")
        fig.add_trace(go.Scatter(x=[r["fraction"] for r in recs], y=[r[metric] for r in recs],
                                 mode="lines+markers", name=run or metric, uid=trace_uid("backfill", run),
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    for name, value in (references or {}).items():
        fig.add_trace(go.Scatter(x=[0, 1], y=[value, value], mode="lines", name=name, uid=trace_uid("reference", name),
                                 line=dict(dash="dash", color="gray")))
    fig.update_layout(title=f"partial backfill ({metric})", xaxis_title="fraction of gallery re-embedded",
                      yaxis_title=metric)
    return fig
