"""Trials in worker processes: same numbers as in this process, errors that name the trial."""

import dataclasses
import json

import pytest
import torch

from bclviz.config import MethodConfig, TrainConfig
from bclviz.experiment import default_experiment, run_experiment
from bclviz.methods import CompatMethod, register_method
from bclviz.sweep import run_sweep, sweep_study
from bclviz.trials import Trial, default_trial_workers, resolve_trial_workers, run_trials


def _tiny_cfg(**kw):
    return default_experiment(
        "toy", data_options=dict(num_superclasses=3, siblings=2, train_per_class=40, eval_per_class=8),
        old_train=TrainConfig(epochs=2), new_train=TrainConfig(epochs=2),
        methods=(MethodConfig(name="proto"), MethodConfig(name="ndpp")), **kw,
    )


def _numbers(results: dict) -> str:
    """results.json without the timings."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "seconds"}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj
    return json.dumps(strip(results), sort_keys=True)


@pytest.mark.slow
def test_two_workers_give_the_numbers_of_one_process(tmp_path):
    cfg = _tiny_cfg(seeds=2)
    here = run_experiment(cfg, progress=False, workers=1)
    there = run_experiment(cfg, progress=False, workers=2)
    assert _numbers(here.results) == _numbers(there.results)
    # the first seed's models come back from the workers, with their state
    for name in ("independent", "proto", "ndpp"):
        for a, b in zip(here.new[name].model.state_dict().values(), there.new[name].model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(here.new["ndpp"].state["pseudo_old"], there.new["ndpp"].state["pseudo_old"])
    # a sweep in two workers records every (setting, seed) as it finishes; a rerun trains nothing
    grid = [MethodConfig(name="proto"), MethodConfig(name="ndpp", eps=0.3)]
    first = run_sweep(here.data, here.old, cfg, grid, cache_dir=tmp_path, progress=False, workers=2)
    trials = sweep_study(here.data, cfg, grid, cache_dir=tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * len(grid) * cfg.seeds
    assert sorted((t.params["setting"], t.params["replicate"]) for t in trials) == [
        ("ndpp eps=0.3", 0), ("ndpp eps=0.3", 1), ("proto", 0), ("proto", 1)]
    again = run_sweep(here.data, here.old, cfg, grid, cache_dir=tmp_path, progress=False, workers=2)
    assert _numbers(first) == _numbers(again)
    assert len(sweep_study(here.data, cfg, grid, cache_dir=tmp_path).trials) == len(trials)
    assert first[0]["self"] == here.results["methods"]["proto"]["self"]
    assert _numbers(run_sweep(here.data, here.old, cfg, grid, cache_dir=None, progress=False, workers=1)) == \
        _numbers(first)


@pytest.mark.slow
def test_an_error_in_a_worker_names_the_trial_and_the_cause(tiny_experiment):
    cfg, result = tiny_experiment
    # 6 classes: NDPP cannot take 10 neighbours; the worker's error comes back with its trial
    trials = [Trial(MethodConfig(name="proto")), Trial(MethodConfig(name="ndpp", k=10), replicate=2)]
    with pytest.raises(RuntimeError, match=r"trial 1 \(method 'ndpp', replicate 2\) failed in a worker(.|\n)*k"):
        list(run_trials(cfg, result.data, result.old, trials, workers=2, progress=False))


def test_methods_a_fresh_process_cannot_import_train_here(tiny_experiment):
    cfg, result = tiny_experiment

    @register_method("local_for_test")
    class Local(CompatMethod):
        pass

    try:
        # defined inside a function: only this process knows it, so no worker is started
        out = list(run_trials(cfg, result.data, result.old, [Trial(MethodConfig(name="local_for_test"))],
                              workers=2, progress=False))
        assert [i for i, _, _ in out] == [0] and out[0][1] is None and set(out[0][2]) >= {"self", "cross"}
    finally:
        import bclviz.methods as methods_module

        methods_module._REGISTRY.pop("local_for_test")


def test_worker_counts_are_checked(monkeypatch):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            resolve_trial_workers(bad)
    assert resolve_trial_workers(4, 3) == 3 and resolve_trial_workers(2, 0) == 1
    monkeypatch.setenv("BCLVIZ_WORKERS", "3")
    assert default_trial_workers() == 3
    monkeypatch.setenv("BCLVIZ_WORKERS", "many")
    with pytest.raises(ValueError, match=r"\$BCLVIZ_WORKERS must be an integer >= 1, got 'many'"):
        default_trial_workers()
    monkeypatch.setenv("BCLVIZ_WORKERS", "0")
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        default_trial_workers()
    with pytest.raises(TypeError, match=r"trials\[0\] must be a Trial"):
        list(run_trials(_tiny_cfg(), None, None, [MethodConfig()], workers=1))


def test_a_trial_trains_with_the_same_threads_whatever_the_worker_count(monkeypatch):
    """CPU sums depend on the thread count, so a trial run here must use the threads a
    worker would get (this process's threads at import / the default worker count), not
    all of this process's threads, and give them back afterwards."""
    import bclviz.trials

    monkeypatch.setattr(bclviz.trials, "_PROCESS_THREADS", 4)
    monkeypatch.delenv("BCLVIZ_TRIAL_THREADS", raising=False)
    monkeypatch.setattr(bclviz.trials, "default_trial_workers", lambda: 8)
    assert bclviz.trials.trial_threads() == 1  # never below one
    monkeypatch.setattr(bclviz.trials, "default_trial_workers", lambda: 2)
    assert bclviz.trials.trial_threads() == 2
    monkeypatch.setenv("BCLVIZ_TRIAL_THREADS", "3")  # what a worker inherits from its parent
    assert bclviz.trials.trial_threads() == 3
    monkeypatch.delenv("BCLVIZ_TRIAL_THREADS")

    seen = []
    real = bclviz.trials.train_and_score

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(bclviz.trials, "train_and_score", spy)
    cfg = _tiny_cfg()
    result = run_experiment(dataclasses.replace(cfg, methods=()), progress=False, workers=1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        list(run_trials(cfg, result.data, result.old, [Trial(MethodConfig(name="proto"))], workers=1,
                        progress=False))
        assert seen[-1] == 2 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_gpu_run_trains_in_one_process(monkeypatch):
    import bclviz.trials

    monkeypatch.setattr(bclviz.trials, "default_trial_workers", lambda: 2)
    cfg = _tiny_cfg()
    gpu = dataclasses.replace(cfg, new_train=dataclasses.replace(cfg.new_train, device="cuda"))
    assert resolve_trial_workers(None, 10, cfg=cfg) == 2
    assert resolve_trial_workers(None, 10, cfg=gpu) == 1
    assert resolve_trial_workers(2, 10, cfg=gpu) == 2  # asked for explicitly
