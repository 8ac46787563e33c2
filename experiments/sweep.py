"""The staged suite: learning-rate sweep, final runs at the chosen rates, beta ablation, analysis.

    python -m experiments.sweep --preset full [--stages sweep final ablation] [--workloads ...] [--dry-run]

Workload by workload (in the preset's order):

1. sweep: every (workload, optimizer) of the preset at every learning rate of the preset's
   ``sweep.grids[optimizer]``, with seed ``sweep.seed``, into ``<results>/sweep/runs``. The rate with
   the best final test accuracy (ties: lower final training loss) is chosen; a run that diverged or
   failed ranks last. When the best rate is the largest (smallest) one tried, the grid is extended by
   a factor 3 up (down) and the sweep continues, at most ``sweep.extend`` times (default 2), so a
   chosen rate is not an artefact of the grid's edge. The table of all rates tried goes to
   ``<results>/sweep/<preset>_lr.csv``, the choice to ``<preset>_best_lr.json``.
2. final: every (workload, optimizer) at its chosen rate for every seed of the preset, into
   ``<results>/runs`` (what the analysis reads). The run with the sweep's seed is the very run of
   the sweep (same configuration and run id): its files are copied, not recomputed.
3. ablation: for each ``{"workload", "optimizer", "betas"}`` entry, that optimizer at its chosen rate
   with ``beta`` set to each value, for every seed (the stability figure of the paper's main claim).

Everything is resumable: finished runs are skipped and interrupted ones resume from checkpoints.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from experiments.atomic import write_json
from experiments.manifest import git_state, is_finished, now_iso
from experiments.presets import Preset, PresetRuns
from experiments.suite import (
    PlannedRun,
    add_execution_arguments,
    exec_options,
    execute,
    finish_record,
    plan,
    resolve_preset,
)

STAGES = ("sweep", "final", "ablation")


def _entries(preset: Preset, workloads: list[str] | None) -> list[PresetRuns]:
    return [e for e in preset.runs if not workloads or e.workload in workloads]


def _optimizers(entry: PresetRuns) -> list[str]:
    from baselines import available_optimizers

    return available_optimizers() if entry.optimizers == "all" else list(entry.optimizers)


def sweep_preset(preset: Preset) -> Preset:
    """Where sweep runs go: ``<results>/sweep/runs``, checkpoints apart from the final runs'."""
    return replace(preset, name=f"{preset.name}-sweep", results=str(Path(preset.results) / "sweep"))


SweptRun = tuple[str, str, float, PlannedRun]  # workload, optimizer, learning rate, the run


def sweep_runs(preset: Preset, entry: PresetRuns, name: str, lrs: list[float]) -> list[SweptRun]:
    seed = int(preset.sweep.get("seed", 0))
    out = []
    for lr in lrs:
        runs = replace(entry, optimizers=(name,), set={**entry.set, "optimizer.lr": lr})
        (planned,) = plan(replace(sweep_preset(preset), runs=(runs,)), seeds=[seed])
        out.append((entry.workload, name, float(lr), planned))
    return out


def extend_grid(lrs: list[float], best: float) -> float | None:
    """The next rate to try when ``best`` lies on the edge of ``lrs`` (None when it is inside)."""
    if best == max(lrs):
        return float(f"{best * 3:.6g}")
    if best == min(lrs):
        return float(f"{best / 3:.6g}")
    return None


def final_metrics(csv_path: Path) -> tuple[float, float]:
    """(final test accuracy, final training loss) of a run; NaN where missing or non-finite."""
    acc, loss = math.nan, math.nan
    if not csv_path.is_file():
        return acc, loss
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row["kind"] == "eval" and row["test_acc"]:
                acc = float(row["test_acc"])
            elif row["kind"] == "train" and row["train_loss"]:
                loss = float(row["train_loss"])
    return acc, loss


def choose_rates(preset: Preset, swept: list[tuple[str, str, float, PlannedRun]]) -> dict[str, dict[str, float]]:
    rows, best = [], {}
    for workload, name, lr, run in swept:
        acc, loss = final_metrics(run.manifest.with_suffix(".csv"))
        rows.append({"workload": workload, "optimizer": name, "lr": lr, "final_test_acc": acc,
                     "final_train_loss": loss, "run_id": run.run_id})
    for row in rows:
        key = (row["workload"], row["optimizer"])
        score = _score(row)
        if key not in best or score > _score(best[key]):
            best[key] = row
    for row in rows:
        row["chosen"] = best[(row["workload"], row["optimizer"])] is row
    out_dir = Path(preset.results) / "sweep"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{preset.name}_lr.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    chosen: dict[str, dict[str, float]] = {}
    for (workload, name), row in sorted(best.items()):
        chosen.setdefault(workload, {})[name] = row["lr"]
    write_json(out_dir / f"{preset.name}_best_lr.json", chosen)
    return chosen


def _score(row: dict[str, Any]) -> tuple[float, float]:
    acc, loss = row["final_test_acc"], row["final_train_loss"]
    if not math.isfinite(acc) or not math.isfinite(loss):
        return (-math.inf, -math.inf)
    return (acc, -loss)


