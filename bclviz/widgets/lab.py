"""The training lab: train the explorer's current setting for real, see where it lands.

"Train this setting" trains and evaluates one new model with the explorer's method,
eps, k and gamma in a background thread (the sliders stay usable), with a per-epoch
progress bar; the measured point joins the self-test vs cross-test trade-off plot next
to the experiment's methods, the criterion line ``cross = M(old, old)`` and the Pareto
front. "Export config" writes the current setting as a run config for
``bclviz train --config``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..config import MethodConfig
from ..sweep import (
    cache_key, export_config, load_cached_record, make_record, old_baseline, setting_label,
)

__all__ = ["train_setting", "TrainingLab"]


def train_setting(data, old, cfg, method: MethodConfig, *, callback=None, progress: bool = False, scorer=None):
    """Train and score one setting (:func:`bclviz.pipeline.train_and_score`).

    Kept as a module-level name so that tests can count the lab's training runs.
    """
    from ..pipeline import train_and_score
    from ..scoring import Scorer

    scorer = Scorer(data, k=cfg.k) if scorer is None else scorer
    return train_and_score(cfg, data, old, method, scorer, progress=progress, callback=callback)


def _row(record: dict, key: str) -> str:
    mark = "yes" if record["compatible"] else "no"
    return (f"<tr><td>{record['label']}</td><td>{record['self'][key]:.4f}</td>"
            f"<td>{record['cross'][key]:.4f}</td><td>{mark}</td><td>{record['seconds']:.1f}</td></tr>")


class TrainingLab:
    """Train explorer settings in the background and plot where they land.

    Parameters
    ----------
    result : the trained :class:`~bclviz.experiment.ExperimentResult` (data, old model,
        and the methods drawn as reference points).
    cfg : the :class:`~bclviz.experiment.ExperimentConfig` that produced ``result``
        (models, training, seed, mAP cut-off); a trained setting takes the fields other
        than eps/k/gamma from ``cfg.methods`` of the same name, when present.
    explorer : where the setting comes from; default a new
        :class:`~bclviz.widgets.PerturbationExplorer` (PCA), shown above the lab.
    cache_dir : optional sweep cache folder (:func:`bclviz.sweep.run_sweep`): a setting
        found there is read instead of retrained, and each trained one is stored.

    Attributes
    ----------
    widget, train_button, progress, status, tradeoff, records_html, export_path,
    export_button : the widgets; ``tradeoff`` is a ``FigureWidget``.
    traces : its traces by :func:`~bclviz.plots.tradeoff_figure` uid, plus
        ``trace_uid("points", "trained")`` (the points trained here).
    records : list of sweep records (:func:`bclviz.sweep.make_record`) trained here.
    last_result : the :class:`~bclviz.train.TrainResult` of the latest run (None if cached).
    error : the exception of the latest run, if it failed.
    """

    def __init__(self, result, cfg, *, explorer=None, cache_dir: str | os.PathLike | None = None) -> None:
        import ipywidgets as w
        import plotly.graph_objects as go

        from ..plots import trace_uid, tradeoff_figure, tradeoff_points
        from ..scoring import Scorer
        from .explorer import PerturbationExplorer

        own_explorer = explorer is None
        self.explorer = PerturbationExplorer(result, projection="pca") if own_explorer else explorer
        self.result, self.cfg = result, cfg
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.scorer = Scorer(result.data, k=cfg.k)
        self.key = self.scorer.key
        old_self = result.results.get("old", {}).get("self", {})
        self.m_oo = (old_self[self.key] if self.key in old_self
                     else old_baseline(result.data, result.old, k=cfg.k, scorer=self.scorer))
        self._points = tradeoff_points(result.results, metric=self.key) if self.key in old_self else []
        self.records: list[dict] = []
        self.last_result = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

        base = self._points or [dict(label="old", method="old", self=self.m_oo, cross=self.m_oo)]
        figure = tradeoff_figure(base, old_old=self.m_oo, metric=self.key)
        figure.add_trace(go.Scatter(
            x=[], y=[], mode="markers", uid=trace_uid("points", "trained"), name="trained here", text=[],
            hovertemplate="%{text}<br>cross %{x:.4f}<br>self %{y:.4f}<extra></extra>",
            marker=dict(size=13, symbol="star", color="crimson", line=dict(color="black", width=1)),
        ))
        self.tradeoff = go.FigureWidget(figure)
        # FigureWidget gives its traces fresh uids; keep the builder's names by position
        self.traces = {trace.uid: widget_trace for trace, widget_trace in zip(figure.data, self.tradeoff.data)}
        self.train_button = w.Button(description="Train this setting", icon="play", button_style="primary")
        self.progress = w.IntProgress(value=0, min=0, max=cfg.new_train.epochs, description="epochs")
        self.status = w.HTML("")
        self.records_html = w.HTML("")
        self.export_path = w.Text(value=f"{cfg.dataset}-run.yaml", description="config file")
        self.export_button = w.Button(description="Export config", icon="download")
        self.train_button.on_click(self._on_train_click)
        self.export_button.on_click(self._on_export_click)
        lab = [w.HBox([self.train_button, self.progress]), self.status, self.tradeoff,
               self.records_html, w.HBox([self.export_path, self.export_button])]
        self.widget = w.VBox(([self.explorer.widget] if own_explorer else []) + lab)

    # -- settings -------------------------------------------------------------------
    def current_method(self) -> MethodConfig:
        """The explorer's setting, other fields from ``cfg.methods`` of the same name."""
        name = self.explorer.params["method"]
        base = next((m for m in self.cfg.methods if m.name == name), None)
        return self.explorer.method_config(base)

    def export_config(self, path: str | os.PathLike | None = None) -> Path:
        """Write the current setting as a YAML run config (default path: the text box)."""
        return export_config(self.export_path.value if path is None else path, self.cfg, self.current_method())

    # -- training -------------------------------------------------------------------
    def train(self) -> bool:
        """Start training the current setting in the background.

        Returns ``False`` (and starts nothing) while a run is in progress.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            method = self.current_method()
            self.error = None
            self.train_button.disabled = True
            self.progress.value, self.progress.bar_style = 0, ""
            self.status.value = f"training <b>{setting_label(method)}</b> ..."
            self._thread = threading.Thread(target=self._run, args=(method,), name="bclviz-lab", daemon=True)
            self._thread.start()
        except BaseException:
            self.train_button.disabled = False
            self._lock.release()
            raise
        return True

    def _on_train_click(self, _button=None) -> None:
        self.train()

    def _on_epoch(self, record: dict) -> None:
        self.progress.value = min(record["epoch"] + 1, self.progress.max)
        self.status.value = (f"epoch {record['epoch'] + 1}/{self.progress.max}: loss {record['loss']:.3f}, "
                             f"crowding pseudo-old {record['crowding_pseudo_old']:.3f}")

    def _run(self, method: MethodConfig) -> None:
        from ..io import write_json

        try:
            path = None
            if self.cache_dir is not None:
                path = self.cache_dir / f"{cache_key(self.result.data, self.cfg, method)}.json"
            record = None if path is None else load_cached_record(path)
            self.last_result = None
            if record is None:
                self.last_result, raw = train_setting(self.result.data, self.result.old, self.cfg, method,
                                                      callback=self._on_epoch, scorer=self.scorer)
                record = make_record(method, raw, m_oo=self.m_oo, k=self.cfg.k, key=self.key)
                if path is not None:
                    write_json(path, record)
            self.records.append(record)
            self._show(record)
            self.progress.value, self.progress.bar_style = self.progress.max, "success"
        except BaseException as err:  # shown in the widget; wait() raises it
            self.error = err
            self.progress.bar_style = "danger"
            self.status.value = f"<span style='color:crimson'>training failed: {err!r}</span>"
        finally:
            self.train_button.disabled = False
            self._lock.release()

    def _show(self, record: dict) -> None:
        from ..plots import pareto_front, sweep_points, trace_uid

        trained = self.traces[trace_uid("points", "trained")]
        points = self._points + sweep_points(self.records, metric=self.key)
        front = sorted(pareto_front(points), key=lambda i: points[i]["cross"])
        with self.tradeoff.batch_update():
            trained.x = [r["cross"][self.key] for r in self.records]
            trained.y = [r["self"][self.key] for r in self.records]
            trained.text = [r["label"] for r in self.records]
            self.traces["pareto"].x = [points[i]["cross"] for i in front]
            self.traces["pareto"].y = [points[i]["self"] for i in front]
            self.traces["pareto"].text = [points[i]["label"] for i in front]
        head = "<tr><th>setting</th><th>self</th><th>cross</th><th>compatible</th><th>seconds</th></tr>"
        self.records_html.value = f"<table>{head}{''.join(_row(r, self.key) for r in self.records)}</table>"
        verdict = "compatible" if record["compatible"] else "not compatible"
        self.status.value = (f"done: <b>{record['label']}</b> self {self.key} {record['self'][self.key]:.4f}, "
                             f"cross {record['cross'][self.key]:.4f} ({verdict}; M(old, old) = {self.m_oo:.4f})")

    def wait(self, timeout: float | None = None) -> dict | None:
        """Wait for the running training; return the latest record (re-raise its error).

        Raises ``TimeoutError`` when the run is still going after ``timeout`` seconds.
        """
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"training is still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.records[-1] if self.records else None

    def _on_export_click(self, _button=None) -> None:
        try:
            path = self.export_config()
        except (OSError, ValueError) as err:
            self.status.value = f"<span style='color:crimson'>export failed: {err}</span>"
        else:
            self.status.value = f"wrote {path}; run it with <code>bclviz train --config {path}</code>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
