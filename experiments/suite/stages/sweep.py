"""The stages of a preset with a ``sweep`` section: learning-rate sweep, finals at the chosen rates, beta ablation.

    python -m experiments.suite --preset full [--stages sweep final ablation analysis] [--workloads ...]

The preset's sections::

    "sweep": {"seed": 0, "extend": 2, "grids": {"sgd": [0.01, 0.03, 0.1], ...}},
    "ablation": [{"workload": "mnist1d-mlp", "optimizer": "mlbfgs", "betas": [0.9, 0.99]}, ...]

Workload by workload (in the preset's order):

1. ``sweep``: every (workload, optimizer) of the preset at every learning rate of ``sweep.grids[optimizer]``,
   with seed ``sweep.seed``, into ``<results>/sweep/runs``. The rate with the best final test accuracy
   (ties: lower final training loss; ``experiments/suite/choice.py``) is chosen; a run that diverged or failed
   ranks last, and one that is not finished is left out. When the best rate is the largest (smallest) one
   tried, the grid is extended by a factor 3 up (down) and the sweep continues, at most ``sweep.extend``
   times (default 2), so a chosen rate is not an artefact of the grid's edge. The table of the finished
   runs goes to ``<results>/sweep/<preset>_lr.csv``, the choice to ``<preset>_best_lr.json``; both
   cover every workload of the preset, whichever ones a command selected.
2. ``final``: every (workload, optimizer) at its chosen rate for every seed of the preset, into
   ``<results>/runs`` (what the analysis reads). The run with the sweep's seed is the very run of the
   sweep (same configuration and run id): its files are copied, not recomputed.
3. ``ablation``: for each ``{"workload", "optimizer", "betas"}`` entry, that optimizer at its chosen rate
   with ``beta`` set to each value, for every seed (the stability figure of the paper's main claim).

Without the ``sweep`` stage the choice comes from the sweep runs already finished, grid extensions
included, exactly as the sweep would make it. A dry run lists the finals and the ablation runs only for a
workload whose sweep is finished (before that, the rates they run at are not known).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from experiments.runner.atomic import write_json
from experiments.runner.manifest import is_finished
from experiments.suite.choice import final_metrics_of, mark_best
from experiments.suite.planning import PlannedRun, check_optimizer_names, entry_optimizers, plan
from experiments.suite.presets import Preset, PresetRuns
from experiments.suite.stages.context import StageContext

DEFAULT_EXTEND = 2
RATE_COLUMNS = ("workload", "optimizer", "lr", "final_test_acc", "final_train_loss", "run_id", "chosen")


@dataclass(frozen=True)
class SweptRun:
    """One run of the sweep: ``optimizer`` on ``workload`` at learning rate ``lr``."""

    workload: str
    optimizer: str
    lr: float
    run: PlannedRun


def sweep_preset(preset: Preset) -> Preset:
    """Where sweep runs go: ``<results>/sweep/runs``, checkpoints apart from the final runs'."""
    return replace(preset, name=f"{preset.name}-sweep", results=str(Path(preset.results) / "sweep"))


def check(preset: Preset) -> None:
    """ValueError naming what is wrong with the preset's ``sweep`` and ``ablation`` sections: every
    optimizer of every entry needs a grid of positive rates; an ablation entry names a workload and an
    optimizer of the preset's runs and a non-empty list of betas; optimizers as for the grid
    (:func:`experiments.suite.planning.check_optimizer_names`)."""
    check_optimizer_names(preset)
    grids = preset.sweep.get("grids")
    if not isinstance(grids, dict) or not grids:
        raise ValueError(f"preset {preset.name}: no 'sweep' section with learning-rate grids")
    for name, lrs in grids.items():
        if not isinstance(lrs, list) or not lrs or not all(isinstance(x, (int, float)) and x > 0 for x in lrs):
            raise ValueError(f"preset {preset.name}: sweep.grids.{name} must be a non-empty list of positive "
                             f"learning rates, got {lrs!r}")
    for entry in preset.runs:
        missing = [n for n in entry_optimizers(entry) if n not in grids]
        if missing:
            raise ValueError(f"preset {preset.name}: sweep.grids has no learning rates for {missing}")
    base = {e.workload: e for e in preset.runs}
    for item in preset.ablation:
        if set(item) != {"workload", "optimizer", "betas"}:
            raise ValueError(f"preset {preset.name}: an ablation entry has the keys workload, optimizer and "
                             f"betas, got {sorted(item)}")
        if item["workload"] not in base:
            raise ValueError(f"preset {preset.name}: ablation workload must be one of {sorted(base)}, "
                             f"got {item['workload']!r}")
        names = entry_optimizers(base[item["workload"]])
        if item["optimizer"] not in names:
            raise ValueError(f"preset {preset.name}: ablation optimizer on {item['workload']} must be one of "
                             f"{names}, got {item['optimizer']!r}")
        if not isinstance(item["betas"], list) or not item["betas"]:
            raise ValueError(f"preset {preset.name}: ablation betas must be a non-empty list, got {item['betas']!r}")


