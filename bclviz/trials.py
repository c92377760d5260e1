"""Trials: train and score many (method setting, seed replicate) pairs against one old model.

A *trial* is one new model: a :class:`~bclviz.config.MethodConfig` and a seed replicate,
trained with :func:`bclviz.pipeline.train_and_score`. Experiments (every method x its
seeds) and sweeps (every setting x its seeds) are lists of trials; :func:`run_trials`
runs them in this process or in ``workers`` worker processes, each with its own share
of the CPU threads, and yields each result as it finishes (so a sweep can cache it at
once).

The worker count never changes a number: every trial is seeded by its replicate
(:func:`bclviz.pipeline.new_model_seed`) and trains on its own generators, so a trial
gives the same record in any process. Each worker is a fresh interpreter running
:mod:`bclviz.trial_worker` (``python -m``), so nothing of the caller's ``__main__``
is re-run: it works from scripts without an ``if __name__ == "__main__"`` guard, from
Jupyter and after torch has started threads. Each worker receives the configuration,
the dataset and the old model once. Methods registered in ``__main__`` (a notebook or
script) or inside a function cannot be found by a fresh process, so trials of such a
method run here.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Listener, wait
from pathlib import Path

import torch

from .config import ExperimentConfig, MethodConfig
from .data.base import BCLData
from .loader import available_cores
from .methods import method_class
from .pipeline import train_and_score
from .scoring import Scorer
from .train import TrainResult

__all__ = ["Trial", "default_trial_workers", "resolve_trial_workers", "run_trials"]

_ENV = "BCLVIZ_WORKERS"


@dataclass(frozen=True)
class Trial:
    """One new model to train: ``method`` at seed replicate ``replicate``; ``keep``
    returns its trained model (otherwise only the record comes back)."""

    method: MethodConfig
    replicate: int = 0
    keep: bool = False


def default_trial_workers() -> int:
    """Worker processes for trials when none are asked for: ``$BCLVIZ_WORKERS`` if set,
    else one per core (up to 8)."""
    value = os.environ.get(_ENV)
    if value is not None:
        return resolve_trial_workers(_parse_env(value))
    return max(1, min(8, available_cores()))


def _parse_env(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${_ENV} must be an integer >= 1, got {value!r}") from None


def resolve_trial_workers(workers: int | None, n_trials: int | None = None, *, cfg: ExperimentConfig | None = None) -> int:
    """The number of worker processes to use: ``workers`` (``None``: :func:`default_trial_workers`),
    at most ``n_trials``; 1 (this process) when the new model trains on a GPU, since
    processes would only queue on it."""
    if workers is None:
        workers = default_trial_workers()
        if cfg is not None and _uses_gpu(cfg):
            workers = 1
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 or None (one per core), got {workers!r}")
    if n_trials is not None:
        workers = min(workers, max(1, n_trials))
    return workers


def _uses_gpu(cfg: ExperimentConfig) -> bool:
    device = cfg.new_train.device
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def _portable(method: MethodConfig) -> bool:
    """Whether a fresh process finds ``method``'s class by importing its module: not
    for classes defined in ``__main__`` or inside a function."""
    cls = method_class(method.name)
    return cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__


# ----------------------------------------------------------------------------- running
def train_trial(cfg: ExperimentConfig, data: BCLData, old: TrainResult, scorer: Scorer, trial: Trial, *,
                progress: bool = False) -> tuple[TrainResult | None, dict]:
    """Train and score one trial here; ``(TrainResult if trial.keep else None, record)``."""
    new, record = train_and_score(cfg, data, old, trial.method, scorer, replicate=trial.replicate, progress=progress)
    return (new if trial.keep else None), record


def for_workers(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` as a worker trains it: images decoded in the worker itself unless a
    DataLoader worker count is set (a trial worker is already one of several processes;
    the DataLoader worker count never changes the batches)."""
    def no_loader_workers(train):
        return train if train.workers is not None else dataclasses.replace(train, workers=0)
    return dataclasses.replace(cfg, old_train=no_loader_workers(cfg.old_train),
                               new_train=no_loader_workers(cfg.new_train))


