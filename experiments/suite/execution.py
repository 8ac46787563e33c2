"""Execution: planned runs as ``python -m experiments.run`` processes (lockstep groups or one each).

A run whose preset entry asks for ``nproc_per_node`` N > 1 is launched alone through torchrun
(``python -m torch.distributed.run --standalone --nproc_per_node n``) with n = min(N, GPUs) when the machine
has at least two CUDA devices; otherwise it trains in one process (on one GPU or the CPU). The global batch
is the same whatever the number of processes (``experiments/workloads/data/sampling.py``), so the fallback trains the
same run (same run id), up to the order of floating-point reductions.

Finished runs (manifest status finished) are skipped unless forced; unfinished ones resume from their
checkpoints. A failing process is reported and the others go on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.runner.atomic import write_json
from experiments.runner.drift import config_drift, drift_message
from experiments.runner.manifest import is_finished
from experiments.suite.planning import PlannedRun
from experiments.suite.progress import ProgressReporter
from experiments.suite.stale import RUN_FILE_SUFFIXES, set_aside, stale_folder

MODES = ("lockstep", "separate")


@dataclass(frozen=True)
class ExecOptions:
    """How :func:`execute` runs the planned runs."""

    results: Path  # runs go to <results>/runs, checkpoints to <results>/checkpoints
    mode: str = "lockstep"  # "lockstep": one process per (workload, seed); "separate": one per run
    threads: int | None = None  # torch threads per process (None: the runner's default)
    force: bool = False
    dry_run: bool = False
    jobs: int = 1  # processes at a time (each with its own torch threads)
    progress_every: float = 30.0  # seconds between progress lines of the running processes (0: none)
    retrain_stale: bool = False  # runs recorded under other optimizer settings: set aside, then retrained


def groups(runs: list[PlannedRun], mode: str, jobs: int = 1, split: bool = False) -> list[list[PlannedRun]]:
    """Processes to start, in order: one run each (separate), or the runs sharing workload, seed and
    data, in the order of their first run (lockstep).

    A lockstep group shares one process, so its runs' seconds compare (one clock); ``--jobs N`` runs N
    groups side by side. Only with ``split`` (the tuning trials, chosen by accuracy alone, whose seconds
    no table compares) is a group of at least ``2 * jobs`` runs dealt into ``jobs`` parts (run i to part
    i mod jobs), so that N cores stay busy when there are fewer groups than cores. Each run keeps its own
    RNG, so the parts train the same numbers as the whole group would. ValueError for a ``mode`` not in
    :data:`MODES` or ``jobs`` < 1.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs}")
    if mode == "separate":
        return [[r] for r in runs]
    out: dict[tuple[str, int, str] | str, list[PlannedRun]] = {}
    for run in runs:  # a data-parallel run has its processes to itself: torchrun trains one optimizer
        out.setdefault(run.group_key if run.nproc == 1 else run.run_id, []).append(run)
    parts = []
    for group in out.values():
        n = jobs if split and len(group) >= 2 * jobs else 1
        parts += [group[i::n] for i in range(n)]
    return parts


def cuda_devices() -> int:
    """CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch_width(nproc: int, gpus: int) -> int:
    """Processes to launch for a run that asks for ``nproc``: ``min(nproc, gpus)`` with at least two GPUs,
    else 1 (one process on one GPU or on the CPU; documented fallback, same run)."""
    return min(nproc, gpus) if nproc > 1 and gpus >= 2 else 1


def run_command(group: list[PlannedRun], opts: ExecOptions, gpus: int | None = None) -> list[str]:
    """The command line that trains ``group`` (one run, or several in lockstep): each run's request
    (:meth:`~experiments.runner.spec.RunSpec.request`) is written to a JSON file under
    ``<results>/checkpoints/requests/``, which ``--spec`` hands to the runner. A single run asking for
    several processes goes through torchrun when ``gpus`` (default: :func:`cuda_devices`) allow, see
    :func:`launch_width`."""
    common = ["--out", str(opts.results / "runs"), "--checkpoint-dir", str(opts.results / "checkpoints"),
              "--no-progress"]
    if opts.threads is not None:
        common += ["--threads", str(opts.threads)]
    if opts.force:
        common += ["--force"]
    files = [str(write_request(opts.results / "checkpoints" / "requests", run)) for run in group]
    launcher: list[str] = []
    if len(group) == 1:
        nproc = group[0].nproc
        if gpus is None:
            gpus = cuda_devices() if nproc > 1 else 0
        width = launch_width(nproc, gpus)
        if width > 1:
            launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(width)]
    return [sys.executable, *launcher, "-m", "experiments.run", "--spec", *files, *common]


def write_request(folder: Path, run: PlannedRun) -> Path:
    """``<folder>/<run id>.json``: the run's request, what ``python -m experiments.run --spec`` reads."""
    path = folder / f"{run.run_id}.json"
    write_json(path, run.spec.request())
    return path


