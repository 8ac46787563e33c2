"""Run a preset, stage by stage, then the analysis.

    python -m experiments.suite --preset NAME [--stages ...] [--out DIR] [--mode lockstep|separate]
                                [--jobs N] [--threads N] [--force] [--retrain-stale] [--dry-run] [--no-analysis]
                                [--workloads ...] [--optimizers ...] [--seeds ...]
                                [--data-dir DIR] [--set KEY=VALUE ...] [--max-iters N]

The stages follow from the preset's sections (``experiments/suite/stages/__init__.py``): with a ``sweep``
section, ``sweep``, ``final`` (and ``ablation`` with an ``ablation`` section): a learning-rate sweep,
the finals at the chosen rates, the beta ablation (``experiments/suite/stages/sweep.py``); with a ``tuning``
section, ``trials``, ``final``: AlgoPerf-style equal-budget tuning, then the finals at the chosen
settings (``experiments/suite/stages/tuning.py``, protocol in ``experiments/suite/search.py``); otherwise ``grid``,
the (workload x optimizer x seed) grid as listed. ``analysis`` (``python -m analysis``) comes last.
``--stages`` runs only those (in the preset's order); ``--no-analysis`` leaves the analysis out.

Output: ``--out DIR`` (default ``runs/<preset>``, ignored by git): runs in ``DIR/runs``, checkpoints in
``DIR/checkpoints``, sweep runs in ``DIR/sweep``, tuning trials in ``DIR/tuning``, figures in
``DIR/figures``, the record ``DIR/suite_<preset>.json`` (every command run on DIR, appended: each stage's
runs, their status and seconds; the choices; the seconds over all commands; ``experiments/suite/stages/record.py``).

Processes: in ``lockstep`` mode (the default) one subprocess per (workload, seed) trains all its
optimizers, an iteration each in turn, each timed on its own clock (``experiments/runner/lockstep.py``); in
``separate`` mode one subprocess per run. Finished runs (manifest status finished) are skipped unless
``--force``; unfinished ones resume from their checkpoints, so rerunning after an interruption
continues where it stopped. A run recorded under optimizer settings the code no longer builds for its id (a
registry default changed since; ``experiments/runner/drift.py``) is reported as failed, or with
``--retrain-stale`` moved to ``<out>/stale/<time>/`` and retrained, resumably. Order: seed, workload,
optimizer, so that every optimizer has a first seed
before any gets a second. A failing process is reported and the preset goes on; the exit status is 1
when any run or the analysis failed, 2 for bad arguments (a malformed preset among them) or for stages that
need an earlier one not yet run (``--stages final`` before the sweep or the trials have finished), 143
when stopped by SIGTERM (``kill <pid>``: as on Ctrl-C, the child processes are stopped too; a rerun
resumes). ``--workloads`` / ``--optimizers`` select the runs of every
stage; ``--seeds`` replaces the seeds of the grid, the finals and the ablation (not the seed of the
sweep or of the trials). ``--data-dir`` / ``--set`` / ``--max-iters`` reach every run of every stage
(after the preset entry's own settings, so they win; ``--max-iters`` caps a run's length): e.g. the paper
preset on a folder of data, or shrunk to a few iterations for a test. Optimizers may be registered names or
``module.path:ClassName`` (the runner checks those). A preset entry with ``nproc_per_node`` N trains each run
through torchrun on up to N GPUs, in one process without two GPUs (``experiments/suite/execution.py``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from experiments.overrides import parse_overrides
from experiments.runner.manifest import git_state
from experiments.suite.execution import MODES, ExecOptions, groups
from experiments.suite.planning import PlannedRun, entry_optimizers, plan
from experiments.suite.presets import Preset, available_presets, load_preset
from experiments.suite.stages import ANALYSIS_STAGE, preset_kind, preset_stages, select_stages
from experiments.suite.stages import grid as grid_stage
from experiments.suite.stages import sweep as sweep_stage
from experiments.suite.stages import tuning as tuning_stage
from experiments.suite.stages.analysis import analysis_command, comparison_lines, run_analysis
from experiments.suite.stages.context import StageContext
from experiments.suite.stages.record import SuiteRecord
from experiments.suite.stale import sweep_stale

# importable from here as before: the benchmarks and tests plan and group through the suite
__all__ = ["MODES", "ExecOptions", "PlannedRun", "groups", "main", "plan", "resolve_preset", "stage_runner"]


def stage_runner(preset: Preset) -> ModuleType:
    """The module that checks (``check(preset)``) and runs (``run(ctx)``) the stages of ``preset``."""
    return {"grid": grid_stage, "sweep": sweep_stage, "tuning": tuning_stage}[preset_kind(preset)]


def resolve_preset(name: str, out: Path | None, threads: int | None) -> Preset:
    """Load a preset (a name of :func:`available_presets` or a JSON file) and point it at its output
    folder ``out`` (default ``runs/<name>``); ValueError for bad values."""
    preset = load_preset(name)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    return replace(preset, results=str(out if out is not None else Path("runs") / preset.name))


def with_run_overrides(preset: Preset, overrides: dict[str, Any], max_iters: int | None,
                       data_dir: str | None) -> Preset:
    """``preset`` with ``overrides`` (dotted workload keys, as ``--set``) applied to every entry after its own
    settings, ``data.dir`` set to ``data_dir`` (not part of run ids), and every run capped at ``max_iters``
    iterations. ValueError for a ``max_iters`` below 1."""
    if max_iters is not None and max_iters < 1:
        raise ValueError(f"max_iters must be a positive integer, got {max_iters}")
    extra = dict(overrides)
    if data_dir is not None:
        extra["data.dir"] = data_dir
    entries = []
    for entry in preset.runs:
        cap = entry.max_iters if max_iters is None else min(max_iters, entry.max_iters or max_iters)
        entries.append(replace(entry, set={**entry.set, **extra}, max_iters=cap))
    return replace(preset, runs=tuple(entries))


def check_selection(preset: Preset, workloads: list[str] | None, optimizers: list[str] | None,
                    seeds: list[int] | None) -> None:
    """ValueError naming the allowed values when ``--workloads`` / ``--optimizers`` name something the
    preset does not run, or ``--seeds`` a negative seed."""
    present = [e.workload for e in preset.runs]
    unknown = [w for w in workloads or () if w not in present]
    if unknown:
        raise ValueError(f"workloads must be among {sorted(set(present))} (preset {preset.name}), got {unknown}")
    entries = [e for e in preset.runs if not workloads or e.workload in workloads]
    names = sorted({n for e in entries for n in entry_optimizers(e)})
    unknown = [n for n in optimizers or () if n not in names]
    if unknown:
        raise ValueError(f"optimizers must be among {names} (preset {preset.name}), got {unknown}")
    if any(s < 0 for s in seeds or ()):
        raise ValueError(f"seeds must be non-negative integers, got {seeds}")


def preset_listing() -> str:
    """Every preset of ``experiments/suite/presets`` with its stages, for ``--help``."""
    lines = ["presets (stages; --stages picks among them):"]
    for name in available_presets():
        try:
            stages = ", ".join(preset_stages(load_preset(name)))
        except ValueError as err:
            stages = f"cannot be read: {err}"
        lines.append(f"  {name:<16} {stages}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m experiments.suite``."""
    p = argparse.ArgumentParser(prog="python -m experiments.suite", description=__doc__, epilog=preset_listing(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help=f"one of {available_presets()} or a JSON file")
    p.add_argument("--stages", nargs="+", default=None,
                   help="only these stages of the preset (default: all, see below), run in the preset's order")
    p.add_argument("--workloads", nargs="+", default=None, help="only these workloads of the preset")
    p.add_argument("--optimizers", nargs="+", default=None, help="only these optimizers of the preset")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="replace the seeds of the grid, the finals and the ablation")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder: runs in <out>/runs, checkpoints in <out>/checkpoints, figures in "
                        "<out>/figures (default: runs/<preset>, ignored by git)")
    p.add_argument("--mode", choices=MODES, default="lockstep",
                   help="lockstep (default): the optimizers of one (workload, seed) train in one process, "
                        "an iteration each in turn, each timed on its own; separate: one process per run")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: the runner's, see python -m experiments.run --help)")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes at a time (default 1; 2 single-thread processes use 2 cores)")
    p.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="progress of each running process (iterations, rate, time left, each optimizer's "
                        "smoothed loss): a bar on a terminal, else a line every SECONDS (default 30; 0: never)")
    p.add_argument("--force", action="store_true", help="retrain finished runs and discard checkpoints")
    p.add_argument("--retrain-stale", action="store_true",
                   help="retrain runs recorded under other optimizer settings (a changed default), their files and "
                        "checkpoints first moved to <out>/stale/<time>/; the other runs are skipped or resumed")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs of the selected stages and their state, run and write nothing")
    p.add_argument("--no-analysis", action="store_true", help="leave out the analysis stage")
    p.add_argument("--data-dir", default=None,
                   help="dataset folder of every run (sets data.dir; e.g. CIFAR's python folders and ImageNet's "
                        "train/ and val/ for the paper preset)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a workload key of every run (after the preset's own): batch_size=8, amp=bf16, "
                        "optimizer.lr=0.05; changes run ids like the runner's --set")
    p.add_argument("--max-iters", type=int, default=None, help="cap every run at N iterations")
    p.add_argument("--started-at", type=float, default=None,
                   help="unix time the calling script started (run_all.sh), for the total time")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); the exit status (0, 1 when a run or the
    analysis failed, 2 for bad arguments or stages selected before the stage they need has run)."""
    args = build_parser().parse_args(argv)
    try:
        preset = resolve_preset(args.preset, args.out, args.threads)
        if args.overrides or args.max_iters is not None or args.data_dir is not None:
            preset = with_run_overrides(preset, parse_overrides(args.overrides), args.max_iters, args.data_dir)
        stages = select_stages(preset, args.stages, analysis=not args.no_analysis)
        runner = stage_runner(preset)
        runner.check(preset)
        check_selection(preset, args.workloads, args.optimizers, args.seeds)
        if args.jobs < 1:
            raise ValueError(f"jobs must be a positive integer, got {args.jobs}")
        if not args.progress_every >= 0:  # also NaN
            raise ValueError(f"--progress-every must be >= 0 seconds (0: never), got {args.progress_every}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from experiments.runner.training import DEFAULT_THREADS

    opts = ExecOptions(results=Path(preset.results), mode=args.mode, threads=args.threads, force=args.force,
                       retrain_stale=args.retrain_stale,
                       dry_run=args.dry_run, jobs=args.jobs, progress_every=args.progress_every)
    own = {"preset": preset.name, "description": preset.description,
           **({"sweep": preset.sweep} if preset.sweep else {}), **({"tuning": preset.tuning} if preset.tuning else {})}
    command = {"command": " ".join(["python -m experiments.suite", *(sys.argv[1:] if argv is None else argv)]),
               "stages_selected": list(stages), "mode": args.mode, "threads": args.threads or DEFAULT_THREADS,
               "jobs": args.jobs, **git_state()}
    record = SuiteRecord(Path(preset.results) / f"suite_{preset.name}.json", own, command, dry_run=args.dry_run)
    ctx = StageContext(preset, stages, opts, record, args.workloads, args.optimizers, args.seeds)
    try:
        runner.check_ready(ctx)  # e.g. the finals without the sweep: the sweep must have finished
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[suite] preset {preset.name}: stages {', '.join(stages)}; {args.mode} mode, {args.jobs} job(s), "
          f"output in {preset.results}/", flush=True)
    if args.retrain_stale:
        for manifest, drift in sweep_stale(Path(preset.results), args.workloads, args.optimizers, args.dry_run):
            what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in drift.items())
            print(f"[suite] {manifest.stem}: recorded under other settings ({what}); "
                  f"{'would be set' if args.dry_run else 'set'} aside in {Path(preset.results) / 'stale'}", flush=True)
    failures = runner.run(ctx) if set(stages) - {ANALYSIS_STAGE} else 0
    if args.dry_run:
        return 0
    analysis_status = 0
    if ANALYSIS_STAGE in stages:
        analysis = record.current["stages"][ANALYSIS_STAGE] = run_analysis(preset)
        analysis_status = analysis.get("returncode", 0)
    record.finish(failures, args.started_at)
    print(f"[suite] {failures} run(s) failed, {record.current['seconds']:.1f} s ({record.data['seconds']:.1f} s "
          f"over the {len(record.data['invocations'])} command(s) of the record); record: {record.path}", flush=True)
    if ANALYSIS_STAGE in stages and not analysis_status:
        for line in comparison_lines(Path(preset.results) / "figures"):
            print(f"[suite] {line}", flush=True)
    if analysis_status:
        print(f"[suite] error: the analysis failed (exit {analysis_status}): "
              f"python {' '.join(analysis_command(preset)[1:])}", file=sys.stderr, flush=True)
    return 1 if failures or analysis_status else 0

