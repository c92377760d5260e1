"""Sweeps over method settings, recorded as Optuna studies (:mod:`bclviz.study`).

:func:`sweep_grid` lists the settings (NDPP/ODPP over eps, k, gamma, next to the
baselines); :func:`run_sweep` trains and evaluates one new model per (setting, seed) and
records each as a trial of a study the moment it is done. The study lives in a journal
file in ``cache_dir`` (:func:`journal_path`), so a rerun reads the finished trials back
and trains only the rest, a sweep killed at any point resumes with nothing lost or
repeated, and several processes can add trials to it. :func:`sweep_study` opens that
study for Optuna's own plots; :func:`export_config` writes a chosen setting as a run
config. Records that earlier versions cached in ``cache_dir`` (one ``<cache_key>.json``
per setting and seed) are adopted into the study as finished trials, not retrained.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .config import ExperimentConfig, MethodConfig
from .experiment import retrieval_scores
from .methods import method_class, perturbing_methods
from .scoring import Scorer
from .stats import summarise_seeds

__all__ = [
    "BASELINES", "sweep_grid", "setting_label", "setting_id", "retrieval_scores", "old_baseline", "combine_seeds",
    "cache_key", "fingerprint", "study_prefix", "make_record", "grid_jobs", "grid_kind", "journal_path", "run_sweep",
    "sweep_study", "export_config",
]

#: baseline methods a sweep runs next to NDPP/ODPP by default (method.md section 5)
BASELINES = ("proto", "bct", "l2", "lce", "hot_refresh", "independent")
_CACHE_VERSION = 1
#: MethodConfig fields added after cache version 1, left out of the key at their
#: default so that records cached before they existed stay valid.
_ADDED_METHOD_FIELDS = {"neighbor_search": "exact"}


def _as_tuple(values, name: str) -> tuple:
    if values is None:
        return (None,)
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return (values,)
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a number or a sequence of numbers, got {values!r}")
    return tuple(values)


def sweep_grid(
    methods: Sequence[str] | None = None,
    eps: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.6),
    k: Sequence[int] | None = None,
    gamma: Sequence[float] = (0.1,),
    baselines: Sequence[str] = BASELINES,
    *,
    template: MethodConfig | None = None,
) -> list[MethodConfig]:
    """Method settings of a sweep: baselines first, then ``methods`` x eps x k (x gamma).

    Parameters
    ----------
    methods : perturbing methods to vary (default: every one,
        :func:`bclviz.methods.perturbing_methods`).
    eps : perturbation magnitudes.
    k : neighbour counts; ``None`` keeps each method's ``default_k``.
    gamma : penalty weights, varied only for methods whose ``knobs`` include gamma (ODPP).
    baselines : methods run once at their default settings.
    template : other settings (``lam``, ``warmup_epochs``, ...) copied into every entry.
    """
    template = MethodConfig() if template is None else template
    perturbing = perturbing_methods()
    methods = perturbing if methods is None else list(methods)
    unknown = [m for m in methods if m not in perturbing]
    if unknown:
        raise ValueError(f"methods must be among {perturbing}, got {unknown}; list baselines in baselines=")
    grid = [dataclasses.replace(template, name=b, k=None) for b in baselines]
    eps, ks, gammas = _as_tuple(eps, "eps"), _as_tuple(k, "k"), _as_tuple(gamma, "gamma")
    for name in methods:
        for e in eps:
            for kk in ks:
                for g in gammas if "gamma" in method_class(name).knobs else (template.gamma,):
                    grid.append(dataclasses.replace(template, name=name, eps=e, k=kk, gamma=g))
    return grid


def setting_label(method: MethodConfig) -> str:
    """Short label such as ``"odpp eps=0.3 k=8 gamma=0.1"`` (``"proto"`` for baselines):
    the method name and its ``knobs`` (k only when set)."""
    knobs = method_class(method.name).knobs
    if not knobs:
        return method.name
    parts = [method.name]
    for knob in knobs:
        value = getattr(method, knob)
        if value is not None:
            parts.append(f"{knob}={value:g}")
    if method.neighbor_search != "exact":
        parts.append(f"knn={method.neighbor_search}")
    return " ".join(parts)


def _exact(value) -> str:
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def setting_id(method: MethodConfig) -> str:
    """A label that names exactly one setting: the method, its knobs (exact values) and
    every other field that differs from the method's defaults, e.g.
    ``"ndpp eps=0.2 eps_mode=relative"``. It names the setting in a grid study."""
    knobs = method_class(method.name).knobs
    parts = [method.name] + [f"{k}={_exact(getattr(method, k))}" for k in knobs if getattr(method, k) is not None]
    default = MethodConfig(name=method.name)
    for f in dataclasses.fields(MethodConfig):
        value = getattr(method, f.name)
        if f.name != "name" and f.name not in knobs and value != getattr(default, f.name):
            parts.append(f"{f.name}={_exact(value)}")
    return " ".join(parts)


def old_baseline(data, old, *, k: int, scorer: Scorer | None = None) -> float:
    """``M(old, old)`` on the dataset's headline metric (the BCT criterion's bar)."""
    scorer = Scorer(data, k=k) if scorer is None else scorer
    return scorer.score(old.model, old.model)[scorer.key]


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot describe {type(obj).__name__} in a sweep cache key")


def _sha(payload) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _experiment_payload(data, cfg: ExperimentConfig) -> dict:
    """The dataset and the experiment without ``methods``, ``seeds``, ``reference``,
    ``output_dir`` and the DataLoader worker counts (none changes a trial's numbers)."""
    experiment = dataclasses.asdict(cfg)
    for name in ("methods", "seeds", "reference", "output_dir"):
        experiment.pop(name)
    for section in ("old_train", "new_train"):
        experiment[section].pop("workers", None)
    for section in ("old_model", "new_model"):
        experiment[section] = _model_identity(experiment[section])
    return {"version": _CACHE_VERSION, "dataset": data.name, "data_info": data.info, "experiment": experiment}


def _model_identity(spec: dict) -> dict:
    """A model spec (``dataclasses.asdict(ModelSpec)``) with each local file it names (a
    frozen model's ``path``, a torchvision model's ``weights`` file) replaced by the
    file's sha256: a moved file keeps its trials, a changed one gets new ones. Specs
    naming no file are returned unchanged (so their keys are those of earlier versions)."""
    options = spec.get("options") or {}
    files = {name: options[name] for name in ("path", "weights")
             if isinstance(options.get(name), str) and Path(options[name]).expanduser().is_file()}
    if not files:
        return spec
    return {**spec, "options": {**options, **{name: {"sha256": _file_sha(str(Path(path).expanduser().resolve()),
                                                                         *_stat(path))}
                                            for name, path in files.items()}}}


def _stat(path: str) -> tuple[int, int]:
    st = Path(path).expanduser().stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _file_sha(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, computed once per (path, size, modification time)."""
    from .external import file_sha256

    return file_sha256(path)


def fingerprint(data, cfg: ExperimentConfig) -> str:
    """sha256 of the dataset and the experiment (as in :func:`cache_key`, without the
    method and the replicate): studies of other data or another experiment never mix."""
    return _sha(_experiment_payload(data, cfg))


def study_prefix(data, cfg: ExperimentConfig) -> str:
    """``<dataset>-<fingerprint[:16]>``: the start of every study name of ``data`` under ``cfg``."""
    return f"{data.name}-{fingerprint(data, cfg)[:16]}"


def cache_key(data, cfg: ExperimentConfig, method: MethodConfig, replicate: int = 0) -> str:
    """sha256 of the dataset, the experiment (without ``methods``, ``seeds``,
    ``reference`` and ``output_dir``), the method settings and the seed replicate: the
    identity of a trial in a study (system attribute ``bclviz:key``).

    The old model is assumed to be the one ``cfg`` trains on ``data`` (same seed, same
    settings); a study records ``M(old, old)`` and refuses another old model.
    """
    method_fields = dataclasses.asdict(method)
    for name, default in _ADDED_METHOD_FIELDS.items():
        if method_fields[name] == default:
            del method_fields[name]
    return _sha({**_experiment_payload(data, cfg), "replicate": replicate, "method": method_fields})


def make_record(method: MethodConfig, raw: dict, *, m_oo: float, k: int, key: str | None = None) -> dict:
    """A sweep record from a :func:`bclviz.pipeline.train_and_score` record, as JSON would
    give it back; ``compatible`` is judged on ``key`` (default ``mAP@k``)."""
    key = f"mAP@{k}" if key is None else key
    record = {
        "label": setting_label(method),
        "method": method.name,
        "settings": dataclasses.asdict(method),
        "self": raw["self"],
        "cross": raw["cross"],
        "compatible": bool(raw["cross"][key] > m_oo),
        "seconds": raw["seconds"],
    }
    if "seed" in raw:
        record["seed"] = raw["seed"]
    return json.loads(json.dumps(record))


def combine_seeds(per_seed: Sequence[dict], *, m_oo: float, k: int, key: str | None = None) -> dict:
    """One sweep record from per-seed records of the same setting: mean ``self``/``cross``,
    95% half-widths ``self_ci``/``cross_ci``, ``per_seed`` and the criterion on the mean
    of ``key`` (default ``mAP@k``)."""
    key = f"mAP@{k}" if key is None else key
    first = per_seed[0]
    record = {key: first[key] for key in ("label", "method", "settings")}
    record.update(summarise_seeds(per_seed))
    record["per_seed"] = [{key: r[key] for key in ("seed", "self", "cross", "seconds") if key in r} for r in per_seed]
    record["compatible"] = bool(record["cross"][key] > m_oo)
    record["seconds"] = sum(r["seconds"] for r in per_seed)
    return record


# ----------------------------------------------------------------------------- studies
def grid_jobs(data, cfg: ExperimentConfig, grid: Sequence[MethodConfig]) -> list:
    """The trials of a grid: every setting x seed replicate (setting-major), each with
    the params that name it in a grid study: ``setting`` (:func:`setting_id`, a
    categorical over the grid), ``replicate``, ``method`` and the method's knobs."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from .study import Job

    for i, method in enumerate(grid):
        if not isinstance(method, MethodConfig):
            raise TypeError(f"grid[{i}] must be a MethodConfig, got {type(method).__name__}")
    ids = {}
    for method in grid:
        other = ids.setdefault(setting_id(method), method)
        if other != method:  # pragma: no cover - setting_id names every field that differs
            raise ValueError(f"settings {other} and {method} share the name {setting_id(method)!r}")
    knob_values: dict[str, list] = {}
    for method in grid:
        for knob in method_class(method.name).knobs:
            if getattr(method, knob) is not None:
                knob_values.setdefault(knob, []).append(getattr(method, knob))
    dists = {"setting": CategoricalDistribution(tuple(ids)),
             "replicate": IntDistribution(0, cfg.seeds - 1),
             "method": CategoricalDistribution(tuple(dict.fromkeys(m.name for m in grid)))}
    for knob, values in knob_values.items():
        kind = IntDistribution if all(isinstance(v, int) for v in values) else FloatDistribution
        dists[knob] = kind(min(values), max(values))
    jobs = []
    for method in grid:
        knobs = {k: getattr(method, k) for k in method_class(method.name).knobs if getattr(method, k) is not None}
        for r in range(cfg.seeds):
            params = {"setting": setting_id(method), "replicate": r, "method": method.name, **knobs}
            jobs.append(Job(method, r, cache_key(data, cfg, method, r), params, {n: dists[n] for n in params}))
    return jobs


def grid_kind(jobs: Sequence) -> str:
    """``"grid-<hash>"``: a grid study's name after the prefix (its categorical choices)."""
    first = jobs[0].distributions
    return "grid-" + _sha([list(first["setting"].choices), list(first["method"].choices)])[:10]


def journal_path(folder: str | os.PathLike, data, cfg: ExperimentConfig) -> Path:
    """``folder/<dataset>-<fingerprint>.journal``: the journal file of the studies of
    ``data`` under ``cfg`` in ``folder``."""
    return Path(folder) / f"{study_prefix(data, cfg)}.journal"


def _records(grid, jobs, done: dict, *, seeds: int, m_oo: float, k: int, key: str,
             partial: bool = False) -> list[dict]:
    """Records over seeds in grid order (``partial``: settings with at least one finished seed)."""
    out = []
    for s in range(len(grid)):
        per_seed = [done[job.key] for job in jobs[s * seeds:(s + 1) * seeds] if job.key in done]
        if per_seed and (partial or len(per_seed) == seeds):
            out.append(combine_seeds(per_seed, m_oo=m_oo, k=k, key=key))
    return out


def run_sweep(
    data,
    old,
    cfg: ExperimentConfig,
    grid: Sequence[MethodConfig],
    *,
    cache_dir: str | os.PathLike | None,
    progress: bool = True,
    workers: int | None = None,
    callback: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Train and evaluate one new model per setting of ``grid`` and seed; return one record per setting.

    Parameters
    ----------
    data, old : the dataset (:class:`~bclviz.data.BCLData`) and the trained old model.
    cfg : the experiment (models, training, seed, ``k`` of mAP@k, ``seeds``); its ``methods`` are ignored.
    grid : the settings, e.g. from :func:`sweep_grid`.
    cache_dir : folder of the study's journal file (:func:`journal_path`), e.g.
        ``bclviz.cache.cache_dir("sweeps", "mine")``; ``None`` keeps the study in memory.
        Every (setting, seed) is a trial of the grid's study (:mod:`bclviz.study`):
        finished trials are read back, not retrained, trials finished by another grid
        over the same experiment in that folder are copied, and per-trial JSON files
        of earlier versions there are adopted.
    progress : show a progress bar over the trials (and, in one process, the training epochs).
    workers : processes that train the (setting, seed) trials
        (:func:`bclviz.trials.run_trials`; ``None``: ``$BCLVIZ_WORKERS`` or one per
        core); each trial is stored as soon as it finishes, and the worker count
        never changes a number.
    callback : called with the records so far (settings with at least one finished
        seed, means over those): first with what the study holds already (when it holds
        anything), then after every finished trial, and with the final records, e.g. a
        :class:`bclviz.widgets.ParetoMonitor`'s ``update``.

    Returns
    -------
    list of dict, in grid order, with ``label``, ``method``, ``settings``, ``self`` and
    ``cross`` (metric dicts of :func:`bclviz.evaluation.evaluate`, means over the
    ``cfg.seeds`` seed replicates), ``self_ci``/``cross_ci`` (95% Student-t half-widths),
    ``per_seed``, ``compatible`` (``M(new, old) > M(old, old)`` on the mean of the
    dataset's headline metric, :class:`~bclviz.scoring.Scorer`, strict) and ``seconds``
    (training time). Each (setting, seed) is stored on its own, so an interrupted sweep
    resumes at the seed where it stopped.
    """
    from .scheduler import run_jobs
    from .study import SweepStudy

    jobs = grid_jobs(data, cfg, grid)
    storage = None
    if cache_dir is not None:
        folder = Path(cache_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(err.errno, f"cannot write the sweep cache {folder}: {err.strerror or err}") from err
        storage = journal_path(folder, data, cfg)
    scorer = Scorer(data, k=cfg.k)
    m_oo = old_baseline(data, old, k=cfg.k, scorer=scorer)
    if not jobs:
        return []
    session = SweepStudy(storage, data=data, cfg=cfg, kind=grid_kind(jobs), m_oo=m_oo, metric=scorer.key)
    options = dict(seeds=cfg.seeds, m_oo=m_oo, k=cfg.k, key=scorer.key)
    shown: list = []

    def show(records: list[dict]) -> None:  # the callback sees each new state once
        if callback is not None and records != shown:
            shown[:] = records
            callback(records)

    if cache_dir is not None:
        session.adopt_json(jobs, cache_dir)  # records cached as JSON files by earlier versions
    session.ensure(jobs)  # copies what other studies of the experiment finished
    show(_records(grid, jobs, session.records(), partial=True, **options))  # what a resumed study has
    done = run_jobs(session, jobs, cfg=cfg, data=data, old=old, scorer=scorer, workers=workers, progress=progress,
                    on_record=lambda _job, _record: show(_records(grid, jobs, session.records(), partial=True,
                                                                  **options)))
    records = _records(grid, jobs, done, **options)
    show(records)
    return records


def sweep_study(data, cfg: ExperimentConfig, grid: Sequence[MethodConfig], *, cache_dir: str | os.PathLike):
    """The ``optuna.Study`` that :func:`run_sweep` recorded ``grid`` in (e.g. for
    ``optuna.visualization.plot_pareto_front``); ``KeyError`` naming the study if none."""
    import optuna

    from .storage import open_storage

    name = f"{study_prefix(data, cfg)}-{grid_kind(grid_jobs(data, cfg, grid))}"
    storage = open_storage(journal_path(cache_dir, data, cfg))
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise KeyError(f"no study {name!r} in {journal_path(cache_dir, data, cfg)}; run the sweep first") from None


def export_config(path: str | os.PathLike, cfg: ExperimentConfig, method: MethodConfig) -> Path:
    """Write ``method`` within ``cfg`` (``cfg.run(method)``) as a YAML run config for
    ``bclviz train --config``."""
    from .runconfig import save_run_config

    return save_run_config(path, cfg.run(method))