def run_trials(
    cfg: ExperimentConfig,
    data: BCLData,
    old: TrainResult,
    trials: Sequence[Trial],
    *,
    scorer: Scorer | None = None,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "trials",
) -> Iterator[tuple[int, TrainResult | None, dict]]:
    """Train and score every trial; yield ``(index, TrainResult or None, record)`` as each finishes.

    ``record`` is :func:`~bclviz.pipeline.train_and_score`'s. With one worker the
    trials run here, in order, with per-epoch progress bars; with more, in worker
    processes (:mod:`bclviz.trial_worker`) given ``threads // workers`` CPU threads each,
    and results arrive in the order they finish. ``scorer`` (this process's, with its
    cached old-model embeddings) serves the trials run here.
    """
    trials = list(trials)
    for i, trial in enumerate(trials):
        if not isinstance(trial, Trial):
            raise TypeError(f"trials[{i}] must be a Trial, got {type(trial).__name__}")
    scorer = Scorer(data, k=cfg.k) if scorer is None else scorer
    remote = [i for i, t in enumerate(trials) if _portable(t.method)]
    workers = resolve_trial_workers(workers, len(remote), cfg=cfg)
    if workers <= 1:
        remote = []
    local = sorted(set(range(len(trials))) - set(remote))
    for i in local:
        new, record = train_trial(cfg, data, old, scorer, trials[i], progress=progress)
        yield i, new, record
    if remote:
        yield from _run_workers(cfg, data, old, [(i, trials[i]) for i in remote], workers, progress, desc)


def _send(conn, obj) -> None:
    conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(conn, proc: subprocess.Popen):
    try:
        return pickle.loads(conn.recv_bytes())
    except (EOFError, OSError) as err:
        code = proc.poll()
        raise RuntimeError(f"a trial worker (pid {proc.pid}) stopped unexpectedly (exit code {code})") from err


def _start_worker(address, authkey: bytes, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # the caller's import path, so that bclviz and modules registering methods import alike
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in (package_root, *sys.path) if p))
    env["BCLVIZ_TRIAL_AUTHKEY"] = authkey.hex()
    return subprocess.Popen([sys.executable, "-m", "bclviz.trial_worker", str(address)], env=env)


def _run_workers(cfg, data, old, jobs, workers, progress, desc):
    from tqdm.auto import tqdm

    threads = max(1, torch.get_num_threads() // workers)
    authkey = secrets.token_bytes(16)
    modules = sorted({method_class(trial.method.name).__module__ for _, trial in jobs})
    setup = (for_workers(cfg), data, old, threads, modules)
    procs, conns, busy = [], [], {}
    bar = tqdm(total=len(jobs), desc=f"{desc} ({workers} workers)", disable=not progress)
    try:
        with Listener(authkey=authkey) as listener:
            for _ in range(workers):
                procs.append(_start_worker(listener.address, authkey, threads))
            for _ in range(workers):
                conns.append(listener.accept())
        owner = dict(zip(conns, procs))
        for conn in conns:
            _send(conn, ("setup", setup))
        queue = list(jobs)
        for conn in conns:
            if queue:
                busy[conn] = queue.pop(0)
                _send(conn, ("trial", busy[conn][1]))
        while busy:
            for conn in wait(list(busy)):
                i, _ = busy.pop(conn)
                status, payload = _receive(conn, owner[conn])
                if status == "error":
                    raise RuntimeError(f"trial {i} ({_setting_text(jobs, i)}) failed in a worker:\n{payload}")
                if queue:
                    busy[conn] = queue.pop(0)
                    _send(conn, ("trial", busy[conn][1]))
                bar.update(1)
                yield (i, *payload)
    finally:
        bar.close()
        _stop(procs, conns, busy)


def _setting_text(jobs, i: int) -> str:
    trial = dict(jobs)[i]
    return f"method {trial.method.name!r}, replicate {trial.replicate}"


def _stop(procs, conns, busy) -> None:
    """Idle workers are told to stop; busy ones (after an error or an early exit) and
    ones that never connected are killed."""
    running = [conn in busy for conn in conns] + [True] * (len(procs) - len(conns))
    for conn in conns:
        if conn not in busy:
            try:
                _send(conn, ("stop", None))
            except OSError:
                pass
        conn.close()
    for proc, kill in zip(procs, running):
        if kill:
            proc.kill()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