def final_runs(preset: Preset, chosen: dict[str, dict[str, float]], workloads: list[str] | None) -> list[PlannedRun]:
    out = []
    for entry in _entries(preset, workloads):
        for name in _optimizers(entry):
            lr = chosen[entry.workload][name]
            runs = replace(entry, optimizers=(name,), set={**entry.set, "optimizer.lr": lr})
            out += plan(replace(preset, runs=(runs,)))
    return _seed_major(out)


def reuse_sweep_runs(preset: Preset, runs: list[PlannedRun]) -> None:
    """Copy the finished sweep run that is identical to a final run (same run id) into place."""
    reuse_runs(Path(sweep_preset(preset).results) / "runs", runs)


def reuse_runs(source_dir: Path, runs: list[PlannedRun]) -> None:
    """Copy each finished run of ``source_dir`` (a runs folder) that is identical to one of ``runs``
    (same run id) into place, unless that one is finished already."""
    for run in runs:
        source = source_dir / run.workload / run.manifest.name
        if is_finished(source) and not is_finished(run.manifest):
            run.manifest.parent.mkdir(parents=True, exist_ok=True)
            for suffix in (".csv", ".curvature.csv", ".json"):  # the manifest last: it marks the run finished
                src = source.with_name(run.run_id + suffix)
                if src.is_file():
                    shutil.copy2(src, run.manifest.with_name(run.run_id + suffix))


def ablation_runs(preset: Preset, chosen: dict[str, dict[str, float]], workloads: list[str] | None) -> list[PlannedRun]:
    out = []
    base = {e.workload: e for e in preset.runs}
    for item in preset.ablation:
        workload, name = item["workload"], item["optimizer"]
        if workloads and workload not in workloads:
            continue
        if workload not in base:
            raise ValueError(f"preset {preset.name}: ablation workload {workload!r} is not among its runs")
        entry = base[workload]
        for beta in item["betas"]:
            runs = replace(entry, optimizers=(name,),
                           set={**entry.set, "optimizer.lr": chosen[workload][name], "optimizer.beta": beta})
            out += plan(replace(preset, runs=(runs,)))
    return _seed_major(out)


def _seed_major(runs: list[PlannedRun]) -> list[PlannedRun]:
    # every configuration gets its first seed before any gets a second
    return sorted(runs, key=lambda r: r.seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="full")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--workloads", nargs="+", default=None)
    add_execution_arguments(p)
    args = p.parse_args(argv)
    try:
        preset = resolve_preset(args.preset, args.out, args.threads)
        opts = exec_options(preset, args)
        if not preset.sweep.get("grids"):
            raise ValueError(f"preset {preset.name}: no 'sweep' section with learning-rate grids")
        for entry in _entries(preset, args.workloads):
            missing = [n for n in _optimizers(entry) if n not in preset.sweep["grids"]]
            if missing:
                raise ValueError(f"preset {preset.name}: sweep.grids has no learning rates for {missing}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = time.time()
    sweep_opts = replace(opts, results=Path(sweep_preset(preset).results))
    print(f"[sweep] preset {preset.name}, {args.mode} mode, output in {preset.results}/", flush=True)
    record: dict[str, Any] = {"preset": preset.name, "mode": args.mode, "start_time": now_iso(), **git_state(),
                              "command": " ".join(["python -m experiments.sweep", *(argv or sys.argv[1:])]),
                              "runs": []}
    record_path = Path(preset.results) / f"sweep_{preset.name}.json"
    failures = 0
    swept: list[tuple[str, str, float, PlannedRun]] = []
    grids = preset.sweep["grids"]
    extend = int(preset.sweep.get("extend", 2))
    # workload by workload, so that the cheap workloads are complete before the long ones start
    for entry in _entries(preset, args.workloads):
        tried = {name: [float(x) for x in grids[name]] for name in _optimizers(entry)}
        todo = [s for name, lrs in tried.items() for s in sweep_runs(preset, entry, name, lrs)]
        for round_ in range(extend + 1):
            swept += todo
            if "sweep" in args.stages:
                failures += execute([r for *_, r in todo], record, record_path, sweep_opts)
            if args.dry_run:
                break
            chosen = choose_rates(preset, [s for s in swept if is_finished(s[3].manifest)])
            todo = []
            for name, lrs in tried.items():
                best = chosen.get(entry.workload, {}).get(name)
                nxt = extend_grid(lrs, best) if best is not None and round_ < extend else None
                if nxt is not None and "sweep" in args.stages:
                    lrs.append(nxt)
                    todo += sweep_runs(preset, entry, name, [nxt])
            if not todo:
                break
        if args.dry_run:
            continue
        print(f"[sweep] {entry.workload}: chosen learning rates {chosen.get(entry.workload)}", flush=True)
        if "final" in args.stages:
            finals = final_runs(preset, chosen, [entry.workload])
            reuse_sweep_runs(preset, finals)
            failures += execute(finals, record, record_path, opts)
        if "ablation" in args.stages:
            failures += execute(ablation_runs(preset, chosen, [entry.workload]), record, record_path, opts)
    if args.dry_run:
        return 0
    return finish_record(record, record_path, preset, args, started, failures)


if __name__ == "__main__":
    sys.exit(main())
