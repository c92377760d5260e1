"""Fault injection: killed sweeps and trainings resume exactly; failed writes leave nothing.

The kill tests run the real code in subprocesses and stop them with SIGKILL (no cleanup
handler runs), then rerun them to completion and compare with an uninterrupted run.
The write-failure tests make a write fail (the target's parent is a file, the temporary
file cannot be created, the final rename fails with "disk full") and check the error
names the path and that no partial file is left.
"""

from __future__ import annotations

import errno
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

import bclviz.checkpoint as checkpoint_module
import bclviz.experiment as experiment_module
from bclviz.checkpoint import load_checkpoint, save_checkpoint
from bclviz.cli import main
from bclviz.config import MethodConfig, TrainConfig
from bclviz.experiment import ModelSpec, build_old_model, default_experiment
from bclviz.io import write_json
from bclviz.runconfig import RunConfig, save_run_config
from bclviz.sweep import run_sweep
from bclviz.train import train_old
from _helpers import without_seconds

TINY_DATA = dict(num_superclasses=3, siblings=2, coarse_dim=4, fine_dim=4, train_per_class=30, eval_per_class=6)
TINY_SPEC = ModelSpec(dim=8, options={"hidden": 16})
# one intra-op thread: tiny models train faster, and every process computes identically
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
DEADLINE_S = 120



class Killer(threading.Thread):
    """Polls ``ready()`` every few ms and SIGKILLs ``proc`` the moment it is true.

    Runs in the background so that the uninterrupted reference can run in this process
    meanwhile; :meth:`check` joins it and fails the test if the kill did not happen.
    """

    def __init__(self, proc: subprocess.Popen, ready, what: str) -> None:
        super().__init__(daemon=True)
        self.proc, self.ready, self.what, self.error = proc, ready, what, None

    def run(self) -> None:
        start = time.monotonic()
        while not self.ready():
            if self.proc.poll() is not None:
                self.error = f"the process ended (rc {self.proc.returncode}) before {self.what}"
                return
            if time.monotonic() - start > DEADLINE_S:
                self.proc.kill()
                self.error = f"timed out waiting for {self.what}"
                return
            time.sleep(0.003)
        os.kill(self.proc.pid, signal.SIGKILL)

    def check(self) -> None:
        self.join(DEADLINE_S)
        _, err = self.proc.communicate(timeout=DEADLINE_S)
        if self.error is not None:
            pytest.fail(f"{self.error}; stderr:\n{err[-3000:]}")
        assert self.proc.returncode == -signal.SIGKILL, f"expected death by SIGKILL, got rc {self.proc.returncode}"


def leftovers(folder: Path) -> list[str]:
    """Names in ``folder`` that are temporary or hidden files (partial writes)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("."))


# ============================================================================ killed sweep
SWEEP_DRIVER = textwrap.dedent(
    """
    import json, sys, time
    import torch
    import bclviz.sweep as sweep
    import bclviz.trials as trials
    from bclviz.config import TrainConfig
    from bclviz.experiment import ModelSpec, default_experiment, run_experiment


    def main(cache_dir, out, pace=0.0):
        spec = ModelSpec(dim=8, options={"hidden": 16})
        cfg = default_experiment(
            "toy", data_options=DATA, old_model=spec, new_model=spec,
            old_train=TrainConfig(epochs=2, batch_size=32), new_train=TrainConfig(epochs=2, batch_size=32),
            methods=(),
        )
        res = run_experiment(cfg, progress=False, workers=1)
        grid = sweep.sweep_grid(methods=("ndpp",), eps=(0.1, 0.2, 0.3, 0.4), baselines=("proto",))
        train = trials.train_and_score  # every trial of the sweep (in this process) calls it

        def paced(*args, **kwargs):  # leaves time to kill the process between two settings
            time.sleep(pace)
            return train(*args, **kwargs)

        if pace:
            trials.train_and_score = paced
        try:
            records = sweep.run_sweep(res.data, res.old, cfg, grid, cache_dir=cache_dir, progress=False, workers=1)
        finally:
            trials.train_and_score = train
        with open(out, "w") as fh:
            json.dump(records, fh)


    if __name__ == "__main__":
        torch.set_num_threads(1)
        main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
    """
).replace("DATA", repr(TINY_DATA))
N_SETTINGS = 5


def journal_trials(folder: Path):
    """Every trial of the one study in the one journal file in ``folder`` (number order)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    [path] = folder.glob("*.journal")
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    [study] = storage.get_all_studies()
    return storage.get_all_trials(study._study_id)


