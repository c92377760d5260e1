"""Widgets built in plain pytest: set a control, compare the figure with the pure function."""

import dataclasses
import math
import threading

import numpy as np
import pytest
import torch

import bclviz.widgets.lab as lab_module
from bclviz.config import MethodConfig
from bclviz.experiment import train_and_evaluate_new
from bclviz.plots import pareto_front, sweep_points, tradeoff_points
from bclviz.perturb import ndpp, odpp, old_neighbors, pseudo_old
from bclviz.proxies import crowding, drift, format_headroom, headroom, recognisability
from bclviz.readouts import format_tax
from bclviz.runconfig import RunConfig, load_run_config
from bclviz.sweep import journal_path, run_sweep
from bclviz.widgets import (
    ParetoMonitor,
    PerturbationExplorer,
    TrainingLab,
    default_k,
    explorer_state,
    format_proxies,
    measure_latency,
)
from bclviz.widgets.explorer import format_readouts


@pytest.fixture(scope="module")
def tiny(tiny_experiment):
    return tiny_experiment


@pytest.fixture()
def explorer(tiny):
    return PerturbationExplorer(tiny[1], projection="pca")


def pure(ex, **params):
    p = {**ex.params, **params}
    return explorer_state(ex.old_protos, ex.new_protos, **p, features=ex.features, labels=ex.labels)


def xy(trace):
    return np.column_stack([np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float)])


def assert_figure_matches(ex, **params):
    state = pure(ex, **params)
    want = ex.projection.place(state["pseudo_old"])
    np.testing.assert_allclose(xy(ex.traces["pseudo_old_protos"]), want, rtol=1e-6, atol=1e-9)
    arrows = xy(ex.traces["pseudo_old_arrows"]).reshape(-1, 3, 2)
    np.testing.assert_allclose(arrows[:, 0], ex.projection.place(ex.old_protos), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(arrows[:, 1], want, rtol=1e-6, atol=1e-9)
    assert np.isnan(arrows[:, 2]).all()
    assert ex.proxies_html.value == format_proxies(state["proxies"])
    torch.testing.assert_close(ex.state["pseudo_old"], state["pseudo_old"])
    return state


def test_explorer_state_is_the_perturbation(tiny):
    state = tiny[1].new["ndpp"].state
    p_o, p_n = state["old_protos"], state["new_protos"]
    s = explorer_state(p_o, p_n, method="ndpp", eps=0.3, k=3)
    torch.testing.assert_close(s["delta"], ndpp(p_o, p_n, eps=0.3, k=3))
    torch.testing.assert_close(s["pseudo_old"], pseudo_old(p_o, s["delta"]))
    assert s["proxies"] == pytest.approx({
        "crowding_old": crowding(p_o), "crowding_pseudo_old": crowding(s["pseudo_old"]),
        "drift_deg": math.degrees(drift(s["pseudo_old"], p_o)),
        "delta_mean": float(s["delta"].norm(dim=1).mean()), "headroom": headroom(p_o, p_n, k=3),
    })
    o = explorer_state(p_o, p_n, method="odpp", eps=0.3, k=4, gamma=0.5)
    torch.testing.assert_close(o["delta"], odpp(p_o, p_n, eps=0.3, k=4, gamma=0.5))
    f = torch.nn.functional.normalize(p_o[[0, 1, 2, 3]] + 0.01, dim=1)
    y = torch.tensor([0, 1, 2, 3])
    with_f = explorer_state(p_o, p_n, method="ndpp", eps=0.0, k=1, features=f, labels=y)
    assert with_f["proxies"]["recognisability"] == recognisability(f, y, p_o)
    assert with_f["proxies"]["drift_deg"] == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="method must be one of"):
        explorer_state(p_o, p_n, method="bct", eps=0.3, k=3)
    with pytest.raises(ValueError, match="k must be smaller"):
        explorer_state(p_o, p_n, method="ndpp", eps=0.3, k=6)
    assert (default_k("ndpp"), default_k("odpp")) == (5, 8)


