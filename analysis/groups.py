"""The one registry of table-and-figure groups: what each reads, what it writes, where.

``python -m analysis`` (:mod:`analysis.report`) writes every group whose input is present, and the
notebooks show them (:func:`analysis.notebook.show`). Adding a group takes its own module (load,
summary, markdown, optional plot) and one :class:`FigureGroup` entry in :data:`GROUPS`; nothing else.

The convergence curves, the time-to-target table, the performance profiles and the stability figures
(one figure per workload, README key figures) are drawn by :mod:`analysis.report` itself, before these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from analysis.ablations import FOLDER as ABLATION_FOLDER
from analysis.ablations import ablation_markdown, centre
from analysis.block_defaults import FOLDERS as BLOCK_FOLDERS
from analysis.block_defaults import (
    block_defaults_markdown,
    block_defaults_summary,
    load_block_defaults,
    plot_block_defaults,
)
from analysis.compiled import compiled_markdown, compiled_summary, load_compiled
from analysis.compute import compute_markdown, compute_summary, load_compute
from analysis.construction import construction_markdown, construction_summary, load_construction, plot_construction
from analysis.diagnosis import FOLDER as DIAGNOSIS_FOLDER
from analysis.diagnosis import diagnosis_markdown, diagnosis_summary, load_diagnosis, plot_block_shares
from analysis.fairness import fairness_markdown, fairness_summary, load_fairness, plot_fairness
from analysis.kernel import kernel_markdown, kernel_summary
from analysis.load import KERNEL_FILE, Results
from analysis.overhead import overhead_markdown, overhead_summary, plot_overhead
from analysis.paper import load_paper_runs, paper_markdown, paper_summary, plot_paper
from analysis.runner import load_runner, runner_markdown, runner_summary
from analysis.scaling import plot_scaling, scaling_markdown, scaling_summary
from analysis.sensitivity import load_trials, plot_sensitivity, sensitivity_markdown, sensitivity_summary
from analysis.sharding import load_sharding, plot_sharding, sharding_markdown, sharding_summary
from analysis.threads import load_threads, threads_markdown, threads_summary
from analysis.variants import load_variant_runs, plot_variants, variant_markdown, variant_summary


@dataclass(frozen=True)
class FigureGroup:
    """One group of output: a summary table (``<stem>.md`` and ``<stem>.csv``) and optionally a figure
    (``<stem>.png``).

    ``load(results)`` returns the group's input or ``None`` when its files are absent (``missing`` then
    says which, ``{root}`` standing for the results folder); ``summarise(input)`` the table as a
    DataFrame; ``markdown(input, summary)`` its markdown with caption; ``plot(input, summary)`` the
    figure. ``figure_key`` is the name under which the README's key-figure choice finds the figure.
    """

    name: str
    title: str
    stem: str
    missing: str
    load: Callable[[Results], Any]
    summarise: Callable[[Any], pd.DataFrame]
    markdown: Callable[[Any, pd.DataFrame], str]
    plot: Callable[[Any, pd.DataFrame], Figure] | None = None
    float_format: str = "%.9f"
    figure_key: str | None = None


def _runner_input(data: Results) -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    runs, startup = load_runner(data.root)
    return None if runs is None else (runs, startup)


def _ablation_input(data: Results) -> tuple[pd.DataFrame, str] | None:
    runs = load_variant_runs(data.root, ABLATION_FOLDER)
    return None if runs is None else (runs, centre(runs))


#: Every group, in the order they are written.
GROUPS: tuple[FigureGroup, ...] = (
    FigureGroup(
        "overhead", "Optimizer overhead", "overhead", "no CSVs under {root}/overhead",
        lambda data: data.overhead, overhead_summary, lambda _, s: overhead_markdown(s),
        lambda _, s: plot_overhead(s),
    ),
    FigureGroup(
        "direction kernel", "mL-BFGS direction kernel", "direction_kernel", "no {root}/" + str(KERNEL_FILE),
        lambda data: data.kernel, kernel_summary, lambda _, s: kernel_markdown(s),
    ),
    FigureGroup(
        "distributed scaling", "Distributed scaling", "distributed_scaling", "no CSVs under {root}/distributed",
        lambda data: data.distributed, scaling_summary, lambda _, s: scaling_markdown(s),
        lambda raw, _: plot_scaling(raw), figure_key="distributed",
    ),
    FigureGroup(
        "sharding modes", "mL-BFGS sharding modes: DDP whole blocks, DDP rows, FSDP2", "sharding_modes",
        "no {root}/distributed/sharding_modes.csv", lambda data: load_sharding(data.root), sharding_summary,
        lambda _, s: sharding_markdown(s), plot_sharding, "%.6f",
    ),
    FigureGroup(
        "fairness", "Fairness of the training clock", "fairness",
        "no run CSVs under {root}/fairness/<mode>-<condition>/runs",
        lambda data: load_fairness(data.root), fairness_summary, lambda _, s: fairness_markdown(s),
        lambda _, s: plot_fairness(s),
    ),
    FigureGroup(
        "threads", "Threads per process", "threads", "no {root}/threads/threads.csv",
        lambda data: load_threads(data.root), threads_summary, lambda _, s: threads_markdown(s),
    ),
    FigureGroup(
        "construction", "Construction by the number of parameter tensors", "construction",
        "no {root}/construction/construction.csv", lambda data: load_construction(data.root), construction_summary,
        lambda _, s: construction_markdown(s), plot_construction,
    ),
    FigureGroup(
        "compiled step", "Compiled step", "compiled_step", "no {root}/compile/steps.csv and summary.csv",
        lambda data: load_compiled(data.root), lambda raw: compiled_summary(*raw), lambda _, s: compiled_markdown(s),
    ),
    FigureGroup(
        "runner overhead", "Runner overhead", "runner", "no {root}/runner/runner.csv",
        _runner_input, lambda raw: runner_summary(raw[0]), lambda raw, s: runner_markdown(s, raw[1]),
    ),
    FigureGroup(
        "ours vs the authors' code", "Ours against the authors' code", "authors_variants",
        "no finished runs under {root}/authors/runs",
        lambda data: load_variant_runs(data.root), variant_summary, lambda _, s: variant_markdown(s),
        lambda raw, s: plot_variants(raw, s), "%.6f",
    ),
    FigureGroup(
        "ablations", "Ablations at the long length", "ablations", "no finished runs under {root}/"
        + ABLATION_FOLDER + "/runs",
        _ablation_input, lambda raw: variant_summary(*raw), lambda raw, s: ablation_markdown(s, raw[1]),
        lambda raw, s: plot_variants(raw[0], s, "mL-BFGS ablations, one setting at a time"),
    ),
    FigureGroup(
        "resnet diagnosis", "The ResNet diagnosis: configurations and each block's share of the step",
        "resnet_diagnosis", "no finished runs under {root}/" + DIAGNOSIS_FOLDER + "/runs",
        lambda data: load_diagnosis(data.root), diagnosis_summary, lambda _, s: diagnosis_markdown(s),
        plot_block_shares, "%.6f",
    ),
    FigureGroup(
        "block default", "mL-BFGS's block default: the candidates on every long workload and the rule's choice",
        "block_defaults", "no finished runs under {root}/" + BLOCK_FOLDERS[0] + "/runs",
        lambda data: load_block_defaults(data.root), block_defaults_summary, lambda _, s: block_defaults_markdown(s),
        plot_block_defaults, "%.6f",
    ),
    FigureGroup(
        "lr sensitivity", "Learning-rate sensitivity of the tuning trials", "lr_sensitivity",
        "no {root}/tuning/*_trials.csv",
        lambda data: load_trials(data.root), sensitivity_summary, lambda _, s: sensitivity_markdown(s),
        lambda raw, _: plot_sensitivity(raw), "%.6f",
    ),
    FigureGroup(
        "compute", "Compute spent", "compute", "no run manifests with cpu_s under {root}/runs or {root}/tuning/runs",
        load_compute, compute_summary, lambda _, s: compute_markdown(s), None, "%.6f",
    ),
    FigureGroup(
        "paper", "Test accuracy of the paper's workloads", "paper_accuracy",
        "no runs of the paper's workloads (cifar10-resnet18, cifar100-resnet18, cifar100-deit, imagenet-resnet50)",
        load_paper_runs, paper_summary, lambda _, s: paper_markdown(s), plot_paper, "%.6f",
    ),
)


def group_named(name: str) -> FigureGroup:
    """The group called ``name``; ValueError listing the names otherwise."""
    for group in GROUPS:
        if group.name == name:
            return group
    raise ValueError(f"group must be one of {[g.name for g in GROUPS]}, got {name!r}")
