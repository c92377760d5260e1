"""pyproject.toml, environment.yml and the Makefile agree on the install profiles.

Core (``pip install -e .``), ``lab``, ``tensorboard`` and ``test`` extras: environment.yml
lists every one of them with the same range, torch/torchvision are pinned exactly in both,
every other dependency has a lower and an upper bound, and ``make lab`` / ``make test``
install the ``lab`` / ``lab,tensorboard,test`` extras.
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PINNED = {"torch": "torch==2.14.1", "torchvision": "torchvision==0.29.1"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _norm(req: str) -> str:
    """Requirement text without spaces, its specifiers in a fixed order."""
    name, spec = _name(req), req.strip()[len(_name(req)):].replace(" ", "")
    return name + ",".join(sorted(spec.split(","))) if spec else name


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _profiles() -> dict[str, dict[str, str]]:
    """{"core": {name: requirement}, "lab": {...}, "test": {...}} from pyproject.toml."""
    data = _project()
    out = {"core": {_name(r): r for r in data["dependencies"]}}
    out.update({extra: {_name(r): r for r in reqs} for extra, reqs in data["optional-dependencies"].items()})
    return out


def _pyproject() -> dict[str, str]:
    merged = {}
    for reqs in _profiles().values():
        merged.update(reqs)
    return merged


def _environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip, pip_options = {}, {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for r in dep["pip"]:
                if r.startswith("-"):
                    pip_options.append(r)
                else:
                    pip[_name(r)] = r
        else:
            conda[_name(dep)] = dep
    conda.pop("python", None)
    conda.pop("pip", None)
    return conda, pip, pip_options


def test_profiles_are_the_documented_ones():
    profiles = _profiles()
    assert set(profiles) == {"core", "lab", "tensorboard", "test"}
    assert set(profiles["core"]) == {"torch", "torchvision", "numpy", "scipy", "faiss-cpu", "pyyaml", "tqdm",
                                     "optuna"}
    assert set(profiles["lab"]) == {"plotly", "anywidget", "ipywidgets", "jupyterlab", "umap-learn",
                                    "scikit-learn", "matplotlib"}
    assert set(profiles["tensorboard"]) == {"tensorboard"}
    assert set(profiles["test"]) == {"pytest", "pytest-timeout", "nbval", "hypothesis", "playwright"}


def test_no_package_in_two_profiles():
    seen = {}
    for profile, reqs in _profiles().items():
        for name in reqs:
            assert name not in seen, f"{name} is in both {seen[name]} and {profile}"
            seen[name] = profile


def test_same_packages():
    conda, pip, _ = _environment()
    assert not set(conda) & set(pip)
    assert set(_pyproject()) == set(conda) | set(pip)


def test_torch_pins_are_exact_and_agree():
    py = _pyproject()
    _, pip, _ = _environment()
    for name, pin in PINNED.items():
        assert py[name].replace(" ", "") == pip[name] == pin
        assert name in _profiles()["core"]
    assert set(pip) == set(PINNED), "only torch/torchvision are installed by pip in environment.yml"


def test_version_bounds_agree():
    conda, pip, _ = _environment()
    py = _pyproject()
    for name, req in {**conda, **pip}.items():
        assert _norm(req) == _norm(py[name]), f"environment.yml {req!r} != pyproject.toml {py[name]!r}"


@pytest.mark.parametrize("name", sorted(_pyproject()))
def test_every_dependency_is_bounded(name):
    req = Requirement(_pyproject()[name])
    if name in PINNED:
        assert str(req) == PINNED[name]
        return
    ops = {s.operator for s in req.specifier}
    assert ops & {">=", ">"}, f"{req}: no lower bound"
    assert ops & {"<", "<="}, f"{req}: no upper bound"
    assert not ops - {">=", ">", "<", "<=", "!="}, f"{req}: use a range (>=low,<high)"


def test_installed_versions_satisfy_the_ranges():
    """The ranges admit what this environment runs on (a bound did not cut it off)."""
    from importlib.metadata import PackageNotFoundError, version

    installed = {}
    for name, req in _pyproject().items():
        try:
            installed[name] = version(name)
        except PackageNotFoundError:
            continue
        assert SpecifierSet(str(Requirement(req).specifier)).contains(installed[name], prereleases=True), \
            f"installed {name} {installed[name]} is outside {req}"
    assert set(_profiles()["core"]) <= set(installed)


def test_environment_yml_installs_every_extra():
    """A conda user gets the full profile: the pip line installs bclviz with all extras."""
    _, _, options = _environment()
    extras = set(_profiles()) - {"core"}
    editable = [o for o in options if o.startswith("-e")]
    assert len(editable) == 1
    match = re.fullmatch(r"-e\s+\.(?:\[([^\]]*)\])?", editable[0].strip())
    assert match, editable
    assert set(filter(None, (match.group(1) or "").split(","))) == extras


# ------------------------------------------------------------------------------ Makefile
def _makefile():
    """({variable: value}, {target: (prerequisites, recipe lines)}) of the Makefile.

    Targets and prerequisites are expanded (``$(VAR)`` replaced), recipe lines are not.
    """
    variables, raw, current = {}, {}, None
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("\t"):
            if current is not None:
                raw[current][1].append(line.strip())
            continue
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\?=|:=|=)\s*(.*)$", line)
        if m:
            variables[m.group(1)] = m.group(3).strip()
            current = None
            continue
        m = re.match(r"^([^:=]+?)\s*:\s*(.*)$", line)
        if m:
            current = m.group(1).strip()
            raw[current] = (m.group(2).split(), [])
    rules = {_expand(t, variables): ([_expand(p, variables) for p in prereqs], recipe)
             for t, (prereqs, recipe) in raw.items()}
    return variables, rules


def _expand(text: str, variables: dict) -> str:
    for _ in range(10):
        new = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: variables.get(m.group(1), m.group(0)), text)
        if new == text:
            break
        text = new
    return text


def _installed_extras(target: str) -> list[set[str]]:
    """The extras of every ``pip install -e`` that ``make <target>`` can run (its prerequisites included)."""
    variables, rules = _makefile()
    found, todo, seen = [], [target], set()
    while todo:
        t = todo.pop()
        if t in seen or t not in rules:
            continue
        seen.add(t)
        prereqs, recipe = rules[t]
        todo.extend(prereqs)
        for line in recipe:
            line = _expand(line, variables)
            assert not re.search(r"\buv\b", line), f"make {target} uses uv: {line}"
            m = re.search(r"-m pip install .*-e\s+\"?\.(\[[^\]]*\])?\"?(\s|$)", line)
            if m:
                found.append(set(filter(None, (m.group(1) or "[]")[1:-1].split(","))))
    return found


@pytest.mark.parametrize("target, extras", [("core", set()), ("lab", {"lab"}), ("test", {"lab", "tensorboard", "test"}),
                                            ("install", {"lab", "tensorboard", "test"})])
def test_makefile_targets_install_their_profile(target, extras):
    found = _installed_extras(target)
    assert found == [extras], f"make {target} runs pip install -e with extras {found}, expected [{extras}]"


def test_makefile_profiles_have_their_own_stamps():
    """make test after make lab (or the reverse) installs the missing profile: one stamp each."""
    variables, rules = _makefile()
    venv = _expand("$(VENV)/", variables)
    stamps = {}
    for target in ("core", "lab", "test"):
        stamp = [p for p in rules[target][0] if p.startswith(venv)]
        assert len(stamp) == 1, (target, rules[target][0])
        stamps[target] = stamp[0]
        assert "pyproject.toml" in rules[stamp[0]][0], f"{stamp[0]} must be redone when pyproject.toml changes"
    assert len(set(stamps.values())) == 3, stamps


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target, extras", [("core", "."), ("lab", '".[lab]"'), ("test", '".[lab,tensorboard,test]"')])
def test_make_dry_run(tmp_path, target, extras):
    """``make -n`` against an empty venv folder prints the profile's pip install."""
    out = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", target],
                         capture_output=True, text=True, check=True).stdout
    pip = [line for line in out.splitlines() if "pip install" in line]
    assert len(pip) == 1 and pip[0].split()[-2:] == ["-e", extras], out


def test_import_bclviz_stays_light():
    code = "import sys, bclviz; print(sorted(m for m in ('plotly','umap','ipywidgets','torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