def test_construction_displays_nothing(tiny, capsys, monkeypatch):
    import IPython.core.display_functions as display_functions
    import IPython.display

    shown = []
    monkeypatch.setattr(display_functions, "display", lambda *a, **k: shown.append(a))
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: shown.append(a))
    ex = PerturbationExplorer(tiny[1], projection="pca")
    lab = TrainingLab(tiny[1], tiny[0], explorer=ex)
    out = capsys.readouterr()
    assert (out.out, out.err, shown) == ("", "", [])
    bundle = ex._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id
    assert lab._repr_mimebundle_()["application/vnd.jupyter.widget-view+json"]["model_id"] == lab.widget.model_id
    assert ex.fig in ex.widget.children and lab.tradeoff in lab.widget.children


@pytest.mark.parametrize("name", ["ndpp", "odpp"])
def test_explorer_previews_the_budget_mode_and_search_training_uses(tiny, name):
    """A trained setting with relative budgets and IVF neighbours: the explorer's preview is
    what bclviz.ndpp/odpp compute with the same options (it used to ignore both)."""
    cfg, result = tiny
    trained = MethodConfig(name=name, eps=0.5, k=3, eps_mode="relative", neighbor_search="ivf")
    methods = result.results["methods"]
    saved = dict(methods)
    methods[name] = {**methods.get(name, {}), "settings": dataclasses.asdict(trained)}
    try:
        ex = PerturbationExplorer(result, method=name, projection="pca")
        assert ex.method_config() == trained
        p_o, p_n = ex.old_protos, ex.new_protos
        neighbors = old_neighbors(p_o, 3, search="ivf")
        if name == "ndpp":
            want = ndpp(p_o, p_n, eps=0.5, k=3, eps_mode="relative", neighbors=neighbors)
        else:
            want = odpp(p_o, p_n, eps=0.5, k=3, eps_mode="relative", neighbors=neighbors)
        torch.testing.assert_close(ex.state["delta"], want)
        assert ex.state["proxies"]["delta_mean"] == pytest.approx(float(want.norm(dim=1).mean()))
        assert ex.state["proxies"]["headroom"] == pytest.approx(headroom(p_o, p_n, k=3, search="ivf"))
    finally:
        methods.clear()
        methods.update(saved)


def test_explorer_starts_at_trained_setting(explorer, tiny):
    settings = tiny[1].results["methods"]["ndpp"]["settings"]
    assert explorer.params == dict(method="ndpp", eps=settings["eps"], k=default_k("ndpp"), gamma=settings["gamma"])
    assert explorer.reference == "ndpp" and explorer.projection.method_ == "pca"
    assert explorer.k_slider.max == tiny[1].data.num_classes - 1
    assert explorer.gamma_slider.disabled
    assert explorer.traces["pseudo_old_protos"].name == "pseudo old protos"
    assert explorer.features.shape[0] == explorer.labels.shape[0] == len(tiny[1].data.new_train)
    assert_figure_matches(explorer)


def test_explorer_shows_headroom_and_tax(explorer, tiny):
    results = tiny[1].results
    # the live headroom follows the k slider (the old-space neighbours the preview uses)
    explorer.k_slider.value = 2
    assert explorer.state["proxies"]["headroom"] == pytest.approx(
        headroom(explorer.old_protos, explorer.new_protos, k=2))
    assert f"headroom {explorer.state['proxies']['headroom']:.3f}" in explorer.proxies_html.value
    # the experiment's readouts, fixed: tax and the independent model's headroom
    line = explorer.readouts_html.value
    assert line == format_readouts(results) and explorer.readouts_html in explorer.widget.children
    assert format_tax(results["tax"], plus_minus="&plusmn;") in line and format_headroom(results["headroom"]) in line
    assert format_readouts({}) == ""


def test_eps_slider_moves_only_pseudo_old(explorer):
    before = {uid: xy(t) for uid, t in explorer.traces.items()}
    explorer.eps_slider.value = 0.3
    state = assert_figure_matches(explorer, eps=0.3)
    assert set(state["proxies"]) == {"crowding_old", "crowding_pseudo_old", "drift_deg", "delta_mean",
                                     "headroom", "recognisability"}
    for key, value in state["proxies"].items():
        assert (f"{value:.2f}&deg;" if key == "drift_deg" else f"{value:.3f}") in explorer.proxies_html.value, key
    for uid, coords in before.items():
        if uid not in ("pseudo_old_protos", "pseudo_old_arrows"):
            np.testing.assert_array_equal(xy(explorer.traces[uid]), coords)
    assert not np.allclose(xy(explorer.traces["pseudo_old_protos"]), before["pseudo_old_protos"])
    explorer.eps_slider.value = 0.0
    assert_figure_matches(explorer, eps=0.0)
    np.testing.assert_allclose(xy(explorer.traces["pseudo_old_protos"]),
                               explorer.projection.embedding_["old_protos"], atol=1e-6)


