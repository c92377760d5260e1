import dataclasses
import json

import pytest

import bclviz.sweep as sweep
import bclviz.trials as trials
from bclviz.config import MethodConfig, TrainConfig
from bclviz.pipeline import train_and_score
from bclviz.runconfig import RunConfig, load_run_config
from bclviz.stats import mean_interval
from bclviz.sweep import (
    cache_key,
    export_config,
    fingerprint,
    journal_path,
    old_baseline,
    run_sweep,
    setting_id,
    setting_label,
    sweep_grid,
    sweep_study,
)
from _helpers import without_seconds


@pytest.fixture(scope="module")
def tiny(tiny_experiment):
    return tiny_experiment


@pytest.fixture(scope="module")
def grid():
    return sweep_grid(methods=("ndpp",), eps=(0.2, 0.5), baselines=("proto",))


@pytest.fixture(scope="module")
def reference(tiny, grid, tmp_path_factory):
    """An uninterrupted sweep, in its own cache folder."""
    cfg, res = tiny
    return run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path_factory.mktemp("ref"), progress=False)


def counting(monkeypatch, fail_on=None):
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == fail_on:
            raise KeyboardInterrupt("interrupted")
        return train_and_score(*args, **kwargs)

    monkeypatch.setattr(trials, "train_and_score", wrapped)  # every sweep trial goes through it
    return calls



def test_grid():
    grid = sweep_grid(eps=(0.1, 0.3), k=(3, 5), gamma=(0.1, 1.0))
    names = [m.name for m in grid]
    assert names[:6] == ["proto", "bct", "l2", "lce", "hot_refresh", "independent"]
    ndpp = [m for m in grid if m.name == "ndpp"]
    odpp = [m for m in grid if m.name == "odpp"]
    assert {(m.eps, m.k) for m in ndpp} == {(0.1, 3), (0.1, 5), (0.3, 3), (0.3, 5)} and len(ndpp) == 4
    assert len(odpp) == 8 and {m.gamma for m in odpp} == {0.1, 1.0}
    assert {m.gamma for m in ndpp} == {MethodConfig().gamma}
    default_k = sweep_grid(methods=("odpp",), eps=(0.2,), baselines=())
    assert default_k == [MethodConfig(name="odpp", eps=0.2, k=None)]
    assert setting_label(default_k[0]) == "odpp eps=0.2 gamma=0.1"
    assert setting_label(MethodConfig(name="ndpp", eps=0.3, k=4)) == "ndpp eps=0.3 k=4"
    assert setting_label(MethodConfig(name="bct")) == "bct"
    with pytest.raises(ValueError, match="methods must be among"):
        sweep_grid(methods=("bct",))


def test_records(tiny, grid, reference):
    cfg, res = tiny
    key = f"mAP@{cfg.k}"
    m_oo = old_baseline(res.data, res.old, k=cfg.k)
    assert m_oo == pytest.approx(res.results["old"]["self"][key])
    assert [r["label"] for r in reference] == ["proto", "ndpp eps=0.2", "ndpp eps=0.5"]
    for record, method in zip(reference, grid):
        assert set(record) == {"label", "method", "settings", "self", "cross", "self_ci", "cross_ci",
                               "per_seed", "compatible", "seconds"}
        assert len(record["per_seed"]) == cfg.seeds == 1 and record["self_ci"][key] is None
        assert record["settings"] == json.loads(json.dumps(method.__dict__))
        assert record["compatible"] == (record["cross"][key] > m_oo)
    # same seed, same numbers as the experiment's own proto run
    assert reference[0]["self"] == res.results["methods"]["proto"]["self"]
    assert reference[0]["cross"] == res.results["methods"]["proto"]["cross"]


def study_trials(res, cfg, grid, folder):
    """(state name, setting, replicate) of every trial of the grid's study, in number order."""
    study = sweep_study(res.data, cfg, grid, cache_dir=folder)
    return [(t.state.name, t.params["setting"], t.params["replicate"]) for t in study.trials]


def test_study_is_used_and_resumes(tiny, grid, reference, tmp_path, monkeypatch):
    cfg, res = tiny
    calls = counting(monkeypatch)
    first = run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == [journal_path(tmp_path, res.data, cfg).name]
    assert study_trials(res, cfg, grid, tmp_path) == [("COMPLETE", "proto", 0), ("COMPLETE", "ndpp eps=0.2", 0),
                                                     ("COMPLETE", "ndpp eps=0.5", 0)]
    study = sweep_study(res.data, cfg, grid, cache_dir=tmp_path)
    key = f"mAP@{cfg.k}"
    for trial, record in zip(study.trials, first):  # the full record, and both objectives
        assert trial.user_attrs["record"] == {k: v for k, v in record["per_seed"][0].items()} | {
            k: record[k] for k in ("label", "method", "settings", "compatible")}
        assert trial.values == [record["self"][key], record["cross"][key]]
        assert trial.system_attrs["bclviz:key"] == cache_key(res.data, cfg, MethodConfig(**record["settings"]))
        feasible = trial.system_attrs["constraints"][0] <= 0
        assert feasible == record["compatible"] == (record["cross"][key] > old_baseline(res.data, res.old, k=cfg.k))

    again = run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3 and again == first

    assert without_seconds(first) == without_seconds(reference)