def sweep_runs(preset: Preset, entry: PresetRuns, name: str, lrs: list[float]) -> list[SweptRun]:
    """The sweep runs of ``name`` on ``entry`` at each rate of ``lrs`` (seed ``sweep.seed``)."""
    seed = int(preset.sweep.get("seed", 0))
    out = []
    for lr in lrs:
        runs = replace(entry, optimizers=(name,), set={**entry.set, "optimizer.lr": lr})
        (planned,) = plan(replace(sweep_preset(preset), runs=(runs,)), seeds=[seed])
        out.append(SweptRun(entry.workload, name, float(lr), planned))
    return out


def extend_grid(lrs: list[float], best: float) -> float | None:
    """The next rate to try when ``best`` lies on the edge of ``lrs`` (None when it is inside)."""
    if best == max(lrs):
        return float(f"{best * 3:.6g}")
    if best == min(lrs):
        return float(f"{best / 3:.6g}")
    return None


def rate_rows(swept: list[SweptRun]) -> list[dict[str, Any]]:
    """The table rows (:data:`RATE_COLUMNS`) of the finished runs of ``swept``, ``chosen`` marking the
    best rate of each (workload, optimizer)."""
    rows = []
    for s in swept:
        if is_finished(s.run.manifest):
            acc, loss = final_metrics_of(s.run.manifest)
            rows.append({"workload": s.workload, "optimizer": s.optimizer, "lr": s.lr, "final_test_acc": acc,
                         "final_train_loss": loss, "run_id": s.run.run_id})
    mark_best(rows)
    return rows