def test_odpp_k_and_gamma(explorer):
    explorer.method_toggle.value = "odpp"
    assert not explorer.gamma_slider.disabled
    assert_figure_matches(explorer, method="odpp")
    explorer.eps_slider.value = 0.5
    explorer.k_slider.value = 3
    explorer.gamma_slider.value = 0.5
    assert explorer.params == dict(method="odpp", eps=0.5, k=3, gamma=0.5)
    assert_figure_matches(explorer, method="odpp", eps=0.5, k=3, gamma=0.5)
    assert explorer.method_config(MethodConfig(name="odpp", lam=2.0)) == MethodConfig(
        name="odpp", lam=2.0, eps=0.5, k=3, gamma=0.5)
    explorer.method_toggle.value = "ndpp"
    assert explorer.gamma_slider.disabled
    assert_figure_matches(explorer, method="ndpp", eps=0.5, k=3)


def test_measure_latency_restores_the_slider(explorer):
    explorer.eps_slider.value = 0.2
    timing = measure_latency(explorer, n=4)
    assert set(timing) == {"median_ms", "p95_ms", "n", "method", "background"} and timing["n"] == 4
    assert 0 < timing["median_ms"] <= timing["p95_ms"] and timing["background"] is False
    assert explorer.eps_slider.value == 0.2
    assert_figure_matches(explorer, eps=0.2)


def test_background_odpp_draws_a_provisional_state_then_the_exact_one(tiny, monkeypatch):
    """ODPP in a worker thread: a move draws at once the last result scaled to the new
    eps (marked as computing), then the exact ODPP state; a move that overtakes a running
    computation makes its result stale (it is never drawn)."""
    import bclviz.widgets.explorer as explorer_module

    ex = PerturbationExplorer(tiny[1], method="odpp", projection="pca", background=True, eps=0.4, k=3)
    assert ex.background and not PerturbationExplorer(tiny[1], projection="pca").background  # auto: small C
    first = ex.wait(timeout=60)
    assert not first.get("provisional")
    assert_figure_matches(ex, method="odpp", eps=0.4, k=3)
    gate = threading.Event()
    real = explorer_module.explorer_state
    monkeypatch.setattr(explorer_module, "explorer_state", lambda *a, **kw: (gate.wait(30), real(*a, **kw))[1])
    ex.eps_slider.value = 0.2
    assert ex.pending and ex.state["provisional"] and "computing" in ex.proxies_html.value
    torch.testing.assert_close(ex.state["delta"], first["delta"] * 0.5)  # budgets are linear in eps
    ex.eps_slider.value = 0.3  # overtakes the move to 0.2
    gate.set()
    state = ex.wait(timeout=60)
    assert not ex.pending and not state.get("provisional") and state["config"].eps == 0.3
    assert "computing" not in ex.proxies_html.value
    assert_figure_matches(ex, method="odpp", eps=0.3, k=3)
    timing = measure_latency(ex, n=3)
    assert timing["background"] and timing["median_ms"] <= timing["exact_median_ms"]
    monkeypatch.setattr(explorer_module, "explorer_state", lambda *a, **kw: 1 / 0)
    ex.eps_slider.value = 0.6
    with pytest.raises(ZeroDivisionError):
        ex.wait(timeout=60)
    assert "ZeroDivisionError" in ex.proxies_html.value
    monkeypatch.setattr(explorer_module, "explorer_state", real)
    ex.method_toggle.value = "ndpp"  # computed in place, and the error is cleared by the next exact draw
    assert not ex.pending and not ex.state.get("provisional")
    assert_figure_matches(ex, method="ndpp", eps=0.6, k=3)


def test_explorer_rejects_bad_arguments(tiny):
    with pytest.raises(ValueError, match="method must be one of"):
        PerturbationExplorer(tiny[1], method="bct", projection="pca")
    with pytest.raises(ValueError, match=r"reference.*available: \['independent', 'ndpp', 'proto'\]"):
        PerturbationExplorer(tiny[1], reference="odpp", projection="pca")


