"""The core profile (``pip install -e .``, no extras) is enough to train and evaluate.

A GPU node gets the core dependencies of pyproject.toml only. These tests simulate that
environment inside the full test environment: a subprocess installs a ``sys.meta_path``
finder wrapper, before anything else is imported, that hides every module which a core-only
install would not have -- the lab and test extras (plotly, umap, ipywidgets, anywidget,
jupyterlab, scikit-learn, matplotlib, pytest, ...) and everything only they pull in
(IPython, numba, pandas, ...). Then ``import bclviz`` and ``bclviz train`` / ``bclviz
evaluate`` on a tiny toy run must work.

Which modules are blocked is derived from the installed distributions: a top-level module
is allowed when a distribution in the transitive closure of the core requirements (or
the standard library, bclviz itself, pip/setuptools) provides it. Every hidden module,
also one whose absence the caller handles, is reported on the subprocess's stderr with
the frames that looked for it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

#: always hidden in the core profile, whatever the installed metadata says
LAB_ONLY = ("plotly", "umap", "ipywidgets", "anywidget", "jupyterlab", "notebook", "sklearn", "matplotlib",
            "pandas", "IPython", "ipykernel", "jupyter_server", "nbformat", "numba", "pynndescent")
#: a core-only venv has these too
BASELINE = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "wheel"}

BLOCKER = r"""
import json, os, sys, traceback

_BLOCKED = frozenset(json.loads(os.environ["BCLVIZ_BLOCKED_MODULES"]))


class _CoreProfileOnly:
    # Wraps one sys.meta_path finder: the modules a core-only install lacks are not found.
    # Returning None (rather than raising) is what a missing package looks like, to
    # `import` and to importlib.util.find_spec probes alike (torch._dynamo probes for
    # optional packages such as hypothesis when an optimizer is first built).

    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            chain = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[:-1]
                     if "importlib" not in f.filename and f.filename != "<string>"]
            print(f"core profile: hid {name!r} from {' -> '.join(chain[-6:]) or '<top level>'}", file=sys.stderr)
            return None
        return self._finder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self._finder, attr)


sys.meta_path[:] = [_CoreProfileOnly(f) for f in sys.meta_path]
"""


def _core_requirements() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


@cache
def _core_closure() -> frozenset[str]:
    """Canonical names of the core requirements and everything they require (installed metadata)."""
    seen, todo = set(), [Requirement(r) for r in _core_requirements()]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            continue  # not installed here: nothing of it can be imported either
        seen.add(name)
        for text in dist.requires or []:
            sub = Requirement(text)
            extras = sorted(req.extras) or [""]
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return frozenset(seen)


@cache
def _blocked_modules() -> list[str]:
    allowed = _core_closure() | {"bclviz"}
    blocked = set(LAB_ONLY)
    for module, dists in packages_distributions().items():
        if module in BASELINE or module in sys.stdlib_module_names or not module.isidentifier():
            continue
        if not any(canonicalize_name(d) in allowed for d in dists):
            blocked.add(module)
    return sorted(blocked)


def _run_core(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter whose imports are limited to the core profile."""
    env = dict(os.environ, BCLVIZ_BLOCKED_MODULES=json.dumps(_blocked_modules()),
               XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONSTARTUP", None)
    code = BLOCKER + "\n" + body
    return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def _explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}"


def _numbers(value):
    """Every int/float (not bool) inside nested dicts and lists."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)


def test_blocked_set_is_the_lab_and_test_extras(tmp_path):
    """Sanity of the simulation: the extras are hidden, every core dependency imports."""
    blocked = set(_blocked_modules())
    assert {"plotly", "umap", "sklearn", "matplotlib", "ipywidgets", "anywidget", "jupyterlab",
            "pytest", "hypothesis", "playwright", "nbval"} <= blocked
    assert not {"torch", "torchvision", "numpy", "scipy", "faiss", "yaml", "tqdm", "bclviz"} & blocked
    proc = _run_core(tmp_path, """
