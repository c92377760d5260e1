import dataclasses

import pytest

from bclviz.config import MethodConfig, TrainConfig
from bclviz.experiment import ExperimentConfig, ModelSpec, default_experiment
from bclviz.runconfig import (
    RunConfig,
    apply_overrides,
    default_output_dir,
    experiment_from_dict,
    load_run_config,
    run_config_from_dict,
    save_run_config,
)


def custom():
    return RunConfig(
        dataset="toy", seed=3, data_options={"num_superclasses": 3, "noise": 0.5},
        new_model=ModelSpec("mlp", 16, {"hidden": 32}),
        new_train=TrainConfig(epochs=5, lr=1e-4, max_steps=None),
        method=MethodConfig(name="odpp", eps=0.3, k=4, gamma=0.25), k=50,
    )


@pytest.mark.parametrize("run_cfg", [RunConfig(), custom()], ids=["default", "custom"])
def test_round_trip(tmp_path, run_cfg):
    path = save_run_config(tmp_path / "run.yaml", run_cfg)
    loaded = load_run_config(path)
    assert loaded == run_cfg
    assert isinstance(loaded.new_train, TrainConfig) and isinstance(loaded.method, MethodConfig)
    assert [p.name for p in tmp_path.iterdir()] == ["run.yaml"]  # atomic: no temp file left


def test_default_output_dir_follows_dataset_and_method():
    assert RunConfig().output_dir == default_output_dir("toy", "ndpp") == "runs/toy-ndpp"
    assert RunConfig(method=MethodConfig(name="odpp")).output_dir == "runs/toy-odpp"
    assert RunConfig(output_dir="elsewhere").output_dir == "elsewhere"


def test_experiment_round_trip():
    cfg = default_experiment("toy", seed=2, k=20)
    method = MethodConfig(name="ndpp", eps=0.2)
    run_cfg = cfg.run(method)
    assert (run_cfg.seed, run_cfg.k, run_cfg.method, run_cfg.new_train) == (2, 20, method, cfg.new_train)
    assert run_cfg == dataclasses.replace(cfg, methods=(method,), output_dir="runs/toy-ndpp")
    assert RunConfig.from_experiment(cfg, method) == run_cfg  # the deprecated spelling


def test_a_run_config_is_an_experiment_config_with_one_method(tmp_path):
    run_cfg = RunConfig(method=MethodConfig(name="odpp"))
    assert type(run_cfg) is ExperimentConfig and run_cfg.methods == (MethodConfig(name="odpp"),)
    assert run_cfg.run_dir.as_posix() == "runs/toy-odpp"
    with pytest.raises(ValueError, match="exactly one method"):
        default_experiment("toy").method
    # one YAML round trip for both: a whole experiment (several methods) too
    cfg = default_experiment("toy", seed=1, seeds=2)
    assert load_run_config(save_run_config(tmp_path / "exp.yaml", cfg), run=False) == cfg
    with pytest.raises(ValueError, match="unknown setting"):  # a run file names one method
        load_run_config(save_run_config(tmp_path / "exp2.yaml", cfg))
    with pytest.raises(ValueError, match="either 'method'"):
        experiment_from_dict({"method": {"name": "ndpp"}, "methods": []})


def test_partial_file_keeps_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method:\n  name: odpp\n  eps: 1e-1\nnew_train:\n  epochs: 3\n")
    run_cfg = load_run_config(path)
    assert run_cfg.method == MethodConfig(name="odpp", eps=0.1)
    assert isinstance(run_cfg.method.eps, float)
    assert run_cfg.new_train == TrainConfig(epochs=3)
    assert run_cfg.old_train == RunConfig().old_train


def test_unknown_keys_are_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("dataset: toy\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"learning_rate.*allowed.*method") as info:
        load_run_config(path)
    assert str(path) in str(info.value)
    path.write_text("method:\n  name: ndpp\n  epz: 0.3\n")
    with pytest.raises(ValueError, match=r"epz.*allowed.*'eps'"):
        load_run_config(path)


def test_invalid_values_name_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method:\n  eps: -1\n")
    with pytest.raises(ValueError, match=r"run\.yaml.*eps.*-1"):
        load_run_config(path)
    path.write_text("new_model:\n  dim: 8\n")
    with pytest.raises(ValueError, match="dimensions differ"):
        load_run_config(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_run_config(path)
    path.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_run_config(path)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: toy\nmethod:\n  name: ndpp\n  eps: [0.3\nk: 5\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*malformed YAML at line \d+") as info:
        load_run_config(path)
    assert "line 5" in str(info.value) or "line 4" in str(info.value)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        load_run_config("nowhere.yaml")


def test_overrides_parse_values():
    run_cfg = apply_overrides(RunConfig(), [
        "method.eps=0.3", "new_train.epochs=5", "new_train.lr=1e-3", "method.k=4",
        "data_options.noise=0.5", "new_model.options.hidden=32", "old_model.options.hidden=32",
        "seed=7", "new_train.max_steps=null",
    ])
    assert run_cfg.method.eps == 0.3 and run_cfg.method.k == 4
    assert run_cfg.new_train.epochs == 5 and run_cfg.new_train.lr == pytest.approx(1e-3)
    assert run_cfg.data_options == {"noise": 0.5}
    assert run_cfg.new_model.options == {"hidden": 32} and run_cfg.seed == 7
    assert RunConfig().method.eps == 0.4  # the original is untouched


def test_overrides_output_dir():
    assert apply_overrides(RunConfig(), ["method.name=odpp"]).output_dir == "runs/toy-odpp"
    run_cfg = apply_overrides(RunConfig(), ["output_dir=out/x", "method.name=odpp"])
    assert run_cfg.output_dir == "out/x"
    assert apply_overrides(run_cfg, ["method.name=proto"]).output_dir == "out/x"


@pytest.mark.parametrize("item, pattern", [
    ("method.epz=0.3", r"'method\.epz'.*allowed.*'method\.eps'"),
    ("learning_rate=1", r"'learning_rate'.*allowed.*'new_train'"),
    ("method.eps", "key=value"),
    ("method=odpp", "group of settings"),
    ("seed.x=1", "single value"),
    ("method.eps=-0.1", "eps"),
    ("method.eps=[0.3", "malformed YAML"),
])
def test_bad_overrides(item, pattern):
    with pytest.raises(ValueError, match=pattern):
        apply_overrides(RunConfig(), [item])


def test_from_dict_rejects_bad_sections():
    with pytest.raises(ValueError, match="section 'method' must be a mapping"):
        run_config_from_dict({"method": "ndpp"})
    with pytest.raises(ValueError, match="dataset"):
        run_config_from_dict({"dataset": "imagenet"})
    assert run_config_from_dict({}) == RunConfig() == RunConfig.from_experiment(
        ExperimentConfig(), MethodConfig())
