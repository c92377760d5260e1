"""Trials: train and score many (method setting, seed replicate) pairs against one old model.

A *trial* is one new model: a :class:`~bclviz.config.MethodConfig` and a seed replicate,
trained with :func:`bclviz.pipeline.train_and_score`. Experiments (every method x its
seeds) and sweeps (every setting x its seeds) are lists of trials; :func:`run_trials`
runs them in this process or in ``workers`` worker processes, each trial with
:func:`trial_threads` CPU threads, and yields each result as it finishes (so a sweep
can record it at once). Instead of a list, a *feed* (a function returning the next trial, or None when
there is none right now) hands out trials one at a time as workers become free: a study
(:mod:`bclviz.study`) claims a trial only when a worker can start it, so several
processes can share one study.

The worker count never changes a number: every trial is seeded by its replicate
(:func:`bclviz.pipeline.new_model_seed`), trains on its own generators and, on the CPU,
with the same number of threads wherever it runs (:func:`trial_threads`: CPU kernels
sum in an order that depends on the thread count, and training amplifies the last-bit
differences), so a trial gives the same record in any process. Each worker is a fresh
interpreter running :mod:`bclviz.trial_worker` (``python -m``), so nothing of the caller's ``__main__``
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Listener, wait
from pathlib import Path

import torch

from .config import ExperimentConfig, MethodConfig
from .data.base import BCLData
from .loader import available_cores
from .methods import list_methods, method_class
from .pipeline import train_and_score
from .scoring import Scorer
from .train import TrainResult

__all__ = ["Trial", "default_trial_workers", "resolve_trial_workers", "model_threads", "run_trials",
           "trial_threads"]

_ENV = "BCLVIZ_WORKERS"
#: this process's CPU threads when bclviz was imported ($OMP_NUM_THREADS, else one per core)
_PROCESS_THREADS = torch.get_num_threads()
#: set in each worker's environment: the trial threads of the process that started it
_THREADS_ENV = "BCLVIZ_TRIAL_THREADS"


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


def trial_threads() -> int:
    """The CPU threads every trial trains with, in this process or in a worker: this
    process's threads at import shared among :func:`default_trial_workers` workers. It
    depends on the machine, ``$OMP_NUM_THREADS`` and ``$BCLVIZ_WORKERS``, never on a
    call's ``workers`` or on how many trials it runs: a model trained on the CPU with 1
    thread differs in its last bits from one trained with 2, and after some epochs in
    its mAP too (about 0.005 on glyphs). A worker uses the count of the process that
    started it."""
    inherited = os.environ.get(_THREADS_ENV)
    if inherited is not None:
        return int(inherited)
    return max(1, _PROCESS_THREADS // default_trial_workers())


@contextmanager
def model_threads(device: str):
    """Train a model on ``device`` with :func:`trial_threads` CPU threads (the old model
    too, so that it is the same whatever thread count this process has); a GPU model
    keeps this process's threads."""
    before = torch.get_num_threads()
    wanted = before if _on_gpu(device) else trial_threads()
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if wanted != before:
            torch.set_num_threads(before)


def _uses_gpu(cfg: ExperimentConfig) -> bool:
    return _on_gpu(cfg.new_train.device)


def _on_gpu(device: str) -> bool:
    return str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _portable(method: MethodConfig) -> bool:
    """Whether a fresh process finds ``method``'s class by importing its module: not
    for classes defined in ``__main__`` or inside a function."""
    cls = method_class(method.name)
    return cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__


# ----------------------------------------------------------------------------- running
def train_trial(cfg: ExperimentConfig, data: BCLData, old: TrainResult, scorer: Scorer, trial: Trial, *,
                progress: bool = False) -> tuple[TrainResult | None, dict]:
    """Train and score one trial here, with :func:`trial_threads` CPU threads;
    ``(TrainResult if trial.keep else None, record)``."""
    with model_threads(cfg.new_train.device):
        new, record = train_and_score(cfg, data, old, trial.method, scorer, replicate=trial.replicate,
                                      progress=progress)
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
    trials: Sequence[Trial] | Callable[[], Trial | None],
    *,
    scorer: Scorer | None = None,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "trials",
    total: int | None = None,
) -> Iterator[tuple[int, TrainResult | None, dict]]:
    """Train and score every trial; yield ``(index, TrainResult or None, record)`` as each finishes.

    ``record`` is :func:`~bclviz.pipeline.train_and_score`'s. With one worker the
    trials run here, in order, with per-epoch progress bars; with more, in worker
    processes (:mod:`bclviz.trial_worker`), and results arrive in the order they finish.
    ``scorer`` (this process's, with its cached old-model embeddings) serves the trials
    run here.

    ``trials`` is a sequence, or a *feed*: a function called whenever a worker is free
    (after the caller has handled the previous result) that returns the next
    :class:`Trial`, or None when there is none right now. Running ends when the feed
    returns None while no trial is in flight; ``index`` then counts the trials in the
    order the feed handed them out, and ``total`` (if known) sizes the progress bar.
    """
    if callable(trials) and not isinstance(trials, Sequence):
        scorer = Scorer(data, k=cfg.k) if scorer is None else scorer
        yield from _run_feed(cfg, data, old, trials, scorer, workers, progress, desc, total)
        return
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
        jobs = [(i, trials[i]) for i in remote]
        modules = sorted({method_class(trial.method.name).__module__ for _, trial in jobs})
        queue = iter(jobs[workers:])
        yield from _run_workers(cfg, data, old, scorer, lambda: next(queue, None), jobs[:workers], modules,
                                progress, desc, len(jobs), names=dict(jobs))


