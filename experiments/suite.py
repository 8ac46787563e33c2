"""Run a preset's (workload x optimizer x seed) grid, then the analysis.

    python -m experiments.suite --preset quick|full [--out DIR] [--mode lockstep|separate] [--force]
                                [--seeds 0 1 2] [--workloads ...] [--optimizers ...] [--dry-run]

Output: ``--out DIR`` (default ``runs/<preset>``, ignored by git): runs in ``DIR/runs``, checkpoints in
``DIR/checkpoints``, figures in ``DIR/figures``, the record ``DIR/suite_<preset>.json``.

Processes: in ``lockstep`` mode (the default) one subprocess per (workload, seed) trains all its
optimizers, an iteration each in turn, each timed on its own clock (``experiments/lockstep.py``); in
``separate`` mode one subprocess per run. Finished runs (manifest status finished) are skipped unless
``--force``; unfinished ones resume from their checkpoints, so rerunning after an interruption
continues where it stopped. Order: seed, workload, optimizer, so that every optimizer has a first
seed before any gets a second. A failing process is reported and the grid goes on; the exit status
is 1 when any run failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from experiments.atomic import write_json
from experiments.manifest import git_state, is_finished, now_iso
from experiments.presets import Preset, available_presets, load_preset
from experiments.runspec import make_run_spec


@dataclass(frozen=True)
class PlannedRun:
    workload: str
    optimizer: str
    seed: int
    run_id: str
    args: tuple[str, ...]  # the per-run arguments of ``python -m experiments.run``
    manifest: Path
    data_key: str = ""  # runs with equal (workload, seed, data_key) can share a lockstep process

    @property
    def group_key(self) -> tuple[str, int, str]:
        return (self.workload, self.seed, self.data_key)


def plan(preset: Preset, seeds: list[int] | None = None, workloads: list[str] | None = None,
         optimizers: list[str] | None = None) -> list[PlannedRun]:
    """The runs of ``preset`` (seed-major: every optimizer gets a first seed before any a second), with
    their files under ``<preset.results>/runs``."""
    import json

    from baselines import available_optimizers

    registered = available_optimizers()
    runs_dir = Path(preset.results) / "runs"
    out = []
    entry_seeds = {s for e in preset.runs for s in e.seeds or ()}
    every_seed = seeds if seeds is not None else sorted({*preset.seeds, *entry_seeds})
    for seed in every_seed:
        for entry in preset.runs:
            if workloads and entry.workload not in workloads:
                continue
            if seeds is None and seed not in (entry.seeds or preset.seeds):
                continue
            names = registered if entry.optimizers == "all" else list(entry.optimizers)
            for name in names:
                if name not in registered:
                    raise ValueError(f"preset {preset.name}: optimizer must be one of {registered}, got {name!r}")
                if optimizers and name not in optimizers:
                    continue
                spec = make_run_spec(entry.workload, name, seed, overrides=entry.set, epochs=entry.epochs,
                                     max_iters=entry.max_iters)
                args = ["--workload", entry.workload, "--optimizer", name, "--seed", str(seed)]
                if entry.epochs is not None:
                    args += ["--epochs", str(entry.epochs)]
                if entry.max_iters is not None:
                    args += ["--max-iters", str(entry.max_iters)]
                if entry.set:
                    args += ["--set", *(f"{key}={_cli_value(value)}" for key, value in entry.set.items())]
                data_key = json.dumps(spec.workload.to_dict()["data"], sort_keys=True)
                out.append(PlannedRun(entry.workload, name, seed, spec.run_id, tuple(args),
                                      spec.manifest_path(runs_dir), data_key))
    return out


def _cli_value(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def run_analysis(preset: Preset) -> dict[str, Any]:
    if importlib.util.find_spec("analysis") is None or importlib.util.find_spec("analysis.__main__") is None:
        print("[suite] no runnable `analysis` package: skipping the figures", flush=True)
        return {"status": "skipped (analysis not importable)"}
    results = Path(preset.results)
    cmd = [sys.executable, "-m", "analysis",
           *(preset.analysis_args or ("--results", str(results), "--out", str(results / "figures"), "--quiet"))]
    print(f"[suite] {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    rc = subprocess.call(cmd)
    return {"command": cmd, "returncode": rc, "seconds": round(time.monotonic() - start, 3)}


@dataclass(frozen=True)
class ExecOptions:
    """How ``execute`` runs the planned runs."""

    results: Path  # runs go to <results>/runs, checkpoints to <results>/checkpoints
    mode: str = "lockstep"  # "lockstep": one process per (workload, seed); "separate": one per run
    threads: int | None = None
    force: bool = False
    dry_run: bool = False
    jobs: int = 1  # processes at a time (each with its own torch threads)


MODES = ("lockstep", "separate")


def groups(runs: list[PlannedRun], mode: str, jobs: int = 1) -> list[list[PlannedRun]]:
    """Processes to start, in order: one run each (separate), or the runs sharing workload, seed and
    data, in the order of their first run (lockstep).

    In lockstep a group of at least ``2 * jobs`` runs is dealt into ``jobs`` parts (run i to part
    i mod jobs), so that ``--jobs N`` keeps N cores busy when there are fewer groups than cores (the
    trials of a tuning stage are one group). Each run keeps its own RNG and clock, so the parts train
    the same numbers as the whole group would.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs}")
    if mode == "separate":
        return [[r] for r in runs]
    out: dict[tuple[str, int, str], list[PlannedRun]] = {}
    for run in runs:
        out.setdefault(run.group_key, []).append(run)
    parts = []
    for group in out.values():
        n = jobs if len(group) >= 2 * jobs else 1
        parts += [group[i::n] for i in range(n)]
    return parts


