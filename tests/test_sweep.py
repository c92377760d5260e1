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
    old_baseline,
    run_sweep,
    setting_label,
    sweep_grid,
)


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


def without_seconds(obj):
    """Drop timing fields at every depth (they differ between identical runs)."""
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


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


def test_cache_is_used_and_resumes(tiny, grid, reference, tmp_path, monkeypatch):
    cfg, res = tiny
    calls = counting(monkeypatch)
    first = run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == sorted(f"{cache_key(res.data, cfg, m)}.json" for m in grid)

    again = run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert len(calls) == 3 and again == first

    (tmp_path / f"{cache_key(res.data, cfg, grid[1])}.json").unlink()
    third = run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert calls[3:] == [grid[1]]
    assert without_seconds(third) == without_seconds(first) == without_seconds(reference)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_interrupted_sweep_resumes(tiny, grid, reference, tmp_path, monkeypatch):
    cfg, res = tiny
    calls = counting(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".json"]
    resumed = run_sweep(res.data, res.old, cfg, grid, cache_dir=tmp_path, progress=False)
    assert calls == [grid[0], grid[1], grid[1], grid[2]]
    assert without_seconds(resumed) == without_seconds(reference)
    assert len(list(tmp_path.glob("*.json"))) == 3 and not list(tmp_path.glob("*.tmp"))


def test_corrupt_cache_file_is_recomputed(tiny, grid, reference, tmp_path, monkeypatch):
    cfg, res = tiny
    run_sweep(res.data, res.old, cfg, grid[:1], cache_dir=tmp_path, progress=False)
    path = tmp_path / f"{cache_key(res.data, cfg, grid[0])}.json"
    path.write_text('{"label": "pro')
    calls = counting(monkeypatch)
    with pytest.warns(UserWarning, match="unreadable"):
        records = run_sweep(res.data, res.old, cfg, grid[:1], cache_dir=tmp_path, progress=False)
    assert len(calls) == 1
    assert json.loads(path.read_text()) == {k: v for k, v in records[0]["per_seed"][0].items()} | {
        k: records[0][k] for k in ("label", "method", "settings", "compatible")}
    assert without_seconds(records) == without_seconds(reference[:1])


def test_seeds_give_means_intervals_and_per_seed_cache_files(tiny, grid, tmp_path):
    cfg, res = tiny
    cfg3 = dataclasses.replace(cfg, seeds=3)
    records = run_sweep(res.data, res.old, cfg3, grid[:1], cache_dir=tmp_path, progress=False)
    rec = records[0]
    key = f"mAP@{cfg.k}"
    values = [r["self"][key] for r in rec["per_seed"]]
    assert [r["seed"] for r in rec["per_seed"]] == [cfg.seed + 1, cfg.seed + 2, cfg.seed + 3]
    assert rec["self"][key] == pytest.approx(sum(values) / 3)
    assert rec["self_ci"][key] == pytest.approx(mean_interval(values)[1])
    # replicate 0 is the single-seed run; each (setting, seed) has its own cache file
    assert rec["per_seed"][0]["self"] == reference_first_seed(tiny, grid)
    assert len(list(tmp_path.glob("*.json"))) == 3


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


def test_export_config(tiny, tmp_path):
    cfg, _ = tiny
    method = MethodConfig(name="odpp", eps=0.3, k=3, gamma=0.5)
    path = export_config(tmp_path / "best.yaml", cfg, method)
    loaded = load_run_config(path)
    assert loaded == RunConfig.from_experiment(cfg, method)
    assert loaded.methods == (method,)
    assert loaded.data_options == cfg.data_options
