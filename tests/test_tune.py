"""``bclviz tune``: processes sharing a study, a killed worker, seeded searches, the outputs.

The multi-process tests start real ``bclviz tune`` processes on a tiny toy run (each
trial trains in a fraction of a second) and read the study back with Optuna.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import yaml

import bclviz.trials as trials_module
from bclviz.cli import main
from bclviz.config import MethodConfig
from bclviz.experiment import run_experiment
from bclviz.pipeline import train_and_score
from bclviz.runconfig import load_run_config
from bclviz.space import Range, SearchSpace
from bclviz.tune import tune_study
from _helpers import without_seconds

# ndpp meets the criterion on this toy, proto does not: the export has something to write
RUN = {
    "dataset": "toy", "seed": 0, "seeds": 2,
    "data_options": {"num_superclasses": 4, "siblings": 3, "train_per_class": 30, "eval_per_class": 8},
    "old_model": {"name": "mlp", "dim": 8, "options": {"hidden": 16}},
    "new_model": {"name": "mlp", "dim": 8, "options": {"hidden": 32}},
    "old_train": {"epochs": 2, "batch_size": 32},
    "new_train": {"epochs": 6, "batch_size": 32},
    "method": {"name": "ndpp", "eps": 0.4, "warmup_epochs": 0},
}
GRID = {"grid": {"methods": ["ndpp"], "eps": [0.2, 0.4]}, "baselines": ["proto"]}  # 3 settings x 2 seeds
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
DEADLINE_S = 240


def write_inputs(folder: Path, name: str = "run") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    run = folder / f"{name}.yaml"
    run.write_text(yaml.safe_dump({**RUN, "output_dir": str(folder / f"{name}-out")}))
    space = folder / "grid.yaml"
    space.write_text(yaml.safe_dump(GRID))
    return run, space


def tune_args(run: Path, space: Path, out: Path, storage: str) -> list[str]:
    return ["tune", "--config", str(run), "--space", str(space), "--workers", "1", "--quiet", "--out", str(out),
            "--storage", storage]


def study_trials(storage: str) -> list:
    """Every trial of the one grid study in ``storage`` (a journal path or a database URL)."""
    from bclviz.storage import open_storage

    opened = open_storage(storage)
    [study] = [s for s in opened.get_all_studies() if "-grid-" in s.study_name]
    return opened.get_all_trials(study._study_id)


def assert_each_trial_done_once(trials) -> None:
    done = [t for t in trials if t.state.name == "COMPLETE"]
    keys = [t.system_attrs["bclviz:key"] for t in done]
    assert len(done) == 6 and len(set(keys)) == 6, [(t.number, t.state.name, t.params) for t in trials]
    # nothing failed; a duplicate created by two processes at once was pruned before training
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert sorted((t.params["setting"], t.params["replicate"]) for t in done) == sorted(
        (s, r) for s in ("proto warmup_epochs=0", "ndpp eps=0.2 warmup_epochs=0", "ndpp eps=0.4 warmup_epochs=0")
        for r in (0, 1))



def records_by_key(trials) -> dict:
    return {t.system_attrs["bclviz:key"]: without_seconds(t.user_attrs["record"]) for t in trials
            if t.state.name == "COMPLETE"}


# ---------------------------------------------------------------------------- two processes, one journal
GATED = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import bclviz.trials as trials
    from bclviz.cli import main

    gate, log = Path(sys.argv[1]), Path(sys.argv[2])
    train = trials.train_and_score

    def gated(*args, **kwargs):
        # the first training of each process waits until the other one trains too: both hold trials at once
        (gate / str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(list(gate.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {args[3].name} {kwargs.get('replicate')}\\n")
        return train(*args, **kwargs)

    trials.train_and_score = gated
    sys.exit(main(sys.argv[3:]))
""")


