"""Write the notebooks of this folder (outputs cleared, fixed cell ids): ``python notebooks/make_notebooks.py``.

Every notebook reads the results directory from $MLBFGS_RESULTS (default ../results) and only calls
functions of the analysis package.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """%matplotlib inline
import sys
from pathlib import Path

# Make the repository root (which holds the analysis package) importable.
sys.path.insert(0, str(next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "analysis").is_dir())))

import analysis
from analysis import notebook as nb

# Results directory: $MLBFGS_RESULTS, default ../results (relative to this notebook).
data = analysis.load_results(nb.results_dir())
nb.describe(data)"""

REGEN = (
    "Everything here is also written to `results/figures/` by "
    "`python -m analysis --results results --out results/figures --readme docs/report.md`."
)

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "convergence.ipynb": [
        (
            "md",
            "# Convergence\n\nTrain loss (EMA-smoothed) and test accuracy of every optimizer against "
            "iterations, epochs, training seconds and gradient evaluations; line = mean over seeds, "
            "band = min–max. mlbfgs is the thick red line. " + REGEN,
        ),
        ("code", SETUP),
        ("md", "## Curves per workload"),
        ("code", "nb.show_convergence(data)"),
        ("md", "## Time to target"),
        ("code", "nb.show_time_to_target(data)"),
    ],
    "stability.ipynb": [
        (
            "md",
            "# Stability against the momentum coefficient beta\n\nmlbfgs with beta in {0.9, 0.99, 0.999} "
            "and slbfgs (beta = 0): loss curves, the curvature ratio mu = s.y / s.s of every pair over "
            "training and its distribution, and the share of rejected pairs. " + REGEN,
        ),
        ("code", SETUP),
        ("code", "nb.show_stability(data)"),
    ],
    "overhead.ipynb": [
        (
            "md",
            "# Optimizer overhead\n\nMedian seconds per optimizer step and per training iteration, "
            "relative to sgd, per model. " + REGEN,
        ),
        ("code", SETUP),
        ("code", "nb.show('overhead', data)"),
        (
            "md",
            "## Is the training clock fair?\n\nSeconds per iteration relative to sgd, the quick comparison "
            "trained in lockstep and in separate processes, on an idle machine and beside two busy processes.",
        ),
        ("code", "nb.show('fairness', data)"),
    ],
    "distributed_scaling.ipynb": [
        (
            "md",
            "# Distributed scaling\n\nPer-rank curvature memory and direction time of block-wise "
            "distributed mlbfgs against the number of workers, with the 1/N ideal. " + REGEN,
        ),
        ("code", SETUP),
        ("code", "nb.show('distributed scaling', data)"),
    ],
    "verdict.ipynb": [
        (
            "md",
            "# The verdict\n\nThe long preset's comparison (`results/long`: equal tuning, 3-5 seeds at full "
            "length) as the findings page reads it: time to target with 95% intervals, performance profiles, "
            "target sensitivity, the orderings the seeds support, and the learning-rate sensitivity of the "
            "tuning trials. The same tables are in `results/long/figures/` (`python -m analysis --results "
            "results/long`).",
        ),
        ("code", SETUP.replace('nb.results_dir()', 'nb.results_dir("../results/long")')),
        ("code", "from IPython.display import Markdown, display\n\n"
                 "from analysis.orderings import orderings, orderings_markdown\n"
                 "from analysis.profiles import plot_profiles, profile_markdown, profile_summary\n"
                 "from analysis.target_sensitivity import plot_target_sensitivity, sensitivity_markdown, "
                 "target_sensitivity\n"
                 "from analysis.targets import TUNED_RULE, time_to_target, time_to_target_markdown\n\n"
                 "table = time_to_target(data.runs, TUNED_RULE)"),
        ("md", "## Time to target, with 95% intervals"),
        ("code", "display(Markdown(time_to_target_markdown(table, data.runs, TUNED_RULE)))"),
        ("md", "## Performance profiles"),
        ("code", "display(plot_profiles(table))\ndisplay(Markdown(profile_markdown(profile_summary(table))))"),
        ("md", "## Target sensitivity"),
        ("code", "sensitivity = target_sensitivity(data.runs, TUNED_RULE)\n"
                 "display(plot_target_sensitivity(sensitivity, TUNED_RULE.reference))\n"
                 "display(Markdown(sensitivity_markdown(sensitivity, TUNED_RULE.reference)))"),
        ("md", "## Orderings the seeds support"),
        ("code", "display(Markdown(orderings_markdown(orderings(data.runs))))"),
        ("md", "## Learning-rate sensitivity of the tuning trials"),
        ("code", "nb.show('lr sensitivity', data)"),
    ],
}


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` with outputs cleared and cell ids ``cell-1``, ``cell-2``, ..."""
    cells = []
    for i, (kind, source) in enumerate(NOTEBOOKS[name], start=1):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell["id"] = f"cell-{i}"
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    """Write every notebook next to this script."""
    for name in NOTEBOOKS:
        nbformat.write(build(name), HERE / name)


if __name__ == "__main__":
    main()
