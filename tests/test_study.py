"""The study layer: stale trials, duplicates, salvaged records, refusals, storages and spaces."""

import dataclasses
import math
import os
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState, create_trial

import bclviz.trials as trials_module
from bclviz.config import MethodConfig, TrainConfig
from bclviz.experiment import ModelSpec, default_experiment
from bclviz.pipeline import train_and_score
from bclviz.space import GridSpace, Range, SearchSpace, load_space, space_from_dict
from bclviz.storage import BEAT, OWNER, open_storage, owner, stale_reason
from bclviz.study import KEY, SweepStudy
from bclviz.scheduler import run_jobs
from bclviz.sweep import grid_jobs, grid_kind, journal_path, old_baseline, run_sweep

SPEC = ModelSpec(dim=8, options={"hidden": 16})


@pytest.fixture(scope="module")
def setup(tiny_toy, tiny_old):
    cfg = default_experiment("toy", old_model=SPEC, new_model=SPEC, new_train=TrainConfig(epochs=1, batch_size=32),
                             methods=())
    grid = [MethodConfig(name="proto"), MethodConfig(name="ndpp", eps=0.3)]
    reference = run_sweep(tiny_toy, tiny_old, cfg, grid, cache_dir=None, progress=False)
    return tiny_toy, tiny_old, cfg, grid, reference


def session_of(setup, storage, **kw):
    data, old, cfg, grid, _ = setup
    jobs = grid_jobs(data, cfg, grid)
    m_oo = old_baseline(data, old, k=cfg.k)
    return SweepStudy(storage, data=data, cfg=cfg, kind=grid_kind(jobs), m_oo=m_oo, metric=f"mAP@{cfg.k}", **kw), jobs


def counting(monkeypatch):
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(args[3])
        return train_and_score(*args, **kwargs)

    monkeypatch.setattr(trials_module, "train_and_score", wrapped)
    return calls


