"""Regenerate every figure and table from whatever CSVs a results directory holds.

Output files (under ``out``):

- ``convergence_<workload>.png``                 curves per workload (runs)
- ``time_to_target.md`` / ``.csv``               time-to-target table (runs)
- ``stability_<workload>.png``, ``stability.md`` / ``.csv``   beta ablation (runs + curvature)
- ``overhead.png``, ``overhead.md`` / ``.csv``   per-step / per-iteration cost (overhead)
- ``direction_kernel.md`` / ``.csv``              direction time vs bandwidth bound (overhead)
- ``distributed_scaling.png``, ``distributed_scaling.md`` / ``.csv``  (distributed)
- ``fairness.png``, ``fairness.md`` / ``.csv``   seconds ratios idle vs loaded, lockstep vs separate (fairness)
- ``performance_profiles.md`` / ``.csv`` / ``.png``   AlgoPerf performance profiles from the time to target
- ``threads.md`` / ``.csv``                       seconds per iteration by thread count and load (threads)
- ``compiled_step.md`` / ``.csv``                 the MLBFGS step eager against torch.compile (compile)
- ``runner.md`` / ``.csv``                        the runner's iteration vs a bare loop, start-up (runner)
- ``authors_variants.png``, ``.md`` / ``.csv``    ours vs the authors' code, one difference at a time (authors)
- ``lr_sensitivity.png``, ``.md`` / ``.csv``      final accuracy of every tuning trial against its lr (tuning)

A group whose CSVs are absent is skipped with a one-line notice. Tables are byte-stable (fixed float
formats, sorted rows, no timestamps); PNGs carry no software/version metadata.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from analysis.ablations import FOLDER as ABLATION_FOLDER
from analysis.ablations import ablation_markdown, centre
from analysis.compiled import compiled_markdown, compiled_summary, load_compiled
from analysis.curves import SMOOTH_FRACTION, Band, convergence_figures
from analysis.fairness import fairness_markdown, fairness_summary, load_fairness, plot_fairness
from analysis.kernel import kernel_markdown, kernel_summary, load_kernel
from analysis.load import Results, load_results
from analysis.overhead import overhead_markdown, overhead_summary, plot_overhead
from analysis.profiles import plot_profiles, profile_markdown, profile_summary
from analysis.readme import relative_link, results_section, update_readme
from analysis.runner import load_runner, runner_markdown, runner_summary
from analysis.scaling import plot_scaling, scaling_markdown, scaling_summary
from analysis.select import MAIN_BETA
from analysis.sensitivity import load_trials, plot_sensitivity, sensitivity_markdown, sensitivity_summary
from analysis.stability import DEFAULT_BOUNDS, stability_figures, stability_markdown, stability_summary
from analysis.style import safe_name, save_figure
from analysis.tables import write_csv, write_text
from analysis.targets import (
    TargetRule,
    targets_from_trials,
    time_to_target,
    time_to_target_csv_frame,
    time_to_target_markdown,
)
from analysis.threads import load_threads, threads_markdown, threads_summary
from analysis.variants import load_variant_runs, plot_variants, variant_markdown, variant_summary


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
    paths = {}
    for workload, fig in convergence_figures(data.runs, opts.band, opts.smooth_fraction).items():
        paths[workload] = save_figure(fig, out / f"convergence_{safe_name(workload)}.png")
    report.figures["convergence"] = paths
    report.written += paths.values()
    rule = opts.target
    trials = load_trials(data.root)
    if rule == TargetRule() and trials is not None:  # tuned results: AlgoPerf-style fixed targets
        rule = targets_from_trials(trials)
    table = time_to_target(data.runs, rule, opts.smooth_fraction, opts.main_beta)
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


def _overhead(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    if data.overhead is None:
        _skip(report, log, "overhead", f"no CSVs under {data.root / 'overhead'}")
        return
    summary = overhead_summary(data.overhead)
    _emit(report, out, "overhead", "Optimizer overhead", overhead_markdown(summary), summary,
          figure=plot_overhead(summary))


def _kernel(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    frame = load_kernel(data.root)
    if frame is None:
        _skip(report, log, "direction kernel", f"no {data.root / 'overhead' / 'direction_kernel.csv'}")
        return
    summary = kernel_summary(frame)
    _emit(report, out, "direction_kernel", "mL-BFGS direction kernel", kernel_markdown(summary), summary)


def _distributed(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    if data.distributed is None:
        _skip(report, log, "distributed scaling", f"no CSVs under {data.root / 'distributed'}")
        return
    summary = scaling_summary(data.distributed)
    _emit(report, out, "distributed_scaling", "Distributed scaling", scaling_markdown(summary), summary,
          figure=plot_scaling(data.distributed), key="distributed")


def _fairness(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    runs = load_fairness(data.root)
    if runs is None:
        _skip(report, log, "fairness", f"no run CSVs under {data.root / 'fairness'}/<mode>-<condition>/runs")
        return
    summary = fairness_summary(runs)
    _emit(report, out, "fairness", "Fairness of the training clock", fairness_markdown(summary), summary,
          figure=plot_fairness(summary))


def _runner(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    runs, startup = load_runner(data.root)
    if runs is None:
        _skip(report, log, "runner overhead", f"no {data.root / 'runner' / 'runner.csv'}")
        return
    summary = runner_summary(runs)
    _emit(report, out, "runner", "Runner overhead", runner_markdown(summary, startup), summary)


def _variants(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    runs = load_variant_runs(data.root)
    if runs is None:
        _skip(report, log, "ours vs the authors' code", f"no finished runs under {data.root / 'authors' / 'runs'}")
        return
    summary = variant_summary(runs)
    _emit(report, out, "authors_variants", "Ours against the authors' code", variant_markdown(summary), summary,
          "%.6f", figure=plot_variants(runs, summary))


def _sensitivity(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    trials = load_trials(data.root)
    if trials is None:
        _skip(report, log, "lr sensitivity", f"no {data.root / 'tuning'}/*_trials.csv")
        return
    summary = sensitivity_summary(trials)
    _emit(report, out, "lr_sensitivity", "Learning-rate sensitivity of the tuning trials",
          sensitivity_markdown(summary), summary, "%.6f", figure=plot_sensitivity(trials))


def _threads(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    frame = load_threads(data.root)
    if frame is None:
        _skip(report, log, "threads", f"no {data.root / 'threads' / 'threads.csv'}")
        return
    summary = threads_summary(frame)
    _emit(report, out, "threads", "Threads per process", threads_markdown(summary), summary)


def _compiled(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    loaded = load_compiled(data.root)
    if loaded is None:
        _skip(report, log, "compiled step", f"no {data.root / 'compile'}/steps.csv and summary.csv")
        return
    summary = compiled_summary(*loaded)
    _emit(report, out, "compiled_step", "Compiled step", compiled_markdown(summary), summary)


def _ablations(data: Results, out: Path, opts: Options, report: Report, log: Callable[[str], None]) -> None:
    runs = load_variant_runs(data.root, ABLATION_FOLDER)
    if runs is None:
        _skip(report, log, "ablations", f"no finished runs under {data.root / ABLATION_FOLDER / 'runs'}")
        return
    reference = centre(runs)
    summary = variant_summary(runs, reference)
    _emit(report, out, "ablations", "Ablations at the long length", ablation_markdown(summary, reference), summary,
          figure=plot_variants(runs, summary, "mL-BFGS ablations, one setting at a time"))


#: Figure groups in the order they are generated.
GROUPS: tuple[Callable[[Results, Path, Options, Report, Callable[[str], None]], None], ...] = (
    _convergence,
    _stability,
    _overhead,
    _kernel,
    _distributed,
    _fairness,
    _threads,
    _compiled,
    _runner,
    _variants,
    _ablations,
    _sensitivity,
)


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
    for group in GROUPS:
        group(data, out, opts, report, log)
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