import importlib
for name in ("numpy", "scipy.stats", "faiss", "yaml", "tqdm.auto", "torch", "torchvision"):
    importlib.import_module(name)
for name in ("plotly", "umap", "sklearn", "matplotlib.pyplot", "ipywidgets", "pytest"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{name} was not blocked")
print("ok")
""")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", _explain(proc)


def test_import_bclviz_needs_no_lab_package(tmp_path):
    proc = _run_core(tmp_path, """
import json, sys
import bclviz
heavy = ("torchvision", "plotly", "umap", "sklearn", "matplotlib", "ipywidgets", "anywidget", "pandas")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
""")
    assert proc.returncode == 0, _explain(proc)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [], _explain(proc)


TRAIN_AND_EVALUATE = """
import contextlib, io, json, sys
import torch
torch.set_num_threads(1)
from bclviz.cli import main

config = sys.argv[1]
rc_train = main(["train", "--config", config, "--quiet"])
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc_eval = main(["evaluate", "--config", config])
print(json.dumps({"train": rc_train, "evaluate": rc_eval, "evaluate_out": buf.getvalue()}))
"""


def _tiny_run_config(tmp_path: Path) -> Path:
    # one epoch, capped at 3 optimiser steps (the new model's epoch has 6 batches). Not epochs: 2:
    # a checkpoint cut by max_steps records steps_done of the epoch before, so `evaluate`
    # would call that run unfinished (a trainer issue, not a profile one).
    tiny_train = {"epochs": 1, "batch_size": 32, "max_steps": 3}
    cfg = {
        "dataset": "toy",
        "seed": 1,
        "data_options": {"num_superclasses": 3, "siblings": 2, "coarse_dim": 4, "fine_dim": 4,
                         "train_per_class": 32, "eval_per_class": 6},
        "old_model": {"name": "mlp", "dim": 8, "options": {"hidden": 16}},
        "new_model": {"name": "mlp", "dim": 8, "options": {"hidden": 16}},
        "old_train": tiny_train,
        "new_train": tiny_train,
        "method": {"name": "ndpp", "eps": 0.3, "k": 2},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_core_profile_trains_and_evaluates(tmp_path):
    """``bclviz train`` + ``bclviz evaluate`` of a tiny toy run with the core profile only."""
    proc = _run_core(tmp_path, TRAIN_AND_EVALUATE, str(_tiny_run_config(tmp_path)))
    assert proc.returncode == 0, _explain(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["train"] == 0 and result["evaluate"] == 0, _explain(proc)

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"old_old", "new_new", "new_old"} <= set(metrics)
    numbers = list(_numbers(metrics))
    assert len(numbers) >= 3 and all(math.isfinite(x) for x in numbers), metrics

    evaluated = json.loads(result["evaluate_out"])
    assert {"old_old", "new_new", "new_old"} <= set(evaluated)
    assert all(math.isfinite(x) for x in _numbers(evaluated)), evaluated


TUNE = """
import json, sys
import torch
torch.set_num_threads(1)
from bclviz.cli import main

config, space, out = sys.argv[1:4]
rc = main(["tune", "--config", config, "--space", space, "--workers", "1", "--quiet", "--out", out,
           "--storage", out + "/study.journal"])
print(json.dumps({"tune": rc, "plotly": "plotly" in sys.modules}))
"""


def test_core_profile_tunes(tmp_path):
    """``bclviz tune`` (Optuna is a core dependency) runs a tiny grid study with the core profile only."""
    space = tmp_path / "space.yaml"
    space.write_text("grid:\n  methods: [ndpp]\n  eps: [0.2]\nbaselines: [proto]\n")
    out = tmp_path / "tune"
    proc = _run_core(tmp_path, TUNE, str(_tiny_run_config(tmp_path)), str(space), str(out))
    assert proc.returncode == 0, _explain(proc)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"tune": 0, "plotly": False}, _explain(proc)
    trials = json.loads((out / "trials.json").read_text())
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(math.isfinite(v) for t in trials for v in t["values"])
