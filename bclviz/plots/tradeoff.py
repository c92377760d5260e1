"""Self-test vs cross-test: the trade-off figure, its points and the Pareto front."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from ..pareto import pareto_front
from ._common import PALETTE, _keep_uids, trace_uid

__all__ = ["pareto_front", "tradeoff_points", "sweep_points", "tradeoff_figure"]


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
    tax: Mapping | None = None,
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
    tax : mapping, optional
        A compatibility-tax record (:func:`bclviz.stats.compatibility_tax`,
        ``results["tax"]``). When it holds a value and ``points`` has an
        ``independent`` and a ``proto`` point, a dotted segment joins the two (uid
        ``"tax"``), named and annotated with the tax and its interval.

    Returns
    -------
    go.Figure
        One trace per method (uid ``trace_uid("points", method)``), the criterion line (uid
        ``"criterion"``), the Pareto front (uid ``"pareto"``, sorted by cross) and, with
        ``tax``, the tax segment (uid ``"tax"``); uids are copied into ``meta``.
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
    _add_tax(fig, points, tax)
    fig.update_layout(title=title or f"self-test vs cross-test ({metric})",
                      xaxis_title=f"cross-test {metric}: M(new, old)",
                      yaxis_title=f"self-test {metric}: M(new, new)")
    return _keep_uids(fig)


def _add_tax(fig: go.Figure, points: Sequence[Mapping], tax: Mapping | None) -> None:
    """The segment from the ``independent`` point to the ``proto`` point, labelled with the tax."""
    if not tax or tax.get("tax") is None:
        return
    ends = {p.get("label"): p for p in points if p.get("label") in ("independent", "proto")}
    if len(ends) < 2:
        return
    from ..readouts import format_tax

    (x0, y0), (x1, y1) = ((float(ends[n]["cross"]), float(ends[n]["self"])) for n in ("independent", "proto"))
    text = f"compatibility tax ({tax.get('metric', '')}): {format_tax(tax, plus_minus='&plusmn;')}"
    fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", uid="tax", name=text, hoverinfo="name",
                             line=dict(color="firebrick", dash="dot", width=2)))
    fig.add_annotation(x=(x0 + x1) / 2, y=max(y0, y1), text=f"tax {format_tax(tax, plus_minus='&plusmn;')}",
                       showarrow=False, yanchor="bottom", font=dict(color="firebrick"))