def _command(group: list[PlannedRun], opts: ExecOptions) -> list[str]:
    import json

    common = ["--out", str(opts.results / "runs"), "--checkpoint-dir", str(opts.results / "checkpoints"),
              "--no-progress"]
    if opts.threads is not None:
        common += ["--threads", str(opts.threads)]
    if opts.force:
        common += ["--force"]
    if len(group) == 1:
        return [sys.executable, "-m", "experiments.run", *group[0].args, *common]
    return [sys.executable, "-m", "experiments.run", "--group", json.dumps([list(r.args) for r in group]), *common]


def execute(runs: list[PlannedRun], record: dict[str, Any], record_path: Path, opts: ExecOptions) -> int:
    """Run ``runs`` (lockstep groups or one process each), skipping finished ones unless forced; return
    the number of runs that failed.

    ``record`` (written to ``record_path`` after every process) collects each run's status and seconds.
    """
    started = time.time()
    failures = 0
    todo = []
    for run in runs:
        if not opts.force and is_finished(run.manifest):
            print(f"[suite] {run.run_id}: finished, skipped", flush=True)
            record["runs"].append({"run_id": run.run_id, "status": "skipped (finished)"})
        else:
            todo.append(run)
    batches = groups(todo, opts.mode, opts.jobs)
    labels = [f"[suite {i}/{len(batches)}]" + (" lockstep" if len(g) > 1 else "") for i, g in enumerate(batches, 1)]
    if opts.dry_run:
        for label, group in zip(labels, batches, strict=True):
            cmd = _command(group, opts)
            print(f"{label} {', '.join(r.run_id for r in group)}: would run {' '.join(cmd[1:])}", flush=True)
        return 0
    running: list[tuple[subprocess.Popen, float, str, list[PlannedRun]]] = []
    pending = list(zip(labels, batches, strict=True))

    def reap(proc: subprocess.Popen, t0: float, label: str, group: list[PlannedRun]) -> int:
        rc = proc.wait()
        secs = round(time.monotonic() - t0, 3)
        failed = 0
        for run in group:
            ok = rc == 0 and is_finished(run.manifest)
            failed += not ok
            record["runs"].append({"run_id": run.run_id, "status": "finished" if ok else f"failed (exit {rc})",
                                   "process_seconds": secs, "mode": opts.mode, "group_size": len(group)})
        ids = ", ".join(r.run_id for r in group)
        print(f"{label} {ids}: {'finished' if rc == 0 else f'failed (exit {rc})'} in {secs:.1f} s", flush=True)
        record["runs_s"] = round(time.time() - started, 3)
        write_json(record_path, record)
        return failed

    try:
        while pending or running:
            while pending and len(running) < opts.jobs:
                label, group = pending.pop(0)
                print(f"{label} {', '.join(r.run_id for r in group)}: running", flush=True)
                running.append((subprocess.Popen(_command(group, opts)), time.monotonic(), label, group))
            done = next((item for item in running if item[0].poll() is not None), None)
            if done is None:
                time.sleep(0.2)
                continue
            running.remove(done)
            failures += reap(*done)
    finally:  # interrupted: stop the children (their checkpoints let the next invocation resume)
        for proc, *_ in running:
            proc.terminate()
        for proc, *_ in running:
            proc.wait()
    return failures


