"""The training lab: train the explorer's current setting for real, see where it lands.

"Train this setting" trains and evaluates the explorer's method, eps, k and gamma over
the experiment's seeds in a background thread (the sliders stay usable), with a
per-epoch progress bar. Every (setting, seed) is a trial of the lab's Optuna study
(:mod:`bclviz.study`): in memory, or in the journal file of ``cache_dir`` where it
survives the kernel, is shared with other processes and reuses what a sweep over the
same experiment in that folder trained. The trade-off plot
(:class:`~bclviz.widgets.ParetoMonitor`) shows the experiment's methods, the criterion
line ``cross = M(old, old)``, the settings trained here (means and 95% intervals over
seeds) and the Pareto front, growing as trials finish, with the compatibility tax and
the headroom under it. Clicking a trained point chooses it; "Export config" writes the
chosen setting (else the explorer's) as a run config for ``bclviz train --config``.
"""

from __future__ import annotations

import os
import threading
import re
import time
from pathlib import Path

from ..config import MethodConfig
from ..runlog import open_run_log
from ..sweep import combine_seeds, export_config, journal_path, make_record, old_baseline, setting_id, setting_label

__all__ = ["train_setting", "TrainingLab"]


def train_setting(data, old, cfg, method: MethodConfig, *, callback=None, progress: bool = False, scorer=None,
                  replicate: int = 0):
    """Train and score one setting at seed replicate ``replicate`` (:func:`bclviz.pipeline.train_and_score`).

    Kept as a module-level name so that tests can count the lab's training runs.
    """
    from ..pipeline import train_and_score
    from ..scoring import Scorer

    scorer = Scorer(data, k=cfg.k) if scorer is None else scorer
    return train_and_score(cfg, data, old, method, scorer, progress=progress, callback=callback, replicate=replicate)


def _run_name(method: MethodConfig) -> str:
    """A run folder name for ``method``: its :func:`~bclviz.sweep.setting_id` (every field
    that differs from the defaults) with path-unsafe characters replaced."""
    return re.sub(r"[^A-Za-z0-9.=,+-]+", "_", setting_id(method)).strip("_") or method.name


def _row(record: dict, key: str) -> str:
    mark = "yes" if record["compatible"] else "no"
    half = (record.get("self_ci") or {}).get(key)
    seeds = len(record.get("per_seed", [record]))
    return (f"<tr><td>{record['label']}</td><td>{record['self'][key]:.4f}"
            f"{'' if half is None else f' &plusmn; {half:.4f}'}</td><td>{record['cross'][key]:.4f}</td>"
            f"<td>{mark}</td><td>{seeds}</td><td>{record['seconds']:.1f}</td></tr>")


