"""environment.yml and pyproject.toml list the same packages; torch pins agree."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = data["dependencies"] + data["optional-dependencies"]["test"]
    return {_name(r): r for r in reqs}


def _environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.update({_name(r): r for r in dep["pip"] if not r.startswith("-")})
        else:
            conda[_name(dep.replace("=", "==", 1) if dep.count("=") == 1 else dep)] = dep
    conda.pop("python", None)
    conda.pop("pip", None)
    return conda, pip


def test_same_packages():
    conda, pip = _environment()
    assert set(_pyproject()) == set(conda) | set(pip)


def test_torch_pins_are_exact_and_agree():
    py = _pyproject()
    _, pip = _environment()
    assert py["torch"].replace(" ", "") == pip["torch"] == "torch==2.14.1"
    assert py["torchvision"].replace(" ", "") == pip["torchvision"] == "torchvision==0.29.1"


def test_version_bounds_agree():
    conda, _ = _environment()
    for name, req in _pyproject().items():
        if name in conda:
            assert conda[name].replace(" ", "") == req.replace(" ", ""), name


def test_import_bclviz_stays_light():
    import subprocess
    import sys

    code = "import sys, bclviz; print(sorted(m for m in ('plotly','umap','ipywidgets','torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