def finish_record(record: dict[str, Any], record_path: Path, preset: Preset, args: argparse.Namespace,
                  started: float, failures: int) -> int:
    """Run the analysis (unless disabled), close the record and write it; the exit status."""
    record["analysis"] = {"status": "disabled"} if args.no_analysis else run_analysis(preset)
    record.update(end_time=now_iso(), seconds=round(time.time() - started, 3), failed_runs=failures)
    if args.started_at is not None:
        record["total_s_including_setup"] = round(time.time() - args.started_at, 3)
    write_json(record_path, record)
    return 1 if failures else 0


def add_execution_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by the suite and the staged sweep: where runs go and how processes are laid out."""
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
    p.add_argument("--force", action="store_true", help="retrain finished runs and discard checkpoints")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    p.add_argument("--no-analysis", action="store_true", help="do not call `python -m analysis` at the end")
    p.add_argument("--started-at", type=float, default=None,
                   help="unix time the calling script started (run_all.sh), for the total time")


def resolve_preset(name: str, out: Path | None, threads: int | None) -> Preset:
    """Load a preset and point it at its output folder; ValueError for bad values."""
    preset = load_preset(name)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    return replace(preset, results=str(out if out is not None else Path("runs") / preset.name))


def exec_options(preset: Preset, args: argparse.Namespace) -> ExecOptions:
    if args.jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {args.jobs}")
    return ExecOptions(results=Path(preset.results), mode=args.mode, threads=args.threads, force=args.force,
                       dry_run=args.dry_run, jobs=args.jobs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help=f"one of {available_presets()} or a JSON file")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    p.add_argument("--workloads", nargs="+", default=None, help="only these workloads of the preset")
    p.add_argument("--optimizers", nargs="+", default=None, help="only these optimizers of the preset")
    add_execution_arguments(p)
    args = p.parse_args(argv)
    try:
        preset = resolve_preset(args.preset, args.out, args.threads)
        runs = plan(preset, args.seeds, args.workloads, args.optimizers)
        opts = exec_options(preset, args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    started = time.time()
    print(f"[suite] preset {preset.name}: {len(runs)} runs, {args.mode} mode, output in {preset.results}/", flush=True)
    from experiments.trainer import DEFAULT_THREADS

    record: dict[str, Any] = {"preset": preset.name, "description": preset.description, "mode": args.mode,
                              "threads": args.threads or DEFAULT_THREADS, "start_time": now_iso(), **git_state(),
                              "command": " ".join(["python -m experiments.suite", *(argv or sys.argv[1:])]),
                              "runs": []}
    record_path = Path(preset.results) / f"suite_{preset.name}.json"
    failures = execute(runs, record, record_path, opts)
    if args.dry_run:
        return 0
    record["runs_s"] = round(time.time() - started, 3)
    record["analysis"] = {"status": "disabled"} if args.no_analysis else run_analysis(preset)
    record["end_time"] = now_iso()
    record["suite_s"] = round(time.time() - started, 3)
    if args.started_at is not None:
        record["total_s_including_setup"] = round(time.time() - args.started_at, 3)
    record["failed_runs"] = failures
    write_json(record_path, record)
    print(f"[suite] {len(runs)} runs, {failures} failed, {record['suite_s']:.1f} s; record: {record_path}")
    return 1 if failures else 0

if __name__ == "__main__":
    sys.exit(main())
