"""The YAML run config: one new-model run, from the notebook to ``bclviz train``.

A :class:`RunConfig` holds the fields of an :class:`~bclviz.experiment.ExperimentConfig`
that one run needs, with a single :class:`~bclviz.config.MethodConfig`. Notebooks export
it (:func:`bclviz.sweep.export_config`), the CLI reads it with :func:`load_run_config`
and applies ``--set key=value`` with :func:`apply_overrides`.

Example file::

    dataset: toy
    seed: 0
    method:
      name: ndpp
      eps: 0.3
    new_train:
      epochs: 20

Sections left out keep their defaults; unknown keys are an error.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import MethodConfig, TrainConfig, config_from_dict, config_to_dict
from .experiment import ExperimentConfig, ModelSpec

__all__ = [
    "RunConfig", "default_output_dir", "run_config_to_dict", "run_config_from_dict",
    "save_run_config", "load_run_config", "apply_overrides",
]

_SECTIONS = {"old_model": ModelSpec, "new_model": ModelSpec, "old_train": TrainConfig,
             "new_train": TrainConfig, "method": MethodConfig}


def default_output_dir(dataset: str, method: str) -> str:
    """``runs/<dataset>-<method>``: where a run writes unless told otherwise."""
    return f"runs/{dataset}-{method}"


@dataclass(frozen=True)
class RunConfig:
    """Everything one new-model run needs (an ExperimentConfig with one method).

    ``output_dir=""`` (the default) means :func:`default_output_dir` of the dataset and
    the method name; it is filled in at construction.
    """

    dataset: str = "toy"
    seed: int = 0
    data_options: dict = field(default_factory=dict)
    old_model: ModelSpec = ExperimentConfig.old_model
    new_model: ModelSpec = ExperimentConfig.new_model
    old_train: TrainConfig = ExperimentConfig.old_train
    new_train: TrainConfig = ExperimentConfig.new_train
    method: MethodConfig = MethodConfig()
    k: int = 100
    output_dir: str = ""

    def __post_init__(self) -> None:
        from .data import DATASETS
        from .models import list_models

        if self.dataset not in DATASETS:
            raise ValueError(f"RunConfig.dataset must be one of {list(DATASETS)}, got {self.dataset!r}")
        for name in ("seed", "k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
                raise ValueError(f"RunConfig.{name} must be an integer >= {0 if name == 'seed' else 1}, got {v!r}")
        if not isinstance(self.data_options, dict):
            raise ValueError(f"RunConfig.data_options must be a mapping, got {self.data_options!r}")
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"RunConfig.{name} must be a {cls.__name__}, got {getattr(self, name)!r}")
        for name in ("old_model", "new_model"):
            spec = getattr(self, name)
            if spec.name not in list_models():
                raise ValueError(f"RunConfig.{name}.name must be one of {list_models()}, got {spec.name!r}")
            if isinstance(spec.dim, bool) or not isinstance(spec.dim, int) or spec.dim < 1:
                raise ValueError(f"RunConfig.{name}.dim must be a positive integer, got {spec.dim!r}")
            if not isinstance(spec.options, dict):
                raise ValueError(f"RunConfig.{name}.options must be a mapping, got {spec.options!r}")
        if self.old_model.dim != self.new_model.dim:
            raise ValueError(
                f"old and new embedding dimensions differ ({self.old_model.dim} vs {self.new_model.dim})"
            )
        if not isinstance(self.output_dir, str):
            raise ValueError(f"RunConfig.output_dir must be a string, got {self.output_dir!r}")
        if not self.output_dir:
            object.__setattr__(self, "output_dir", default_output_dir(self.dataset, self.method.name))

    @classmethod
    def from_experiment(cls, cfg: ExperimentConfig, method: MethodConfig, *, output_dir: str = "") -> "RunConfig":
        """The run of ``method`` within the experiment ``cfg``."""
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)}
        return cls(**fields, method=method, output_dir=output_dir)

    def to_experiment(self) -> ExperimentConfig:
        """An :class:`ExperimentConfig` whose only method is ``self.method``."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(ExperimentConfig) if hasattr(self, f.name)}
        return ExperimentConfig(**fields, methods=(self.method,))


def run_config_to_dict(run_cfg: RunConfig) -> dict:
    """Plain nested dict of ``run_cfg`` (YAML/JSON friendly)."""
    return config_to_dict(run_cfg)


def run_config_from_dict(values: dict, *, source: str = "run config") -> RunConfig:
    """Build a :class:`RunConfig` from a nested dict; errors name ``source`` and the key."""
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    allowed = [f.name for f in dataclasses.fields(RunConfig)]
    unknown = sorted(set(values) - set(allowed), key=str)
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {unknown}; allowed: {allowed}")
    kwargs = dict(values)
    try:
        for name, cls in _SECTIONS.items():
            if name in kwargs:
                section = kwargs[name]
                if not isinstance(section, dict):
                    raise ValueError(f"section {name!r} must be a mapping of settings, got {section!r}")
                kwargs[name] = config_from_dict(cls, section)
        return RunConfig(**kwargs)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: {err}") from None


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


def save_run_config(path: str | os.PathLike, run_cfg: RunConfig) -> Path:
    """Write ``run_cfg`` as YAML to ``path`` atomically; returns the path."""
    from .io import write_text

    if not isinstance(run_cfg, RunConfig):
        raise TypeError(f"run_cfg must be a RunConfig, got {type(run_cfg).__name__}")
    header = f"# bclviz run config; run it with: bclviz train --config {Path(path).name}\n"
    body = yaml.safe_dump(run_config_to_dict(run_cfg), sort_keys=False, default_flow_style=False)
    return write_text(path, header + body)


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a YAML run config.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file
    for malformed YAML (with the line) or unknown/invalid settings.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run config {path} does not exist")
    values = _safe_load(path.read_text(encoding="utf-8"), str(path))
    if values is None:
        raise ValueError(f"{path}: the run config is empty")
    return run_config_from_dict(values, source=str(path))


def _parse_value(raw: str, item: str):
    return _safe_load(raw.strip(), f"override {item!r}") if raw.strip() else None


def apply_overrides(run_cfg: RunConfig, overrides: Iterable[str]) -> RunConfig:
    """Return ``run_cfg`` with ``key=value`` overrides applied (``--set`` on the CLI).

    Keys are dotted paths (``method.eps``, ``new_train.epochs``, ``data_options.noise``);
    values are parsed as YAML, so ``5``, ``0.3``, ``1e-3``, ``true`` and ``null`` work.
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
        path = key.split(".")
        node, obj = values, run_cfg
        for depth, part in enumerate(path):
            prefix = ".".join(path[:depth])
            if dataclasses.is_dataclass(obj):
                names = [f.name for f in dataclasses.fields(obj)]
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