def counted(monkeypatch, gate=None, fail=None):
    calls = []

    def wrapped(data, old, cfg, method, **kwargs):
        calls.append(method)
        if gate is not None:
            assert gate.wait(30)
        if fail is not None:
            raise fail
        return lab_module_train(data, old, cfg, method, **kwargs)

    monkeypatch.setattr(lab_module, "train_setting", wrapped)
    return calls


lab_module_train = lab_module.train_setting


def test_lab_trains_once_and_plots_the_point(tiny, explorer, monkeypatch):
    cfg, res = tiny
    gate = threading.Event()
    calls = counted(monkeypatch, gate=gate)
    lab = TrainingLab(res, cfg, explorer=explorer)
    explorer.eps_slider.value = 0.3
    lab.train_button.click()
    assert lab.train_button.disabled
    lab.train_button.click()  # ignored: a run is in progress
    assert lab.train() is False
    with pytest.raises(TimeoutError, match="still running"):
        lab.wait(timeout=0.01)
    gate.set()
    record = lab.wait(timeout=60)
    assert len(calls) == 1 and calls[0] == MethodConfig(name="ndpp", eps=0.3, k=5)
    assert not lab.train_button.disabled and lab.progress.value == lab.progress.max == cfg.new_train.epochs
    key = f"mAP@{cfg.k}"
    trained = lab.traces["points-trained"]
    assert (list(trained.x), list(trained.y)) == ([record["cross"][key]], [record["self"][key]])
    assert lab.records == [record] and record["label"] in lab.records_html.value
    assert record["compatible"] == (record["cross"][key] > res.results["old"]["self"][key])
    assert list(lab.traces["criterion"].x) == [lab.m_oo] * 2
    # same seed, same numbers as the experiment's own path
    _, reference = train_and_evaluate_new(res.data, res.old, cfg, calls[0], progress=False)
    assert (record["self"], record["cross"]) == (reference["self"], reference["cross"])
    # the lock is free again: a second setting trains and joins the plot
    explorer.method_toggle.value = "odpp"
    assert lab.train() is True
    second = lab.wait(timeout=60)
    assert len(calls) == 2 and second["method"] == "odpp"
    assert list(trained.x) == [record["cross"][key], second["cross"][key]]


def test_lab_failure_is_reported(tiny, explorer, monkeypatch):
    cfg, res = tiny
    calls = counted(monkeypatch, fail=ValueError("boom"))
    lab = TrainingLab(res, cfg, explorer=explorer)
    lab.train_button.click()
    with pytest.raises(ValueError, match="boom"):
        lab.wait(timeout=60)
    assert "boom" in lab.status.value and not lab.train_button.disabled
    assert lab.records == [] and len(lab.traces["points-trained"].x) == 0
    assert lab.train() is True  # the lock was released
    with pytest.raises(ValueError):
        lab.wait(timeout=60)
    assert len(calls) == 2


def test_lab_uses_the_study(tiny, explorer, monkeypatch, tmp_path):
    cfg, res = tiny
    calls = counted(monkeypatch)
    lab = TrainingLab(res, cfg, explorer=explorer, cache_dir=tmp_path)
    lab.train()
    first = lab.wait(timeout=60)
    assert [p.name for p in tmp_path.iterdir()] == [journal_path(tmp_path, res.data, cfg).name]
    assert lab.last_result is not None and len(calls) == 1
    trial = lab.study.trials[0]
    assert trial.state.name == "COMPLETE" and trial.params == {"method": "ndpp", "eps": lab.current_method().eps,
                                                               "k": 5, "replicate": 0}
    lab.train()
    assert lab.wait(timeout=60) == first and len(calls) == 1 and lab.last_result is None
    # a new lab on the same folder shows what the study holds, before training anything
    again = TrainingLab(res, cfg, explorer=explorer, cache_dir=tmp_path)
    assert again.records == [first] and list(again.traces["points-trained"].x) == [first["cross"][lab.key]]


