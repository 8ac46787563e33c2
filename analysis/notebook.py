"""Display helpers for the notebooks: each shows one figure group (figures and markdown tables) or a
one-line notice when its CSVs are absent: :func:`show` for every group of :mod:`analysis.groups`,
and the per-workload convergence, time-to-target and stability views. Needs IPython (imported on
call)."""

from __future__ import annotations

import os
from pathlib import Path

from analysis.curves import Band, convergence_figures
from analysis.groups import group_named
from analysis.load import Results
from analysis.stability import DEFAULT_BOUNDS, stability_figures, stability_markdown, stability_summary
from analysis.targets import TargetRule, time_to_target, time_to_target_markdown


def _display(*objs: object) -> None:
    from IPython.display import display

    display(*objs)


def _markdown(text: str) -> None:
    from IPython.display import Markdown

    _display(Markdown(text))


def results_dir(default: str = "../results", env: str = "MLBFGS_RESULTS") -> Path:
    """The results directory of a notebook: ``$MLBFGS_RESULTS`` or ``default`` (relative to the
    notebook's working directory)."""
    return Path(os.environ.get(env) or default)


def describe(data: Results) -> None:
    """Show which groups of the results tree were found."""
    rows = [
        ("runs", data.runs, "run_id"),
        ("curvature", data.curvature, "run_id"),
        ("overhead", data.overhead, "model"),
        ("distributed", data.distributed, "model"),
    ]
    lines = [f"Results directory: `{data.root}`", ""]
    for name, frame, key in rows:
        lines.append(f"- {name}: " + ("none" if frame is None else f"{len(frame)} rows, {frame[key].nunique()} {key}s"))
    _markdown("\n".join(lines))


def show_convergence(data: Results, band: Band = "minmax") -> None:
    """Convergence figure of every workload."""
    if data.runs is None:
        _markdown("_No run CSVs: nothing to plot._")
        return
    for fig in convergence_figures(data.runs, band).values():
        _display(fig)


def show_time_to_target(data: Results, rule: TargetRule | None = None) -> None:
    """Time-to-target tables (markdown) of every workload."""
    if data.runs is None:
        _markdown("_No run CSVs: no table._")
        return
    table = time_to_target(data.runs, rule)
    _markdown(time_to_target_markdown(table, data.runs, rule) if len(table) else "_No workload has sgd runs._")


def show_stability(data: Results, bounds: tuple[float, float] = DEFAULT_BOUNDS) -> None:
    """Stability figures and the summary table of the beta ablation."""
    figures = stability_figures(data.runs, data.curvature, bounds) if data.runs is not None else {}
    if not figures:
        _markdown("_No workload has mlbfgs/slbfgs runs with two or more beta values._")
        return
    for fig in figures.values():
        _display(fig)
    _markdown(stability_markdown(stability_summary(data.runs, data.curvature, bounds), bounds))


def show(name: str, data: Results) -> None:
    """Figure (when the group draws one) and table of the group ``name`` of the registry
    :data:`analysis.groups.GROUPS` (e.g. "overhead", "fairness", "distributed scaling"), or a notice
    saying which files are missing. ValueError listing the names for an unknown group."""
    group = group_named(name)
    raw = group.load(data)
    if raw is None:
        _markdown(f"_{group.title}: {group.missing.format(root=data.root)}._")
        return
    summary = group.summarise(raw)
    if group.plot is not None:
        _display(group.plot(raw, summary))
    _markdown(group.markdown(raw, summary))