def test_interrupted_sweep_resumes(tiny, grid, reference, tmp_path, monkeypatch):
    cfg, res = tiny
    calls = counting(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    # the interrupted trial is marked failed on the way out, the one never started still waits
    assert study_trials(res, cfg, grid, tmp_path) == [("COMPLETE", "proto", 0), ("FAIL", "ndpp eps=0.2", 0),
                                                     ("WAITING", "ndpp eps=0.5", 0)]
    resumed = run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert calls == [grid[0], grid[1], grid[1], grid[2]]
    assert without_seconds(resumed) == without_seconds(reference)
    done = [t for t in study_trials(res, cfg, grid, tmp_path) if t[0] == "COMPLETE"]
    assert sorted(done) == sorted([("COMPLETE", "proto", 0), ("COMPLETE", "ndpp eps=0.2", 0),
                                   ("COMPLETE", "ndpp eps=0.5", 0)])


def test_another_grid_copies_the_trials_it_shares(tiny, grid, reference, tmp_path, monkeypatch):
    cfg, res = tiny
    run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    calls = counting(monkeypatch)
    bigger = grid + [MethodConfig(name="ndpp", eps=0.3)]
    records = run_sweep(res.data, res.old, cfg, bigger, cache_dir=tmp_path, progress=False)
    assert calls == [bigger[3]]  # the three shared settings are copied from the first grid's study
    assert without_seconds(records[:3]) == without_seconds(reference)
    copied = sweep_study(res.data, cfg, bigger, cache_dir=tmp_path).trials[:3]
    assert all(t.system_attrs["bclviz:copied_from"].endswith(f"#{i}") for i, t in enumerate(copied))


def test_callback_sees_the_front_grow(tiny, grid, reference):
    cfg, res = tiny
    cfg2 = dataclasses.replace(cfg, seeds=2)
    seen = []
    records = run_sweep(res.data, res.old, cfg2, grid, cache_dir=None, progress=False,
                        callback=lambda recs: seen.append([(r["label"], len(r["per_seed"])) for r in recs]))
    assert seen == [[("proto", 1)], [("proto", 2)], [("proto", 2), ("ndpp eps=0.2", 1)],
                    [("proto", 2), ("ndpp eps=0.2", 2)],
                    [("proto", 2), ("ndpp eps=0.2", 2), ("ndpp eps=0.5", 1)],
                    [("proto", 2), ("ndpp eps=0.2", 2), ("ndpp eps=0.5", 2)]]
    assert [len(r["per_seed"]) for r in records] == [2, 2, 2]
    assert records[0]["per_seed"][0]["self"] == reference[0]["self"]


def test_callback_sees_a_resumed_study_at_once(tiny, grid, tmp_path):
    cfg, res = tiny
    first = run_sweep(res.data, res.old, cfg, grid[:2], cache_dir=tmp_path, progress=False)
    seen = []
    records = run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False, callback=seen.append)
    # the two settings copied from the first grid's study, then the one trained, then nothing new
    assert [[r["label"] for r in recs] for recs in seen] == [["proto", "ndpp eps=0.2"],
                                                             ["proto", "ndpp eps=0.2", "ndpp eps=0.5"]]
    assert seen[-1] == records and records[:2] == first


def test_seeds_give_means_intervals_and_one_trial_per_seed(tiny, grid, tmp_path):
    cfg, res = tiny
    cfg3 = dataclasses.replace(cfg, seeds=3)
    records = run_sweep(res.data, res.old, cfg3, grid[:1], cache_dir=tmp_path, progress=False)
    rec = records[0]
    key = f"mAP@{cfg.k}"
    values = [r["self"][key] for r in rec["per_seed"]]
    assert [r["seed"] for r in rec["per_seed"]] == [cfg.seed + 1, cfg.seed + 2, cfg.seed + 3]
    assert rec["self"][key] == pytest.approx(sum(values) / 3)
    assert rec["self_ci"][key] == pytest.approx(mean_interval(values)[1])
    # replicate 0 is the single-seed run; each (setting, seed) is its own trial
    assert rec["per_seed"][0]["self"] == reference_first_seed(tiny, grid)
    assert study_trials(res, cfg3, grid[:1], tmp_path) == [("COMPLETE", "proto", r) for r in range(3)]


