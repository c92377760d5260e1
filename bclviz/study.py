"""Optuna studies behind sweeps, searches and the training lab: one trial per (setting, seed).

Every trained (method setting, seed replicate) is one trial of an Optuna study with two
objectives, self-test and cross-test on the dataset's headline metric (both maximised),
and the compatibility criterion ``cross > M(old, old)`` as a constraint, stored the way
Optuna's ``constraints_func`` stores it (system attribute ``"constraints"``, feasible
when <= 0). The user attribute ``"record"`` holds the whole record
(:func:`bclviz.sweep.make_record`): what a sweep reads back is what was trained, to the
digit.

Identity. The system attribute ``"bclviz:key"`` is :func:`bclviz.sweep.cache_key` of the
trial: dataset, data, experiment, setting and replicate. Study names start with
:func:`bclviz.sweep.study_prefix` (dataset and a fingerprint of the data and the experiment), so
another dataset, split, model or training never reuses a trial. A trial that another
study of the same prefix in the same storage has finished is copied, not retrained: the
numbers depend only on (setting, seed).

Claims and resumption. A trial to train is created WAITING and claimed by the process
that trains it (``WAITING -> RUNNING`` is atomic in every Optuna storage), which names
itself a claimant before and the owner after the claim (host, pid, process start time,
session; :mod:`bclviz.storage`) and refreshes a heartbeat every ``heartbeat`` seconds
while it holds the trial. A RUNNING trial is *stale* when its owner is gone: in this
process when the session that claimed it has ended, on the same host when its process
no longer runs (both checked at once), on another host when its heartbeat is older than
``stale_after`` seconds. A stale trial is marked
FAIL (or COMPLETE when its record was written before its owner died) and its (setting,
seed) is created again, so a sweep killed at any point resumes with nothing lost or
repeated. A trial interrupted in a live process (an exception, Ctrl-C) is marked FAIL
on the way out. Two processes that create the same missing trial at once leave a
duplicate; it is PRUNED when claimed (user attribute ``"bclviz:duplicate_of"``). This is
bclviz's own stale-trial check, not Optuna's heartbeat (which only RDB storages have),
so that journal files, SQLite and server databases behave alike.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState, create_trial

from .config import MethodConfig
from .storage import BEAT, CLAIMANT, OWNER, live_session, open_storage, owner, quiet, stale_reason

__all__ = ["Job", "SweepStudy", "KEY", "RECORD"]

KEY = "bclviz:key"
RECORD = "record"
RETRY = "bclviz:retry"
CONSTRAINTS = "constraints"  # Optuna's key (optuna.study._constrained_optimization)
_LIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
_JSON_KEYS = ("label", "method", "settings", "self", "cross", "compatible", "seconds")  # an old cache file


@dataclass(frozen=True)
class Job:
    """One trial to have: ``method`` at seed replicate ``replicate``, its ``key``
    (:func:`bclviz.sweep.cache_key`) and the ``params``/``distributions`` that name it
    in the study."""

    method: MethodConfig
    replicate: int
    key: str
    params: dict
    distributions: dict


# ----------------------------------------------------------------------------- the study
class SweepStudy:
    """One Optuna study of (setting, seed) trials on one dataset, experiment and old model.

    Parameters
    ----------
    storage : anything :func:`open_storage` takes (``None``: in memory).
    data, cfg : the dataset and the experiment (they name the study, :func:`study_prefix`).
    kind : the rest of the study's name, e.g. ``"grid-1a2b3c4d"`` (ignored with ``name``).
    m_oo : ``M(old, old)`` on ``metric``, the criterion's bar; a study built with
        another old model (another ``M(old, old)``) is refused with ``ValueError``.
    metric : the headline metric the objectives are read from.
    name : an explicit study name; it must not hold trials of other data or another experiment.
    sampler : the study's sampler (searches); default a seeded random sampler (never
        asked: grids create their trials).
    stale_after, heartbeat : seconds (see the module docstring); ``claim_grace``: seconds
        after which a RUNNING trial that names no owner or claimant is stale.

    Attributes
    ----------
    study : the ``optuna.Study``; ``storage``: its storage.
    """

    def __init__(self, storage, *, data, cfg, kind: str, m_oo: float, metric: str, name: str | None = None,
                 sampler: optuna.samplers.BaseSampler | None = None, stale_after: float = 600.0,
                 heartbeat: float = 60.0, claim_grace: float = 60.0) -> None:
        from .sweep import fingerprint, study_prefix

        self.storage = open_storage(storage)
        self.prefix = study_prefix(data, cfg)
        self.name = name or f"{self.prefix}-{kind}"
        self.m_oo, self.metric = float(m_oo), metric
        self.stale_after, self.heartbeat, self.claim_grace = stale_after, heartbeat, claim_grace
        self._held: set[int] = set()
        self._session: str | None = None
        self._lock = threading.Lock()
        with quiet():
            self.study = optuna.create_study(storage=self.storage, study_name=self.name, load_if_exists=True,
                                             directions=["maximize", "maximize"],
                                             sampler=sampler or optuna.samplers.RandomSampler(seed=0))
        self._check_or_set(fingerprint=fingerprint(data, cfg), m_oo=self.m_oo, metric=metric, dataset=data.name)

    def _check_or_set(self, **attrs) -> None:
        stored = self.study.user_attrs
        if "fingerprint" in stored and stored["fingerprint"] != attrs["fingerprint"]:
            raise ValueError(f"study {self.name!r} holds trials of other data or another experiment "
                             f"(fingerprint {stored['fingerprint'][:16]}, this run {attrs['fingerprint'][:16]}); "
                             "choose another study name")
        if "m_oo" in stored and abs(stored["m_oo"] - attrs["m_oo"]) > 1e-6:
            raise ValueError(f"study {self.name!r} was built against an old model with M(old, old) = "
                             f"{stored['m_oo']:.6f}, this one scores {attrs['m_oo']:.6f}: another old model. Train "
                             "the old model the same way (seed, device) or use another storage")
        for key, value in attrs.items():
            if key not in stored:
                self.study.set_user_attr(key, value)
        if not self.study.metric_names:
            with quiet():
                self.study.set_metric_names([f"self {self.metric}", f"cross {self.metric}"])

    # -- reading ----------------------------------------------------------------------
    def trials(self, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        """The study's trials (number order), optionally only those in ``states``."""
        return self.study.get_trials(deepcopy=False, states=None if states is None else tuple(states))

    def records(self) -> dict[str, dict]:
        """``{key: record}`` of the finished trials (the first one per key)."""
        out: dict[str, dict] = {}
        for t in self.trials((TrialState.COMPLETE,)):
            key = t.system_attrs.get(KEY)
            if key is not None and RECORD in t.user_attrs:
                out.setdefault(key, t.user_attrs[RECORD])
        return out

    def values(self, record: dict) -> list[float]:
        """The objectives of a record: ``[self, cross]`` on the headline metric."""
        return [float(record["self"][self.metric]), float(record["cross"][self.metric])]

    def constraint(self, record: dict) -> list[float]:
        """``[c]`` with ``c <= 0`` exactly when ``cross > M(old, old)`` (Optuna's feasibility)."""
        return [math.nextafter(self.m_oo - self.values(record)[1], math.inf)]

    def finished_elsewhere(self, keys: Iterable[str]) -> dict[str, tuple[str, FrozenTrial]]:
        """``{key: (study name, trial)}``: finished trials of ``keys`` in the other studies
        of this storage whose name starts with the same prefix."""
        wanted, found = set(keys), {}
        for other in self.storage.get_all_studies():
            if other.study_name == self.name or not other.study_name.startswith(self.prefix):
                continue
            for t in self.storage.get_all_trials(other._study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
                key = t.system_attrs.get(KEY)
                if key in wanted and RECORD in t.user_attrs:
                    found.setdefault(key, (other.study_name, t))
        return found

    # -- creating and claiming ----------------------------------------------------------
    def ensure(self, jobs: Sequence[Job]) -> int:
        """Create the trials of ``jobs`` the study does not have (finished, running or
        waiting): copied when another study of the prefix finished them, else WAITING.
        Returns the number created WAITING."""
        present = {t.system_attrs.get(KEY) for t in self.trials(_LIVE)}
        missing = list({j.key: j for j in jobs if j.key not in present}.values())
        if not missing:
            return 0
        elsewhere = self.finished_elsewhere(j.key for j in missing)
        waiting = 0
        for job in missing:
            if job.key in elsewhere:
                name, source = elsewhere[job.key]
                self.add(job.key, job.params, job.distributions, source.user_attrs[RECORD],
                         copied_from=f"{name}#{source.number}")
            else:
                self.study.add_trial(create_trial(state=TrialState.WAITING, params=job.params,
                                                  distributions=job.distributions, system_attrs={KEY: job.key}))
                waiting += 1
        return waiting

    def adopt_json(self, jobs: Sequence[Job], folder) -> int:
        """Add the records that earlier bclviz versions cached as ``folder/<key>.json``
        (one file per setting and seed, the same key) for jobs the study lacks; files that
        are unreadable or hold another setting are skipped with a warning. Returns how many."""
        from pathlib import Path

        present = {t.system_attrs.get(KEY) for t in self.trials(_LIVE)}
        adopted = 0
        for job in {j.key: j for j in jobs if j.key not in present}.values():
            path = Path(folder) / f"{job.key}.json"
            if not path.is_file():
                continue
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                whole = isinstance(record, dict) and all(k in record for k in _JSON_KEYS)
                if not whole or record["settings"] != json.loads(json.dumps(dataclasses.asdict(job.method))):
                    raise ValueError("not a whole record of this setting")
                self.values(record)
            except (OSError, ValueError, KeyError, TypeError) as err:
                warnings.warn(f"old sweep cache file {path} is unusable ({err}); training that trial again",
                              stacklevel=2)
                continue
            self.add(job.key, job.params, job.distributions, record, adopted_from=path.name)
            adopted += 1
        return adopted

    def add(self, key: str, params: dict, distributions: dict, record: dict, **attrs) -> None:
        """Add ``record`` as a finished trial of ``key`` (no training); ``attrs`` become
        ``bclviz:<name>`` system attributes (e.g. ``copied_from``)."""
        self.study.add_trial(create_trial(
            params=params, distributions=distributions, values=self.values(record), user_attrs={RECORD: record},
            system_attrs={KEY: key, CONSTRAINTS: self.constraint(record),
                          **{f"bclviz:{name}": value for name, value in attrs.items()}}))

    def claim(self, keys: Sequence[str]) -> FrozenTrial | None:
        """Claim a WAITING trial of ``keys`` (in that order; the oldest trial of a key
        first) and own it; None when there is none. Duplicates are pruned on the way."""
        waiting: dict[str, list[FrozenTrial]] = {}
        for t in self.trials((TrialState.WAITING,)):
            waiting.setdefault(t.system_attrs.get(KEY), []).append(t)
        for key in keys:
            for t in waiting.get(key, ()):
                if self.own(t) and not self._pruned_as_duplicate(t):
                    return t
        return None

    def own(self, trial: FrozenTrial) -> bool:
        """Move ``trial`` from WAITING to RUNNING (False when another process was first)
        and record this process as its owner; :meth:`ask` does the first half itself.

        The trial counts as held (never stale here) from before the claim, and this
        process names itself a claimant before claiming, so a process killed between
        its claim and writing the owner still leaves its name on the trial.
        """
        if self._session is None:
            raise RuntimeError("claim trials inside `with session.holding():`")
        tid, me = trial._trial_id, owner(self._session)
        with self._lock:
            self._held.add(tid)
        try:
            if trial.state == TrialState.WAITING:
                self.storage.set_trial_system_attr(tid, CLAIMANT + self._session, me)
                if not self.storage.set_trial_state_values(tid, TrialState.RUNNING):
                    raise UpdateFinishedTrialError("claimed by another process")
            self.storage.set_trial_system_attr(tid, OWNER, me)
            self.storage.set_trial_system_attr(tid, BEAT, time.time())
        except BaseException as err:
            with self._lock:
                self._held.discard(tid)
            if isinstance(err, UpdateFinishedTrialError):
                return False
            raise
        return True

    def _pruned_as_duplicate(self, trial: FrozenTrial) -> bool:
        """Prune ``trial`` (just claimed) when its key is finished or an older trial of it is pending."""
        key = trial.system_attrs.get(KEY)
        for other in self.trials(_LIVE):
            if other.number != trial.number and other.system_attrs.get(KEY) == key and (
                    other.state == TrialState.COMPLETE or other.number < trial.number):
                self.storage.set_trial_user_attr(trial._trial_id, "bclviz:duplicate_of", other.number)
                self._finish(trial, TrialState.PRUNED)
                return True
        return False

    def ask(self, key_of: Callable[[optuna.trial.Trial], str]) -> tuple[optuna.trial.Trial, bool]:
        """A new or waiting trial from the sampler (searches), owned by this process, with
        its key set by ``key_of``; also whether its key is finished already (then it is
        told that record, no training needed). Waiting duplicates are pruned and skipped."""
        while True:
            trial = self.study.ask()
            frozen = self.storage.get_trial(trial._trial_id)
            self.own(frozen)
            key = key_of(trial)
            self.storage.set_trial_system_attr(trial._trial_id, KEY, key)
            done = self.records().get(key)
            if done is not None:
                self.complete(self.storage.get_trial(trial._trial_id), done)
                return trial, True
            if not self._pruned_as_duplicate(self.storage.get_trial(trial._trial_id)):
                return trial, False

    # -- finishing ----------------------------------------------------------------------
    def complete(self, trial: FrozenTrial, record: dict) -> None:
        """Store ``record`` in ``trial`` and tell the study its objectives (COMPLETE).

        When another process has failed the trial meanwhile (it looked stale), the
        record is added as a new finished trial unless its key is finished already.
        """
        values = self.values(record)
        if not all(map(math.isfinite, values)):
            self.fail(trial, f"non-finite objectives {values}")
            raise ValueError(f"trial {trial.number} ({record.get('label')}, seed {record.get('seed')}) scored "
                             f"self/cross {values}: not finite; the study cannot rank it")
        tid = trial._trial_id
        try:
            self.storage.set_trial_user_attr(tid, RECORD, record)
            self.storage.set_trial_system_attr(tid, CONSTRAINTS, self.constraint(record))
            with quiet():
                self.study.tell(trial.number, values)
        except (UpdateFinishedTrialError, ValueError, RuntimeError):
            latest = self.storage.get_trial(tid)
            key = latest.system_attrs.get(KEY)
            if key not in self.records():
                self.add(key, latest.params, latest.distributions, record, recovered_from=trial.number)
        finally:
            with self._lock:
                self._held.discard(tid)

    def fail(self, trial: FrozenTrial, reason: str) -> None:
        """Mark ``trial`` FAIL with ``reason``; its (setting, seed) will be created again."""
        self.storage.set_trial_system_attr(trial._trial_id, RETRY, reason)
        self._finish(trial, TrialState.FAIL)

    def _finish(self, trial: FrozenTrial, state: TrialState) -> None:
        try:
            self.storage.set_trial_state_values(trial._trial_id, state)
        except UpdateFinishedTrialError:
            pass
        with self._lock:
            self._held.discard(trial._trial_id)

    def fail_stale(self) -> list[int]:
        """Mark the stale RUNNING trials (module docstring) FAIL, or COMPLETE when their
        record was stored; return their numbers."""
        now, done = time.time(), []
        for t in self.trials((TrialState.RUNNING,)):
            reason = stale_reason(t, now, self.stale_after, claim_grace=self.claim_grace)
            if reason is None:
                continue
            try:
                if RECORD in t.user_attrs and CONSTRAINTS in t.system_attrs:
                    self.storage.set_trial_state_values(t._trial_id, TrialState.COMPLETE,
                                                        self.values(t.user_attrs[RECORD]))
                else:
                    self.storage.set_trial_system_attr(t._trial_id, RETRY, f"stale: {reason}")
                    self.storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue
            done.append(t.number)
        return done

    @contextmanager
    def holding(self):
        """Claim trials inside: a live session with a heartbeat for the trials held; on
        the way out (an exception, an interrupt) the ones still held are marked FAIL."""
        stop = threading.Event()
        beat = None
        with live_session(self._held) as token:
            self._session = token
            if not isinstance(self.storage, optuna.storages.InMemoryStorage):
                beat = threading.Thread(target=self._beat, args=(stop,), name="bclviz-heartbeat", daemon=True)
                beat.start()
            try:
                yield self
            finally:
                stop.set()
                if beat is not None:
                    beat.join()
                with self._lock:
                    held = list(self._held)
                for tid in held:
                    try:
                        self.fail(self.storage.get_trial(tid), "interrupted")
                    except Exception:  # noqa: BLE001 - never mask the error that got us here
                        pass
                self._session = None

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat):
            with self._lock:
                held = list(self._held)
            for tid in held:
                try:
                    self.storage.set_trial_system_attr(tid, BEAT, time.time())
                except Exception:  # noqa: BLE001 - finished meanwhile, or the storage hiccupped
                    pass

