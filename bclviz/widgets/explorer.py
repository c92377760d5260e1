"""The perturbation explorer: move eps / k / gamma, watch the pseudo-old space answer.

A thin view over the pure :func:`explorer_state`: every control change recomputes the
perturbation with :mod:`bclviz.perturb`, places the pseudo-old prototypes with the
projection fitted once at construction, and updates only the pseudo-old trace, the
arrow trace and the proxies text. A second line shows, from the experiment's results, the
compatibility tax and the headroom of the independent model (what perturbation can win,
before any tuning). :meth:`PerturbationExplorer.from_embeddings` builds the same explorer
over embeddings of your own models (:func:`bclviz.features.load`), with their retrieval
baseline and headroom on that line. Constructing the widget displays nothing; Jupyter
renders it through :meth:`PerturbationExplorer._repr_mimebundle_`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Literal

import numpy as np
import torch

from .. import methods
from ..config import MethodConfig
from ..proxies import EXACT_CLASSES, LiveProxies, format_headroom
from ._background import LatestWorker
from .preview import PerturbationMethod, _check_method, default_k, explorer_state, format_proxies, state_of

__all__ = [
    "PerturbationMethod", "default_k", "explorer_state", "format_proxies", "format_readouts",
    "format_inspection_readouts",
    "PerturbationExplorer", "measure_latency",
]

def format_readouts(results: dict) -> str:
    """The explorer's line of experiment readouts (HTML): the compatibility tax and the
    headroom of the independent model (``results["tax"]``, ``results["headroom"]``);
    empty when the results hold neither."""
    from ..readouts import format_tax

    parts = []
    if results.get("tax"):
        parts.append(f"compatibility tax {format_tax(results['tax'], plus_minus='&plusmn;')}")
    if results.get("headroom"):
        parts.append(f"headroom of the independent model {format_headroom(results['headroom'])}")
    return ("before tuning: " + " &nbsp;|&nbsp; ".join(parts)) if parts else ""


def format_inspection_readouts(results: dict) -> str:
    """The explorer's line of readouts for loaded embeddings (HTML): the retrieval baseline
    of the two embedding sets as they are and the headroom of the new model
    (``results["retrieval"]``, ``results["headroom"]`` of
    :func:`bclviz.inspection.inspect_embeddings`); empty when it holds neither."""
    parts = []
    ret = results.get("retrieval")
    if ret:
        key = ret["metric"]
        parts.append(f"{key} as they are: M(new, new) {ret['new_new'][key]:.3f}, M(new, old) "
                     f"{ret['new_old'][key]:.3f}, M(old, old) {ret['old_old'][key]:.3f}")
    if results.get("headroom"):
        parts.append(f"headroom of the new model {format_headroom(results['headroom'])}")
    return ("before tuning: " + " &nbsp;|&nbsp; ".join(parts)) if parts else ""


def _subsample(data, max_points: int, seed: int):
    n = len(data)
    if n <= max_points:
        return data.x, data.y
    keep = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False)))
    return data.x[keep], data.y[keep]


class PerturbationExplorer:
    """Interactive NDPP/ODPP explorer over a trained experiment, or over loaded embeddings.

    Parameters
    ----------
    result : :class:`~bclviz.experiment.ExperimentResult`
        A trained experiment; its new model ``reference`` provides ``P_o`` and ``P_n``
        (``state["old_protos"]``, ``state["new_protos"]``) and the new features. For
        embeddings of your own models use :meth:`from_embeddings` instead.
    method : initial method, ``"ndpp"`` or ``"odpp"``.
    projection : ``"pca"``, ``"umap"``, ``"raw"`` (d <= 3) or ``"auto"`` (raw for d <= 3,
        else UMAP), fitted once at construction (:func:`bclviz.projection.project_spaces`).
    reference : key of ``result.new``; default ``method`` when trained, else
        :func:`bclviz.plots.preferred_method`.
    eps, k, gamma : initial slider values; default the trained setting of ``method``
        (or :class:`~bclviz.config.MethodConfig` defaults, k per method).
    max_points, seed : at most this many feature rows are drawn and used for the
        recognisability proxy (old features of ``result.data.new_train``), drawn with ``seed``.
    background : compute ODPP in a worker thread and draw a provisional state meanwhile
        (:meth:`update`); ``"auto"`` (default) above :data:`bclviz.proxies.EXACT_CLASSES`
        classes, where 30 Adam steps take longer than a slider move should.

    Attributes
    ----------
    widget : the ``ipywidgets.VBox`` shown in Jupyter.
    fig : the ``plotly.graph_objects.FigureWidget`` (traces of
        :func:`bclviz.plots.three_spaces_figure`).
    traces : the figure's traces by their :func:`~bclviz.plots.three_spaces_figure` uid
        (``FigureWidget`` renames uids; these keep the builder's names).
    projection : the fitted :class:`~bclviz.projection.SpaceProjection`.
    method_toggle, eps_slider, k_slider, gamma_slider, proxies_html : the controls.
    readouts_html : :func:`format_readouts` of ``result.results`` (fixed).
    state : the latest :func:`explorer_state` result drawn, with its ``"config"``
        (:class:`~bclviz.config.MethodConfig`); ``"provisional": True`` while a background
        ODPP computation runs (:attr:`pending`, :meth:`wait`).
    background : whether ODPP is computed in a worker thread.
    error : what the last background computation raised (also shown in the proxies line), or None.
    result, reference : the experiment and the new model shown (``None`` for embeddings).
    old_protos, new_protos, features, labels : what :func:`explorer_state` is called with.
    live : the :class:`~bclviz.proxies.LiveProxies` every update reuses (neighbour lists,
        old crowding, headroom; candidate-list proxies above 2,000 classes), so that an
        update at 10,000 classes computes nothing C x C and only assigns the x/y arrays
        of the pseudo-old traces in one ``batch_update``.
    """

    def __init__(
        self,
        result,
        *,
        method: PerturbationMethod = "ndpp",
        projection: Literal["pca", "umap", "raw", "auto"] = "auto",
        reference: str | None = None,
        eps: float | None = None,
        k: int | None = None,
        gamma: float | None = None,
        max_points: int = 2000,
        seed: int = 0,
        background: bool | Literal["auto"] = "auto",
    ) -> None:
        from ..train import embed
        from ..views import preferred_method, result_blocks

        _check_method(method)
        if reference is None:
            reference = method if method in result.new else preferred_method(list(result.new))
        if reference not in result.new or "old_protos" not in result.new[reference].state:
            raise ValueError(f"reference must name a trained new model; available: {sorted(result.new)}")
        self.result, self.reference = result, reference
        state = result.new[reference].state
        if state["old_protos"].shape[0] < 2:
            raise ValueError(f"the explorer needs at least 2 classes, got {state['old_protos'].shape[0]}")
        x, labels = _subsample(result.data.new_train, max_points, seed)
        blocks, feature_labels = result_blocks(result, reference, max_points=max_points, seed=seed)
        trained = {name: MethodConfig(**rec["settings"])
                   for name, rec in result.results.get("methods", {}).items() if "settings" in rec}
        self._build(state["old_protos"], state["new_protos"], embed(result.old.model, x), labels, blocks,
                    feature_labels, trained=trained, method=method, projection=projection, eps=eps, k=k,
                    gamma=gamma, seed=seed, readouts=format_readouts(result.results),
                    title=f"pseudo-old space of {reference}", background=background)

    @classmethod
    def from_embeddings(
        cls,
        embeddings,
        inspection=None,
        *,
        method: PerturbationMethod | None = None,
        projection: Literal["pca", "umap", "raw", "auto"] = "auto",
        eps: float | None = None,
        k: int | None = None,
        gamma: float | None = None,
        max_points: int = 2000,
        seed: int = 0,
        background: bool | Literal["auto"] = "auto",
    ) -> "PerturbationExplorer":
        """The explorer over embeddings of your own old and new models.

        Parameters
        ----------
        embeddings : :class:`~bclviz.features.Embeddings`
            From :func:`bclviz.features.load`: ``P_o`` and ``P_n`` are the class
            prototypes of its old and new embeddings (:func:`bclviz.inspection.prototypes`).
        inspection : :class:`~bclviz.inspection.Inspection`, optional
            :func:`bclviz.inspection.inspect_embeddings` of ``embeddings``: its prototypes,
            its setting (initial method, eps, k, gamma) and its retrieval baseline and
            headroom (the readouts line). Default: prototypes only (no retrieval).
        method, eps, k, gamma : initial controls; default the inspection's setting, else
            NDPP with the :class:`~bclviz.config.MethodConfig` defaults.
        projection, max_points, seed, background : as in the constructor; the features drawn are
            old and new embeddings of at most ``max_points`` items, the old ones also
            feed the recognisability proxy.
        """
        from ..inspection import inspect_embeddings
        from ..views import embedding_blocks

        if inspection is None:
            name = method or "ndpp"
            _check_method(name)
            base = MethodConfig(name=name, k=k, **({} if eps is None else {"eps": eps}),
                                **({} if gamma is None else {"gamma": gamma}))
            inspection = inspect_embeddings(embeddings, method=base, retrieval_k=None)
        setting = inspection.method
        method = setting.name if method is None else method
        blocks, labels = embedding_blocks(embeddings, inspection, max_points=max_points, seed=seed)
        self = cls.__new__(cls)
        self.result = self.reference = None
        self._build(inspection.old_protos, inspection.new_protos, torch.from_numpy(blocks["old_features"]),
                    torch.from_numpy(labels), blocks, labels, trained={setting.name: setting}, method=method,
                    projection=projection, eps=eps, k=k, gamma=gamma, seed=seed,
                    readouts=format_inspection_readouts(inspection.results),
                    title="pseudo-old space of your embeddings", class_names=embeddings.class_names,
                    background=background)
        return self

    def _build(self, old_protos, new_protos, features, labels, blocks, feature_labels, *, trained, method,
               projection, eps, k, gamma, seed, readouts, title, class_names=None, background="auto") -> None:
        """Fit the projection, make the controls and the figure, draw the first state."""
        import ipywidgets as w
        import plotly.graph_objects as go

        from ..plots import three_spaces_figure
        from ..projection import FIT_ROWS, project_spaces
        from ..views import block_labels

        _check_method(method)
        self.old_protos, self.new_protos = old_protos, new_protos
        num_classes = self.old_protos.shape[0]
        if num_classes < 2:
            raise ValueError(f"the explorer needs at least 2 classes, got {num_classes}")
        self.features, self.labels = features, labels
        self.live = LiveProxies(old_protos, new_protos, features, labels)
        if background not in (True, False, "auto"):
            raise ValueError(f"background must be True, False or 'auto', got {background!r}")
        self.background = num_classes > EXACT_CLASSES if background == "auto" else background
        self.error: BaseException | None = None
        self._last_exact: dict | None = None
        self._lock = threading.RLock()
        self._worker = LatestWorker(self._exact_state, self._deliver, self._failed)
        self.projection = project_spaces(blocks, method=projection, random_state=seed, max_fit_rows=FIT_ROWS,
                                         labels=block_labels(blocks, feature_labels))
        self._old_coords = self.projection.embedding_["old_protos"]
        self.trained = trained
        setting = trained.get(method)
        eps = (setting.eps if setting else MethodConfig.eps) if eps is None else eps
        gamma = (setting.gamma if setting else MethodConfig.gamma) if gamma is None else gamma
        k = ((setting.k if setting else None) or default_k(method)) if k is None else k
        self.method_toggle = w.ToggleButtons(options=[(m.upper(), m) for m in methods.perturbing_methods()],
                                             value=method, description="method")
        self.eps_slider = w.FloatSlider(value=eps, min=0.0, max=1.0, step=0.02, description="eps",
                                        readout_format=".2f")
        self.k_slider = w.IntSlider(value=min(k, num_classes - 1), min=1, max=num_classes - 1,
                                    description="k")
        self.gamma_slider = w.FloatSlider(value=gamma, min=0.0, max=1.0, step=0.01, description="gamma",
                                          disabled="gamma" not in methods.method_class(method).knobs)
        self.proxies_html = w.HTML()
        self.readouts_html = w.HTML(readouts)
        figure = three_spaces_figure(self.projection.embedding_, feature_labels, class_names=class_names)
        figure.update_layout(title=f"{title} ({self.projection.method_})")
        self.fig = go.FigureWidget(figure)
        # FigureWidget gives its traces fresh uids; keep the builder's names by position
        self.traces = {trace.uid: widget_trace for trace, widget_trace in zip(figure.data, self.fig.data)}
        self.state: dict = {}
        self.update()
        for control in (self.method_toggle, self.eps_slider, self.k_slider, self.gamma_slider):
            control.observe(self._on_change, names="value")
        self.widget = w.VBox([
            w.HBox([self.method_toggle, self.eps_slider]),
            w.HBox([self.k_slider, self.gamma_slider]),
            self.proxies_html,
            self.readouts_html,
            self.fig,
        ])

    @property
    def params(self) -> dict:
        """Current ``method``, ``eps``, ``k`` and ``gamma``."""
        return dict(method=self.method_toggle.value, eps=float(self.eps_slider.value),
                    k=int(self.k_slider.value), gamma=float(self.gamma_slider.value))

    def method_config(self, base: MethodConfig | None = None) -> MethodConfig:
        """The current setting as a :class:`MethodConfig`; other fields (budget mode,
        neighbour search, ODPP steps, ...) from ``base``, default the trained setting of
        the same method in the result, else the defaults."""
        p = self.params
        if base is None:
            base = self.trained.get(p["method"], MethodConfig(name=p["method"]))
        return dataclasses.replace(base, name=p["method"], eps=p["eps"], k=p["k"], gamma=p["gamma"])

    def compute(self) -> dict:
        """:func:`explorer_state` for the current controls, with the budget mode and
        neighbour search that training this setting would use (:meth:`method_config`);
        also under ``"config"``."""
        return self._exact_state(self.method_config())

    def update(self) -> None:
        """Recompute the state and redraw the pseudo-old prototypes, arrows and proxies.

        With :attr:`background` on, ODPP (30 Adam steps over C x k pairs, seconds at
        10,000 classes) is computed in a worker thread: the update draws at once a
        provisional state, the last ODPP result scaled to the new eps (every budget mode
        is linear in eps, so it stays inside the new budgets), or NDPP's step before
        the first ODPP result, marked "computing" in the proxies line; the exact state
        replaces it when the worker finishes, unless a newer move has made it stale.
        :meth:`wait` blocks until then. NDPP is always computed in place (an O(C d)
        product once its direction is known, :meth:`bclviz.proxies.LiveProxies.ndpp_direction`).
        """
        self.gamma_slider.disabled = "gamma" not in methods.method_class(self.method_toggle.value).knobs
        cfg = self.method_config()
        with self._lock:
            if not (self.background and cfg.name == "odpp"):
                self._worker.cancel()
                self._draw(self.compute())
                return
            self._worker.submit(cfg)
            self._draw(self._provisional(cfg), pending=True)

    def wait(self, timeout: float | None = None) -> dict:
        """Block until a background computation has drawn its exact state; returns :attr:`state`.
        Raises what the computation raised, and ``TimeoutError`` after ``timeout`` seconds."""
        if not self._worker.wait(timeout):
            raise TimeoutError(f"the explorer's background computation took longer than {timeout} s")
        if self.error is not None:
            raise self.error
        return self.state

    @property
    def pending(self) -> bool:
        """Whether the drawn state is provisional (a background computation is running)."""
        return self._worker.busy

    def _provisional(self, cfg: MethodConfig) -> dict:
        last = self._last_exact
        if last is not None and last["config"].eps > 0 and dataclasses.replace(last["config"], eps=cfg.eps) == cfg:
            delta, base = last["delta"] * (cfg.eps / last["config"].eps), last["config"]
        else:
            delta, base = cfg.eps * self.live.ndpp_direction(cfg.k, cfg.eps_mode, cfg.neighbor_search), None
        state = state_of(self.old_protos, self.new_protos, delta, k=cfg.k, neighbor_search=cfg.neighbor_search,
                         live=self.live)
        return {**state, "config": cfg, "provisional": True, "base": base}

    def _exact_state(self, cfg: MethodConfig) -> dict:
        return {**explorer_state(self.old_protos, self.new_protos, method=cfg.name, eps=cfg.eps, k=cfg.k,
                                 gamma=cfg.gamma, steps=cfg.odpp_steps, lr=cfg.odpp_lr, eps_mode=cfg.eps_mode,
                                 neighbor_search=cfg.neighbor_search, live=self.live), "config": cfg}

    def _deliver(self, generation: int, state: dict) -> None:
        with self._lock:
            if self._worker.is_current(generation):
                self._draw(state)

    def _failed(self, generation: int, error: BaseException) -> None:
        with self._lock:
            if self._worker.is_current(generation):
                self.error = error
                self.proxies_html.value = f"<b>{type(error).__name__}</b>: {error}"

    def _draw(self, state: dict, pending: bool = False) -> None:
        from ..plots import pseudo_old_trace_updates

        self.state = state
        if not pending:
            self._last_exact, self.error = state, None
        coords = self.projection.place(state["pseudo_old"])
        updates = pseudo_old_trace_updates(self._old_coords, coords)
        with self.fig.batch_update():
            for uid, values in updates.items():
                self.traces[uid].update(values)
        text = format_proxies(state["proxies"])
        if pending:
            text = f"<i>{state['config'].name.upper()} computing; showing {_provisional_label(state)}</i> " \
                   f"&nbsp;|&nbsp; {text}"
        self.proxies_html.value = text

    def _on_change(self, change) -> None:
        self.update()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _provisional_label(state: dict) -> str:
    base = state.get("base")
    if base is not None:
        return f"its result at eps {base.eps:.2f} scaled to eps {state['config'].eps:.2f}"
    return f"NDPP's step at eps {state['config'].eps:.2f}"


def measure_latency(explorer: PerturbationExplorer, n: int = 20) -> dict:
    """Time ``n`` eps-slider moves (compute + figure update) of ``explorer``.

    Returns ``{"median_ms", "p95_ms", "n", "method", "background"}``: the time until the
    move is drawn. With a background computation (:attr:`PerturbationExplorer.background`
    and ODPP) that drawing is the provisional state, and ``"exact_median_ms"`` /
    ``"exact_p95_ms"`` add the time until the exact state is drawn (each move waits for
    it before the next). The slider is put back afterwards.
    """
    start = explorer.eps_slider.value
    values = [round(v, 2) for v in np.linspace(0.02, 0.98, n)]
    background = explorer.background and explorer.method_toggle.value == "odpp"
    times, exact = [], []
    try:
        for v in values:
            if v == explorer.eps_slider.value:
                v = round(v + 0.01, 2)
            t0 = time.perf_counter()
            explorer.eps_slider.value = v
            times.append((time.perf_counter() - t0) * 1e3)
            if background:
                explorer.wait()
                exact.append((time.perf_counter() - t0) * 1e3)
    finally:
        explorer.eps_slider.value = start
        explorer.wait()
    out = {"median_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)),
           "n": n, "method": explorer.method_toggle.value, "background": background}
    if exact:
        out.update(exact_median_ms=float(np.median(exact)), exact_p95_ms=float(np.percentile(exact, 95)))
    return out
