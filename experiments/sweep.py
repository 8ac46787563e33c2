"""The staged suite: learning-rate sweep, final runs at the chosen rates, beta ablation, analysis.

    python -m experiments.sweep --preset full [--stages sweep final ablation] [--workloads ...] [--dry-run]

Workload by workload (in the preset's order):

1. sweep: every (workload, optimizer) of the preset at every learning rate of the preset's
   ``sweep.grids[optimizer]``, with seed ``sweep.seed``. The rate with the best final test accuracy
   (ties: lower final training loss) is chosen; a run that diverged or failed ranks last. The table
   of all rates goes to ``<results>/sweep/<preset>_lr.csv``, the choice to ``<preset>_best_lr.json``.
2. final: every (workload, optimizer) at its chosen rate for every seed of the preset. A final run
   with the sweep's seed is the very run of the sweep (same run id), so it is not repeated.
3. ablation: for each ``{"workload", "optimizer", "betas"}`` entry, that optimizer at its chosen rate
   with ``beta`` set to each value, for every seed (the stability figure of the paper's main claim).

Everything is resumable: finished runs are skipped and interrupted ones resume from checkpoints.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from experiments.atomic import write_json
from experiments.manifest import git_state, now_iso
from experiments.presets import Preset, PresetRuns, load_preset
from experiments.suite import PlannedRun, execute, plan, run_analysis

STAGES = ("sweep", "final", "ablation")


def _entries(preset: Preset, workloads: list[str] | None) -> list[PresetRuns]:
    return [e for e in preset.runs if not workloads or e.workload in workloads]


def _optimizers(entry: PresetRuns) -> list[str]:
    from baselines import available_optimizers

    return available_optimizers() if entry.optimizers == "all" else list(entry.optimizers)


def sweep_runs(preset: Preset, workloads: list[str] | None) -> list[tuple[str, str, float, PlannedRun]]:
    grids = preset.sweep.get("grids", {})
    seed = int(preset.sweep.get("seed", 0))
    out = []
    for entry in _entries(preset, workloads):
        for name in _optimizers(entry):
            if name not in grids:
                raise ValueError(f"preset {preset.name}: sweep.grids has no learning rates for {name!r}")
            for lr in grids[name]:
                runs = replace(entry, optimizers=(name,), set={**entry.set, "optimizer.lr": lr})
                (planned,) = plan(replace(preset, runs=(runs,)), seeds=[seed])
                out.append((entry.workload, name, float(lr), planned))
    return out


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
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--no-analysis", action="store_true")
    p.add_argument("--started-at", type=float, default=None)
    args = p.parse_args(argv)
    try:
        preset = load_preset(args.preset)
        if not preset.sweep.get("grids"):
            raise ValueError(f"preset {preset.name}: no 'sweep' section with learning-rate grids")
        swept = sweep_runs(preset, args.workloads)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = time.time()
    record: dict[str, Any] = {"preset": preset.name, "start_time": now_iso(), **git_state(),
                              "command": " ".join(["python -m experiments.sweep", *(argv or sys.argv[1:])]),
                              "runs": []}
    record_path = Path(preset.results) / f"sweep_{preset.name}.json"
    failures = 0
    # workload by workload, so that the cheap workloads are complete before the long ones start
    for entry in _entries(preset, args.workloads):
        mine = [s for s in swept if s[0] == entry.workload]
        if "sweep" in args.stages:
            failures += execute([r for *_, r in mine], record, record_path, args.dry_run)
        if args.dry_run:
            continue
        chosen = choose_rates(preset, [s for s in swept if s[3].manifest.is_file()])
        print(f"[sweep] {entry.workload}: chosen learning rates {chosen.get(entry.workload)}", flush=True)
        if "final" in args.stages:
            failures += execute(final_runs(preset, chosen, [entry.workload]), record, record_path)
        if "ablation" in args.stages:
            failures += execute(ablation_runs(preset, chosen, [entry.workload]), record, record_path)
    if args.dry_run:
        return 0
    record["analysis"] = {"status": "disabled"} if args.no_analysis else run_analysis(preset)
    record.update(end_time=now_iso(), seconds=round(time.time() - started, 3), failed_runs=failures)
    if args.started_at is not None:
        record["total_s_including_setup"] = round(time.time() - args.started_at, 3)
    write_json(record_path, record)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