def test_lab_copies_what_a_sweep_trained(tiny, explorer, monkeypatch, tmp_path):
    cfg, res = tiny
    method = MethodConfig(name="ndpp", eps=0.3, k=5)
    [swept] = run_sweep(res.data, res.old, cfg, [method], cache_dir=tmp_path, progress=False)
    calls = counted(monkeypatch)
    lab = TrainingLab(res, cfg, explorer=explorer, cache_dir=tmp_path)
    explorer.eps_slider.value = 0.3
    lab.train()
    assert lab.wait(timeout=60) == swept and calls == []
    assert lab.study.trials[0].system_attrs["bclviz:copied_from"].endswith("#0")


def test_lab_shows_seeds_readouts_and_exports_a_chosen_point(tiny, explorer, tmp_path):
    cfg, res = tiny
    cfg2 = dataclasses.replace(cfg, seeds=2)
    lab = TrainingLab(res, cfg2, explorer=explorer)
    assert lab.readouts.value.startswith("compatibility tax: ")
    assert format_headroom(res.results["headroom"]) in lab.readouts.value
    assert format_tax(res.results["tax"], plus_minus="&plusmn;") in lab.readouts.value
    explorer.eps_slider.value = 0.2
    lab.train()
    first = lab.wait(timeout=60)
    explorer.method_toggle.value = "odpp"
    lab.train()
    second = lab.wait(timeout=60)
    key = lab.key
    assert [len(r["per_seed"]) for r in lab.records] == [2, 2] and lab.records == [first, second]
    trained = lab.traces["points-trained"]
    assert list(trained.error_y.array) == pytest.approx([first["self_ci"][key], second["self_ci"][key]])
    assert trained.error_x.visible and trained.error_y.visible
    points = tradeoff_points(res.results, metric=key) + sweep_points(lab.records, metric=key)
    assert lab.monitor.front_labels() == [points[i]["label"] for i in
                                          sorted(pareto_front(points), key=lambda i: points[i]["cross"])]
    assert lab.progress.value == lab.progress.max == 2 * cfg.new_train.epochs
    # a click on the second trained point chooses it; export writes its run config
    lab.monitor._clicked(trained, type("Points", (), {"point_inds": [1]})(), None)
    assert lab.choice.value == 1 and "odpp" in lab.status.value
    path = lab.export_config(tmp_path / "chosen.yaml")
    assert load_run_config(path).method == MethodConfig(**second["settings"])
    lab.choice.value = -1
    assert load_run_config(lab.export_config(tmp_path / "explorer.yaml")).method == lab.current_method()


def test_pareto_monitor_draws_what_the_pure_functions_give(tiny):
    cfg, res = tiny
    key = f"mAP@{cfg.k}"
    references = tradeoff_points(res.results, metric=key)
    m_oo = res.results["old"]["self"][key]
    chosen = []
    monitor = ParetoMonitor(old_old=m_oo, metric=key, references=references, on_select=chosen.append)
    assert list(monitor.traces["points-sweep"].x) == [] and list(monitor.traces["criterion"].x) == [m_oo, m_oo]
    records = run_sweep(res.data, res.old, dataclasses.replace(cfg, seeds=2),
                        [MethodConfig(name="proto"), MethodConfig(name="ndpp", eps=0.5)], cache_dir=None,
                        progress=False, callback=monitor.update)
    assert monitor.records == records
    points = sweep_points(records, metric=key)
    sweep = monitor.traces["points-sweep"]
    assert (list(sweep.x), list(sweep.y)) == ([p["cross"] for p in points], [p["self"] for p in points])
    assert list(sweep.error_x.array) == [p["cross_err"] for p in points]
    everything = references + points
    front = sorted(pareto_front(everything), key=lambda i: everything[i]["cross"])
    assert list(monitor.traces["pareto"].x) == [everything[i]["cross"] for i in front]
    ys = [p["self"] for p in everything]
    assert min(monitor.traces["criterion"].y) < min(ys) and max(monitor.traces["criterion"].y) > max(ys)
    assert monitor.select(1) == records[1] and chosen == [records[1]]


def test_lab_export_config(tiny, explorer, tmp_path):
    cfg, res = tiny
    lab = TrainingLab(res, cfg, explorer=explorer)
    explorer.method_toggle.value = "odpp"
    explorer.eps_slider.value = 0.36
    path = lab.export_config(tmp_path / "chosen.yaml")
    loaded = load_run_config(path)
    assert loaded == RunConfig.from_experiment(cfg, MethodConfig(name="odpp", eps=0.36, k=5, gamma=0.1))
    assert loaded.method == lab.current_method()
    lab.export_path.value = str(tmp_path / "button.yaml")
    lab.export_button.click()
    assert load_run_config(tmp_path / "button.yaml") == loaded
    assert "button.yaml" in lab.status.value


