"""The package as users get it: one version, the torch range CI tests, a wheel with py.typed and the
LICENSE, and public types that ``mypy --strict`` sees (not ``Any``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import mlbfgs
from tests.support import REPO as ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# what the wheel is built from (copied, so the build leaves nothing in the working tree)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "mlbfgs")


def _requirements_pin(name: str) -> Version:
    """The ``name==X`` pin of requirements.txt (what CI installs)."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and Requirement(line).name == name:
            (spec,) = Requirement(line).specifier
            assert spec.operator == "==", f"requirements.txt must pin {name} with ==, got {line!r}"
            return Version(spec.version)
    raise AssertionError(f"requirements.txt does not pin {name}")


def _declared(name: str) -> Requirement:
    """The requirement on ``name`` in pyproject's [project] dependencies."""
    found = [Requirement(d) for d in PYPROJECT["project"]["dependencies"] if Requirement(d).name == name]
    assert len(found) == 1, f"pyproject.toml must declare {name} once, got {found}"
    return found[0]


def test_the_version_is_written_once_and_the_installed_metadata_agrees() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project, "pyproject.toml must not write the version: mlbfgs/__init__.py holds it"
    assert "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mlbfgs.__version__"}
    installed = importlib.metadata.version("mlbfgs")
    assert installed == mlbfgs.__version__, (
        f"installed metadata says {installed}, mlbfgs.__version__ is {mlbfgs.__version__}: reinstall with "
        "`pip install -e .`")
    Version(mlbfgs.__version__)  # a valid PEP 440 version


def _matrix_versions() -> list[Version]:
    text = (ROOT / ".ci" / "torch_matrix.sh").read_text()
    match = re.search(r"^TORCH_VERSIONS=\(([^)]*)\)", text, re.M)
    assert match, ".ci/torch_matrix.sh must list TORCH_VERSIONS=(lowest newest)"
    return [Version(v) for v in match.group(1).split()]


def test_the_declared_torch_range_is_the_one_ci_tests() -> None:
    """pyproject's lower bound is the lowest release CI tests; the pinned release and the newest one CI
    tests lie inside it; no upper bound refuses a newer torch; .ci/run runs the matrix."""
    pin = _requirements_pin("torch")
    declared = _declared("torch").specifier
    lowest, newest = min(_matrix_versions()), max(_matrix_versions())
    lower = [s for s in declared if s.operator == ">="]
    assert len(lower) == 1 and Version(lower[0].version).release[:2] == lowest.release[:2], (
        f"pyproject declares torch {declared}; CI tests from {lowest}: the lower bound must be the tested release")
    assert not [s for s in declared if s.operator in ("<", "<=", "==", "~=")], (
        f"pyproject's torch range {declared} must not refuse a newer torch")
    assert declared.contains(pin) and declared.contains(newest)
    assert newest >= pin, f"the newest release CI tests ({newest}) must not be older than the pinned {pin}"
    assert "bash .ci/torch_matrix.sh" in (ROOT / ".ci" / "run").read_text()


def test_the_tensorboard_extra_is_declared_and_ci_installs_it() -> None:
    extra = [Requirement(d).name for d in PYPROJECT["project"]["optional-dependencies"]["tensorboard"]]
    assert extra == ["tensorboard"]
    ci = [Requirement(line).name for line in (ROOT / "requirements.txt").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert "tensorboard" in ci


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources, with the installed setuptools (no download)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "-w", str(out), str(src)], check=True, timeout=300)
    (path,) = out.glob("mlbfgs-*.whl")
    return path


def test_the_wheel_ships_py_typed_the_license_and_the_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f"mlbfgs-{mlbfgs.__version__}.dist-info"
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "mlbfgs/py.typed" in names
    assert f"{dist_info}/licenses/LICENSE" in names
    assert re.search(r"^Version: (.+)$", metadata, re.M).group(1) == mlbfgs.__version__
    assert re.search(r"^License-Expression: (.+)$", metadata, re.M).group(1) == "MIT"
    assert "License-File: LICENSE" in metadata
    torch_dist = [Requirement(v) for v in re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
                  if Requirement(v).name == "torch"]
    assert [r.specifier for r in torch_dist] == [_declared("torch").specifier]
    assert re.search(r"^Provides-Extra: tensorboard$", metadata, re.M)


def test_the_license_is_mit() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 the mlbfgs authors" in text


USER_SCRIPT = '''
import torch
from torch import nn

from mlbfgs import MLBFGS

model = nn.Linear(4, 2)
opt = MLBFGS(model.parameters(), lr=0.1)
x, y = torch.randn(8, 4), torch.randn(8, 2)


def closure() -> torch.Tensor:
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    torch.autograd.backward(loss)
    return loss


loss = opt.step(closure)
opt.step()
reveal_type(opt)
reveal_type(opt.step)
reveal_type(loss)
'''


def _mypy(args: list[str], cwd: Path, cache: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def mypy_cache(request: pytest.FixtureRequest) -> Path:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (requirements.txt lists it): `pip install mypy`")
    return request.config.cache.mkdir("mypy")  # torch's analysis is reused across test runs


def test_a_user_script_sees_real_types_of_the_installed_wheel(wheel: Path, mypy_cache: Path,
                                                             tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    (tmp_path / "user_script.py").write_text(USER_SCRIPT)
    # the wheel's copy is an installed third-party package: mypy reads it only because of py.typed
    result = _mypy(["user_script.py"], tmp_path, mypy_cache, pythonpath=site)
    out = result.stdout + result.stderr
    notes = re.findall(r'Revealed type is "(.+)"', out)
    assert notes[:1] == ["mlbfgs.optimizer.MLBFGS"], out
    assert notes[1].startswith("Overload(") and "-> _Loss" in notes[1], out
    assert notes[2:] == ["torch._tensor.Tensor"], out
    assert result.returncode == 0, out


def test_the_package_passes_mypy_strict(mypy_cache: Path) -> None:
    result = _mypy(["-p", "mlbfgs"], ROOT, mypy_cache)
    assert result.returncode == 0, result.stdout + result.stderr
