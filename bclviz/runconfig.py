"""YAML files of experiment and run configs, and ``--set key=value`` overrides.

A run config is an :class:`~bclviz.config.ExperimentConfig` with one method
(:func:`~bclviz.config.run_config`). Notebooks export it
(:func:`bclviz.sweep.export_config`), the CLI reads it with :func:`load_run_config`
and applies ``--set key=value`` with :func:`apply_overrides`. The same functions read
and write whole experiments (several ``methods``).

Example file::

    dataset: glyphs
    scenario: weak-old
    seed: 0
    method:
      name: ndpp
      eps: 0.3
    new_train:
      epochs: 20

``scenario`` names one of the dataset's update scenarios
(:func:`bclviz.data.registry.list_scenarios`; it is stored as
``ExperimentConfig.data_options["scenario"]``). A file that names one starts from that
scenario's default experiment (:func:`~bclviz.config.default_experiment`): sections
left out are the scenario's, and a section given in part keeps the scenario's other
keys (``new_train: {epochs: 20}`` above keeps its batch size and learning rate; a
model's ``options`` are replaced as a whole). Without a scenario, sections left out
keep the dataclass defaults. Unknown keys are an error. A file names either one
``method`` (a run) or a list of ``methods`` (an experiment), never both.

A run config may also say ``log: tensorboard``: ``bclviz train`` then writes TensorBoard
scalars (:mod:`bclviz.runlog`; ``--log`` overrides it). It is a setting of the run, not
of the experiment: it changes no number, so it is not part of the
:class:`~bclviz.config.ExperimentConfig` (nor of checkpoints or sweep keys);
:func:`load_log_setting` reads it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

from .config import (
    ExperimentConfig, MethodConfig, ModelSpec, TrainConfig, config_from_dict, config_to_dict,
    default_output_dir, run_config,
)
from .runlog import check_log_target

__all__ = [
    "RunConfig", "default_output_dir", "experiment_to_dict", "experiment_from_dict",
    "run_config_to_dict", "run_config_from_dict", "save_run_config", "load_run_config", "apply_overrides",
    "load_log_setting",
]

_SECTIONS = {"old_model": ModelSpec, "new_model": ModelSpec, "old_train": TrainConfig, "new_train": TrainConfig}
_FIELDS = [f.name for f in dataclasses.fields(ExperimentConfig)]


class RunConfig:
    """Deprecated spelling of :func:`bclviz.config.run_config` (an ExperimentConfig with one method).

    ``RunConfig(...)`` returns an :class:`~bclviz.config.ExperimentConfig`;
    ``RunConfig.from_experiment(cfg, method)`` is ``cfg.run(method)``.
    """

    def __new__(cls, **fields) -> ExperimentConfig:
        return run_config(**fields)

    @staticmethod
    def from_experiment(cfg: ExperimentConfig, method: MethodConfig, *, output_dir: str = "") -> ExperimentConfig:
        return cfg.run(method, output_dir=output_dir)


def experiment_to_dict(cfg: ExperimentConfig) -> dict:
    """Plain nested dict of ``cfg`` (YAML/JSON friendly); one method is written as ``method``,
    and ``data_options["scenario"]`` as ``scenario`` after ``dataset``."""
    values = config_to_dict(cfg)
    methods = values.pop("methods")
    scenario = values["data_options"].pop("scenario", None)
    out = {}
    for name in _FIELDS:
        if name == "seed" and scenario is not None:
            out["scenario"] = scenario
        if name == "methods":
            if len(methods) == 1:
                out["method"] = methods[0]
            else:
                out["methods"] = methods
        else:
            out[name] = values[name]
    return out


run_config_to_dict = experiment_to_dict


def experiment_from_dict(values: dict, *, source: str = "config", run: bool = False) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a nested dict; errors name ``source`` and the key.

    ``run=True`` reads a run config: exactly one method (default ``ndpp``) and
    ``output_dir`` filled in from the dataset and the method when left out.
    """
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    allowed = ["dataset", "scenario"] + [n for n in _FIELDS if n not in ("dataset", "methods")] + (
        ["method", "log"] if run else ["method", "methods"])
    unknown = sorted(set(values) - set(allowed), key=str)
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {unknown}; allowed: {allowed}")
    kwargs = dict(values)
    if "log" in kwargs:  # a run setting, read by load_log_setting
        check_log_target(kwargs.pop("log"), f"{source}: log")
    try:
        if "method" in kwargs and "methods" in kwargs:
            raise ValueError("give either 'method' (one) or 'methods' (a list), not both")
        kwargs = _with_scenario(kwargs)
        for name, cls in _SECTIONS.items():
            if name in kwargs:
                section = kwargs[name]
                if not isinstance(section, dict):
                    raise ValueError(f"section {name!r} must be a mapping of settings, got {section!r}")
                kwargs[name] = config_from_dict(cls, section)
        if "method" in kwargs:
            kwargs["method"] = _method(kwargs["method"], "method")
        if "methods" in kwargs:
            listed = kwargs["methods"]
            if not isinstance(listed, list):
                raise ValueError(f"'methods' must be a list of method sections, got {listed!r}")
            kwargs["methods"] = tuple(_method(m, f"methods[{i}]") for i, m in enumerate(listed))
        if run:
            return run_config(**kwargs)
        if "method" in kwargs:
            kwargs["methods"] = (kwargs.pop("method"),)
        return ExperimentConfig(**kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: {err}") from None


def _with_scenario(kwargs: dict) -> dict:
    """Move ``scenario`` into ``data_options`` and complete the sections from the
    scenario's default experiment (see the module docstring)."""
    options = kwargs.get("data_options", {})
    if not isinstance(options, dict):
        return kwargs  # ExperimentConfig names the problem
    scenario = kwargs.pop("scenario", None)
    if scenario is None:
        if "scenario" not in options:
            return kwargs
        scenario = options["scenario"]
    elif options.get("scenario", scenario) != scenario:
        raise ValueError(f"scenario {scenario!r} and data_options.scenario {options['scenario']!r} differ; give one")
    kwargs["data_options"] = {**options, "scenario": scenario}
    from .config import default_experiment
    from .data.registry import get_dataset

    dataset = kwargs.get("dataset", "toy")
    spec = get_dataset(dataset)
    spec.scenario(scenario)  # a clear error for an unknown scenario
    if spec.experiment is None:  # a benchmark: the scenario is data only
        return kwargs
    base = experiment_to_dict(default_experiment(dataset, scenario=scenario))
    for name in _SECTIONS:
        given = kwargs.get(name, {})
        kwargs[name] = {**base[name], **given} if isinstance(given, dict) else given
    return kwargs


def _method(section, where: str) -> MethodConfig:
    if not isinstance(section, dict):
        raise ValueError(f"section {where!r} must be a mapping of settings, got {section!r}")
    return config_from_dict(MethodConfig, section)


def run_config_from_dict(values: dict, *, source: str = "run config") -> ExperimentConfig:
    """A run config (one method) from a nested dict: :func:`experiment_from_dict` with ``run=True``."""
    return experiment_from_dict(values, source=source, run=True)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float (YAML 1.1 needs ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _safe_load(text: str, source: str):
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{source}: malformed YAML{where}: {problem}") from None


def save_run_config(path: str | os.PathLike, run_cfg: ExperimentConfig) -> Path:
    """Write ``run_cfg`` (a run or a whole experiment) as YAML to ``path`` atomically; returns the path."""
    from .io import write_text

    if not isinstance(run_cfg, ExperimentConfig):
        raise TypeError(f"run_cfg must be an ExperimentConfig, got {type(run_cfg).__name__}")
    header = f"# bclviz run config; run it with: bclviz train --config {Path(path).name}\n"
    body = yaml.safe_dump(run_config_to_dict(run_cfg), sort_keys=False, default_flow_style=False)
    return write_text(path, header + body)


def load_run_config(path: str | os.PathLike, *, run: bool = True) -> ExperimentConfig:
    """Read and validate a YAML run config.

    ``run=False`` reads a whole experiment (``methods``). Raises ``FileNotFoundError``
    for a missing file and ``ValueError`` naming the file for malformed YAML (with the
    line) or unknown/invalid settings.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run config {path} does not exist")
    values = _safe_load(path.read_text(encoding="utf-8"), str(path))
    if values is None:
        raise ValueError(f"{path}: the run config is empty")
    return experiment_from_dict(values, source=str(path), run=run)


def load_log_setting(path: str | os.PathLike) -> str | None:
    """The ``log`` key of the run config at ``path`` (``"tensorboard"``), None when absent or ``none``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run config {path} does not exist")
    values = _safe_load(path.read_text(encoding="utf-8"), str(path))
    return check_log_target(values.get("log"), f"{path}: log") if isinstance(values, dict) else None


def _parse_value(raw: str, item: str):
    return _safe_load(raw.strip(), f"override {item!r}") if raw.strip() else None


def apply_overrides(run_cfg: ExperimentConfig, overrides: Iterable[str]) -> ExperimentConfig:
    """Return ``run_cfg`` with ``key=value`` overrides applied (``--set`` on the CLI).

    Keys are dotted paths (``method.eps``, ``new_train.epochs``, ``data_options.noise``);
    values are parsed as YAML, so ``5``, ``0.3``, ``1e-3``, ``true`` and ``null`` work.
    ``scenario=NAME`` (or ``data_options.scenario=NAME``) changes the data's update
    scenario; the models and training written in the config stay as they are.
    The output folder follows a changed dataset or method name unless it was set
    explicitly. Unknown keys raise ``ValueError`` naming the allowed ones.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    values = run_config_to_dict(run_cfg)
    output_set = False
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like key=value, e.g. method.eps=0.3")
        if key in ("scenario", "data_options.scenario"):  # written as the top-level `scenario`
            values["scenario"] = _parse_value(raw, item)
            continue
        path = key.split(".")
        node, obj = values, run_cfg
        for depth, part in enumerate(path):
            prefix = ".".join(path[:depth])
            if dataclasses.is_dataclass(obj):
                names = [f.name for f in dataclasses.fields(obj)]
                if isinstance(obj, ExperimentConfig):  # a run config's one method is `method`
                    names = [n for n in names if n != "methods"] + ["method", "scenario"]
                if part not in names:
                    allowed = [f"{prefix}.{n}" if prefix else n for n in names]
                    raise ValueError(f"unknown setting {key!r} in override {item!r}; allowed: {allowed}")
                obj = getattr(obj, part)
            elif isinstance(obj, dict):  # free-form options (data_options, model options)
                obj = obj.get(part)
            else:
                raise ValueError(f"override {item!r}: {prefix!r} is a single value, not a group of settings")
            if depth < len(path) - 1:
                node = node.setdefault(part, {}) if isinstance(node, dict) else node
                if obj is None:
                    obj = {}
        if dataclasses.is_dataclass(obj):
            raise ValueError(f"override {item!r}: {key!r} is a group of settings; set one of its keys, e.g. {key}.name=...")
        node[path[-1]] = _parse_value(raw, item)
        output_set |= path == ["output_dir"]
    if not output_set and values["output_dir"] == default_output_dir(run_cfg.dataset, run_cfg.method.name):
        del values["output_dir"]
    return run_config_from_dict(values, source="overrides")
