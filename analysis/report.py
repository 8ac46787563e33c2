"""Regenerate every figure and table from whatever CSVs a results directory holds.

Output files (under ``out``), drawn here:

- ``convergence_<workload>.png``                 curves per workload, one per configuration (runs)
- ``time_to_target.md`` / ``.csv``               time-to-target table (runs)
- ``performance_profiles.md`` / ``.csv`` / ``.png``   AlgoPerf performance profiles from the time to target
- ``stability_<workload>.png``, ``stability.md`` / ``.csv``   beta ablation (runs + curvature)

and ``<stem>.md`` / ``.csv`` (/ ``.png``) of every group of the registry :data:`analysis.groups.GROUPS`
(overhead, direction kernel, distributed scaling, fairness, threads, compiled step, runner overhead,
ours vs the authors' code, ablations, learning-rate sensitivity).

A group whose CSVs are absent is skipped with a one-line notice. Tables are byte-stable (fixed float
formats, sorted rows, no timestamps); PNGs carry no software/version metadata.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from analysis.curves import SMOOTH_FRACTION, Band, convergence_figures
from analysis.groups import GROUPS, FigureGroup
from analysis.load import Results, load_results
from analysis.orderings import orderings, orderings_markdown
from analysis.profiles import plot_profiles, profile_markdown, profile_summary
from analysis.readme import relative_link, results_section, update_readme
from analysis.select import MAIN_BETA, main_runs
from analysis.sensitivity import load_trials
from analysis.stability import DEFAULT_BOUNDS, stability_figures, stability_markdown, stability_summary
from analysis.style import safe_name, save_figure
from analysis.tables import write_csv, write_text
from analysis.target_sensitivity import plot_target_sensitivity, sensitivity_markdown, target_sensitivity
from analysis.targets import (
    TUNED_RULE,
    TargetRule,
    time_to_target,
    time_to_target_csv_frame,
    time_to_target_markdown,
)


@dataclass(frozen=True)
class Options:
    """Knobs of the generated output (the CLI flags)."""

    target: TargetRule = field(default_factory=TargetRule)
    band: Band = "minmax"
    smooth_fraction: float = SMOOTH_FRACTION
    main_beta: float = MAIN_BETA
    bounds: tuple[float, float] = DEFAULT_BOUNDS


@dataclass
class Report:
    """What :func:`generate` produced: files, notices, README tables and key figures."""

    written: list[Path] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)
    figures: dict[str, dict[str, Path]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    #: Number of distinct betas per workload of the stability figures (picks the README figure).
    stability_betas: dict[str, int] = field(default_factory=dict)


def _skip(report: Report, log: Callable[[str], None], group: str, why: str) -> None:
    line = f"skipping {group}: {why}"
    report.notices.append(line)
    report.skipped.append(group)
    log(line)


def _convergence(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    if data.runs is None:
        _skip(report, log, "convergence curves", f"no run CSVs under {data.root / 'runs'}")
        _skip(report, log, "time to target", f"no run CSVs under {data.root / 'runs'}")
        return
    left = set(data.runs["run_id"]) - set(main_runs(data.runs, opts.main_beta)["run_id"])
    if left:
        line = (f"convergence and time to target: {len(left)} mlbfgs run(s) with beta other than the main "
                f"comparison's are left out (the beta ablation: stability figure)")
        report.notices.append(line)
        log(line)
    rule = opts.target
    if rule == TargetRule() and load_trials(data.root) is not None:  # tuned results: AlgoPerf's median
        rule = TUNED_RULE
    table = time_to_target(data.runs, rule, opts.smooth_fraction, opts.main_beta)
    targets = {str(w): (rule.metric, float(t)) for w, t in zip(table["workload"], table["target"], strict=True)}
    paths = {}
    for workload, fig in convergence_figures(data.runs, opts.band, opts.smooth_fraction, targets).items():
        paths[workload] = save_figure(fig, out / f"convergence_{safe_name(workload)}.png")
    report.figures["convergence"] = paths
    report.written += paths.values()
    if table.empty:
        _skip(report, log, "time to target", f"no workload has {rule.reference} runs to set the target")
        return
    md = time_to_target_markdown(table, data.runs, rule, 4, opts.smooth_fraction, opts.main_beta)
    report.written.append(write_text(out / "time_to_target.md", md))
    report.written.append(write_csv(out / "time_to_target.csv", time_to_target_csv_frame(table)))
    report.tables.append(("Time to target", md))
    summary = profile_summary(table)
    _emit(report, out, "performance_profiles", "Performance profiles", profile_markdown(summary), summary, "%.6f",
          figure=plot_profiles(table))
    ordered = orderings(data.runs, main_beta=opts.main_beta)
    if not ordered.empty:
        _emit(report, out, "orderings", "Orderings the seeds support", orderings_markdown(ordered), ordered, "%.6f")
    if rule.value is None:
        sens = target_sensitivity(data.runs, rule)
        _emit(report, out, "target_sensitivity", "Target sensitivity", sensitivity_markdown(sens, rule.reference),
              sens, "%.6f", figure=plot_target_sensitivity(sens, rule.reference))


def _stability(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    if data.runs is None:
        _skip(report, log, "stability", f"no run CSVs under {data.root / 'runs'}")
        return
    figures = stability_figures(data.runs, data.curvature, opts.bounds)
    if not figures:
        _skip(report, log, "stability", "no workload has mlbfgs/slbfgs runs with two or more beta values")
        return
    if data.curvature is None:
        line = "stability: no curvature CSVs; mu panels left empty"
        report.notices.append(line)
        log(line)
    paths = {w: save_figure(fig, out / f"stability_{safe_name(w)}.png") for w, fig in figures.items()}
    report.figures["stability"] = paths
    report.written += paths.values()
    summary = stability_summary(data.runs, data.curvature, opts.bounds)
    report.stability_betas = {str(w): int(n) for w, n in summary.groupby("workload")["beta"].nunique().items()}
    md = stability_markdown(summary, opts.bounds)
    report.written.append(write_text(out / "stability.md", md))
    report.written.append(write_csv(out / "stability.csv", summary))
    report.tables.append(("Stability against beta", md))


def _emit(report: Report, out: Path, stem: str, title: str, md: str, frame, float_format: str = "%.9f",
          figure=None, key: str | None = None) -> None:
    """Write ``<stem>.md`` and ``<stem>.csv`` (and ``<stem>.png`` when ``figure`` is given) and register
    the table (and the figure under ``key``, default ``stem``)."""
    if figure is not None:
        path = save_figure(figure, out / f"{stem}.png")
        report.figures[key or stem] = {"": path}
        report.written.append(path)
    report.written.append(write_text(out / f"{stem}.md", md))
    report.written.append(write_csv(out / f"{stem}.csv", frame, float_format))
    report.tables.append((title, md))


def _write_group(group: FigureGroup, data: Results, out: Path, report: Report, log: Callable[[str], None]) -> None:
    raw = group.load(data)
    if raw is None:
        _skip(report, log, group.name, group.missing.format(root=data.root))
        return
    summary = group.summarise(raw)
    figure = group.plot(raw, summary) if group.plot is not None else None
    _emit(report, out, group.stem, group.title, group.markdown(raw, summary), summary, group.float_format,
          figure=figure, key=group.figure_key)


def generate(
    results: Path | str,
    out: Path | str,
    options: Options | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Read ``results`` and write every figure and table that its CSVs allow into ``out``."""
    opts = options or Options()
    data = load_results(results)
    out = Path(out)
    report = Report()
    for path in data.ignored:
        line = f"ignoring {path}: not a table of this folder's schema (see DEVELOPERS.md)"
        report.notices.append(line)
        log(line)
    _convergence(data, out, opts, report, log)
    _stability(data, out, opts, report, log)
    for group in GROUPS:
        _write_group(group, data, out, report, log)
    return report


