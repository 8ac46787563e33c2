"""The stages of a preset with a ``tuning`` section: the tuning ``trials``, then the ``final`` runs.

    python -m experiments.suite --preset long [--stages trials final analysis] [--workloads ...] [--jobs 2]

The protocol (search spaces, quasi-random trials, trial length, the choice) is ``experiments/suite/search.py``.
Workload by workload in the preset's order: the trials of every optimizer (seed ``tuning.seed``, into
``<out>/tuning/runs``), the choice (``<out>/tuning/<preset>_trials.csv`` and ``<preset>_best.json``),
then the finals of every optimizer whose trials are all finished (into ``<out>/runs``; a final identical
to a trial is copied). Where an optimizer's two best trials lie within noise, both run again on the
tie-break seeds first (stage record ``tiebreak``; :func:`experiments.suite.search.tied_trials`). An optimizer
with unfinished trials gets no finals: a choice from part of its
trials would not be the protocol's; its unfinished trials count as failed runs. A dry run lists the
finals of the optimizers whose trials are finished.
"""

from __future__ import annotations

import sys
from pathlib import Path

from experiments.runner.manifest import is_finished
from experiments.suite.planning import PlannedRun, check_optimizer_names, entry_optimizers
from experiments.suite.presets import Preset
from experiments.suite.search import (
    Dimension,
    best_settings,
    check_tuning,
    choose,
    final_runs,
    tied_trials,
    trial_runs,
    tuning_preset,
)
from experiments.suite.stages.context import StageContext


def check(preset: Preset) -> dict[str, list[Dimension]]:
    """The search space of every optimizer of ``preset``; ValueError naming what is wrong with its
    tuning section (:func:`experiments.suite.search.check_tuning`) or its optimizers
    (:func:`experiments.suite.planning.check_optimizer_names`)."""
    check_optimizer_names(preset)
    return check_tuning(preset, {e.workload: entry_optimizers(e) for e in preset.runs})


def check_ready(ctx: StageContext) -> None:
    """ValueError when ``final`` is selected without ``trials`` and a selected (workload, optimizer) has
    unfinished trials: its finals run at the settings its trials choose. Names them and the commands that
    help."""
    if "trials" in ctx.stages or "final" not in ctx.stages:
        return
    spaces = check(ctx.preset)
    waiting = [f"{entry.workload}/{name}" for entry in ctx.entries() for name in ctx.names(entry)
               if not all(is_finished(t.run.manifest) for t in trial_runs(ctx.preset, entry, name, spaces[name]))]
    if waiting:
        raise ValueError(f"preset {ctx.preset.name}: the finals run at the settings the trials choose, and the trials "
                         f"of {waiting} have not finished in {tuning_preset(ctx.preset).results}: run the trials "
                         "first (--stages trials final), or select what is ready with --workloads / --optimizers")


def run(ctx: StageContext) -> int:
    """Run the selected stages of a tuning preset, workload by workload; the number of runs that failed
    (unfinished trials included)."""
    preset = ctx.preset
    spaces = check(preset)
    trials_dir = Path(tuning_preset(preset).results)
    failures = 0
    for entry in ctx.entries():
        names = ctx.names(entry)
        trials = [t for name in names for t in trial_runs(preset, entry, name, spaces[name])]
        if "trials" in ctx.stages:
            failures += ctx.execute("trials", [t.run for t in trials], trials_dir, split=True)
        unfinished = [t for t in trials if not is_finished(t.run.manifest)]
        ties = tied_trials(preset, [t for t in trials if not any(u.optimizer == t.optimizer for u in unfinished)])
        if ties and "trials" in ctx.stages:  # two best trials within noise: more seeds decide
            print(f"[suite] {entry.workload}: the two best trials of {sorted({t.optimizer for t in ties})} lie "
                  "within noise; both run again on the tie-break seeds", flush=True)
            failures += ctx.execute("tiebreak", [t.run for t in ties], trials_dir, split=True)
        unfinished += [t for t in ties if not is_finished(t.run.manifest)]
        ready = [n for n in names if not any(t.optimizer == n for t in unfinished)]
        if unfinished:  # a choice from partial trials would not be the protocol's
            waiting = sorted({t.optimizer for t in unfinished}, key=names.index)
            print(f"[suite] {entry.workload}: {len(unfinished)} trial(s) of {waiting} not finished "
                  f"({[t.run.run_id for t in unfinished[:3]]}...); rerun to complete them before their choice "
                  "and finals", file=sys.stderr, flush=True)
            if not ctx.dry_run:
                failures += len(unfinished)
        if ctx.dry_run:
            _, chosen = best_settings([t for t in trials if t.optimizer in ready],
                                      [t for t in ties if t.optimizer in ready])
        else:
            chosen = choose(preset, spaces)
            ctx.record.data["chosen"] = chosen
            ctx.record.save()
        settings = {n: chosen[entry.workload][n] for n in ready}
        if settings:
            print(f"[suite] {entry.workload}: chosen {settings}", flush=True)
        if "final" in ctx.stages:
            finals: list[PlannedRun] = [r for name, s in settings.items()
                                        for r in final_runs(preset, entry, name, s, ctx.seeds)]
            finals.sort(key=lambda r: r.seed)
            failures += ctx.execute_finals("final", finals, trials_dir / "runs", "trials")
    return failures