def completed_in_journal(folder: Path) -> int:
    """Trials told COMPLETE so far, read from the journal's lines (cheap enough to poll)."""
    count = 0
    for path in folder.glob("*.journal"):
        for line in path.read_bytes().splitlines():
            if line.startswith(b'{"op_code":6,') and b'"state":1,' in line:
                count += 1
    return count


def test_sigkilled_sweep_resumes_to_the_uninterrupted_results(tmp_path, one_thread):
    driver_path = tmp_path / "sweep_driver.py"
    driver_path.write_text(SWEEP_DRIVER, encoding="utf-8")
    driver = runpy.run_path(str(driver_path))  # the same code, for the in-process runs
    killed, ref = tmp_path / "killed", tmp_path / "reference"
    victim = subprocess.Popen([sys.executable, str(driver_path), str(killed), str(tmp_path / "killed.json"), "0.2"],
                              env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer = Killer(victim, lambda: killed.is_dir() and completed_in_journal(killed) >= 2, "2 finished trials")
    killer.start()
    try:
        driver["main"](ref, tmp_path / "ref.json")  # the uninterrupted sweep, meanwhile
    finally:
        killer.check()
    assert not (tmp_path / "killed.json").exists(), "the sweep finished before it was killed"
    before = journal_trials(killed)
    finished = {t.number: t for t in before if t.state.name == "COMPLETE"}
    assert 2 <= len(finished) < N_SETTINGS
    assert [t.state.name for t in before].count("RUNNING") <= 1  # the trial it was in the middle of
    for t in finished.values():  # whole records only
        assert {"label", "method", "settings", "self", "cross", "compatible", "seconds"} <= set(t.user_attrs["record"])
    assert leftovers(killed) == []

    driver["main"](killed, tmp_path / "killed.json")  # rerun to completion

    resumed = json.loads((tmp_path / "killed.json").read_text(encoding="utf-8"))
    expected = json.loads((tmp_path / "ref.json").read_text(encoding="utf-8"))
    assert len(resumed) == N_SETTINGS
    assert without_seconds(resumed) == without_seconds(expected)
    after, reference = journal_trials(killed), journal_trials(ref)
    # every setting finished exactly once, with the reference's record apart from the timings
    done = [t for t in after if t.state.name == "COMPLETE"]
    assert sorted(t.system_attrs["bclviz:key"] for t in done) == sorted(t.system_attrs["bclviz:key"] for t in reference)
    by_key = {t.system_attrs["bclviz:key"]: t for t in reference}
    for t in done:
        want = by_key[t.system_attrs["bclviz:key"]]
        assert without_seconds(t.user_attrs["record"]) == without_seconds(want.user_attrs["record"])
        assert t.values == want.values and t.system_attrs["constraints"] == want.system_attrs["constraints"]
    # the trials finished before the kill were read back, not retrained; the one it was in failed, then ran again
    for number, t in finished.items():
        assert after[number].state.name == "COMPLETE" and after[number].datetime_complete == t.datetime_complete
    stale = [t for t in after if t.state.name == "FAIL"]
    assert len(stale) == [t.state.name for t in before].count("RUNNING")
    assert all("is gone" in t.system_attrs["bclviz:retry"] for t in stale)
    assert leftovers(killed) == []


# ============================================================================ killed training
NEW_EPOCHS = 8


def _write_run_config(folder: Path) -> Path:
    folder.mkdir()
    run_cfg = RunConfig(
        dataset="toy", seed=1, data_options={**TINY_DATA, "train_per_class": 32},
        old_model=TINY_SPEC, new_model=TINY_SPEC,
        old_train=TrainConfig(epochs=2, batch_size=32), new_train=TrainConfig(epochs=NEW_EPOCHS, batch_size=8),
        method=MethodConfig(name="ndpp", eps=0.3, k=2), output_dir=str(folder / "run"),
    )
    return save_run_config(folder / "cfg.yaml", run_cfg)


def _epoch_written(meta: Path) -> int:
    try:
        return json.loads(meta.read_text(encoding="utf-8"))["epoch"]
    except (OSError, ValueError, KeyError):
        return -1


def test_sigkilled_training_resumes_from_its_last_checkpoint(tmp_path, one_thread, capsys):
    cfg_killed = _write_run_config(tmp_path / "killed")
    cfg_ref = _write_run_config(tmp_path / "reference")
    run = tmp_path / "killed" / "run"
    meta = run / "new-ndpp.pt.json"
    victim = subprocess.Popen([sys.executable, "-m", "bclviz.cli", "train", "--quiet", "--config", str(cfg_killed)],
                              env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer = Killer(victim, lambda: _epoch_written(meta) >= 1, "the new model's epoch-1 checkpoint")
    killer.start()
    try:
        assert main(["train", "--quiet", "--config", str(cfg_ref)]) == 0  # uninterrupted, meanwhile
    finally:
        killer.check()
    reached = _epoch_written(meta)
    assert 1 <= reached < NEW_EPOCHS - 1, f"killed after epoch {reached}: not midway"
    assert not (run / "metrics.json").exists()
    assert leftovers(run) == []

    assert main(["train", "--quiet", "--config", str(cfg_killed)]) == 0  # the same command, to completion

    ref_run = tmp_path / "reference" / "run"
    for name in ("metrics.json", "history.json"):
        got = json.loads((run / name).read_text(encoding="utf-8"))
        want = json.loads((ref_run / name).read_text(encoding="utf-8"))
        assert without_seconds(got) == without_seconds(want), name
    history = json.loads((run / "history.json").read_text(encoding="utf-8"))
    assert [r["epoch"] for r in history["new"]] == list(range(NEW_EPOCHS))
    final = json.loads(meta.read_text(encoding="utf-8"))
    assert final["epoch"] == NEW_EPOCHS - 1 and without_seconds(final["history"]) == without_seconds(history["new"])
    resumed, _ = load_checkpoint(run / "new-ndpp.pt")
    uninterrupted, _ = load_checkpoint(ref_run / "new-ndpp.pt")
    for key, value in uninterrupted["net"].items():
        assert torch.equal(resumed["net"][key], value), key
    assert leftovers(run) == []


class Crash(BaseException):
    """Stands in for a kill: nothing after it runs, no ``except Exception`` catches it."""


def _train_old_tiny(tiny_toy, path: Path):
    torch.manual_seed(0)
    model = build_old_model(tiny_toy, TINY_SPEC)
    return train_old(model, tiny_toy.old_train, num_classes=tiny_toy.num_old_classes,
                     cfg=TrainConfig(epochs=4, batch_size=16), progress=False, checkpoint=path)


def test_training_killed_between_weights_and_metadata_resumes_exactly(tiny_toy, tmp_path, monkeypatch, one_thread):
    reference = _train_old_tiny(tiny_toy, tmp_path / "ref.pt")
    real_write_json = checkpoint_module.write_json

    def dies_after_weights_of_epoch_1(path, obj):
        if obj.get("epoch") == 1:
            raise Crash("killed after the .pt of epoch 1 was replaced")
        return real_write_json(path, obj)

    monkeypatch.setattr(checkpoint_module, "write_json", dies_after_weights_of_epoch_1)
    with pytest.raises(Crash):
        _train_old_tiny(tiny_toy, tmp_path / "ck.pt")
    monkeypatch.setattr(checkpoint_module, "write_json", real_write_json)
    resumed = _train_old_tiny(tiny_toy, tmp_path / "ck.pt")
    assert without_seconds(resumed.history) == without_seconds(reference.history)
    for (key, a), b in zip(resumed.model.state_dict().items(), reference.model.state_dict().values()):
        assert torch.equal(a, b), key


def test_training_killed_before_first_metadata_can_be_rerun(tiny_toy, tmp_path, monkeypatch, one_thread):
    real_write_json = checkpoint_module.write_json

    def dies_after_first_weights(path, obj):
        raise Crash("killed after the first .pt was written")

    monkeypatch.setattr(checkpoint_module, "write_json", dies_after_first_weights)
    with pytest.raises(Crash):
        _train_old_tiny(tiny_toy, tmp_path / "ck.pt")
    monkeypatch.setattr(checkpoint_module, "write_json", real_write_json)
    result = _train_old_tiny(tiny_toy, tmp_path / "ck.pt")
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3]


# ============================================================================ failed writes
def _sweep_setup():
    cfg = default_experiment("toy", old_model=TINY_SPEC, new_model=TINY_SPEC,
                             new_train=TrainConfig(epochs=1, batch_size=64), methods=())
    return cfg, [MethodConfig(name="proto")]


def _write_json_into(folder: Path, request) -> Path:
    return write_json(folder / "out.json", {"a": 1})


def _save_checkpoint_into(folder: Path, request) -> Path:
    return save_checkpoint(folder / "ck.pt", {"m": {"w": torch.ones(3)}}, {"epoch": 0})


def _sweep_into(folder: Path, request):
    data, old = request.getfixturevalue("tiny_toy"), request.getfixturevalue("tiny_old")
    cfg, grid = _sweep_setup()
    return run_sweep(data, old, cfg, grid, cache_dir=folder, progress=False)


WRITERS = [
    pytest.param(_write_json_into, id="write_json"),
    pytest.param(_save_checkpoint_into, id="save_checkpoint"),
]


def _parent_is_a_file(tmp: Path, monkeypatch) -> Path:
    (tmp / "afile").write_text("not a folder", encoding="utf-8")
    return tmp / "afile" / "out"


def _mkstemp_fails(tmp: Path, monkeypatch) -> Path:
    import bclviz.io

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(bclviz.io.tempfile, "mkstemp", refuse)
    return tmp / "out"


def _replace_fails_disk_full(tmp: Path, monkeypatch) -> Path:
    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    return tmp / "out"


FAULTS = [
    pytest.param(_parent_is_a_file, id="parent-is-a-file"),
    pytest.param(_mkstemp_fails, id="tempfile-refused"),
    pytest.param(_replace_fails_disk_full, id="rename-disk-full"),
]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("writer", WRITERS)
def test_failed_write_raises_oserror_and_leaves_nothing(writer, fault, tmp_path, monkeypatch, request):
    target = fault(tmp_path, monkeypatch)
    before = _files(tmp_path)
    with pytest.raises(OSError):
        writer(target, request)
    monkeypatch.undo()
    assert _files(tmp_path) == before, "a failed write left files behind"


@pytest.mark.parametrize(
    "fault",
    [
        FAULTS[0],
        FAULTS[1],
        pytest.param(_replace_fails_disk_full, id="rename-disk-full"),
    ],
)
@pytest.mark.parametrize("writer", WRITERS)
def test_failed_write_error_names_the_path(writer, fault, tmp_path, monkeypatch, request):
    target = fault(tmp_path, monkeypatch)
    with pytest.raises(OSError, match=r"cannot write .*" + re.escape(str(target))):
        writer(target, request)


def test_failed_checkpoint_metadata_write_leaves_a_whole_checkpoint_or_none(tmp_path, monkeypatch):
    real = os.replace
    calls = []

    def second_rename_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck.pt", {"m": {"w": torch.ones(3)}}, {"epoch": 0})
    monkeypatch.undo()
    assert leftovers(tmp_path) == []
    if (tmp_path / "ck.pt").exists():  # what is left must load as one whole checkpoint
        tensors, meta = load_checkpoint(tmp_path / "ck.pt")
        assert meta["epoch"] == 0 and torch.equal(tensors["m"]["w"], torch.ones(3))


def test_sweep_with_unwritable_cache_fails_before_training(tiny_toy, tiny_old, tmp_path, monkeypatch):
    cfg, grid = _sweep_setup()
    trained = []
    import bclviz.trials as trials_module

    monkeypatch.setattr(trials_module, "train_and_score", lambda *a, **k: trained.append(a) or pytest.fail("trained"))
    target = _parent_is_a_file(tmp_path, monkeypatch)
    with pytest.raises(OSError, match="afile"):
        run_sweep(tiny_toy, tiny_old, cfg, grid, cache_dir=target, progress=False)
    assert trained == []


def test_sweep_under_a_file_fails_naming_the_path_and_leaves_nothing(tmp_path, monkeypatch, request):
    target = _parent_is_a_file(tmp_path, monkeypatch)
    before = _files(tmp_path)
    with pytest.raises(OSError, match=r"cannot write .*" + re.escape(str(target))):
        _sweep_into(target, request)
    assert _files(tmp_path) == before


def test_a_failed_journal_write_loses_no_finished_trial(tiny_toy, tiny_old, tmp_path, monkeypatch):
    """The journal is append-only: an append that fails (disk full) raises, the trials
    told before it stay, and the rerun (in the same process, whose session on the
    failed trial has ended) trains only the rest."""
    from optuna.storages.journal import JournalFileBackend

    import bclviz.trials as trials_module

    cfg, _ = _sweep_setup()
    grid = [MethodConfig(name="proto"), MethodConfig(name="ndpp", eps=0.3)]
    reference = run_sweep(tiny_toy, tiny_old, cfg, grid, cache_dir=None, progress=False)
    real_train, calls = trials_module.train_and_score, []

    def disk_full(self, logs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def train(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 2:  # from the second trial on, the disk is full
            monkeypatch.setattr(JournalFileBackend, "append_logs", disk_full)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(trials_module, "train_and_score", train)
    with pytest.raises(OSError, match="No space left"):
        run_sweep(tiny_toy, tiny_old, cfg, grid, cache_dir=tmp_path, progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(trials_module, "train_and_score", train)
    assert [t.state.name for t in journal_trials(tmp_path)] == ["COMPLETE", "RUNNING"]
    records = run_sweep(tiny_toy, tiny_old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert calls == [grid[0], grid[1], grid[1]]
    assert without_seconds(records) == without_seconds(reference)
    assert [t.state.name for t in journal_trials(tmp_path)] == ["COMPLETE", "FAIL", "COMPLETE"]


# ---------------------------------------------------------------------------- bclviz demo
@pytest.fixture
def tiny_demo(monkeypatch):
    """``bclviz demo`` on a tiny toy experiment; records whether training ran."""
    cfg = default_experiment("toy", data_options=TINY_DATA, old_model=TINY_SPEC, new_model=TINY_SPEC,
                             old_train=TrainConfig(epochs=1, batch_size=64),
                             new_train=TrainConfig(epochs=1, batch_size=64), methods=())
    calls = []
    real_run = experiment_module.run_experiment

    def run(*args, **kwargs):
        calls.append(args)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(experiment_module, "default_experiment", lambda dataset, **options: cfg)
    monkeypatch.setattr(experiment_module, "run_experiment", run)
    return calls


def test_demo_into_a_path_under_a_file_fails_naming_the_path(tiny_demo, tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    out = tmp_path / "afile" / "demo"
    # today: the OSError propagates out of main() after the models have trained
    try:
        rc = main(["demo", "--out", str(out), "--quiet"])
    except OSError as err:
        assert str(out / "results.json") in str(err)
    else:
        assert rc != 0
        assert str(out) in capsys.readouterr().err
    assert _files(tmp_path) == ["afile"]
    assert (tmp_path / "afile").read_text(encoding="utf-8") == "not a folder"


def test_demo_into_a_path_under_a_file_exits_2_before_training(tiny_demo, tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    out = tmp_path / "afile" / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 2
    assert f"bclviz demo: error: cannot write {out}" in capsys.readouterr().err
    assert tiny_demo == []


def test_cli_train_into_a_path_under_a_file_exits_2_naming_the_path(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    run_cfg = RunConfig(dataset="toy", data_options=TINY_DATA, old_model=TINY_SPEC, new_model=TINY_SPEC,
                        old_train=TrainConfig(epochs=1, batch_size=64), new_train=TrainConfig(epochs=1, batch_size=64),
                        method=MethodConfig(name="proto"), output_dir=str(tmp_path / "afile" / "run"))
    cfg_path = save_run_config(tmp_path / "cfg.yaml", run_cfg)
    assert main(["train", "--config", str(cfg_path), "--quiet"]) == 2
    assert f"cannot write {tmp_path / 'afile' / 'run'}" in capsys.readouterr().err
