"""The dataset registry: declarations match their builders, errors name the choices."""

import inspect
import subprocess
import sys

import pytest

import bclviz.data
from bclviz.data import registry
from bclviz.data.registry import (
    BENCHMARKS,
    DatasetSpec,
    get_dataset,
    list_datasets,
    load_benchmark,
    load_dataset,
    register_dataset,
)

DEMOS = ["toy", "digits", "fashion-mnist", "glyphs"]
BENCHMARK_SETS = ["gldv2", "inshop", "cifar100", "imagefolder"]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in the test are dropped afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_names_in_registration_order():
    assert list_datasets("demo") == DEMOS
    assert list_datasets("benchmark") == BENCHMARK_SETS
    assert list_datasets() == DEMOS + BENCHMARK_SETS
    assert bclviz.data.DATASETS == tuple(DEMOS + BENCHMARK_SETS)
    assert bclviz.data.BENCHMARK_NAMES == tuple(BENCHMARK_SETS)
    with pytest.raises(ValueError, match=r"unknown dataset kind 'toys'; choose one of \['demo', 'benchmark'\]"):
        list_datasets("toys")


@pytest.mark.parametrize("name", DEMOS + BENCHMARK_SETS)
def test_declared_options_are_the_builder_keywords(name):
    spec = get_dataset(name)
    params = inspect.signature(spec.resolve()).parameters
    assert "seed" in params and params["seed"].kind is not inspect.Parameter.POSITIONAL_ONLY
    keywords = [p for p, v in params.items() if p != "seed" and v.kind is not inspect.Parameter.VAR_KEYWORD]
    assert list(spec.options) == keywords, f"update {name}'s options in bclviz/data/registry.py"
    assert not any(v.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                   for v in params.values())


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; choose one of \['toy', 'digits', .*'imagefolder'\]"):
        get_dataset("mnist")
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; choose one of"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match=r"unknown benchmark 'toy'; choose one of \['gldv2', "):
        load_benchmark("toy")


def test_unknown_option_names_it_and_the_allowed_ones():
    allowed = list(get_dataset("toy").options)
    with pytest.raises(ValueError, match=r"unknown data_options \['colour', 'foo'\] for dataset 'toy'; allowed: ") as err:
        load_dataset("toy", foo=1, colour=2, siblings=2)
    assert str(allowed) in str(err.value)
    with pytest.raises(ValueError, match=r"unknown data_options \['size'\] for dataset 'digits'"):
        load_dataset("digits", size=8)  # glyphs' option, not digits'


def test_duplicate_registration_is_refused(scratch_registry):
    with pytest.raises(ValueError, match=r"dataset 'toy' is already registered"):
        register_dataset(DatasetSpec("toy", "bclviz.data.toy:make_toy", "demo", ()))
    assert get_dataset("toy").builder == "bclviz.data.toy:make_toy"


def test_a_registered_dataset_is_loadable_and_listed(scratch_registry):
    spec = register_dataset(DatasetSpec("tiny-toy", "bclviz.data.toy:make_toy", "demo",
                                        ["siblings", "train_per_class", "eval_per_class"]))
    assert spec.options == ("siblings", "train_per_class", "eval_per_class")
    assert get_dataset("tiny-toy") is spec and "tiny-toy" in bclviz.data.DATASETS
    data = load_dataset("tiny-toy", seed=1, siblings=2, train_per_class=4, eval_per_class=2)
    assert data.num_classes == 16 and len(data.query) == 32
    with pytest.raises(ValueError, match=r"unknown data_options \['noise'\] for dataset 'tiny-toy'"):
        load_dataset("tiny-toy", noise=0.1)  # make_toy takes it; the declaration does not


@pytest.mark.parametrize(("fields", "message"), [
    (("", "m:f", "demo", ()), "name must be a non-empty string"),
    (("x", "bclviz.data.toy.make_toy", "demo", ()), "builder must be 'module:function'"),
    (("x", "m:f", "toys", ()), r"kind must be one of \['demo', 'benchmark'\]"),
    (("x", "m:f", "demo", ("seed",)), "must not list 'seed'"),
    (("x", "m:f", "demo", ("a", "a")), "distinct option names"),
    (("x", "m:f", "demo", (), ["epochs"]), "experiment must be a mapping"),
])
def test_bad_spec_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        DatasetSpec(*fields)


def test_missing_builder_is_named(scratch_registry):
    register_dataset(DatasetSpec("ghost", "bclviz.data.toy:make_ghost", "demo", ()))
    with pytest.raises(ImportError, match="dataset 'ghost': module 'bclviz.data.toy' has no builder 'make_ghost'"):
        load_dataset("ghost")


def test_default_experiments():
    from bclviz.config import ModelSpec, TrainConfig

    assert get_dataset("toy").experiment == {
        "old_model": {"name": "mlp", "dim": 16, "options": {"hidden": 64}},
        "new_model": {"name": "mlp", "dim": 16, "options": {"hidden": 128}},
        "old_train": {"epochs": 8, "lr": 5e-3}, "new_train": {"epochs": 8, "lr": 5e-3},
    }
    assert get_dataset("digits").experiment == {
        "old_model": {"name": "cnn", "dim": 32, "options": {"width": 8}},
        "new_model": {"name": "cnn", "dim": 32, "options": {"width": 32}},
        "old_train": {"epochs": 15, "batch_size": 64}, "new_train": {"epochs": 15, "batch_size": 64},
    }
    for name, epochs in (("fashion-mnist", 3), ("glyphs", 6)):
        assert get_dataset(name).experiment == {
            "old_model": {"name": "cnn", "dim": 64, "options": {"width": 8}},
            "new_model": {"name": "cnn", "dim": 64, "options": {"width": 16}},
            "old_train": {"epochs": epochs}, "new_train": {"epochs": epochs},
        }
    sections = {"old_model": ModelSpec, "new_model": ModelSpec, "old_train": TrainConfig, "new_train": TrainConfig}
    for name in DEMOS:
        for key, value in get_dataset(name).experiment.items():
            ModelSpec(**value) if sections[key] is ModelSpec else TrainConfig(**value)
    for name in BENCHMARK_SETS:
        assert get_dataset(name).experiment is None


def test_default_experiment_is_read_only():
    experiment = get_dataset("digits").experiment
    experiment["old_model"]["options"]["width"] = 99
    with pytest.raises(TypeError):
        experiment["old_model"] = {}
    assert get_dataset("digits").experiment["old_model"]["options"] == {"width": 8}
    assert isinstance(experiment["old_train"], dict)  # plain dicts, as read from YAML


def test_benchmarks_mapping_is_a_read_only_view():
    from bclviz.data import benchmarks

    assert list(BENCHMARKS) == BENCHMARK_SETS and len(BENCHMARKS) == 4
    assert BENCHMARKS["gldv2"] is benchmarks.gldv2_data
    assert "toy" not in BENCHMARKS
    with pytest.raises(TypeError):
        BENCHMARKS["mine"] = benchmarks.gldv2_data
    from bclviz.data.registry import gldv2_data, limit_classes  # the names registry.py held before

    assert gldv2_data is benchmarks.gldv2_data and limit_classes is benchmarks.limit_classes


def test_import_is_light():
    code = (
        "import sys, bclviz.data; "
        "heavy = ('torchvision', 'PIL', 'sklearn', 'matplotlib', 'bclviz.data.toy', 'bclviz.data.benchmarks', "
        "'bclviz.data.images', 'bclviz.data.glyphs'); "
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
