"""Tuning studies: a grid or a multi-objective search, its Pareto front, run configs to train.

:func:`tune_study` runs a grid (:class:`~bclviz.space.GridSpace`, every setting x seed)
or a search (:class:`~bclviz.space.SearchSpace`: a seeded TPE or NSGA-II sampler over
NDPP/ODPP settings, ``trials`` settings in all, with the space's baselines as fixed
reference points) in Optuna studies (:mod:`bclviz.study`); :func:`tune_from_config` is
``bclviz tune``: it loads the data, trains (or restores) the old model, tunes, and
writes the trials, the Pareto front and the best compatible settings as run configs.

A search trains seed replicate 0 of each sampled setting. It asks its sampler in
batches of ``workers`` settings, each batch after the previous one is told, with a
sampler seeded by (space seed, trials finished, position in the batch): one process
with a given worker count samples the same settings on every run, also after a resume.
Then the settings on the Pareto front are trained over the experiment's other seeds
(a grid study that copies replicate 0 from the search) so the exported settings carry
intervals. Processes that share a study add trials to it; with several processes the
order of the sampler's observations, hence the settings, depends on timing.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from optuna.trial import TrialState

from .config import ExperimentConfig, MethodConfig
from .pareto import record_front
from .scoring import Scorer
from .scheduler import Launch, run_jobs, run_search
from .space import GridSpace, SearchSpace
from .study import KEY, SweepStudy
from .sweep import _records, combine_seeds, grid_jobs, grid_kind, old_baseline, study_prefix, sweep_grid

__all__ = ["TuneResult", "tune_study", "tune_from_config", "write_outputs", "format_result", "DEFAULT_BUDGET"]

#: search trials when ``trials`` is not given
DEFAULT_BUDGET = 20


@dataclass
class TuneResult:
    """What :func:`tune_study` found.

    records : one sweep record per setting (means over its finished seeds), baselines first.
    front : indices into ``records`` on the Pareto front (mean self vs mean cross).
    best : indices of the compatible records on the feasible front, best self-test first.
    studies : the Optuna studies (:class:`~bclviz.study.SweepStudy`) that hold the trials.
    m_oo, metric : ``M(old, old)`` and the headline metric.
    """

    records: list[dict]
    front: list[int]
    best: list[int]
    studies: list[SweepStudy] = field(default_factory=list)
    m_oo: float = float("nan")
    metric: str = ""


def _template(cfg: ExperimentConfig) -> MethodConfig:
    return cfg.methods[0] if len(cfg.methods) == 1 else MethodConfig()


def _grid(session_args: dict, jobs, settings, name: str | None, **run) -> tuple[SweepStudy, list[dict]]:
    session = SweepStudy(kind=grid_kind(jobs), name=name, **session_args)
    done = run_jobs(session, jobs, **run)
    cfg = run["cfg"]
    return session, _records(settings, jobs, done, seeds=cfg.seeds, m_oo=session.m_oo, k=cfg.k,
                             key=session.metric, partial=True)


def tune_study(data, old, cfg: ExperimentConfig, *, space: GridSpace | SearchSpace | None = None,
               trials: int | None = None, storage=None, study_name: str | None = None, workers: int | None = None,
               progress: bool = True, callback=None, launch: Launch | None = None) -> TuneResult:
    """Run a grid or a search on ``data`` against ``old``; return the settings, front and best.

    Parameters
    ----------
    cfg : the experiment (its one method, if any, is the template of every setting:
        lam, warm-up, ...; ``seeds`` replicates per grid setting).
    space : a :class:`~bclviz.space.GridSpace` (default: the default grid) or a
        :class:`~bclviz.space.SearchSpace`.
    trials : a search's budget (default :data:`DEFAULT_BUDGET`, counted over every
        process sharing the study); a grid's cap on the trials this call trains.
    storage : where the studies live (:func:`bclviz.storage.open_storage`; ``None``: memory).
    study_name : the study's name (default: the data/experiment prefix and the space).
    callback : called with every finished record (one seed) as it arrives.
    launch : run each trial as an external job (:class:`bclviz.scheduler.Launch`, e.g.
        torchrun on a GPU node) instead of in ``workers`` local processes; seed
        replicate 0 only (``cfg.seeds`` must be 1).
    """
    if launch is not None and cfg.seeds != 1:
        raise ValueError(f"launched trials train seed replicate 0 only (bclviz train); the config asks for "
                         f"seeds: {cfg.seeds}; set seeds: 1 (--set seeds=1)")
    scorer = Scorer(data, k=cfg.k)
    m_oo = old_baseline(data, old, k=cfg.k, scorer=scorer)
    space = GridSpace() if space is None else space
    template = _template(cfg)
    session_args = dict(storage=storage, data=data, cfg=cfg, m_oo=m_oo, metric=scorer.key)
    run = dict(cfg=cfg, data=data, old=old, scorer=scorer, workers=workers, progress=progress, launch=launch,
               on_record=None if callback is None else (lambda _job, record: callback(record)))
    if isinstance(space, GridSpace):
        settings = space.settings(template)
        session, records = _grid(session_args, grid_jobs(data, cfg, settings), settings, study_name,
                                 limit=trials, **run)
        return _result(records, [session], m_oo, scorer.key)
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be a GridSpace or a SearchSpace, got {type(space).__name__}")
    space.check(data.num_classes)
    budget = DEFAULT_BUDGET if trials is None else trials
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"trials must be an integer >= 1 for a search, got {trials!r}")
    studies, records = [], []
    references = sweep_grid((), baselines=space.baselines, template=template)
    if references:
        base, records = _grid(session_args, grid_jobs(data, cfg, references), references,
                              study_name and f"{study_name}-baselines", **run)
        studies.append(base)
    kind = "search-" + _space_hash(space, template)
    search = SweepStudy(kind=kind, name=study_name, sampler=space.make_sampler(0, 0), **session_args)
    run_search(search, space, budget=budget, template=template,
               on_record=None if callback is None else (lambda _t, record: callback(record)),
               **{k: v for k, v in run.items() if k != "on_record"})
    studies.append(search)
    found = {t.system_attrs[KEY]: t.user_attrs["record"] for t in search.trials((TrialState.COMPLETE,))}
    candidates = [combine_seeds([r], m_oo=m_oo, k=cfg.k, key=scorer.key) for r in found.values()]
    confirmed: list[MethodConfig] = []
    while cfg.seeds > 1:  # train the front over every seed (replicate 0 is copied from the search)
        front = [MethodConfig(**candidates[i]["settings"]) for i in record_front(candidates, scorer.key)]
        new = [m for m in front if m not in confirmed]
        if not new:
            break
        confirmed += new
        confirm, over_seeds = _grid(session_args, grid_jobs(data, cfg, confirmed), confirmed,
                                    study_name and f"{study_name}-front{len(confirmed)}", **run)
        studies.append(confirm)
        done = [r["settings"] for r in over_seeds]
        candidates = [c for c in candidates if c["settings"] not in done] + over_seeds
    return _result(records + candidates, studies, m_oo, scorer.key)


def _space_hash(space: SearchSpace, template: MethodConfig) -> str:
    from .sweep import _sha

    return _sha([space.describe(), dataclasses.asdict(template)])[:10]


def _result(records: list[dict], studies, m_oo: float, metric: str) -> TuneResult:
    front = record_front(records, metric)
    best = sorted(record_front(records, metric, compatible_only=True),
                  key=lambda i: -records[i]["self"][metric])
    return TuneResult(records, front, best, studies, m_oo, metric)


# ----------------------------------------------------------------------------- bclviz tune
def tune_from_config(run_cfg: ExperimentConfig, *, space: GridSpace | SearchSpace | None = None,
                     trials: int | None = None, workers: int | None = None, storage=None,
                     study_name: str | None = None, out: str | Path | None = None,
                     progress: bool = True, launch: str | Sequence[str] | None = None) -> tuple[TuneResult, Path]:
    """``bclviz tune``: load the data, train or restore the old model (``run_dir/old.pt``,
    as ``bclviz train``), run :func:`tune_study` and :func:`write_outputs` into ``out``
    (default ``runs/<dataset>-tune``). ``storage`` defaults to a journal file under the
    cache root (``studies/<dataset>-<fingerprint>.journal``). ``launch`` (a command,
    e.g. ``"torchrun --standalone --nproc_per_node=8 -m bclviz.cli train"``) runs each
    trial as that job in ``out/trials/trial-<n>`` with a copy of the old model's checkpoint."""
    from .cache import cache_dir
    from .data import load_dataset
    from .pipeline import train_old_model

    if launch is not None and run_cfg.seeds != 1:
        raise ValueError(f"launched trials train seed replicate 0 only (bclviz train); the config asks for "
                         f"seeds: {run_cfg.seeds}; set seeds: 1 (--set seeds=1)")
    data = load_dataset(run_cfg.dataset, seed=run_cfg.seed, **run_cfg.data_options)
    old = train_old_model(run_cfg, data, progress=progress, checkpoint=run_cfg.run_dir / "old.pt")
    if storage is None:
        storage = cache_dir("studies") / f"{study_prefix(data, run_cfg)}.journal"
    out = Path(out or f"runs/{run_cfg.dataset}-tune")
    if launch is not None:
        command = tuple(shlex.split(launch) if isinstance(launch, str) else launch)
        if not command:
            raise ValueError("launch must name a command, e.g. "
                             "'torchrun --standalone --nproc_per_node=8 -m bclviz.cli train'")
        launch = Launch(command, out / "trials", run_cfg.run_dir / "old.pt")
    result = tune_study(data, old, run_cfg, space=space, trials=trials, storage=storage, study_name=study_name,
                        workers=workers, progress=progress, launch=launch)
    folder = write_outputs(out, result, run_cfg, storage=storage)
    return result, folder


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_")


