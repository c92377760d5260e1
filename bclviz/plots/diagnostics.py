"""Diagnostics: similarity heatmaps, training curves, compatibility matrix, partial backfill."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._common import PALETTE, _rows, trace_uid


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
    from ..evaluation import average_compatibility

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
    from ..evaluation import evaluate

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
