"""The Pareto front growing as trials finish: a thin view over :func:`bclviz.plots.tradeoff_figure`.

:class:`ParetoMonitor` draws reference points (e.g. an experiment's methods), the
criterion line ``cross = M(old, old)`` and the front, then takes sweep records
(:func:`bclviz.sweep.run_sweep`'s ``callback``, the training lab) and redraws their
trace (error bars: 95% intervals over seeds) and the front over everything. Clicking a
record's point selects it (``on_select``), e.g. to export its run config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

__all__ = ["ParetoMonitor"]


def _errors(points: Sequence[Mapping], side: str) -> dict:
    values = [float(p.get(f"{side}_err", 0.0)) for p in points]
    return dict(type="data", array=values, visible=any(v > 0 for v in values))


class ParetoMonitor:
    """Self-test vs cross-test of sweep records, updated in place as they arrive.

    Parameters
    ----------
    old_old : ``M(old, old)`` on ``metric`` (the criterion line).
    metric : the metric on both axes, e.g. ``"mAP@100"``.
    references : points drawn from the start (:func:`bclviz.plots.tradeoff_points`);
        default the old model's point.
    tax : a compatibility-tax record drawn between ``independent`` and ``proto`` when
        both are references (:func:`bclviz.plots.tradeoff_figure`).
    name, uid : legend name and uid suffix of the records' trace (uid ``points-<uid>``).
    on_select : called with a record when its point is clicked (:meth:`select`).

    Attributes
    ----------
    figure : the ``go.FigureWidget``; ``traces``: its traces by uid (``criterion``,
        ``pareto``, ``points-<method>`` of the references, ``points-<uid>``).
    records : the records shown; ``selected``: the record chosen last (or None).
    """

    def __init__(self, *, old_old: float, metric: str = "mAP@100", references: Sequence[Mapping] = (),
                 tax: Mapping | None = None, name: str = "sweep", uid: str = "sweep",
                 on_select: Callable[[dict], None] | None = None) -> None:
        import plotly.graph_objects as go

        from ..plots import trace_uid, tradeoff_figure

        self.old_old, self.metric, self.on_select = float(old_old), metric, on_select
        self.references = list(references) or [dict(label="old", method="old", self=old_old, cross=old_old)]
        self.records: list[dict] = []
        self.selected: dict | None = None
        figure = tradeoff_figure(self.references, old_old=old_old, metric=metric, tax=tax)
        self.uid = trace_uid("points", uid)
        figure.add_trace(go.Scatter(
            x=[], y=[], mode="markers", uid=self.uid, meta=self.uid, name=name, text=[],
            hovertemplate="%{text}<br>cross %{x:.4f}<br>self %{y:.4f}<extra></extra>",
            marker=dict(size=13, symbol="star", color="crimson", line=dict(color="black", width=1)),
        ))
        self.figure = go.FigureWidget(figure)
        # FigureWidget gives its traces fresh uids; keep the builder's names by position
        self.traces = {trace.uid: widget for trace, widget in zip(figure.data, self.figure.data)}
        self.traces[self.uid].on_click(self._clicked)

    def update(self, records: Sequence[dict]) -> None:
        """Show ``records`` (sweep records) and redraw the front over them and the references."""
        from ..pareto import pareto_front
        from ..plots import sweep_points

        self.records = list(records)
        points = sweep_points(self.records, metric=self.metric)
        everything = self.references + points
        front = sorted(pareto_front(everything), key=lambda i: everything[i]["cross"])
        ys = [float(p["self"]) for p in everything]
        pad = 0.05 * ((max(ys) - min(ys)) or 1.0)
        with self.figure.batch_update():
            trace = self.traces[self.uid]
            trace.x = [p["cross"] for p in points]
            trace.y = [p["self"] for p in points]
            trace.text = [p["label"] for p in points]
            trace.error_x = _errors(points, "cross")
            trace.error_y = _errors(points, "self")
            self.traces["pareto"].x = [everything[i]["cross"] for i in front]
            self.traces["pareto"].y = [everything[i]["self"] for i in front]
            self.traces["pareto"].text = [everything[i]["label"] for i in front]
            self.traces["criterion"].y = [min(ys) - pad, max(ys) + pad]

    def front_labels(self) -> list[str]:
        """Labels on the drawn front, by cross-test."""
        return list(self.traces["pareto"].text)

    def select(self, index: int) -> dict:
        """Choose record ``index`` (what a click on its point does); returns it."""
        self.selected = self.records[index]
        if self.on_select is not None:
            self.on_select(self.selected)
        return self.selected

    def _clicked(self, _trace, points, _state) -> None:
        if points.point_inds:
            self.select(points.point_inds[0])

    def _repr_mimebundle_(self, **kwargs):
        return self.figure._repr_mimebundle_(**kwargs)