def write_outputs(out: str | Path, result: TuneResult, cfg: ExperimentConfig, *, storage=None) -> Path:
    """Write ``trials.json`` (every trial of the studies), ``pareto.json`` (the records on
    the front, ``best`` first), ``study.json`` (storage and study names, for
    ``optuna.load_study``) and ``configs/NN-<setting>.yaml`` (the best compatible
    settings as run configs for ``bclviz train --config``) into ``out``."""
    from .io import write_json
    from .storage import describe_storage
    from .sweep import export_config

    out = Path(out)
    rows = []
    for session in result.studies:
        for t in session.trials():
            record = t.user_attrs.get("record", {})
            rows.append({"study": session.name, "number": t.number, "state": t.state.name, "params": t.params,
                         "values": t.values, "label": record.get("label"), "seed": record.get("seed"),
                         "compatible": record.get("compatible"), "key": t.system_attrs.get(KEY)})
    write_json(out / "trials.json", rows)
    write_json(out / "pareto.json", {"metric": result.metric, "m_oo": result.m_oo,
                                     "front": [result.records[i] for i in result.front],
                                     "best": [result.records[i] for i in result.best]})
    write_json(out / "study.json", {"storage": describe_storage(storage),
                                    "studies": [s.name for s in result.studies]})
    for rank, i in enumerate(result.best):
        record = result.records[i]
        method = MethodConfig(**record["settings"])
        export_config(out / "configs" / f"{rank:02d}-{_slug(record['label'])}.yaml", cfg, method)
    return out


def format_result(result: TuneResult) -> str:
    """A plain-text table of the front: setting, self, cross (mean +- 95%), compatible."""
    key = result.metric

    def pm(rec, side):
        half = (rec.get(f"{side}_ci") or {}).get(key)
        return f"{rec[side][key]:.4f}" + ("" if half is None else f" +- {half:.4f}")

    lines = [f"Pareto front ({key}; M(old, old) = {result.m_oo:.4f}); * = exported (compatible)",
             f"{'setting':<36}{'self':>20}{'cross':>20}  compatible"]
    for i in sorted(result.front, key=lambda j: -result.records[j]["self"][key]):
        rec = result.records[i]
        mark = "*" if i in result.best else " "
        lines.append(f"{mark}{rec['label']:<35}{pm(rec, 'self'):>20}{pm(rec, 'cross'):>20}  "
                     f"{'yes' if rec['compatible'] else 'no'}")
    return "\n".join(lines)
