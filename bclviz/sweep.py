"""Sweeps over method settings, with an on-disk cache that makes them resumable.

:func:`sweep_grid` lists the settings (NDPP/ODPP over eps, k, gamma, next to the
baselines), :func:`run_sweep` trains and evaluates one new model per setting and writes
each record to its own JSON file in ``cache_dir`` the moment it is done (atomically, so
an interrupted sweep leaves only whole files). A rerun reads the finished settings back
and trains only the rest. :func:`export_config` writes a chosen setting as a run config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from .config import ExperimentConfig, MethodConfig
from .experiment import retrieval_scores
from .methods import method_class, perturbing_methods
from .scoring import Scorer
from .stats import summarise_seeds
from .trials import Trial, run_trials

__all__ = [
    "BASELINES", "sweep_grid", "setting_label", "retrieval_scores", "old_baseline", "combine_seeds",
    "cache_key", "load_cached_record", "make_record", "run_sweep", "export_config",
]

#: baseline methods a sweep runs next to NDPP/ODPP by default (method.md section 5)
BASELINES = ("proto", "bct", "l2", "lce", "hot_refresh", "independent")
_RECORD_KEYS = ("label", "method", "settings", "self", "cross", "compatible", "seconds")  # one seed's record
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


def cache_key(data, cfg: ExperimentConfig, method: MethodConfig, replicate: int = 0) -> str:
    """sha256 of the dataset, the experiment (without ``methods``, ``seeds``,
    ``reference`` and ``output_dir``), the method settings and the seed replicate.

    The old model is assumed to be the one ``cfg`` trains on ``data`` (same seed, same
    settings); a cache filled with another old model must live in another folder.
    """
    experiment = dataclasses.asdict(cfg)
    for name in ("methods", "seeds", "reference", "output_dir"):
        experiment.pop(name)
    # TrainConfig fields that cannot change a result (added after cache version 1):
    # left out of the key at any value, so records cached before they existed stay valid
    # and, e.g., another DataLoader worker count reuses them.
    for section in ("old_train", "new_train"):
        for name in ("workers",):
            experiment[section].pop(name, None)
    method_fields = dataclasses.asdict(method)
    for name, default in _ADDED_METHOD_FIELDS.items():
        if method_fields[name] == default:
            del method_fields[name]
    payload = {
        "replicate": replicate,
        "version": _CACHE_VERSION,
        "dataset": data.name,
        "data_info": data.info,
        "experiment": experiment,
        "method": method_fields,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_cached_record(path: str | os.PathLike) -> dict | None:
    """The record stored at ``path``; ``None`` when missing, or (with a warning) unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warnings.warn(f"sweep cache file {path} is unreadable ({err}); recomputing it", stacklevel=2)
        return None
    missing = [key for key in _RECORD_KEYS if not isinstance(record, dict) or key not in record]
    if missing:
        warnings.warn(f"sweep cache file {path} lacks {missing}; recomputing it", stacklevel=2)
        return None
    return record


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


def run_sweep(
    data,
    old,
    cfg: ExperimentConfig,
    grid: Sequence[MethodConfig],
    *,
    cache_dir: str | os.PathLike | None,
    progress: bool = True,
    workers: int | None = None,
) -> list[dict]:
    """Train and evaluate one new model per setting of ``grid``; return one record each.

    Parameters
    ----------
    data, old : the dataset (:class:`~bclviz.data.BCLData`) and the trained old model.
    cfg : the experiment (models, training, seed, ``k`` of mAP@k); its ``methods`` are ignored.
    grid : the settings, e.g. from :func:`sweep_grid`.
    cache_dir : folder of the per-setting JSON files (``<cache_key>.json``), e.g.
        ``bclviz.cache.cache_dir("sweeps", "mine")``; ``None`` caches nothing. Finished settings found there are read, not retrained;
        unreadable files are recomputed and overwritten with a warning.
    progress : show a progress bar over the trials (and, in one process, the training epochs).
    workers : processes that train the (setting, seed) trials
        (:func:`bclviz.trials.run_trials`; ``None``: ``$BCLVIZ_WORKERS`` or one per
        core); each record is cached as soon as its trial finishes, and the worker count
        never changes a number.

    Returns
    -------
    list of dict, in grid order, with ``label``, ``method``, ``settings``, ``self`` and
    ``cross`` (metric dicts of :func:`bclviz.evaluation.evaluate`, means over the
    ``cfg.seeds`` seed replicates), ``self_ci``/``cross_ci`` (95% Student-t half-widths),
    ``per_seed``, ``compatible`` (``M(new, old) > M(old, old)`` on the mean of the
    dataset's headline metric, :class:`~bclviz.scoring.Scorer`, strict) and ``seconds``
    (training time). Each (setting, seed) is cached on its own,
    so an interrupted sweep resumes at the seed where it stopped.
    """
    from .io import write_json

    for i, method in enumerate(grid):
        if not isinstance(method, MethodConfig):
            raise TypeError(f"grid[{i}] must be a MethodConfig, got {type(method).__name__}")
    folder = None if cache_dir is None else Path(cache_dir)
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"cannot write the sweep cache {folder}: {err.strerror or err}") from err
    scorer = Scorer(data, k=cfg.k)
    paths, per_seed, todo = {}, {}, []
    for s, method in enumerate(grid):
        for replicate in range(cfg.seeds):
            path = None if folder is None else folder / f"{cache_key(data, cfg, method, replicate)}.json"
            record = None if path is None else load_cached_record(path)
            if record is None:
                paths[len(todo)] = path
                todo.append((s, replicate, Trial(method, replicate)))
            else:
                per_seed[s, replicate] = record
    m_oo = old_baseline(data, old, k=cfg.k, scorer=scorer)
    trials = [trial for _, _, trial in todo]
    for i, _, raw in run_trials(cfg, data, old, trials, scorer=scorer, workers=workers, progress=progress,
                                desc="sweep"):
        s, replicate, trial = todo[i]
        record = make_record(trial.method, raw, m_oo=m_oo, k=cfg.k, key=scorer.key)
        if paths[i] is not None:
            write_json(paths[i], record)
        per_seed[s, replicate] = record
    return [combine_seeds([per_seed[s, r] for r in range(cfg.seeds)], m_oo=m_oo, k=cfg.k, key=scorer.key)
            for s in range(len(grid))]


def export_config(path: str | os.PathLike, cfg: ExperimentConfig, method: MethodConfig) -> Path:
    """Write ``method`` within ``cfg`` (``cfg.run(method)``) as a YAML run config for
    ``bclviz train --config``."""
    from .runconfig import save_run_config

    return save_run_config(path, cfg.run(method))
