"""Every notebook runs top to bottom on the fixture results, and the committed ones are clean."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ["convergence.ipynb", "stability.ipynb", "overhead.ipynb", "distributed_scaling.ipynb", "verdict.ipynb"]
KERNEL = "mlbfgs-analysis-test"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec that runs ipykernel on this very interpreter, found first through JUPYTER_PATH
    (so a user-level or system "python3" kernelspec pointing elsewhere cannot interfere)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return root


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name: str, results_tree: Path, kernel_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("MLBFGS_RESULTS", str(results_tree))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=180, kernel_name=KERNEL, allow_errors=False, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    # verdict: the performance profiles and the target sensitivity (the fixture has no tuning trials)
    figures = {"convergence.ipynb": 2, "stability.ipynb": 2, "overhead.ipynb": 2, "verdict.ipynb": 2}
    expected_figures = figures.get(name, 1)
    assert len(pngs) == expected_figures
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    assert str(results_tree) in markdown  # it read the fixture tree, not ../results
    if name == "convergence.ipynb":
        assert "| mlbfgs | 2/2 | 62.5 |" in markdown
    if name == "verdict.ipynb":  # time to target with intervals, and the orderings with their verdicts
        assert "final test accuracy [95%]" in markdown and "| mnist1d_mlp | mlbfgs | sgd |" in markdown
    if name == "overhead.ipynb":  # the fairness table of the fixture: lockstep ratios hold, separate ones drift
        assert "lockstep: 1/1 ratios within 10%" in markdown and "separate: 0/1 ratios within 10%" in markdown


def _load_builder():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_clean_and_current(name: str) -> None:
    text = (NOTEBOOKS / name).read_text()
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
            # cells only call the analysis package: no function or class definitions
            assert "def " not in cell.source and "class " not in cell.source
    assert "nb.show_" in text or "analysis." in text
    # the committed file is what notebooks/make_notebooks.py writes
    assert text.rstrip("\n") == nbformat.writes(_load_builder().build(name)).rstrip("\n")
