"""Tune every optimizer of a preset with the same budget, then run the best settings with every seed.

    python -m experiments.tune --preset long [--workloads ...] [--stages trials final]
                               [--out DIR] [--mode lockstep|separate] [--jobs 2] [--dry-run]

See experiments/tuning.py for the protocol (search spaces, quasi-random trials, trial length, choice).
Workload by workload in the preset's order: the trials of every optimizer (seed ``tuning.seed``), the
choice, then the finals. Resumable: rerun it; finished runs are skipped. The record goes to
``<out>/tune_<preset>.json``; ``python -m analysis --results <out>`` draws the figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from experiments.manifest import git_state, is_finished, now_iso
from experiments.suite import add_execution_arguments, exec_options, execute, finish_record, resolve_preset
from experiments.sweep import reuse_runs
from experiments.tuning import check_tuning, choose, final_runs, trial_runs, tuning_preset

STAGES = ("trials", "final")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help="a preset with a 'tuning' section (e.g. long)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--workloads", nargs="+", default=None, help="only these workloads of the preset")
    add_execution_arguments(p)
    args = p.parse_args(argv)
    try:
        preset = resolve_preset(args.preset, args.out, args.threads)
        opts = exec_options(preset, args)
        entries = [e for e in preset.runs if not args.workloads or e.workload in args.workloads]
        if not entries:
            raise ValueError(f"workloads must be among {[e.workload for e in preset.runs]}, got {args.workloads}")
        from baselines import available_optimizers

        names = {e.workload: (list(e.optimizers) if e.optimizers != "all" else available_optimizers())
                 for e in entries}
        spaces = check_tuning(preset, names)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = time.time()
    trial_opts = replace(opts, results=Path(tuning_preset(preset).results))
    print(f"[tune] preset {preset.name}, {args.mode} mode, {args.jobs} job(s), output in {preset.results}/",
          flush=True)
    record: dict[str, Any] = {"preset": preset.name, "mode": args.mode, "start_time": now_iso(), **git_state(),
                              "command": " ".join(["python -m experiments.tune", *(argv or sys.argv[1:])]),
                              "tuning": preset.tuning, "runs": []}
    record_path = Path(preset.results) / f"tune_{preset.name}.json"
    failures = 0
    trials = []
    for entry in entries:
        trials += [t for name in names[entry.workload] for t in trial_runs(preset, entry, name, spaces[name])]
        mine = [t for t in trials if t.workload == entry.workload]
        if "trials" in args.stages:
            failures += execute([t.run for t in mine], record, record_path, trial_opts)
        if args.dry_run:
            continue
        unfinished = [t.run.run_id for t in mine if not is_finished(t.run.manifest)]
        if unfinished:  # a choice from partial trials would not be the protocol's
            print(f"[tune] {entry.workload}: {len(unfinished)} trial(s) not finished ({unfinished[:3]}...); "
                  "rerun to complete them before the choice and the finals", file=sys.stderr, flush=True)
            failures += len(unfinished)
            continue
        chosen = choose(preset, trials)
        print(f"[tune] {entry.workload}: chosen {chosen.get(entry.workload)}", flush=True)
        if "final" in args.stages:
            finals = [r for name in names[entry.workload]
                      for r in final_runs(preset, entry, name, chosen[entry.workload][name])]
            finals.sort(key=lambda r: r.seed)
            reuse_runs(Path(tuning_preset(preset).results) / "runs", finals)
            failures += execute(finals, record, record_path, opts)
    if args.dry_run:
        return 0
    return finish_record(record, record_path, preset, args, started, failures)


if __name__ == "__main__":
    sys.exit(main())
