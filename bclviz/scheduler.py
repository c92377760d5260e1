"""Filling a study: which trials run, where, and what happens to those other processes hold.

:func:`run_jobs` has a given list of (setting, seed) trials finished (a grid): trials
another study of the same prefix finished are copied, the missing ones are claimed one
at a time and trained in ``workers`` local processes (:func:`bclviz.trials.run_trials`
with a feed, so a trial is claimed only when a worker can start it) or launched as
external jobs (:class:`Launch`, e.g. ``torchrun ... -m bclviz.cli train``), and trials
other processes hold are waited for, and taken over when stale. :func:`run_search` fills
a search study up to a budget with settings its sampler picks, in batches of
``workers`` asked once the previous batch is told (see :mod:`bclviz.tune`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import TrialState, create_trial

from .config import ExperimentConfig, MethodConfig
from .scoring import Scorer
from .study import KEY, RETRY, SweepStudy
from .sweep import cache_key, make_record, setting_label
from .trials import Trial, resolve_trial_workers, run_trials

__all__ = ["Launch", "run_jobs", "run_search"]


@dataclass(frozen=True)
class Launch:
    """Run each trial as an external command instead of in a local worker.

    Trial ``n`` gets the run folder ``folder/trial-<n>`` with its run config
    (``run.yaml``: the experiment with the trial's setting) and a copy of the old model's
    checkpoint (``old_checkpoint`` and its ``.json``, so the job restores the old model
    instead of training it) and runs ``*command, "--config", run.yaml``, e.g.
    ``("torchrun", "--standalone", "--nproc_per_node=8", "-m", "bclviz.cli", "train")``,
    its output in ``job.log`` there. The job's ``metrics.json``
    (:func:`bclviz.runner.run_training`) becomes the trial's record. ``bclviz train``
    trains seed replicate 0, so launched trials are replicate 0 only.
    """

    command: tuple[str, ...]
    folder: Path
    old_checkpoint: Path | None = None

    def run(self, cfg: ExperimentConfig, method: MethodConfig, replicate: int, number: int, *, m_oo: float,
            key: str) -> dict:
        """Run one trial; return its record as :func:`bclviz.pipeline.train_and_score` would."""
        from .runconfig import save_run_config

        if replicate != 0:
            raise ValueError(f"a launched trial trains seed replicate 0 only (bclviz train), got replicate "
                             f"{replicate}; set seeds: 1 in the run config")
        run_dir = Path(self.folder) / f"trial-{number:04d}"
        config = save_run_config(run_dir / "run.yaml", cfg.run(method, output_dir=str(run_dir)))
        if self.old_checkpoint is not None and Path(self.old_checkpoint).exists():
            for suffix in ("", ".json"):
                shutil.copyfile(f"{self.old_checkpoint}{suffix}", run_dir / f"old.pt{suffix}")
        command = [*self.command, "--config", str(config)]
        t0 = time.perf_counter()
        with open(run_dir / "job.log", "w", encoding="utf-8") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0:
            raise RuntimeError(f"trial {number} ({setting_label(method)}): `{' '.join(command)}` exited with "
                               f"{code}; see {run_dir / 'job.log'}")
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        if abs(metrics["old_old"][key] - m_oo) > 1e-6:
            raise ValueError(f"trial {number}: the job's old model scores M(old, old) = {metrics['old_old'][key]:.6f}, "
                             f"the study's {m_oo:.6f}; give the job the study's old model (old_checkpoint)")
        return {"seed": cfg.seed + 1, "self": metrics["new_new"], "cross": metrics["new_old"],
                "seconds": time.perf_counter() - t0}


def _execute(feed, claimed, *, cfg, data, old, scorer, workers, progress, desc, total, launch, m_oo):
    """``(index, raw record)`` of every trial the feed hands out: trained by
    :func:`~bclviz.trials.run_trials` or, with ``launch``, run one at a time as jobs."""
    if launch is None:
        results = run_trials(cfg, data, old, feed, scorer=scorer, workers=workers, progress=progress, desc=desc,
                             total=total)
        try:
            for i, _, raw in results:
                yield i, raw
        finally:
            results.close()
        return
    i = 0
    while (trial := feed()) is not None:
        yield i, launch.run(cfg, trial.method, trial.replicate, claimed[i].number, m_oo=m_oo, key=scorer.key)
        i += 1


def run_jobs(session: SweepStudy, jobs: Sequence, *, cfg: ExperimentConfig, data, old, scorer: Scorer | None = None,
             workers: int | None = None, progress: bool = True,
             on_record: Callable[[object, dict], None] | None = None, limit: int | None = None,
             poll: float = 1.0, launch: Launch | None = None) -> dict[str, dict]:
    """Have the trial of every job (:class:`bclviz.study.Job`) finished in ``session``.

    Trials another study of the same prefix finished are copied; the missing ones are
    claimed one at a time and trained here in ``workers`` processes
    (:func:`bclviz.trials.run_trials`) or as ``launch`` jobs, each stored as soon as it
    finishes (``on_record(job, record)`` is called then); trials that other processes
    hold are waited for (polled every ``poll`` seconds), and taken over when they go
    stale. ``limit`` caps how many trials this call trains (then it returns without
    waiting). Returns ``{key: record}`` of the finished trials.
    """
    scorer = Scorer(data, k=cfg.k) if scorer is None else scorer
    keys = list(dict.fromkeys(job.key for job in jobs))
    by_key = {job.key: job for job in jobs}
    trained, waiting = 0, False
    with session.holding():
        while True:
            session.fail_stale()
            session.ensure(jobs)
            done = session.records()
            todo = [key for key in keys if key not in done]
            if not todo or (limit is not None and trained >= limit):
                return done
            claimed = []

            def feed():
                if limit is not None and trained + len(claimed) >= limit:
                    return None
                trial = session.claim(todo)
                if trial is None:
                    return None
                claimed.append(trial)
                job = by_key[trial.system_attrs[KEY]]
                return Trial(job.method, job.replicate)

            for i, raw in _execute(feed, claimed, cfg=cfg, data=data, old=old, scorer=scorer, workers=workers,
                                   progress=progress, desc="sweep", total=len(todo), launch=launch,
                                   m_oo=session.m_oo):
                job = by_key[claimed[i].system_attrs[KEY]]
                record = make_record(job.method, raw, m_oo=session.m_oo, k=cfg.k, key=scorer.key)
                session.complete(claimed[i], record)
                if on_record is not None:
                    on_record(job, record)
            trained += len(claimed)
            if not claimed:
                if progress and not waiting:
                    print(f"sweep: waiting for {len(todo)} trial(s) that other processes hold", file=sys.stderr)
                waiting = True
                time.sleep(poll)


def run_search(session: SweepStudy, space, *, budget: int, template: MethodConfig, cfg, data, old,
               scorer: Scorer, workers: int | None = None, progress: bool = True, on_record=None,
               poll: float = 1.0, launch: Launch | None = None) -> None:
    """Fill ``session`` (a search study) up to ``budget`` trials of settings the sampler of
    ``space`` (a :class:`~bclviz.space.SearchSpace`) picks, at seed replicate 0.

    The sampler is asked in batches of ``workers`` settings, each batch once the previous
    one is told, and reseeded before every ask by (space seed, finished trials, position
    in the batch): one process samples the same settings on every run, also after a
    resume. Trials another process holds count towards the budget and are waited for (and
    taken over when stale); a trial that failed as stale or interrupted is asked again
    with the same settings. ``on_record(trial, record)`` is called for every finished one.
    """
    workers = 1 if launch is not None else resolve_trial_workers(workers, budget, cfg=cfg)
    methods: dict[int, MethodConfig] = {}
    keys: dict[int, str] = {}
    claimed, in_flight, pending = [], set(), []

    def key_of(trial) -> str:
        methods[trial.number] = space.suggest(trial, template)
        keys[trial.number] = cache_key(data, cfg, methods[trial.number], 0)
        return keys[trial.number]

    def next_batch() -> list:
        _requeue_failed(session)
        states = [t.state for t in session.trials()]
        waiting = states.count(TrialState.WAITING)
        counted = sum(s in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING) for s in states)
        finished = states.count(TrialState.COMPLETE)
        batch = []
        while len(batch) < workers and (waiting > 0 or counted < budget):
            session.study.sampler = space.make_sampler(finished, len(batch))
            trial, done = session.ask(key_of)
            waiting, counted = (waiting - 1, counted) if waiting > 0 else (waiting, counted + 1)
            if done:  # sampled a setting that is finished already: told its record, nothing to train
                if on_record is not None:
                    on_record(trial, session.records()[keys[trial.number]])
                continue
            batch.append(trial)
        return batch

    def feed():
        if not pending:
            if in_flight:
                return None  # the next batch is asked once this one is told
            pending.extend(next_batch())
            if not pending:
                return None
        trial = pending.pop(0)
        claimed.append(trial)
        in_flight.add(trial.number)
        return Trial(methods[trial.number], 0)

    with session.holding():
        while True:
            session.fail_stale()
            for i, raw in _execute(feed, claimed, cfg=cfg, data=data, old=old, scorer=scorer, workers=workers,
                                   progress=progress, desc="search", total=budget, launch=launch,
                                   m_oo=session.m_oo):
                trial = claimed[i]
                record = make_record(methods[trial.number], raw, m_oo=session.m_oo, k=cfg.k, key=scorer.key)
                session.complete(session.storage.get_trial(trial._trial_id), record)
                in_flight.discard(trial.number)
                if on_record is not None:
                    on_record(trial, record)
            if not session.trials((TrialState.RUNNING, TrialState.WAITING)) and not session.fail_stale():
                return
            time.sleep(poll)  # trials other processes hold


def _requeue_failed(session: SweepStudy) -> None:
    """Create again (WAITING, same params) the failed trials marked for a retry (stale or
    interrupted) whose key has no finished, running or waiting trial."""
    trials = session.trials()
    live = {t.system_attrs.get(KEY) for t in trials if t.state in (TrialState.COMPLETE, TrialState.RUNNING,
                                                                     TrialState.WAITING)}
    for t in trials:
        key = t.system_attrs.get(KEY)
        if t.state == TrialState.FAIL and RETRY in t.system_attrs and key is not None and key not in live:
            session.study.add_trial(create_trial(state=TrialState.WAITING, params=t.params,
                                                 distributions=t.distributions, system_attrs={KEY: key}))
            live.add(key)
