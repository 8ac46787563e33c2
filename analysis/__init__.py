"""Benchmark analysis for mlbfgs: results CSVs -> tables and figures.

One concept per module: :mod:`~analysis.load` (read + validate), :mod:`~analysis.configs` (which runs
are seeds of one configuration, and their labels), :mod:`~analysis.select` (main runs vs beta
ablation), :mod:`~analysis.curves` (convergence), :mod:`~analysis.targets` (time to target),
:mod:`~analysis.stability` (beta ablation, curvature ratio), :mod:`~analysis.overhead`,
:mod:`~analysis.scaling` (distributed), :mod:`~analysis.groups` (the registry of table-and-figure
groups), :mod:`~analysis.readme`, :mod:`~analysis.report` (all of it; ``python -m analysis``),
:mod:`~analysis.compare` (``python -m analysis compare``). Notebooks call the functions re-exported
here and :mod:`~analysis.notebook`.
"""

from analysis.compare import Selection, compare, compare_table
from analysis.configs import label_configs, with_labels
from analysis.curves import convergence_figures, plot_configurations, plot_convergence, seed_band, smoothed_train
from analysis.groups import GROUPS, FigureGroup
from analysis.load import (
    Results,
    SchemaError,
    load_curvature,
    load_distributed,
    load_manifests,
    load_overhead,
    load_results,
    load_runs,
)
from analysis.overhead import overhead_markdown, overhead_summary, plot_overhead
from analysis.report import Options, generate
from analysis.scaling import plot_scaling, scaling_markdown, scaling_summary
from analysis.select import ablation_runs, main_runs
from analysis.stability import plot_stability, stability_figures, stability_markdown, stability_summary
from analysis.targets import TargetRule, time_to_target, time_to_target_markdown

__all__ = [
    "GROUPS",
    "FigureGroup",
    "Options",
    "Selection",
    "compare",
    "compare_table",
    "label_configs",
    "plot_configurations",
    "with_labels",
    "Results",
    "SchemaError",
    "TargetRule",
    "ablation_runs",
    "convergence_figures",
    "generate",
    "load_curvature",
    "load_distributed",
    "load_manifests",
    "load_overhead",
    "load_results",
    "load_runs",
    "main_runs",
    "overhead_markdown",
    "overhead_summary",
    "plot_convergence",
    "plot_overhead",
    "plot_scaling",
    "plot_stability",
    "scaling_markdown",
    "scaling_summary",
    "seed_band",
    "smoothed_train",
    "stability_figures",
    "stability_markdown",
    "stability_summary",
    "time_to_target",
    "time_to_target_markdown",
]