def test_lab_keeps_method_settings_from_cfg(tiny, explorer):
    import dataclasses

    cfg, res = tiny
    cfg = dataclasses.replace(cfg, methods=(MethodConfig(name="ndpp", lam=3.0, warmup_epochs=0),))
    lab = TrainingLab(res, cfg, explorer=explorer)
    explorer.eps_slider.value = 0.2
    assert lab.current_method() == MethodConfig(name="ndpp", lam=3.0, warmup_epochs=0, eps=0.2, k=5)


def test_live_proxies_give_the_pure_state_and_are_reused(explorer, tiny):
    from bclviz.proxies import LiveProxies

    ex = explorer
    assert isinstance(ex.live, LiveProxies) and ex.live.exact
    for method in ("ndpp", "odpp"):
        p = {**ex.params, "method": method, "k": 2}
        plain = explorer_state(ex.old_protos, ex.new_protos, **p, features=ex.features, labels=ex.labels)
        live = explorer_state(ex.old_protos, ex.new_protos, **p, live=ex.live)
        torch.testing.assert_close(live["delta"], plain["delta"])
        assert live["proxies"] == pytest.approx(plain["proxies"], abs=1e-9)
    # NDPP from the cached direction is bclviz.ndpp's very number, for every budget mode
    for mode in ("absolute", "relative", "nearest-angle"):
        for eps in (0.0, 0.3, 0.9):
            got = explorer_state(ex.old_protos, ex.new_protos, method="ndpp", eps=eps, k=2, eps_mode=mode, live=ex.live)
            assert torch.equal(got["delta"], ndpp(ex.old_protos, ex.new_protos, eps=eps, k=2, eps_mode=mode))
    # above EXACT_CLASSES the pseudo-old proxies come from candidate lists: a lower bound on crowding
    candidates = LiveProxies(ex.old_protos, ex.new_protos, ex.features, ex.labels, exact_classes=2, candidates=2)
    cand = explorer_state(ex.old_protos, ex.new_protos, **{**ex.params, "k": 2}, live=candidates)
    exact = pure(ex, k=2)
    torch.testing.assert_close(cand["pseudo_old"], exact["pseudo_old"])
    assert cand["proxies"]["crowding_pseudo_old"] <= exact["proxies"]["crowding_pseudo_old"] + 1e-6
    assert cand["proxies"]["recognisability"] >= exact["proxies"]["recognisability"]


def test_lab_writes_what_it_trains_as_tensorboard_runs(tiny, explorer, tmp_path):
    """log="tensorboard": every (setting, seed) trained in the lab is a TensorBoard run holding
    the same per-epoch records as the run's history and its self/cross scores."""
    pytest.importorskip("tensorboard")
    from tests.test_bring_models import _scalars

    cfg, res = tiny
    lab = TrainingLab(res, cfg, explorer=explorer, log="tensorboard", log_dir=tmp_path / "lab")
    explorer.eps_slider.value = 0.36
    lab.train()
    record = lab.wait(timeout=120)
    runs = sorted(p.parent for p in (tmp_path / "lab").rglob("events.out.tfevents.*"))
    assert [p.relative_to(tmp_path / "lab").as_posix() for p in runs] == [f"ndpp_eps=0.36_k=5/seed{r}"
                                                                         for r in range(cfg.seeds)]
    scalars = _scalars(runs[-1])
    history = lab.last_result.history
    assert scalars["new/loss"] == [(r["epoch"], pytest.approx(r["loss"])) for r in history]
    assert scalars["new/crowding_pseudo_old"] == [(r["epoch"], pytest.approx(r["crowding_pseudo_old"]))
                                                  for r in history]
    key = lab.key
    last = record["per_seed"][-1] if "per_seed" in record else record
    assert scalars[f"eval/self/{key}"] == [(history[-1]["epoch"], pytest.approx(last["self"][key]))]
    assert scalars[f"eval/cross/{key}"] == [(history[-1]["epoch"], pytest.approx(last["cross"][key]))]
    with pytest.raises(ValueError, match="log must be one of"):
        TrainingLab(res, cfg, explorer=explorer, log="wandb")
