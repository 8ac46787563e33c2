"""Run a preset's (workload x optimizer x seed) grid, one subprocess per run, then the analysis.

    python -m experiments.suite --preset quick|full [--seeds 0 1 2] [--workloads ...] [--optimizers ...]

Finished runs (manifest status finished) are skipped, unfinished ones resume from their checkpoint,
so rerunning after an interruption continues where it stopped. Order: seed, workload, optimizer,
so that every optimizer has a first seed before any gets a second. A failing run is reported and
the grid goes on; the exit status is 1 when any run failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from dataclasses import dataclass
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
    args: tuple[str, ...]  # arguments of ``python -m experiments.run``
    manifest: Path


def plan(preset: Preset, seeds: list[int] | None = None, workloads: list[str] | None = None,
         optimizers: list[str] | None = None, threads: int | None = None) -> list[PlannedRun]:
    from baselines import available_optimizers

    registered = available_optimizers()
    runs_dir = Path(preset.results) / "runs"
    checkpoints = Path("results/checkpoints") / preset.name
    out = []
    for seed in seeds if seeds is not None else preset.seeds:
        for entry in preset.runs:
            if workloads and entry.workload not in workloads:
                continue
            names = registered if entry.optimizers == "all" else list(entry.optimizers)
            for name in names:
                if name not in registered:
                    raise ValueError(f"preset {preset.name}: optimizer must be one of {registered}, got {name!r}")
                if optimizers and name not in optimizers:
                    continue
                spec = make_run_spec(entry.workload, name, seed, overrides=entry.set, epochs=entry.epochs,
                                     max_iters=entry.max_iters)
                args = ["--workload", entry.workload, "--optimizer", name, "--seed", str(seed),
                        "--out", str(runs_dir), "--checkpoint-dir", str(checkpoints), "--no-progress"]
                if entry.epochs is not None:
                    args += ["--epochs", str(entry.epochs)]
                if entry.max_iters is not None:
                    args += ["--max-iters", str(entry.max_iters)]
                if threads is not None:
                    args += ["--threads", str(threads)]
                for key, value in entry.set.items():
                    args += ["--set", f"{key}={_cli_value(value)}"]
                out.append(PlannedRun(entry.workload, name, seed, spec.run_id, tuple(args),
                                      spec.manifest_path(runs_dir)))
    return out


def _cli_value(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def run_analysis(preset: Preset) -> dict[str, Any]:
    if importlib.util.find_spec("analysis") is None or importlib.util.find_spec("analysis.__main__") is None:
        print("[suite] no runnable `analysis` package: skipping the figures", flush=True)
        return {"status": "skipped (analysis not importable)"}
    cmd = [sys.executable, "-m", "analysis", *(preset.analysis_args or ("--results", preset.results))]
    print(f"[suite] {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    rc = subprocess.call(cmd)
    return {"command": cmd, "returncode": rc, "seconds": round(time.monotonic() - start, 3)}


def execute(runs: list[PlannedRun], record: dict[str, Any], record_path: Path, dry_run: bool = False) -> int:
    """Run ``runs`` in order, one subprocess each, skipping finished ones; return the number that failed.

    ``record`` (written to ``record_path`` after every run) collects each run's status and seconds.
    """
    started = time.time()
    failures = 0
    for i, run in enumerate(runs, 1):
        label = f"[suite {i}/{len(runs)}] {run.run_id}"
        if is_finished(run.manifest):
            print(f"{label}: finished, skipped", flush=True)
            record["runs"].append({"run_id": run.run_id, "status": "skipped (finished)"})
            continue
        if dry_run:
            print(f"{label}: would run python -m experiments.run {' '.join(run.args)}", flush=True)
            continue
        print(f"{label}: running", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", "experiments.run", *run.args])
        secs = round(time.monotonic() - t0, 3)
        status = "finished" if rc == 0 else f"failed (exit {rc})"
        failures += rc != 0
        print(f"{label}: {status} in {secs:.1f} s", flush=True)
        record["runs"].append({"run_id": run.run_id, "status": status, "seconds": secs})
        record["runs_s"] = round(time.time() - started, 3)
        write_json(record_path, record)
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help=f"one of {available_presets()} or a JSON file")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the preset's seeds")
    p.add_argument("--workloads", nargs="+", default=None, help="only these workloads of the preset")
    p.add_argument("--optimizers", nargs="+", default=None, help="only these optimizers of the preset")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: all cores)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state, run nothing")
    p.add_argument("--no-analysis", action="store_true", help="do not call `python -m analysis` at the end")
    p.add_argument("--started-at", type=float, default=None,
                   help="unix time the calling script started (run_all.sh), for the total time")
    args = p.parse_args(argv)
    try:
        preset = load_preset(args.preset)
        runs = plan(preset, args.seeds, args.workloads, args.optimizers, args.threads)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    started = time.time()
    record: dict[str, Any] = {"preset": preset.name, "description": preset.description,
                              "start_time": now_iso(), **git_state(), "command": " ".join(sys.argv), "runs": []}
    record_path = Path(preset.results) / f"suite_{preset.name}.json"
    failures = execute(runs, record, record_path, args.dry_run)
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