def strip(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "per_seed")} for r in records]


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_trials_of_a_dead_process_are_retried_or_salvaged(setup, tmp_path, monkeypatch):
    """A RUNNING trial whose process is gone fails and runs again; one whose record was
    stored before its process died is completed from that record, not retrained."""
    data, old, cfg, grid, reference = setup
    storage = journal_path(tmp_path, data, cfg)
    session, jobs = session_of(setup, storage)
    session.ensure(jobs)
    pid, me = dead_pid(), owner("gone")
    waiting = session.trials((TrialState.WAITING,))
    for trial in waiting:
        session.storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
        session.storage.set_trial_system_attr(trial._trial_id, OWNER, {**me, "pid": pid, "started": None})
    record = reference[1]["per_seed"][0] | {k: reference[1][k] for k in ("label", "method", "settings", "compatible")}
    session.storage.set_trial_user_attr(waiting[1]._trial_id, "record", record)
    session.storage.set_trial_system_attr(waiting[1]._trial_id, "constraints", session.constraint(record))
    assert stale_reason(session.storage.get_trial(waiting[0]._trial_id), time.time(), 600).endswith("is gone")

    calls = counting(monkeypatch)
    records = run_sweep(data, old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert calls == [grid[0]]
    assert strip(records) == strip(reference)
    states = [(t.state, t.params["setting"]) for t in session.trials()]
    assert states == [(TrialState.FAIL, "proto"), (TrialState.COMPLETE, "ndpp eps=0.3"), (TrialState.COMPLETE, "proto")]
    assert "is gone" in session.trials()[0].system_attrs["bclviz:retry"]


def test_another_hosts_trial_is_stale_only_when_its_heartbeat_stops():
    now = time.time()
    away = {"host": "elsewhere/0", "pid": 1, "started": None, "session": "s"}

    def running(**attrs):
        return create_trial(state=TrialState.RUNNING, system_attrs=attrs)

    assert stale_reason(running(**{OWNER: away, BEAT: now - 30}), now, 600) is None
    stale = stale_reason(running(**{OWNER: away, BEAT: now - 700}), now, 600)
    assert stale == "no heartbeat from elsewhere/0 for 700 s"


def test_a_trial_held_by_a_live_session_here_is_not_stale_and_an_ended_one_is(setup):
    session, jobs = session_of(setup, None)
    session.ensure(jobs)
    with session.holding():
        trial = session.claim([jobs[0].key])
        assert session.fail_stale() == []
        assert session.trials((TrialState.RUNNING,))[0].system_attrs[OWNER]["pid"] == os.getpid()
    # leaving the session marks what it still held as failed (an interrupt, an error)
    assert session.storage.get_trial(trial._trial_id).state == TrialState.FAIL


def test_duplicate_waiting_trials_train_once(setup, monkeypatch):
    """Two processes that create the same missing trial at once leave a duplicate: it is
    pruned when claimed, and the setting trains once."""
    data, old, cfg, grid, reference = setup
    session, jobs = session_of(setup, None)
    for job in jobs + jobs:  # as if two processes had created the trials at the same moment
        session.study.add_trial(create_trial(state=TrialState.WAITING, params=job.params,
                                             distributions=job.distributions, system_attrs={KEY: job.key}))
    calls = counting(monkeypatch)
    done = run_jobs(session, jobs, cfg=cfg, data=data, old=old, progress=False, workers=1)
    assert calls == grid
    assert [t.state for t in session.trials()] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 2
    assert [t.user_attrs["bclviz:duplicate_of"] for t in session.trials()[2:]] == [0, 1]
    assert [done[job.key]["self"] for job in jobs] == [r["self"] for r in reference]


def test_constraint_is_the_strict_criterion(setup):
    session, _ = session_of(setup, None)
    key, m = session.metric, session.m_oo
    at = {"self": {key: 0.5}, "cross": {key: m}}
    above = {"self": {key: 0.5}, "cross": {key: math.nextafter(m, 2)}}
    assert session.constraint(at)[0] > 0 and session.constraint(above)[0] <= 0


def test_a_study_of_another_old_model_or_experiment_is_refused(setup, tmp_path):
    data, old, cfg, _, _ = setup
    storage = tmp_path / "s.journal"
    session, jobs = session_of(setup, storage)
    with pytest.raises(ValueError, match=r"another old model"):
        SweepStudy(storage, data=data, cfg=cfg, kind=grid_kind(jobs), m_oo=session.m_oo + 0.01, metric=session.metric)
    other = dataclasses.replace(cfg, new_train=TrainConfig(epochs=2, batch_size=32))
    SweepStudy(storage, data=data, cfg=cfg, kind="x", name="mine", m_oo=session.m_oo, metric=session.metric)
    with pytest.raises(ValueError, match=r"study 'mine' holds trials of other data or another experiment"):
        SweepStudy(storage, data=data, cfg=other, kind="x", name="mine", m_oo=session.m_oo, metric=session.metric)


def test_storage_errors_name_the_problem(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match=r"cannot write the study journal .*afile"):
        open_storage(tmp_path / "afile" / "s.journal")
    with pytest.raises(ValueError, match=r"'postgresql://me:\*\*\*@nohost/db'.*driver"):
        open_storage("postgresql://me:secret@nohost/db")
    with pytest.raises(ValueError, match=r"cannot open the study storage 'sqlite:////nonexistent/dir/t.db'"):
        open_storage("sqlite:////nonexistent/dir/t.db")
    assert type(open_storage(f"sqlite:///{tmp_path / 't.db'}")).__name__ == "RDBStorage"
    assert type(open_storage(None)).__name__ == "InMemoryStorage"


def test_processes_creating_one_sqlite_study_together_all_open_it(tmp_path):
    """Processes started together race to create the tables and the schema version row;
    each must open the storage (an unretried "UNIQUE constraint failed" once made one of
    two `bclviz tune` commands sharing a URL fail)."""
    import bclviz.storage as storage_module

    calls = []

    def racing():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")
        return "opened"

    assert storage_module._opened("sqlite:///x.db", racing) == "opened" and len(calls) == 2
    code = "import sys; from bclviz.storage import open_storage; open_storage(sys.argv[1])"
    for round_ in range(4):
        url = f"sqlite:///{tmp_path / f'race-{round_}.db'}"
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [e[-500:] for e in errors]


def test_space_files_and_their_errors(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("search:\n  methods: [ndpp]\n  eps: {low: 0.1, high: 0.5, step: 0.1}\n  k: [2, 4]\n"
                    "  gamma: {low: 0.01, high: 1, log: true}\n  seed: 3\nbaselines: [proto]\n")
    space = load_space(path)
    assert space == SearchSpace(methods=("ndpp",), eps=Range(0.1, 0.5, step=0.1), k=Range(2, 4),
                                gamma=Range(0.01, 1, log=True), seed=3, baselines=("proto",))
    assert space_from_dict({"grid": {"eps": [0.2]}, "baselines": []}) == GridSpace(eps=(0.2,), baselines=())
    bad = [
        ({"search": {"methods": ["bct"]}}, r"methods must be a non-empty list among \['ndpp', 'odpp'\], got \['bct'\]"),
        ({"search": {"eps": [0.5, 0.1]}}, r"search.eps: a range needs low <= high, got \[0.5, 0.1\]"),
        ({"search": {"gamma": {"low": 0, "high": 1, "log": True}}}, r"search.gamma: a log range needs low > 0"),
        ({"search": {"k": [0.5, 3]}}, r"k must be a range of integers >= 1"),
        ({"search": {"eps": [-1, 1]}}, r"eps must not go below 0"),
        ({"search": {"sampler": "cmaes"}}, r"sampler must be one of \['tpe', 'nsga2'\], got 'cmaes'"),
        ({"search": {"epsilon": [0, 1]}}, r"unknown setting\(s\) \['epsilon'\] in 'search'"),
        ({"grid": {}, "search": {}}, r"exactly one of 'grid' and 'search'"),
        ({"grid": {"eps": [0.2]}, "baselines": ["nope"]}, r"unknown baseline\(s\) \['nope'\]"),
        ({"grid": {"k": [0]}}, r"GridSpace.k values must be integers >= 1, got 0"),
        ({"sampler": "tpe"}, r"unknown key\(s\) \['sampler'\]; allowed: grid, search, baselines"),
    ]
    for values, message in bad:
        with pytest.raises(ValueError, match=message):
            space_from_dict(values, source="space.yaml")
    with pytest.raises(ValueError, match=r"k goes up to 9, but the data has 6 classes \(k <= 5\)"):
        SearchSpace(k=Range(1, 9)).check(6)
    with pytest.raises(FileNotFoundError, match="space file .*missing.yaml does not exist"):
        load_space(tmp_path / "missing.yaml")
