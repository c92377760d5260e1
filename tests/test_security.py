"""No code runs from data files; JupyterLab listens on localhost only, behind a token.

The loader scan walks the syntax tree of every module under ``bclviz/`` (not a grep):
aliases such as ``import numpy as np`` or ``from torch import load`` are resolved, so
``np.load(..., allow_pickle=True)`` cannot hide behind a rename.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from bclviz.checkpoint import load_checkpoint, save_checkpoint
from bclviz.io import write_text

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bclviz"

#: calls that unpickle (or otherwise execute) arbitrary objects from bytes
FORBIDDEN_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads",
    "cPickle.load", "cPickle.loads", "dill.load", "dill.loads", "joblib.load",
    "cloudpickle.load", "cloudpickle.loads", "marshal.load", "marshal.loads", "shelve.open",
    "pandas.read_pickle", "numpy.lib.format.read_array_header_1_0",
    "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
    "torch.hub.load", "torch.package.PackageImporter",
}
SAFE_YAML_LOADERS = {"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader", "yaml.CBaseLoader"}


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted origin, from the imports anywhere in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _safe_loader_classes(tree: ast.Module, aliases: dict[str, str]) -> set[str]:
    """Classes defined in the module that derive (directly) from a safe YAML loader."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_dotted(b, aliases) in SAFE_YAML_LOADERS for b in node.bases):
            out.add(node.name)
    return out


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Every unsafe deserialisation call in ``source``, as ``file:line: reason``."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    safe_loaders = SAFE_YAML_LOADERS | _safe_loader_classes(tree, aliases)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in modules:
                if m.split(".")[0] in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal"):
                    problems.append(f"{filename}:{node.lineno}: imports {m}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, aliases)
        where = f"{filename}:{node.lineno}"
        if name in FORBIDDEN_CALLS:
            problems.append(f"{where}: calls {name}")
        elif name == "torch.load":
            flag = _keyword(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
        elif name in ("numpy.load", "numpy.lib.npyio.load"):
            flag = _keyword(node, "allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                problems.append(f"{where}: numpy.load with allow_pickle={ast.unparse(flag)}")
        elif name == "yaml.load":
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            loader_name = None if loader is None else _dotted(loader, aliases)
            if loader_name not in safe_loaders:
                problems.append(f"{where}: yaml.load with Loader={loader_name}")
    return problems


def package_sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, f"found only {len(files)} modules under {PACKAGE}"
    return files


#: modules that unpickle, and why that is no file loading: bclviz's messages to and from
#: the trial worker processes it started itself, over a local connection authenticated
#: with a fresh random key (what multiprocessing does for its own workers)
TRIAL_IPC = ("bclviz/trials.py", "bclviz/trial_worker.py")


def test_no_pickle_based_loading_in_the_package():
    problems = []
    for path in package_sources():
        name = path.relative_to(ROOT).as_posix()
        found = unsafe_loads(path.read_text(encoding="utf-8"), name)
        if name in TRIAL_IPC:
            assert found, f"{name} no longer unpickles; drop it from TRIAL_IPC"
            assert "Listener(authkey=" in path.read_text() or "Client(address, authkey=" in path.read_text()
            continue
        problems += found
    assert problems == []


def test_the_scan_sees_the_package_loaders():
    """The scan is not vacuous: it resolves the real loader calls of the package."""
    seen = set()
    for path in package_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _aliases(tree)
        seen |= {_dotted(n.func, aliases) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert {"torch.load", "numpy.load", "yaml.load"} <= seen


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        pytest.param("import torch\ntorch.load(p)\n", "torch.load without weights_only=True", id="torch-load-default"),
        pytest.param("import torch\ntorch.load(p, weights_only=False)\n", "torch.load without weights_only=True", id="torch-load-false"),
        pytest.param("from torch import load as tl\ntl(p)\n", "torch.load without weights_only=True", id="torch-load-alias"),
        pytest.param("import numpy as np\nnp.load(p, allow_pickle=True)\n", "numpy.load with allow_pickle=True", id="np-load-pickle"),
        pytest.param("from numpy import load\nload(p, allow_pickle=flag)\n", "numpy.load with allow_pickle=flag", id="np-load-variable"),
        pytest.param("import pickle\npickle.loads(b)\n", "calls pickle.loads", id="pickle-loads"),
        pytest.param("import joblib\njoblib.load(p)\n", "calls joblib.load", id="joblib-load"),
        pytest.param("import dill as d\nd.load(f)\n", "calls dill.load", id="dill-alias"),
        pytest.param("import pandas as pd\npd.read_pickle(p)\n", "calls pandas.read_pickle", id="pandas-read-pickle"),
        pytest.param("import yaml\nyaml.load(t, Loader=yaml.Loader)\n", "yaml.load with Loader=yaml.Loader", id="yaml-unsafe-loader"),
        pytest.param("import yaml\nyaml.unsafe_load(t)\n", "calls yaml.unsafe_load", id="yaml-unsafe-load"),
    ],
)
def test_the_scan_catches_unsafe_loads(source, reason):
    assert any(reason in p for p in unsafe_loads(source)), unsafe_loads(source)


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load(p, map_location='cpu', weights_only=True)\n",
        "import numpy as np\nnp.load(p, mmap_mode='r')\nnp.load(p, allow_pickle=False)\n",
        "import yaml\nclass L(yaml.SafeLoader):\n    pass\nyaml.load(t, Loader=L)\nyaml.safe_load(t)\n",
    ],
    ids=["torch-weights-only", "np-no-pickle", "yaml-safe-subclass"],
)
def test_the_scan_accepts_safe_loads(source):
    assert unsafe_loads(source) == []