def lab_jobs(data, cfg, method: MethodConfig) -> list:
    """The lab's trials of ``method``: one per seed replicate, named by the method and its
    knobs (a categorical over the perturbing methods, point distributions for the knobs)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from ..methods import method_class, perturbing_methods
    from ..study import Job
    from ..sweep import cache_key

    names = tuple(dict.fromkeys([*perturbing_methods(), method.name]))
    params, dists = {"method": method.name}, {"method": CategoricalDistribution(names)}
    for knob in method_class(method.name).knobs:
        value = getattr(method, knob)
        if value is not None:
            params[knob] = value
            dists[knob] = (IntDistribution if isinstance(value, int) else FloatDistribution)(value, value)
    return [Job(method, r, cache_key(data, cfg, method, r), {**params, "replicate": r},
                {**dists, "replicate": IntDistribution(0, max(cfg.seeds - 1, r))}) for r in range(cfg.seeds)]


class TrainingLab:
    """Train explorer settings in the background and plot where they land.

    Parameters
    ----------
    result : the trained :class:`~bclviz.experiment.ExperimentResult` (data, old model,
        and the methods drawn as reference points).
    cfg : the :class:`~bclviz.experiment.ExperimentConfig` that produced ``result``
        (models, training, seed, mAP cut-off, ``seeds`` per setting); a trained setting
        takes the fields other than eps/k/gamma from ``cfg.methods`` of the same name.
    explorer : where the setting comes from; default a new
        :class:`~bclviz.widgets.PerturbationExplorer` (PCA), shown above the lab.
    cache_dir : folder of the study's journal file (as :func:`bclviz.sweep.run_sweep`);
        ``None``: the study lives in memory. ``storage`` (a journal path or database
        URL, :func:`bclviz.storage.open_storage`) overrides it.
    log, log_dir : ``"tensorboard"`` writes every (setting, seed) trained here as a
        TensorBoard run ``log_dir/<setting>/seed<r>``: the per-epoch records the progress
        line shows (``new/loss``, ``new/crowding_pseudo_old``, ...) and the scores
        (``eval/self``, ``eval/cross``), as ``bclviz train --log tensorboard`` does
        (:mod:`bclviz.runlog`); ``None`` (default) writes nothing.

    Attributes
    ----------
    widget, train_button, progress, status, tradeoff, readouts, records_html, choice,
    export_path, export_button : the widgets; ``tradeoff`` is a ``FigureWidget``.
    monitor : the :class:`~bclviz.widgets.ParetoMonitor` drawing ``tradeoff``;
        ``traces``: its traces by uid, ``trace_uid("points", "trained")`` the settings trained here.
    session : the :class:`~bclviz.study.SweepStudy`; ``study``: its ``optuna.Study``.
    records : one sweep record per setting in the study (means over its finished seeds).
    last_result : the :class:`~bclviz.train.TrainResult` of the latest trained seed
        (None when every seed of the latest setting was in the study).
    error : the exception of the latest run, if it failed.
    """

    def __init__(self, result, cfg, *, explorer=None, cache_dir: str | os.PathLike | None = None,
                 storage=None, log: str | None = None, log_dir: str | os.PathLike = "runs/lab") -> None:
        import ipywidgets as w

        from ..methods import perturbing_methods
        from ..plots import tradeoff_points
        from ..proxies import format_headroom
        from ..readouts import format_tax, tax_of
        from ..scoring import Scorer
        from ..study import SweepStudy
        from ..sweep import _sha
        from .explorer import PerturbationExplorer
        from .pareto import ParetoMonitor

        from ..runlog import require_log

        self.log, self.log_dir = require_log(log), Path(log_dir)  # a missing package stops here, not in a trial
        own_explorer = explorer is None
        self.explorer = PerturbationExplorer(result, projection="pca") if own_explorer else explorer
        self.result, self.cfg = result, cfg
        self.scorer = Scorer(result.data, k=cfg.k)
        self.key = self.scorer.key
        old_self = result.results.get("old", {}).get("self", {})
        self.m_oo = (old_self[self.key] if self.key in old_self
                     else old_baseline(result.data, result.old, k=cfg.k, scorer=self.scorer))
        if storage is None and cache_dir is not None:
            storage = journal_path(cache_dir, result.data, cfg)
        self.session = SweepStudy(storage, data=result.data, cfg=cfg, m_oo=self.m_oo, metric=self.key,
                                  kind="lab-" + _sha(perturbing_methods())[:10])
        self._legacy = cache_dir  # records earlier versions cached there as JSON files are adopted
        self.study = self.session.study
        self.records: list[dict] = []
        self.last_result = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._method: MethodConfig | None = None

        references = tradeoff_points(result.results, metric=self.key) if self.key in old_self else []
        has_tax = "independent" in result.results and "methods" in result.results
        tax = tax_of(result.results, metric=self.key) if has_tax else None
        self.monitor = ParetoMonitor(old_old=self.m_oo, metric=self.key, references=references, tax=tax,
                                     name="trained here", uid="trained", on_select=self._on_select)
        self.tradeoff, self.traces = self.monitor.figure, self.monitor.traces
        self.train_button = w.Button(description="Train this setting", icon="play", button_style="primary")
        self.progress = w.IntProgress(value=0, min=0, max=cfg.new_train.epochs * cfg.seeds, description="epochs")
        self.status = w.HTML("")
        self.readouts = w.HTML(f"compatibility tax: {format_tax(tax, plus_minus='&plusmn;')}; headroom: "
                               f"{format_headroom(result.results.get('headroom'))}")
        self.records_html = w.HTML("")
        self.choice = w.Dropdown(options=[("the explorer's setting", -1)], value=-1, description="export")
        self.export_path = w.Text(value=f"{cfg.dataset}-run.yaml", description="config file")
        self.export_button = w.Button(description="Export config", icon="download")
        self.train_button.on_click(self._on_train_click)
        self.export_button.on_click(self._on_export_click)
        lab = [w.HBox([self.train_button, self.progress]), self.status, self.tradeoff, self.readouts,
               self.records_html, w.HBox([self.choice, self.export_path, self.export_button])]
        self.widget = w.VBox(([self.explorer.widget] if own_explorer else []) + lab)
        self._show()

    # -- settings -------------------------------------------------------------------
    def current_method(self) -> MethodConfig:
        """The explorer's setting, other fields from ``cfg.methods`` of the same name."""
        name = self.explorer.params["method"]
        base = next((m for m in self.cfg.methods if m.name == name), None)
        return self.explorer.method_config(base)

    def chosen_method(self) -> MethodConfig:
        """The setting chosen in ``choice`` (a click on a trained point), else the explorer's."""
        if self.choice.value is None or self.choice.value < 0:
            return self.current_method()
        return MethodConfig(**self.records[self.choice.value]["settings"])

    def export_config(self, path: str | os.PathLike | None = None) -> Path:
        """Write the chosen setting (:meth:`chosen_method`) as a YAML run config (default path: the text box)."""
        return export_config(self.export_path.value if path is None else path, self.cfg, self.chosen_method())

    def _on_select(self, record: dict) -> None:
        self.choice.value = self.records.index(record)
        self.status.value = f"chose <b>{record['label']}</b>; Export config writes its run config"

    # -- training -------------------------------------------------------------------
    def train(self) -> bool:
        """Start training the current setting (every seed) in the background.

        Returns ``False`` (and starts nothing) while a run is in progress.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            method = self._method = self.current_method()
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

    def _on_epoch(self, done_before: int, record: dict) -> None:
        self.progress.value = min(done_before + record["epoch"] + 1, self.progress.max)
        self.status.value = (f"epoch {record['epoch'] + 1}/{self.cfg.new_train.epochs}: loss {record['loss']:.3f}, "
                             f"crowding pseudo-old {record['crowding_pseudo_old']:.3f}")

    def _run(self, method: MethodConfig) -> None:
        try:
            self.last_result = None
            self._train_seeds(method)
            self.progress.value, self.progress.bar_style = self.progress.max, "success"
            record = next(r for r in self.records if MethodConfig(**r["settings"]) == method)
            verdict = "compatible" if record["compatible"] else "not compatible"
            self.status.value = (f"done: <b>{record['label']}</b> self {self.key} {record['self'][self.key]:.4f}, "
                                 f"cross {record['cross'][self.key]:.4f} ({verdict}; M(old, old) = {self.m_oo:.4f})")
        except BaseException as err:  # shown in the widget; wait() raises it
            self.error = err
            self.progress.bar_style = "danger"
            self.status.value = f"<span style='color:crimson'>training failed: {err!r}</span>"
        finally:
            self.train_button.disabled = False
            self._lock.release()

    def _train_seeds(self, method: MethodConfig) -> None:
        """Every seed of ``method`` in the study: copied, trained here, or waited for."""
        from ..study import KEY

        jobs = lab_jobs(self.result.data, self.cfg, method)
        epochs = self.cfg.new_train.epochs
        if self._legacy is not None:
            self.session.adopt_json(jobs, self._legacy)
        with self.session.holding():
            while True:
                self.session.fail_stale()
                self.session.ensure(jobs)
                done = self.session.records()
                todo = [job.key for job in jobs if job.key not in done]
                if not todo:
                    break
                trial = self.session.claim(todo)
                if trial is None:  # another process holds it
                    time.sleep(1.0)
                    continue
                job = next(j for j in jobs if j.key == trial.system_attrs[KEY])
                with open_run_log(self.log, self.log_dir / _run_name(method) / f"seed{job.replicate}",
                                  subdir=None) as run_log:
                    def on_epoch(rec, before=job.replicate * epochs, run_log=run_log):
                        run_log.epoch("new", rec)
                        self._on_epoch(before, rec)

                    self.last_result, raw = train_setting(
                        self.result.data, self.result.old, self.cfg, method, scorer=self.scorer,
                        replicate=job.replicate, callback=on_epoch)
                    history = self.last_result.history
                    run_log.scores({"self": raw["self"], "cross": raw["cross"]},
                                   history[-1]["epoch"] if history else 0)
                self.session.complete(trial, make_record(method, raw, m_oo=self.m_oo, k=self.cfg.k, key=self.key))
                self._show()
        self._show()

    def _show(self) -> None:
        """Records of every setting in the study (means over its finished seeds), plot and table."""
        per_setting: dict[str, list] = {}
        for trial in self.session.trials():
            record = trial.user_attrs.get("record")
            if trial.state.name == "COMPLETE" and record is not None:
                name = repr(sorted(record["settings"].items()))
                per_setting.setdefault(name, []).append((trial.params.get("replicate", 0), record))
        self.records = [combine_seeds([r for _, r in sorted(runs, key=lambda x: x[0])], m_oo=self.m_oo, k=self.cfg.k,
                                      key=self.key) for runs in per_setting.values()]
        self.monitor.update(self.records)
        head = "<tr><th>setting</th><th>self</th><th>cross</th><th>compatible</th><th>seeds</th><th>seconds</th></tr>"
        self.records_html.value = f"<table>{head}{''.join(_row(r, self.key) for r in self.records)}</table>"
        chosen = self.choice.value
        self.choice.options = [("the explorer's setting", -1)] + [(r["label"], i) for i, r in enumerate(self.records)]
        self.choice.value = chosen if chosen is not None and chosen < len(self.records) else -1

    def wait(self, timeout: float | None = None) -> dict | None:
        """Wait for the running training; return the record of its setting (re-raise its error).

        Raises ``TimeoutError`` when the run is still going after ``timeout`` seconds.
        """
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"training is still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return next((r for r in self.records if MethodConfig(**r["settings"]) == self._method),
                    self.records[-1] if self.records else None)

    def _on_export_click(self, _button=None) -> None:
        try:
            path = self.export_config()
        except (OSError, ValueError) as err:
            self.status.value = f"<span style='color:crimson'>export failed: {err}</span>"
        else:
            self.status.value = f"wrote {path}; run it with <code>bclviz train --config {path}</code>"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