def reference_first_seed(tiny, grid):
    cfg, res = tiny
    return run_sweep(res.data, res.old, cfg, grid[:1], cache_dir=None, progress=False)[0]["self"]


def test_no_cache_dir(tiny, grid, monkeypatch):
    cfg, res = tiny
    calls = counting(monkeypatch)
    run_sweep(res.data, res.old, cfg, grid[:1], cache_dir=None, progress=False)
    run_sweep(res.data, res.old, cfg, grid[:1], cache_dir=None, progress=False)
    assert len(calls) == 2
    with pytest.raises(TypeError, match=r"grid\[0\]"):
        run_sweep(res.data, res.old, cfg, ["ndpp"], cache_dir=None, progress=False)


def test_cache_key_depends_on_everything_but_methods(tiny):
    import dataclasses

    cfg, res = tiny
    m = MethodConfig(name="ndpp", eps=0.2)
    key = cache_key(res.data, cfg, m)
    assert key == cache_key(res.data, dataclasses.replace(cfg, methods=()), m)
    assert len(key) == 64
    assert key != cache_key(res.data, cfg, MethodConfig(name="ndpp", eps=0.3))
    assert key != cache_key(res.data, dataclasses.replace(cfg, seed=1), m)
    assert key != cache_key(res.data, dataclasses.replace(cfg, new_train=TrainConfig(epochs=3)), m)
    ivf = MethodConfig(name="ndpp", eps=0.2, neighbor_search="ivf")
    assert key != cache_key(res.data, cfg, ivf)
    assert setting_label(ivf) == "ndpp eps=0.2 knn=ivf" and setting_label(m) == "ndpp eps=0.2"
    # the study fingerprint: the same ingredients without the method and the replicate
    assert fingerprint(res.data, cfg) == fingerprint(res.data, dataclasses.replace(cfg, seeds=4, methods=()))
    assert fingerprint(res.data, cfg) != fingerprint(res.data, dataclasses.replace(cfg, seed=1))
    assert fingerprint(res.data, cfg) != fingerprint(res.data, dataclasses.replace(cfg, new_train=TrainConfig(epochs=3)))


def test_setting_id_names_exactly_one_setting():
    assert setting_id(MethodConfig(name="ndpp", eps=0.2)) == "ndpp eps=0.2"
    assert setting_id(MethodConfig(name="proto")) == "proto"
    relative = MethodConfig(name="ndpp", eps=0.2, eps_mode="relative")
    assert setting_id(relative) == "ndpp eps=0.2 eps_mode=relative" and setting_label(relative) == "ndpp eps=0.2"
    assert setting_id(MethodConfig(name="odpp", eps=0.1 + 0.2)) == "odpp eps=0.30000000000000004 gamma=0.1"
    grid = sweep_grid(eps=(0.1, 0.3), k=(3, 5), gamma=(0.1, 1.0)) + [relative, MethodConfig(name="proto", lam=2.0)]
    assert len({setting_id(m) for m in grid}) == len(grid)


def test_export_config(tiny, tmp_path):
    cfg, _ = tiny
    method = MethodConfig(name="odpp", eps=0.3, k=3, gamma=0.5)
    path = export_config(tmp_path / "best.yaml", cfg, method)
    loaded = load_run_config(path)
    assert loaded == RunConfig.from_experiment(cfg, method)
    assert loaded.methods == (method,)
    assert loaded.data_options == cfg.data_options


def test_records_cached_as_json_by_earlier_versions_are_adopted(tiny, grid, reference, tmp_path, monkeypatch):
    """The old cache format (one ``<cache_key>.json`` record per setting and seed) has the
    same keys: those records become finished trials, unreadable ones are trained again."""
    cfg, res = tiny
    old_format = [r["per_seed"][0] | {k: r[k] for k in ("label", "method", "settings", "compatible")}
                  for r in reference]
    (tmp_path / f"{cache_key(res.data, cfg, grid[0])}.json").write_text(json.dumps(old_format[0]))
    (tmp_path / f"{cache_key(res.data, cfg, grid[1])}.json").write_text('{"label": "pro')
    calls = counting(monkeypatch)
    with pytest.warns(UserWarning, match="unusable"):
        records = run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert calls == [grid[1], grid[2]]
    assert records[0] == reference[0] and without_seconds(records) == without_seconds(reference)
    adopted = sweep_study(res.data, cfg, grid, cache_dir=tmp_path).trials[0]
    assert adopted.system_attrs["bclviz:adopted_from"] == f"{cache_key(res.data, cfg, grid[0])}.json"