def test_checkpoint_with_a_pickled_callable_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "hook": print}, path)  # needs code to unpickle
    write_text(str(path) + ".json", '{"format": "bclviz-checkpoint-1"}')
    with pytest.raises(ValueError, match=r"evil.pt is truncated or corrupt: .*[Ww]eights.only"):
        load_checkpoint(path)


class _Exploit:
    """Unpickling this would call ``Path.touch`` on a marker file."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_a_reduce_exploit_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    exploit = _Exploit()
    exploit.marker = marker
    path = save_checkpoint(tmp_path / "ck.pt", {"model": {"w": torch.ones(2)}}, {"epoch": 0})
    torch.save({"model": {"w": torch.ones(2)}, "x": exploit}, path)  # swap in a malicious payload
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------- make lab
def _recipe(makefile: str, target: str) -> str:
    """The recipe of ``target`` with line continuations joined."""
    text = makefile.replace("\\\n", " ")
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n?)+)", text, flags=re.M)
    assert match, f"no {target!r} target in the Makefile"
    return match.group(1)


def test_make_lab_listens_on_localhost_with_a_token():
    lab = _recipe((ROOT / "Makefile").read_text(encoding="utf-8"), "lab")
    assert "jupyter lab" in lab
    assert re.search(r"--ServerApp\.ip=(127\.0\.0\.1|localhost)\b", lab)
    assert not re.search(r"--(ServerApp\.|NotebookApp\.)?ip=(0\.0\.0\.0|\*|'\*'|\"\*\"|::)", lab)
    assert not re.search(r"--(ServerApp|NotebookApp|IdentityProvider)\.token=(''|\"\"|\s|$)", lab)
    assert not re.search(r"--(ServerApp|NotebookApp)\.(password|password_required)=(''|\"\"|False)", lab)
    assert "disable_check_xsrf" not in lab and "allow_origin='*'" not in lab


def test_recipe_parser_sees_continued_lines():
    makefile = "x:\n\techo a \\\n\t\t--ServerApp.ip=0.0.0.0\n\ny:\n\techo b\n"
    assert "--ServerApp.ip=0.0.0.0" in _recipe(makefile, "x")
    assert "echo b" not in _recipe(makefile, "x")