def chosen_rates(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """workload -> optimizer -> the chosen learning rate, from rows of :func:`rate_rows`."""
    chosen: dict[str, dict[str, float]] = {}
    for row in sorted((r for r in rows if r["chosen"]), key=lambda r: (r["workload"], r["optimizer"])):
        chosen.setdefault(row["workload"], {})[row["optimizer"]] = row["lr"]
    return chosen


def sweep_rounds(preset: Preset, entry: PresetRuns, names: list[str],
                 run_round: Callable[[list[PlannedRun]], object] | None = None,
                 stop_at_unfinished: bool = False) -> list[SweptRun]:
    """The sweep of ``names`` on ``entry``, round by round: the grid, then each extension at an edge.

    ``run_round`` trains a round's runs (None: nothing is trained, the rounds follow the runs already
    finished); after each round the best rate among the finished runs decides the extension. With
    ``stop_at_unfinished`` the rounds stop at one with unfinished runs (what comes after is not known
    yet). Returns every run of the rounds, finished or not, in order.
    """
    extend = int(preset.sweep.get("extend", DEFAULT_EXTEND))
    tried = {name: [float(x) for x in preset.sweep["grids"][name]] for name in names}
    todo = [s for name, lrs in tried.items() for s in sweep_runs(preset, entry, name, lrs)]
    swept: list[SweptRun] = []
    for round_ in range(extend + 1):
        swept += todo
        if run_round is not None:
            run_round([s.run for s in todo])
        if stop_at_unfinished and not all(is_finished(s.run.manifest) for s in todo):
            break
        best = chosen_rates(rate_rows(swept)).get(entry.workload, {})
        todo = []
        for name, lrs in tried.items():
            nxt = extend_grid(lrs, best[name]) if name in best and round_ < extend else None
            if nxt is not None:
                lrs.append(nxt)
                todo += sweep_runs(preset, entry, name, [nxt])
        if not todo:
            break
    return swept


def choose_rates(preset: Preset) -> dict[str, dict[str, float]]:
    """The chosen rate of every (workload, optimizer) of ``preset`` with a finished sweep run (the rounds
    replayed from the runs on disk); writes the table ``<results>/sweep/<preset>_lr.csv`` and the
    choice ``<preset>_best_lr.json``."""
    rows = rate_rows([s for entry in preset.runs for s in sweep_rounds(preset, entry, entry_optimizers(entry))])
    out_dir = Path(sweep_preset(preset).results)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{preset.name}_lr.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(RATE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    chosen = chosen_rates(rows)
    write_json(out_dir / f"{preset.name}_best_lr.json", chosen)
    return chosen


def final_runs(preset: Preset, entry: PresetRuns, rates: dict[str, float],
               seeds: list[int] | None = None) -> list[PlannedRun]:
    """The finals of ``entry``: each optimizer of ``rates`` (name -> chosen rate) on every seed
    (``seeds`` replaces the entry's), seed-major."""
    out = []
    for name, lr in rates.items():
        runs = replace(entry, optimizers=(name,), set={**entry.set, "optimizer.lr": lr})
        out += plan(replace(preset, runs=(runs,)), seeds=seeds)
    return _seed_major(out)


def ablation_runs(preset: Preset, entry: PresetRuns, rates: dict[str, float],
                  seeds: list[int] | None = None) -> list[PlannedRun]:
    """The ablation runs on ``entry``'s workload of the optimizers in ``rates`` (name -> chosen rate):
    each beta of each matching ablation entry, every seed (``seeds`` replaces the entry's), seed-major."""
    out = []
    for item in preset.ablation:
        if item["workload"] != entry.workload or item["optimizer"] not in rates:
            continue
        for beta in item["betas"]:
            runs = replace(entry, optimizers=(item["optimizer"],),
                           set={**entry.set, "optimizer.lr": rates[item["optimizer"]], "optimizer.beta": beta})
            out += plan(replace(preset, runs=(runs,)), seeds=seeds)
    return _seed_major(out)


def _seed_major(runs: list[PlannedRun]) -> list[PlannedRun]:
    # every configuration gets its first seed before any gets a second
    return sorted(runs, key=lambda r: r.seed)


def check_ready(ctx: StageContext) -> None:
    """ValueError when ``final`` or ``ablation`` is selected without ``sweep`` and the sweep of a selected
    (workload, optimizer) has not finished (its grid and every extension round): those stages run at the
    rates the sweep chooses. Names them and the commands that help."""
    later = [s for s in ("final", "ablation") if s in ctx.stages]
    if "sweep" in ctx.stages or not later:
        return
    waiting = []
    for entry in ctx.entries():
        for name in ctx.names(entry):  # an optimizer's rounds depend on its own runs only
            swept = sweep_rounds(ctx.preset, entry, [name], stop_at_unfinished=True)
            if not all(is_finished(s.run.manifest) for s in swept):
                waiting.append(f"{entry.workload}/{name}")
    if waiting:
        raise ValueError(f"preset {ctx.preset.name}: {' and '.join(later)} run at the learning rates the sweep "
                         f"chooses, and the sweep of {waiting} has not finished in {sweep_preset(ctx.preset).results}: "
                         f"run the sweep first (--stages sweep {' '.join(later)}), or select what is ready with "
                         "--workloads / --optimizers")


def run(ctx: StageContext) -> int:
    """Run the selected stages of a sweep preset, workload by workload; the number of runs that failed
    (or, for the finals, could not be planned for want of a finished sweep run)."""
    preset = ctx.preset
    sweep_dir = Path(sweep_preset(preset).results)
    failures = 0
    # workload by workload, so that the cheap workloads are complete before the long ones start
    for entry in ctx.entries():
        names = ctx.names(entry)

        def run_round(runs: list[PlannedRun]) -> None:
            nonlocal failures
            failures += ctx.execute("sweep", runs, sweep_dir)

        swept = sweep_rounds(preset, entry, names, run_round if "sweep" in ctx.stages else None,
                             stop_at_unfinished=ctx.dry_run)
        later = [s for s in ("final", "ablation") if s in ctx.stages]
        if ctx.dry_run:
            unfinished = [s.run.run_id for s in swept if not is_finished(s.run.manifest)]
            if unfinished and later:
                print(f"[suite] {entry.workload}: {' and '.join(later)} wait for {len(unfinished)} unfinished "
                      "sweep run(s)", flush=True)
                continue
            chosen = chosen_rates(rate_rows(swept))
        else:
            chosen = choose_rates(preset)
            ctx.record.data["chosen"] = chosen
            ctx.record.save()
        # in the entry's order of optimizers, as the processes run them
        rates = {n: chosen[entry.workload][n] for n in names if n in chosen.get(entry.workload, {})}
        print(f"[suite] {entry.workload}: chosen learning rates {rates}", flush=True)
        missing = [n for n in names if n not in rates]
        if missing and later:
            print(f"[suite] {entry.workload}: no finished sweep run of {missing}: no {' or '.join(later)} for them",
                  file=sys.stderr, flush=True)
            if not ctx.dry_run:
                failures += len(missing)
        if "final" in ctx.stages:
            finals = final_runs(preset, entry, rates, ctx.seeds)
            failures += ctx.execute_finals("final", finals, sweep_dir / "runs", "sweep")
        if "ablation" in ctx.stages:
            failures += ctx.execute("ablation", ablation_runs(preset, entry, rates, ctx.seeds))
    return failures
