"""Update scenarios: declared per dataset, selectable everywhere, default-v1 = the old defaults."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bclviz.config import ExperimentConfig, MethodConfig, ModelSpec, TrainConfig, config_from_dict, default_experiment
from bclviz.data import registry
from bclviz.data.base import BCLData, Labeled
from bclviz.data.images import image_bcl_data
from bclviz.data.registry import DatasetSpec, get_scenario, list_datasets, list_scenarios, load_dataset
from bclviz.data.scenarios import (
    AFTER_BUILD_OPTIONS, OLD_SIDE_OPTIONS, Scenario, degrade_old_side, digit_superclasses, hold_out_classes,
)
from bclviz.experiment import run_experiment
from bclviz.methods import list_methods
from bclviz.models import BlockAverage, InputView
from bclviz.train import _old_classifier, train_new

IMAGE_DEMOS = ["digits", "fashion-mnist", "glyphs"]
BUILT_IN = ["default-v1", "weak-old", "lowres-old", "coarse-old"]
SMALL_DIGITS = {"max_train": 200, "max_eval": 100}

#: the experiment defaults before scenarios existed (what default-v1 must reproduce)
V1 = {
    "toy": {"old_model": {"name": "mlp", "dim": 16, "options": {"hidden": 64}},
            "new_model": {"name": "mlp", "dim": 16, "options": {"hidden": 128}},
            "old_train": {"epochs": 8, "lr": 5e-3}, "new_train": {"epochs": 8, "lr": 5e-3}},
    "digits": {"old_model": {"name": "cnn", "dim": 32, "options": {"width": 8}},
               "new_model": {"name": "cnn", "dim": 32, "options": {"width": 32}},
               "old_train": {"epochs": 15, "batch_size": 64}, "new_train": {"epochs": 15, "batch_size": 64}},
    **{name: {"old_model": {"name": "cnn", "dim": 64, "options": {"width": 8}},
              "new_model": {"name": "cnn", "dim": 64, "options": {"width": 16}},
              "old_train": {"epochs": epochs}, "new_train": {"epochs": epochs}}
       for name, epochs in (("fashion-mnist", 3), ("glyphs", 6))},
}  # fmt: skip


def _v1_config(dataset: str, **fields) -> ExperimentConfig:
    sections = {key: config_from_dict(ModelSpec if key.endswith("model") else TrainConfig, value)
                for key, value in V1[dataset].items()}
    return ExperimentConfig(dataset=dataset, **sections, **fields)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("seconds", "data")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _fast(cfg: ExperimentConfig, steps: int = 2, **fields) -> ExperimentConfig:
    return dataclasses.replace(cfg, old_train=dataclasses.replace(cfg.old_train, max_steps=steps),
                               new_train=dataclasses.replace(cfg.new_train, max_steps=steps), **fields)


@pytest.fixture
def one_worker(monkeypatch):
    monkeypatch.setenv("BCLVIZ_WORKERS", "1")


# ----------------------------------------------------------------------------- declared
def test_every_image_demo_has_the_built_in_scenarios():
    for name in IMAGE_DEMOS:
        assert sorted(list_scenarios(name)) == sorted(BUILT_IN)
        default = get_scenario(name)
        assert list_scenarios(name)[0] == default.name == registry.get_dataset(name).default_scenario
    assert list_scenarios("toy") == ["coarse-view", "default-v1"]
    assert "lowres-old" in list_scenarios("gldv2") and "coarse-old" in list_scenarios("cifar100")


@pytest.mark.parametrize("name", list_datasets())
def test_every_scenario_is_documented_and_declares_known_options(name):
    spec = registry.get_dataset(name)
    for sc in spec.scenarios:
        assert len(sc.doc) > 80, f"{name}/{sc.name}: say what real upgrade it models"
        assert set(sc.data) <= set(spec.options) | set(AFTER_BUILD_OPTIONS)
        if sc.data.get("old_labels") == "superclass":
            assert spec.superclasses is not None


@pytest.mark.parametrize("name", list_datasets("demo"))
def test_every_scenario_has_a_valid_default_experiment(name):
    for scenario in list_scenarios(name):
        cfg = default_experiment(name, scenario=scenario, seed=3)
        assert cfg.scenario == scenario and cfg.data_options == {"scenario": scenario} and cfg.seed == 3
        assert cfg.old_model.dim == cfg.new_model.dim


def test_unknown_scenario_names_the_valid_ones():
    valid = r"choose one of \['default-v1', 'weak-old', 'lowres-old', 'coarse-old'\]"
    with pytest.raises(ValueError, match=r"unknown scenario 'strong-old' for dataset 'digits'; " + valid):
        load_dataset("digits", scenario="strong-old")
    with pytest.raises(ValueError, match=r"unknown scenario 'strong-old' for dataset 'digits'"):
        default_experiment("digits", scenario="strong-old")
    with pytest.raises(ValueError, match=r"unknown scenario 'weak-old' for dataset 'toy'; choose one of \['coarse-view', 'default-v1'\]"):
        ExperimentConfig(dataset="toy", data_options={"scenario": "weak-old"})
    with pytest.raises(ValueError, match="scenario='weak-old' but data_options names scenario 'coarse-old'"):
        default_experiment("digits", scenario="weak-old", data_options={"scenario": "coarse-old"})


def test_data_options_override_keeps_the_scenario():
    cfg = default_experiment("digits", scenario="weak-old", data_options=SMALL_DIGITS)
    assert cfg.data_options == {"scenario": "weak-old", **SMALL_DIGITS}
    assert cfg.new_model.options == {"width": 32} and cfg.old_model.options == {"width": 4}


def test_a_dataset_without_scenarios(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_dataset(DatasetSpec("plain-toy", "bclviz.data.toy:make_toy", "demo", ("siblings",)))
    assert list_scenarios("plain-toy") == [] and get_scenario("plain-toy") is None
    data = load_dataset("plain-toy", siblings=2)
    assert "scenario" not in data.info
    with pytest.raises(ValueError, match="unknown scenario 'weak-old' for dataset 'plain-toy'; it declares no scenarios"):
        load_dataset("plain-toy", scenario="weak-old")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": ""}, "name must be a non-empty string"),
    ({"doc": ""}, "doc must say what upgrade it models"),
    ({"data": {"seed": 1}}, "data must be a mapping of data options"),
    ({"experiment": ["old_model"]}, "experiment must be a mapping"),
])
def test_bad_scenario_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Scenario(**{"name": "x", "doc": "an upgrade", **kwargs})


def test_spec_refuses_scenarios_with_unknown_options_or_default():
    with pytest.raises(ValueError, match=r"scenario 'x': unknown data options \['noise'\]"):
        DatasetSpec("t", "m:f", "demo", ("siblings",), scenarios=(Scenario("x", "doc", {"noise": 1}),))
    with pytest.raises(ValueError, match="default_scenario 'y' is not one of its scenarios"):
        DatasetSpec("t", "m:f", "demo", (), scenarios=(Scenario("x", "doc"),), default_scenario="y")
    with pytest.raises(ValueError, match="scenario names must be distinct"):
        DatasetSpec("t", "m:f", "demo", (), scenarios=(Scenario("x", "doc"), Scenario("x", "doc")))


def test_scenario_settings_are_read_only():
    sc = get_scenario("digits", "weak-old")
    sc.experiment["new_train"]["epochs"] = 1
    with pytest.raises(TypeError):
        sc.data["old_ratio"] = 0.9
    assert get_scenario("digits", "weak-old").experiment["new_train"]["epochs"] > 1
    assert get_scenario("digits", "weak-old").data["old_ratio"] == 0.3


# ----------------------------------------------------------------------------- default-v1
@pytest.mark.parametrize("name", list_datasets("demo"))
def test_default_v1_is_the_old_experiment(name):
    assert default_experiment(name, scenario="default-v1") == _v1_config(
        name, data_options={"scenario": "default-v1"})
    assert get_scenario(name, "default-v1").data == {}


def test_default_v1_gives_the_same_numbers_as_before(one_worker):
    cfg = _fast(default_experiment("digits", scenario="default-v1", data_options=SMALL_DIGITS),
                methods=(MethodConfig(name="proto"), MethodConfig(name="bct")))
    before = image_bcl_data("digits", seed=0, **SMALL_DIGITS)  # what load_dataset built before scenarios
    now = load_dataset("digits", scenario="default-v1", **SMALL_DIGITS)
    for part in ("old_train", "new_train", "query"):
        assert torch.equal(getattr(before, part).x, getattr(now, part).x)
        assert torch.equal(getattr(before, part).y, getattr(now, part).y)
    assert now.info == {**before.info, "scenario": "default-v1"}
    a = run_experiment(cfg, progress=False).results
    b = run_experiment(_fast(_v1_config("digits", data_options=SMALL_DIGITS), methods=cfg.methods),
                       data=before, progress=False).results
    assert json.dumps(_strip(a), sort_keys=True) == json.dumps(_strip(b), sort_keys=True)


# ----------------------------------------------------------------------------- weak-old
def test_weak_old_is_extended_class_30_with_a_small_briefly_trained_old_model():
    data = load_dataset("digits", scenario="weak-old")
    assert data.info["scenario"] == "weak-old" and data.info["setting"] == "extended-class"
    assert (data.num_classes, data.num_old_classes) == (10, 3)
    for name in IMAGE_DEMOS:
        cfg = default_experiment(name, scenario="weak-old")
        assert cfg.new_model.options["width"] >= 4 * cfg.old_model.options["width"]
        assert cfg.new_train.epochs >= 3 * cfg.old_train.epochs  # and on 30% of the data: 10x fewer steps


# ----------------------------------------------------------------------------- lowres-old
def _block_matrix(size: int, factor: int) -> torch.Tensor:
    """Naive (size^2, size^2) block-average matrix: pixel (i, j) <- mean of its block."""
    m = torch.zeros(size * size, size * size)
    for i in range(size):
        for j in range(size):
            bi, bj = i // factor * factor, j // factor * factor
            for u in range(bi, bi + factor):
                for v in range(bj, bj + factor):
                    m[i * size + j, u * size + v] = 1 / factor**2
    return m


def test_block_average_is_the_block_mean_matrix():
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    inner = torch.nn.Flatten()
    inner.dim = 64
    by_module = InputView(BlockAverage(2), inner)(x)
    by_matrix = InputView(_block_matrix(8, 2), inner)(x)
    torch.testing.assert_close(by_module, by_matrix)
    assert by_module.view(5, 8, 8)[:, 0, 0].equal(by_module.view(5, 8, 8)[:, 1, 1])
    with pytest.raises(ValueError, match=r"BlockAverage\(3\) needs images .* multiples of 3, got shape \(5, 1, 8, 8\)"):
        BlockAverage(3)(x)


def test_lowres_old_puts_the_old_model_behind_a_block_average(one_worker):
    data = load_dataset("digits", scenario="lowres-old", **SMALL_DIGITS)
    assert isinstance(data.old_view, BlockAverage) and data.old_view.factor == 2 and data.info["old_pool"] == 2
    assert data.num_old_classes == data.num_classes and len(data.old_train) == len(data.new_train)
    cfg = _fast(default_experiment("digits", scenario="lowres-old", data_options=SMALL_DIGITS),
                methods=(MethodConfig(name="proto"),))
    result = run_experiment(cfg, progress=False)
    assert isinstance(result.old.model, InputView) and not result.old.model.matrix
    assert 0 <= result.results["methods"]["proto"]["cross"]["mAP@100"] <= 1
    with pytest.raises(ValueError, match=r"old_pool=3 needs images \(c, h, w\) whose h and w are multiples of it"):
        load_dataset("digits", old_pool=3, **SMALL_DIGITS)
    with pytest.raises(ValueError, match="dataset 'toy' already has an old view|needs images"):
        load_dataset("toy", old_pool=2)


# ----------------------------------------------------------------------------- coarse-old
def test_coarse_old_trains_the_old_model_on_superclasses():
    data = load_dataset("digits", scenario="coarse-old", **SMALL_DIGITS)
    groups, names = digit_superclasses(data)
    assert names == ["loops (0 6 8 9)", "straight strokes (1 4 7)", "open curves (2 3 5)"]
    digit = np.asarray(data.info["class_ids"])
    assert [names[g] for g in groups] == [next(n for n in names if str(d) in n.split("(")[1]) for d in digit]
    assert data.num_old_classes == 3 and data.info["superclasses"] == names
    assert torch.equal(data.old_class_of, torch.from_numpy(groups))
    assert torch.equal(data.old_train.x, data.new_train.x)  # every image, coarse labels
    assert torch.equal(data.old_train.y, data.old_class_of[data.new_train.y])
    assert torch.equal(data.old_classes(), data.old_class_of)


def test_old_classes_default_is_the_plain_contract():
    data = load_dataset("digits", scenario="weak-old", **SMALL_DIGITS)
    assert data.old_class_of is None
    assert data.old_classes().tolist() == [0, 1, 2] + [-1] * 7


def test_bad_old_class_map_is_refused():
    x = Labeled(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"old_class_of must hold old classes in \[0, 2\) or -1"):
        BCLData.leave_one_out("t", old_train=x, new_train=x, evaluation=x, num_classes=4, num_old_classes=2,
                              old_class_of=torch.tensor([0, 1, 2, -1]))
    with pytest.raises(ValueError, match=r"old_class_of must be an int64 tensor of shape \(4,\)"):
        BCLData.leave_one_out("t", old_train=x, new_train=x, evaluation=x, num_classes=4, num_old_classes=2,
                              old_class_of=torch.tensor([0, 1]))


def test_old_classifier_rows_follow_the_old_classes():
    w_old, p_old = torch.randn(2, 3), torch.randn(4, 3)
    rows = _old_classifier(w_old, p_old, torch.tensor([1, 0, 1, -1]))
    naive = torch.stack([w_old[1], w_old[0], w_old[1], p_old[3]])
    assert torch.equal(rows, naive)
    with pytest.raises(ValueError, match=r"old_classes must hold the old head's classes \[0, 2\) or -1"):
        _old_classifier(w_old, p_old, torch.tensor([2, 0, 1, -1]))


@pytest.mark.parametrize("method", ["bct", "ndpp"])
def test_an_identity_old_class_map_changes_nothing(tiny_toy, tiny_old, method):
    def run(old_classes):
        torch.manual_seed(0)
        from bclviz.pipeline import build_new_model

        model = build_new_model(tiny_toy, ModelSpec(dim=8, options={"hidden": 16}), seed=0)
        return train_new(model, tiny_toy.new_train, tiny_old, num_classes=tiny_toy.num_classes,
                         cfg=TrainConfig(epochs=2, batch_size=32, max_steps=6), method=method, progress=False,
                         old_classes=old_classes)

    a, b = run(None), run(tiny_toy.old_classes())
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]


def test_every_method_trains_under_coarse_old(one_worker):
    cfg = _fast(default_experiment("digits", scenario="coarse-old", data_options=SMALL_DIGITS), steps=3,
                methods=tuple(MethodConfig(name=m) for m in list_methods() if m != "independent"))
    res = run_experiment(cfg, progress=False).results
    assert set(res["methods"]) == set(list_methods()) - {"independent"}
    for rec in res["methods"].values():
        for side in ("self", "cross"):
            assert 0 <= rec[side]["mAP@100"] <= 1
    assert res["data"]["scenario"] == "coarse-old" and res["data"]["old_labels"] == "superclass"


def test_old_side_options_on_any_dataset():
    toy = load_dataset("toy", old_labels="superclass", num_superclasses=3, siblings=2, train_per_class=4,
                       eval_per_class=2)
    assert toy.num_old_classes == 3 and toy.old_class_of.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match=r"old_labels must be one of \['fine', 'superclass'\], got 'coarse'"):
        load_dataset("toy", old_labels="coarse")
    with pytest.raises(ValueError, match="declares no superclasses"):
        degrade_old_side(toy, old_labels="superclass")
    with pytest.raises(ValueError, match=r"old_pool must be an integer >= 2 \(or None\), got 0"):
        load_dataset("digits", old_pool=0)


# ----------------------------------------------------------------------------- held-out classes
def _rows_by_class(part: Labeled) -> dict[int, torch.Tensor]:
    """Images of each class, in order (a naive reference for the hold-out)."""
    return {int(c): part.x[part.y == c] for c in torch.unique(part.y)}


@pytest.mark.parametrize("scenario", ["weak-old", "coarse-old", "default-v1"])
def test_held_out_classes_leave_training_and_are_the_only_queries(scenario):
    full = load_dataset("digits", scenario=scenario, **SMALL_DIGITS)
    data = load_dataset("digits", scenario=scenario, heldout_classes=0.3, **SMALL_DIGITS)
    held = data.info["heldout_labels"]
    kept = [c for c in range(full.num_classes) if c not in held]
    assert len(held) == 3 and data.num_classes == 7 and data.info["protocol"] == "open-set-by-class"
    # training: the kept classes renumbered 0..6 in order, the same images
    before, after = _rows_by_class(full.new_train), _rows_by_class(data.new_train)
    assert sorted(after) == list(range(7))
    for new, old in enumerate(kept):
        assert torch.equal(after[new], before[old])
    # evaluation: only the held-out classes, labelled 7..9, the same images
    assert sorted(torch.unique(data.query.y).tolist()) == [7, 8, 9]
    for i, c in enumerate(held):
        assert torch.equal(data.query.x[data.query.y == 7 + i], full.query.x[full.query.y == c])
    assert set(data.info["heldout_class_ids"]) | set(data.info["class_ids"]) == set(full.info["class_ids"])
    # the old model: the old classes of the kept classes, nothing of the held-out ones
    old_of = full.old_classes().numpy()
    assert data.num_old_classes == len({int(old_of[c]) for c in kept if old_of[c] >= 0})
    new_old_of = data.old_classes().numpy()
    for new, old in enumerate(kept):
        assert (new_old_of[new] >= 0) == (old_of[old] >= 0)
    if scenario == "coarse-old":  # superclasses follow the kept classes
        groups, _ = digit_superclasses(data)
        assert np.array_equal(np.unique(groups, return_inverse=True)[1], new_old_of)
        assert torch.equal(data.old_train.y, data.old_class_of[data.new_train.y])
    else:
        seen = full.old_train.y.numpy()
        assert len(data.old_train) == int(np.isin(seen, old_of[kept][old_of[kept] >= 0]).sum())
        assert int(data.old_train.y.max()) == data.num_old_classes - 1


def test_held_out_classes_follow_the_seed_and_refuse_bad_ratios():
    a = load_dataset("glyphs", scenario="weak-old", heldout_classes=0.3)
    b = load_dataset("glyphs", scenario="weak-old", heldout_classes=0.3)
    c = load_dataset("glyphs", seed=1, scenario="weak-old", heldout_classes=0.3)
    assert a.info["heldout_class_chars"] == b.info["heldout_class_chars"] != c.info["heldout_class_chars"]
    assert not set(a.info["heldout_class_chars"]) & set(a.info["class_chars"])
    data = load_dataset("digits", **SMALL_DIGITS)
    for bad in (0, 1, 1.5, "half", True):
        with pytest.raises(ValueError, match=r"heldout_classes must be a fraction in \(0, 1\)"):
            hold_out_classes(data, bad)
    tiny = load_dataset("toy", num_superclasses=1, siblings=2, train_per_class=4, eval_per_class=2)
    with pytest.raises(ValueError, match="heldout_classes needs at least 3 classes; dataset 'toy' has 2"):
        hold_out_classes(tiny, 0.5)


# ----------------------------------------------------------------------------- run configs, CLI, findings
def test_a_run_config_names_its_scenario(tmp_path):
    from bclviz.runconfig import load_run_config, save_run_config

    path = tmp_path / "run.yaml"
    path.write_text("dataset: digits\nscenario: weak-old\nmethod: {name: ndpp}\nnew_train: {epochs: 5}\n")
    cfg = load_run_config(path)
    weak = default_experiment("digits", scenario="weak-old")
    assert cfg.scenario == "weak-old" and cfg.data_options == {"scenario": "weak-old"}
    assert (cfg.old_model, cfg.new_model, cfg.old_train) == (weak.old_model, weak.new_model, weak.old_train)
    assert cfg.new_train == dataclasses.replace(weak.new_train, epochs=5)  # the rest of the section stays
    save_run_config(tmp_path / "again.yaml", cfg)
    lines = (tmp_path / "again.yaml").read_text().splitlines()
    assert lines[1:3] == ["dataset: digits", "scenario: weak-old"]
    assert load_run_config(tmp_path / "again.yaml") == cfg
    path.write_text("dataset: digits\ndata_options: {scenario: coarse-old, max_train: 200}\n")
    assert load_run_config(path).data_options == {"scenario": "coarse-old", "max_train": 200}


def test_run_config_scenario_errors(tmp_path):
    from bclviz.runconfig import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text("dataset: digits\nscenario: strong-old\n")
    with pytest.raises(ValueError, match=r"run.yaml: unknown scenario 'strong-old' for dataset 'digits'; choose one of"):
        load_run_config(path)
    path.write_text("dataset: digits\nscenario: weak-old\ndata_options: {scenario: coarse-old}\n")
    with pytest.raises(ValueError, match="scenario 'weak-old' and data_options.scenario 'coarse-old' differ"):
        load_run_config(path)


def test_overriding_the_scenario_keeps_the_models():
    from bclviz.runconfig import apply_overrides

    cfg = default_experiment("digits", scenario="weak-old").run(MethodConfig(name="proto"))
    for key in ("scenario", "data_options.scenario"):
        other = apply_overrides(cfg, [f"{key}=coarse-old", "data_options.max_train=300"])
        assert other.data_options == {"scenario": "coarse-old", "max_train": 300}
        assert (other.old_model, other.new_train) == (cfg.old_model, cfg.new_train)


def test_cli_takes_a_scenario(tmp_path, capsys, one_worker):
    from bclviz.cli import build_parser, main
    from bclviz.runconfig import save_run_config

    parser = build_parser()
    assert parser.parse_args(["demo", "--out", "x", "--scenario", "weak-old"]).scenario == "weak-old"
    assert parser.parse_args(["findings", "--scenario", "all"]).scenario == "all"
    assert main(["demo", "--dataset", "toy", "--scenario", "weak-old", "--out", str(tmp_path / "d"), "--quiet"]) == 2
    assert "unknown scenario 'weak-old' for dataset 'toy'; choose one of ['coarse-view', 'default-v1']" in capsys.readouterr().err
    cfg = _fast(default_experiment("digits", scenario="coarse-old", data_options=SMALL_DIGITS))
    run = cfg.run(MethodConfig(name="bct"), output_dir=str(tmp_path / "run"))
    save_run_config(tmp_path / "run.yaml", run)
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--scenario", "lowres-old", "--quiet"]) == 0
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["scenario"] == "lowres-old" and written["data_options"] == SMALL_DIGITS
    assert written["old_model"]["options"] == {"width": 8}


def test_findings_settings():
    from bclviz.findings import findings_settings

    assert findings_settings(["toy", "digits"]) == [("toy", None, "full"), ("digits", None, "full")]
    # "all": the full grid on each dataset's default scenario (listed first), the tax grid on the rest
    every = findings_settings(["toy", "digits"], "all")
    assert every == [("toy", s, "full" if i == 0 else "tax") for i, s in enumerate(list_scenarios("toy"))] + [
        ("digits", s, "full" if i == 0 else "tax") for i, s in enumerate(list_scenarios("digits"))]
    assert findings_settings(["digits", "glyphs"], ["weak-old"]) == [
        ("digits", "weak-old", "tax"), ("glyphs", "weak-old", "full")]
    assert findings_settings(["digits"], ["weak-old"], grid="full") == [("digits", "weak-old", "full")]
    with pytest.raises(ValueError, match=r"unknown scenario 'weak-old' for dataset 'toy'; choose one of \['coarse-view', 'default-v1'\]"):
        findings_settings(["toy"], ["weak-old"])
    with pytest.raises(ValueError, match=r"grid must be 'auto' or one of \['full', 'tax'\], got 'some'"):
        findings_settings(["toy"], grid="some")