def key_figures(report: Report) -> list[tuple[str, Path]]:
    """The two figures linked from the README: the stability figure of the workload with the most
    betas (ties: first by name) and the convergence figure of that workload (else the first one);
    when either is missing, the next available of overhead and distributed scaling."""
    stability = report.figures.get("stability", {})
    convergence = report.figures.get("convergence", {})
    focus = min(stability, key=lambda w: (-report.stability_betas.get(w, 0), w)) if stability else None
    picks: list[tuple[str, Path]] = []
    if convergence:
        workload = focus if focus in convergence else min(convergence)
        picks.append((f"Convergence: {workload}", convergence[workload]))
    if focus is not None:
        picks.append((f"Stability against the momentum coefficient beta: {focus}", stability[focus]))
    if "overhead" in report.figures:
        picks.append(("Optimizer overhead relative to sgd", report.figures["overhead"][""]))
    if "distributed" in report.figures:
        picks.append(("Distributed scaling of the curvature state", report.figures["distributed"][""]))
    return picks[:2]


def command_line(results: Path, out: Path, readme: Path, opts: Options) -> str:
    """The ``python -m analysis`` command that regenerates the README section, paths relative to the
    README's folder (where the command is meant to be run)."""
    parts = [
        "python",
        "-m",
        "analysis",
        "--results",
        relative_link(results, readme),
        "--out",
        relative_link(out, readme),
        "--readme",
        relative_link(readme, readme),
    ]
    default = Options()
    rule = opts.target
    if rule.metric != default.target.metric:
        parts += ["--target-metric", rule.metric]
    if rule.value is not None:
        parts += ["--target-value", f"{rule.value:g}"]
    if rule.fraction != default.target.fraction:
        parts += ["--target-fraction", f"{rule.fraction:g}"]
    if opts.band != default.band:
        parts += ["--band", opts.band]
    if opts.main_beta != default.main_beta:
        parts += ["--main-beta", f"{opts.main_beta:g}"]
    return shlex.join(parts)


def write_readme(
    readme: Path, results: Path, out: Path, report: Report, opts: Options, log: Callable[[str], None] = print
) -> bool:
    """Replace the README's marked results section; logs and returns False when markers are missing."""
    section = results_section(
        readme,
        relative_link(Path(results), Path(readme)),
        command_line(Path(results), Path(out), Path(readme), opts),
        report.tables,
        key_figures(report),
        report.skipped,
    )
    if update_readme(Path(readme), section):
        log(f"updated the results section of {readme}")
        return True
    log(f"{readme}: no '<!-- results:start -->' / '<!-- results:end -->' markers (or no file); left unchanged")
    return False
