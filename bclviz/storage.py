"""Where studies live and who holds a trial: storages, owners, staleness.

:func:`open_storage` turns a journal file path, a database URL or ``None`` (memory) into
an Optuna storage, with errors that name what could not be opened. A process that
claims a trial names itself first as a claimant, then (once the claim succeeded) as its
owner (:func:`owner`: host with boot id, pid, process start time and the session, a
:func:`live_session` that holds the trial). :func:`stale_reason` says when a RUNNING
trial's owner is gone: in this process when its session no longer holds it (e.g. after
a failed write), elsewhere on the same host when its process no longer runs, on another
host when its heartbeat (``bclviz:heartbeat``, seconds since the epoch) is older than
``stale_after``. :func:`quiet` silences Optuna's per-trial log lines for a while.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

__all__ = ["open_storage", "describe_storage", "owner", "live_session", "stale_reason", "quiet", "OWNER", "CLAIMANT",
           "BEAT"]

OWNER = "bclviz:owner"
CLAIMANT = "bclviz:claimant:"
BEAT = "bclviz:heartbeat"
#: sessions of this process that hold trials right now -> the ids they hold (live_session, at run time)
_SESSIONS: dict[str, set[int]] = {}


def _redact(url: str) -> str:
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def describe_storage(storage) -> str:
    """Where a storage argument points, for messages (passwords hidden)."""
    if storage is None:
        return "memory"
    return _redact(os.fspath(storage)) if isinstance(storage, (str, os.PathLike)) else type(storage).__name__


def open_storage(storage=None) -> optuna.storages.BaseStorage:
    """An Optuna storage from ``storage``.

    ``None``: in memory (nothing kept). A path (``str`` without ``://`` or
    ``os.PathLike``): a journal file, created with its folder. ``redis://...``: a
    journal in Redis. Any other URL (``sqlite:///study.db``, ``postgresql://...``,
    ``mysql://...``): a database through SQLAlchemy. An Optuna storage object is
    returned as is. Raises ``OSError`` naming a journal file that cannot be written and
    ``ValueError`` naming a URL that cannot be opened.
    """
    if storage is None:
        return optuna.storages.InMemoryStorage()
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if isinstance(storage, os.PathLike) or (isinstance(storage, str) and storage and "://" not in storage):
        return _journal(Path(storage))
    if not isinstance(storage, str) or not storage:
        raise ValueError(f"storage must be a journal file path or a database URL, got {storage!r}")
    if storage.lower().startswith("redis://"):
        from optuna.storages.journal import JournalRedisBackend

        return _opened(storage, lambda: optuna.storages.JournalStorage(JournalRedisBackend(storage)))
    engine = {"connect_args": {"timeout": 60}} if storage.lower().startswith("sqlite") else None
    return _opened(storage, lambda: optuna.storages.RDBStorage(storage, engine_kwargs=engine))


def _journal(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise OSError(err.errno, f"cannot write the study journal {path}: {err.strerror or err}") from err


#: what a database says when another process is creating the same tables (SQLite,
#: PostgreSQL, MySQL): a table, or the schema version row, that was not there a moment ago
_RACE_MARKERS = ("already exists", "locked", "UNIQUE constraint failed", "duplicate key", "Duplicate entry")


def _opened(url: str, make: Callable[[], optuna.storages.BaseStorage]) -> optuna.storages.BaseStorage:
    """``make()``, retried briefly (processes starting together race to create the tables
    and to write the schema version); a clear ``ValueError`` when the storage cannot be
    opened."""
    for attempt in range(6):
        try:
            return make()
        except Exception as err:  # noqa: BLE001 - drivers raise their own types
            last = err
            if not any(marker in str(err) for marker in _RACE_MARKERS):
                break
            time.sleep(0.2 * 2**attempt)
    raise ValueError(f"cannot open the study storage {_redact(url)!r}: {type(last).__name__}: {last}. Give a journal "
                     "file path, sqlite:///PATH or a database URL Optuna supports whose driver is installed "
                     "(postgresql://..., mysql://..., redis://...)") from None


def _host() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return f"{socket.gethostname()}/{fh.read().strip()[:8]}"
    except OSError:
        return socket.gethostname()


def _started(pid: int) -> str | None:
    """Start time of process ``pid`` (Linux clock ticks since boot), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or _started(pid) in (None, started)


@contextmanager
def live_session(held: set[int]):
    """A session token of this process, live while inside; ``held`` is the set of trial
    ids the session holds (those are never stale while it lives)."""
    token = uuid.uuid4().hex
    _SESSIONS[token] = held
    try:
        yield token
    finally:
        del _SESSIONS[token]


def owner(session: str | None) -> dict:
    """This process and ``session`` as a trial's owner: ``{"host", "pid", "started", "session"}``."""
    return {"host": _host(), "pid": os.getpid(), "started": _started(os.getpid()), "session": session}


def _may_hold(who: dict, trial: FrozenTrial, last_sign: float | None, now: float, stale_after: float,
              certain: bool) -> bool:
    """Whether ``who`` (an owner, or with ``certain=False`` one of the claimants) may still hold ``trial``."""
    if who.get("host") != _host():  # another machine: only its heartbeat tells
        return last_sign is not None and now - last_sign <= stale_after
    if who.get("pid") == os.getpid() and who.get("started") == _started(os.getpid()):
        return trial._trial_id in _SESSIONS.get(who.get("session"), ())
    if not _alive(who["pid"], who.get("started")):
        return False
    return certain or (last_sign is not None and now - last_sign <= stale_after)


def stale_reason(trial: FrozenTrial, now: float, stale_after: float, *, claim_grace: float = 60.0) -> str | None:
    """Why the RUNNING ``trial`` is stale at time ``now`` (seconds), or None while its owner may hold it.

    The owner is the process that claimed it (``bclviz:owner``); a process killed between
    its claim and writing that leaves only the claimants (``bclviz:claimant:<session>``,
    written before claiming): the trial is stale when none of them may hold it. A trial
    with neither (a sampler's trial killed at once) is stale after ``claim_grace`` seconds.
    """
    attrs = trial.system_attrs
    beat = attrs.get(BEAT)
    last_sign = beat if beat is not None else (trial.datetime_start.timestamp() if trial.datetime_start else None)
    held_by = attrs.get(OWNER)
    candidates = [held_by] if held_by else [v for k, v in attrs.items() if k.startswith(CLAIMANT)]
    if not candidates:
        if last_sign is not None and now - last_sign > claim_grace:
            return f"nobody claimed it for {now - last_sign:.0f} s"
        return None
    if any(_may_hold(who, trial, last_sign, now, stale_after, certain=bool(held_by)) for who in candidates):
        return None
    who = candidates[0]
    if who.get("host") != _host():
        return f"no heartbeat from {who.get('host')} for {now - last_sign:.0f} s"
    if who.get("pid") == os.getpid():
        return "its session in this process has ended"
    return f"its process (pid {who.get('pid')}) is gone"


@contextmanager
def quiet():
    """Optuna's INFO logs ("Trial 3 finished ...") and experimental warnings off, for a while."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)