def _run_feed(cfg, data, old, feed, scorer, workers, progress, desc, total):
    """:func:`run_trials` with a feed: draw trials one at a time, as workers free up."""
    workers = resolve_trial_workers(workers, total, cfg=cfg)
    drawn: list[Trial] = []

    def take():
        trial = feed()
        if trial is None:
            return None
        if not isinstance(trial, Trial):
            raise TypeError(f"the trial feed must return a Trial or None, got {type(trial).__name__}")
        drawn.append(trial)
        return len(drawn) - 1, trial

    if workers <= 1:
        while (job := take()) is not None:
            yield (job[0], *train_trial(cfg, data, old, scorer, job[1], progress=progress))
        return
    first = []  # the first trials, one per worker to start (a feed may have fewer)
    while len(first) < workers and (job := take()) is not None:
        if _portable(job[1].method):
            first.append(job)
        else:
            yield (job[0], *train_trial(cfg, data, old, scorer, job[1], progress=progress))
    if not first:
        return
    modules = sorted({method_class(name).__module__ for name in list_methods()
                      if _portable(MethodConfig(name=name))})
    yield from _run_workers(cfg, data, old, scorer, take, first, modules, progress, desc, total, names=drawn)


def _send(conn, obj) -> None:
    conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(conn, proc: subprocess.Popen):
    try:
        return pickle.loads(conn.recv_bytes())
    except (EOFError, OSError) as err:
        code = proc.poll()
        raise RuntimeError(f"a trial worker (pid {proc.pid}) stopped unexpectedly (exit code {code})") from err


def _start_worker(address, authkey: bytes, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               **{_THREADS_ENV: str(threads)})
    # the caller's import path, so that bclviz and modules registering methods import alike
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in (package_root, *sys.path) if p))
    env["BCLVIZ_TRIAL_AUTHKEY"] = authkey.hex()
    return subprocess.Popen([sys.executable, "-m", "bclviz.trial_worker", str(address)], env=env)


def _run_workers(cfg, data, old, scorer, take, first, modules, progress, desc, total, *, names):
    """Start one worker per job of ``first`` and send it that job; then give each free
    worker the next job of ``take()`` (``(index, Trial)`` or None) until none is left and
    none is in flight. A trial a fresh process cannot import runs here."""
    from tqdm.auto import tqdm

    workers = len(first)
    threads = trial_threads()
    authkey = secrets.token_bytes(16)
    setup = (for_workers(cfg), data, old, modules)
    procs, conns, busy = [], [], {}
    bar = tqdm(total=total, desc=f"{desc} ({workers} workers)", disable=not progress)
    try:
        with Listener(authkey=authkey) as listener:
            for _ in range(workers):
                procs.append(_start_worker(listener.address, authkey, threads))
            for _ in range(workers):
                conns.append(listener.accept())
        owner = dict(zip(conns, procs))
        for conn in conns:
            _send(conn, ("setup", setup))
        for conn, job in zip(conns, first):
            busy[conn] = job
            _send(conn, ("trial", job[1]))
        idle: list = []
        while busy:
            for conn in wait(list(busy)):
                i, _ = busy.pop(conn)
                status, payload = _receive(conn, owner[conn])
                if status == "error":
                    raise RuntimeError(f"trial {i} ({_setting_text(names, i)}) failed in a worker:\n{payload}")
                idle.append(conn)
                bar.update(1)
                yield (i, *payload)
            while idle and (job := take()) is not None:
                if not _portable(job[1].method):
                    yield (job[0], *train_trial(cfg, data, old, scorer, job[1], progress=False))
                    bar.update(1)
                    continue
                conn = idle.pop()
                busy[conn] = job
                _send(conn, ("trial", job[1]))
    finally:
        bar.close()
        _stop(procs, conns, busy)


def _setting_text(names, i: int) -> str:
    trial = names[i]
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