def execute(runs: list[PlannedRun], log: list[dict[str, Any]], save: Callable[[], None], opts: ExecOptions,
            split: bool = False) -> int:
    """Run ``runs`` (lockstep groups or one process each), skipping finished ones unless forced; return
    the number of runs that failed (did not end with a finished manifest). ``split``: lockstep groups
    may be dealt into ``opts.jobs`` processes (:func:`groups`; tuning trials only).

    Each run's status (and for trained ones the process seconds, mode and group size) is appended to
    ``log``; ``save()`` is called after every process. With ``opts.dry_run`` the runs and their state
    are printed and nothing runs or is saved.
    """
    failures = 0
    todo = []
    for run in runs:
        drift = {} if opts.force else config_drift(run.spec, run.manifest)
        if drift and opts.retrain_stale:  # recorded under other defaults (experiments/runner/drift.py)
            if not opts.dry_run:
                set_aside(run.manifest, opts.results, stale_folder(opts.results))
            print(f"[suite] {run.run_id}: recorded under other settings ({', '.join(drift)}); "
                  f"{'would be set' if opts.dry_run else 'set'} aside in {opts.results / 'stale'}, retraining",
                  flush=True)
            todo.append(run)
        elif drift:
            print(f"[suite] error: {drift_message(run.run_id, drift)} (the suite: --retrain-stale sets its files "
                  f"aside in <out>/stale/ and retrains it)", flush=True)
            log.append({"run_id": run.run_id, "status": "failed (recorded under other settings)"})
            failures += 1
        elif not opts.force and is_finished(run.manifest):
            print(f"[suite] {run.run_id}: finished, skipped", flush=True)
            log.append({"run_id": run.run_id, "status": "skipped (finished)"})
        else:
            todo.append(run)
    batches = groups(todo, opts.mode, opts.jobs, split)
    labels = [f"[suite {i}/{len(batches)}]" + (" lockstep" if len(g) > 1 else "") for i, g in enumerate(batches, 1)]
    if opts.dry_run:
        for label, group in zip(labels, batches, strict=True):  # nothing is written, request files neither
            what = "; ".join(" ".join(r.args) for r in group)
            print(f"{label} {', '.join(r.run_id for r in group)}: would run {what}", flush=True)
        return 0
    running: list[tuple[subprocess.Popen, float, str, list[PlannedRun]]] = []
    pending = list(zip(labels, batches, strict=True))
    progress = ProgressReporter(opts.progress_every, bars=bool(opts.progress_every) and sys.stdout.isatty())

    def reap(proc: subprocess.Popen, t0: float, label: str, group: list[PlannedRun]) -> int:
        rc = proc.wait()
        progress.stop(label)
        secs = round(time.monotonic() - t0, 3)
        failed = 0
        for run in group:
            ok = rc == 0 and is_finished(run.manifest)
            failed += not ok
            log.append({"run_id": run.run_id, "status": "finished" if ok else f"failed (exit {rc})",
                        "process_seconds": secs, "mode": opts.mode, "group_size": len(group)})
        ids = ", ".join(r.run_id for r in group)
        print(f"{label} {ids}: {'finished' if rc == 0 else f'failed (exit {rc})'} in {secs:.1f} s", flush=True)
        save()
        return failed

    try:
        while pending or running:
            while pending and len(running) < opts.jobs:
                label, group = pending.pop(0)
                print(f"{label} {', '.join(r.run_id for r in group)}: running", flush=True)
                running.append((subprocess.Popen(run_command(group, opts)), time.monotonic(), label, group))
                progress.start(label)
            done = next((item for item in running if item[0].poll() is not None), None)
            if done is None:
                progress.report([(label, group) for _, _, label, group in running])
                time.sleep(0.2)
                continue
            running.remove(done)
            failures += reap(*done)
    finally:  # interrupted (Ctrl-C, or SIGTERM: experiments/runner/interrupt.py): stop the children, whose
        # checkpoints let the next invocation resume
        if running:
            print(f"[suite] stopping {len(running)} running process(es): "
                  f"{', '.join(str(proc.pid) for proc, *_ in running)}", file=sys.stderr, flush=True)
        for proc, *_ in running:
            proc.terminate()
        for proc, *_ in running:
            proc.wait()
    return failures


def reuse_runs(source_dir: Path, runs: list[PlannedRun], dry_run: bool = False) -> list[PlannedRun]:
    """Copy each finished run of ``source_dir`` (a runs folder, ``<dir>/<workload>/<run_id>.json``) that is
    identical to one of ``runs`` (same run id and recorded optimizer settings: :mod:`experiments.runner.drift`) into
    place, unless that one is finished already; the runs copied (with ``dry_run``: the runs that would be,
    nothing is copied)."""
    copied = []
    for run in runs:
        source = source_dir / run.workload / run.manifest.name
        if is_finished(source) and not is_finished(run.manifest) and not config_drift(run.spec, source):
            copied.append(run)
            print(f"[suite] {run.run_id}: finished in {source.parent}, {'would be ' if dry_run else ''}copied",
                  flush=True)
            if dry_run:
                continue
            run.manifest.parent.mkdir(parents=True, exist_ok=True)
            for suffix in RUN_FILE_SUFFIXES:
                src = source.with_name(run.run_id + suffix)
                if src.is_file():
                    shutil.copy2(src, run.manifest.with_name(run.run_id + suffix))
    return copied