def test_two_processes_on_one_journal_finish_a_grid_with_each_trial_done_once(tmp_path):
    driver = tmp_path / "gated.py"
    driver.write_text(GATED)
    gate, log = tmp_path / "gate", tmp_path / "trained.log"
    gate.mkdir()
    journal = str(tmp_path / "shared.journal")
    procs = []
    for name in ("a", "b"):
        run, space = write_inputs(tmp_path, name)
        procs.append(subprocess.Popen(
            [sys.executable, str(driver), str(gate), str(log),
             *tune_args(run, space, tmp_path / f"out-{name}", journal)],
            env={**CHILD_ENV, "BCLVIZ_CACHE": str(tmp_path / "cache")}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=DEADLINE_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    trained = log.read_text().splitlines()
    assert len(trained) == 6 and len(set(line.split()[0] for line in trained)) == 2  # both trained, 6 in all
    trials = study_trials(journal)
    assert_each_trial_done_once(trials)
    owners = {t.system_attrs["bclviz:owner"]["pid"] for t in trials if t.state.name == "COMPLETE"}
    assert owners == {p.pid for p in procs}
    # both processes waited for the whole grid and wrote the same front
    a, b = (json.loads((tmp_path / f"out-{n}" / "pareto.json").read_text()) for n in ("a", "b"))
    assert a == b and len(a["front"]) >= 1


# ---------------------------------------------------------------------------- the recipe: one database URL
def test_two_tune_commands_sharing_a_sqlite_url(tmp_path):
    """The multi-machine recipe of docs/tuning.md on one machine: the same command twice
    with one ``--storage`` URL."""
    run, space = write_inputs(tmp_path)
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    env = {**CHILD_ENV, "BCLVIZ_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-m", "bclviz.cli", *tune_args(run, space, tmp_path / f"out-{i}", url)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=DEADLINE_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
    assert_each_trial_done_once(study_trials(url))
    assert (tmp_path / "out-0" / "pareto.json").read_text() == (tmp_path / "out-1" / "pareto.json").read_text()
    assert "Pareto front (mAP@100" in outs[0][0]


# ---------------------------------------------------------------------------- a killed worker
def mid_trial(path: Path) -> bool:
    """Whether the journal shows a finished trial and another one training right now: its
    claim is the latest state change, its owner's heartbeat the latest line (nothing is
    written between that and the trained record) and the journal's lock is released (a
    process killed holding it would leave it to Optuna's 30 s grace period)."""
    if not path.exists():
        return False
    lines = path.read_bytes().splitlines()
    states = [json.loads(line)["state"] for line in lines if line.startswith(b'{"op_code":6,')]
    return (1 in states and states[-1] == 0 and lines[-1].startswith(b'{"op_code":9,')
            and b'"bclviz:heartbeat"' in lines[-1] and not Path(f"{path}.lock").exists())


def test_a_sigkilled_tune_resumes_to_the_uninterrupted_study(tmp_path, capsys):
    run, space = write_inputs(tmp_path)
    killed, reference = tmp_path / "killed.journal", tmp_path / "reference.journal"
    env = {**CHILD_ENV, "BCLVIZ_CACHE": str(tmp_path / "cache")}
    victim = subprocess.Popen([sys.executable, "-m", "bclviz.cli",
                               *tune_args(run, space, tmp_path / "out-k", str(killed))],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    while True:  # kill it once a trial has finished and another one is training
        if mid_trial(killed):
            os.kill(victim.pid, signal.SIGKILL)
            break
        assert victim.poll() is None, f"tune ended before it was killed: {victim.communicate()[1][-3000:]}"
        assert time.monotonic() - start < DEADLINE_S, "timed out waiting for a running trial"
        time.sleep(0.002)
    victim.communicate(timeout=DEADLINE_S)
    assert victim.returncode == -signal.SIGKILL
    before = study_trials(str(killed))
    assert [t.state.name for t in before].count("RUNNING") == 1

    assert main(tune_args(run, space, tmp_path / "out-r", str(reference))) == 0  # uninterrupted
    assert main(tune_args(run, space, tmp_path / "out-k", str(killed))) == 0  # the same command again
    capsys.readouterr()
    after = study_trials(str(killed))
    assert records_by_key(after) == records_by_key(study_trials(str(reference)))
    assert [t.state.name for t in after].count("FAIL") == 1
    [failed] = [t for t in after if t.state.name == "FAIL"]
    assert before[failed.number].state.name == "RUNNING" and "is gone" in failed.system_attrs["bclviz:retry"]
    for t in before:  # what finished before the kill was kept, not retrained
        if t.state.name == "COMPLETE":
            assert after[t.number].datetime_complete == t.datetime_complete
    k, r = (json.loads((tmp_path / n / "pareto.json").read_text()) for n in ("out-k", "out-r"))
    assert without_seconds(k) == without_seconds(r)


# ---------------------------------------------------------------------------- outputs
def test_tune_writes_trials_front_and_run_configs_of_the_best(tmp_path, capsys):
    run, space = write_inputs(tmp_path)
    out = tmp_path / "out"
    assert main(tune_args(run, space, out, str(tmp_path / "s.journal"))) == 0
    printed = capsys.readouterr().out
    pareto = json.loads((out / "pareto.json").read_text())
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 6 and {t["state"] for t in trials} == {"COMPLETE"}
    key = pareto["metric"]
    best = pareto["best"]
    assert best and all(r["compatible"] and r["cross"][key] > pareto["m_oo"] for r in best)
    assert [r["self"][key] for r in best] == sorted((r["self"][key] for r in best), reverse=True)
    feasible = [r for r in pareto["front"] if r["compatible"]]
    assert all(r in best for r in feasible)  # a compatible setting on the front is among the best
    configs = sorted((out / "configs").iterdir())
    assert len(configs) == len(best) and configs[0].name.startswith("00-ndpp")
    base = load_run_config(run)
    for path, record in zip(configs, best):
        loaded = load_run_config(path)
        assert loaded.method == MethodConfig(**record["settings"])
        assert (loaded.data_options, loaded.new_train, loaded.new_model) == (base.data_options, base.new_train,
                                                                              base.new_model)
    assert json.loads((out / "study.json").read_text())["storage"] == str(tmp_path / "s.journal")
    assert f"*{best[0]['label']}" in printed  # the printed front marks what was exported


def test_tune_names_a_bad_space_file(tmp_path, capsys):
    run, _ = write_inputs(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  methods: [ndpp, bct]\n")
    assert main(["tune", "--config", str(run), "--space", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "methods must be a non-empty list among ['ndpp', 'odpp'], got ['ndpp', 'bct']" in err


# ---------------------------------------------------------------------------- search
@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    cfg = load_run_config(write_inputs(tmp_path_factory.mktemp("search"))[0])
    return cfg, run_experiment(cfg.run(MethodConfig(name="proto")), progress=False, workers=1)


SPACE = SearchSpace(eps=Range(0.0, 1.0), k=Range(1, 6), gamma=Range(0.01, 1.0, log=True), baselines=("proto",),
                    startup=3)


def searched(result) -> list[tuple]:
    """(params, values) of the search study's finished trials, in order."""
    [search] = [s for s in result.studies if "-search-" in s.name]
    return [(t.params, t.values) for t in search.trials() if t.state.name == "COMPLETE"]


def test_search_is_seeded_and_deterministic_also_when_resumed(experiment, tmp_path, monkeypatch):
    cfg, res = experiment
    one = tune_study(res.data, res.old, cfg, space=SPACE, trials=7, storage=None, workers=1, progress=False)
    two = tune_study(res.data, res.old, cfg, space=SPACE, trials=7, storage=tmp_path / "s.journal", workers=1,
                     progress=False)
    assert len(searched(one)) == 7 and searched(one) == searched(two)
    assert {p["method"] for p, _ in searched(one)} == {"ndpp", "odpp"}  # sampled, not fixed
    other = tune_study(res.data, res.old, cfg, space=dataclasses.replace(SPACE, seed=1), trials=7, storage=None,
                       workers=1, progress=False)
    assert [p for p, _ in searched(other)] != [p for p, _ in searched(one)]
    # interrupted after 4 trainings (the baselines' 2 and 2 search trials), then resumed
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 5:
            raise KeyboardInterrupt("stop")
        return train_and_score(*args, **kwargs)

    monkeypatch.setattr(trials_module, "train_and_score", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune_study(res.data, res.old, cfg, space=SPACE, trials=7, storage=tmp_path / "r.journal", workers=1,
                   progress=False)
    monkeypatch.setattr(trials_module, "train_and_score", train_and_score)
    resumed = tune_study(res.data, res.old, cfg, space=SPACE, trials=7, storage=tmp_path / "r.journal", workers=1,
                         progress=False)
    assert searched(resumed) == searched(one)
    # the front's settings were trained over both seeds, and the best are compatible
    assert all(len(resumed.records[i]["per_seed"]) == cfg.seeds for i in resumed.front)
    assert all(resumed.records[i]["compatible"] for i in resumed.best)
    assert [r["label"] for r in resumed.records] == [r["label"] for r in one.records]


def test_optuna_sees_two_objectives_and_the_constraint(experiment):
    cfg, res = experiment
    result = tune_study(res.data, res.old, cfg, space=SPACE, trials=4, storage=None, workers=1, progress=False)
    [search] = [s for s in result.studies if "-search-" in s.name]
    study = search.study
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE] * 2
    assert study.metric_names == [f"self {result.metric}", f"cross {result.metric}"]
    for t in study.best_trials:  # Optuna's front keeps only feasible trials: cross > M(old, old)
        assert t.values[1] > result.m_oo and t.system_attrs["constraints"][0] <= 0


# ---------------------------------------------------------------------------- trials as jobs
def test_launched_trials_give_the_numbers_of_local_ones(tmp_path, capsys):
    """``--launch`` runs each trial as a ``bclviz train`` job (what a torchrun job on a GPU
    node runs) on the study's old model: same records as trials trained in the tune process."""
    run, space = write_inputs(tmp_path)
    one_seed = ["--set", "seeds=1"]
    launched, local = str(tmp_path / "launched.journal"), str(tmp_path / "local.journal")
    command = f"{sys.executable} -m bclviz.cli train --quiet"
    assert main([*tune_args(run, space, tmp_path / "out-j", launched), *one_seed, "--launch", command]) == 0
    assert main([*tune_args(run, space, tmp_path / "out-l", local), *one_seed]) == 0
    capsys.readouterr()
    jobs = sorted((tmp_path / "out-j" / "trials").iterdir())
    assert [p.name for p in jobs] == ["trial-0000", "trial-0001", "trial-0002"]
    assert all((p / "metrics.json").exists() and (p / "old.pt").exists() for p in jobs)
    got, want = study_trials(launched), study_trials(local)
    assert [t.values for t in got] == [t.values for t in want]
    assert [(t.user_attrs["record"]["self"], t.user_attrs["record"]["cross"]) for t in got] == [
        (t.user_attrs["record"]["self"], t.user_attrs["record"]["cross"]) for t in want]
    # replicates other than 0 cannot be launched: refused before anything runs
    assert main([*tune_args(run, space, tmp_path / "out-x", str(tmp_path / "x.journal")), "--launch", command]) == 2
    assert "seed replicate 0 only" in capsys.readouterr().err
