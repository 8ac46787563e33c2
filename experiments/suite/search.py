"""External tuning as AlgoPerf runs it: every optimizer gets the same number of trials from a stated
search space; the best trial's settings then run with several seeds at full length.

    python -m experiments.suite --preset long [--stages trials final analysis] [--workloads ...] [--out DIR]
                                              [--mode lockstep|separate] [--jobs N] [--dry-run]

This module is the protocol (spaces, trials, choice); ``experiments/suite/stages/tuning.py`` runs its stages.

The preset's ``tuning`` section::

    "tuning": {"trials": 6, "seed": 0, "search_seed": 0,
               "spaces": {"sgd": {"lr": {"log_uniform": [0.003, 1.0]},
                                  "momentum": {"uniform": [0.8, 0.99]}},
                          "mlbfgs": {"lr": {"log_uniform": [0.003, 1.0]},
                                     "update_period": {"choice": [10, 50, 200]}}, ...}}

Each optimizer's space holds ``lr`` (log-uniform, required) and at most two of its own settings
(``log_uniform`` / ``uniform`` over [low, high], or ``choice`` among values). Trials are the first
``trials`` points of a scrambled Halton sequence (``scipy.stats.qmc.Halton``, seeded per workload and
optimizer from ``search_seed``), as AlgoPerf's quasi-random search; they run on seed ``seed``. A run
entry's ``trial_fraction`` (default 1) shortens the trials to that fraction of its epochs (the
schedule spans the shortened run; at least a quarter, per the protocol); the finals always run at
full length, on the entry's ``seeds`` (default: the preset's). The best trial has the highest final
test accuracy (ties: lower final training loss; diverged runs rank last; ``experiments/suite/choice.py``).
Trials go to ``<out>/tuning/runs``, their table to ``<out>/tuning/<preset>_trials.csv``, the choice to
``<out>/tuning/<preset>_best.json``: both cover every (workload, optimizer) of the preset whose trials
are all finished, whichever workloads a command selected. Finals go to ``<out>/runs``. A final
identical to a trial (same run id: full-length trials, seed ``seed``) is copied, not rerun. Resumable
like every suite command.

Ties: with ``"tiebreak_seeds": [1, 2]`` in the tuning section, an optimizer whose two best trials are
within noise of each other (final test accuracies closer than :func:`noise_threshold`: 1.96 standard
errors of the difference of two accuracies on the workload's test set) reruns both trials on those
seeds, at the trial length, and the choice goes to the higher mean final test accuracy over all the
seeds of the two (:func:`best_settings`). The first seed alone does not decide a tie.
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from experiments.runner.atomic import write_json
from experiments.runner.manifest import is_finished
from experiments.suite.choice import final_metrics_of, mark_best, score
from experiments.suite.planning import PlannedRun, entry_optimizers, plan
from experiments.suite.presets import Preset, PresetRuns

KINDS = ("log_uniform", "uniform", "choice")
MIN_TRIAL_FRACTION = 0.25
MAX_EXTRA_SETTINGS = 2


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``kind`` in :data:`KINDS`, [low, high] or ``choices``."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def value(self, u: float) -> Any:
        """The setting at ``u`` in [0, 1): log-uniform and uniform to 6 significant digits."""
        if self.kind == "choice":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.kind == "log_uniform":
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return float(f"{x:.6g}")


def parse_space(optimizer: str, raw: dict[str, Any]) -> list[Dimension]:
    """The search space of ``optimizer`` from its preset entry; ValueError naming what is wrong."""
    where = f"tuning.spaces.{optimizer}"
    if not isinstance(raw, dict) or "lr" not in raw:
        raise ValueError(f"{where} must be a mapping that includes 'lr'")
    if len(raw) > 1 + MAX_EXTRA_SETTINGS:
        raise ValueError(f"{where}: lr plus at most {MAX_EXTRA_SETTINGS} settings, got {sorted(raw)}")
    dims = []
    for name, spec in raw.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ValueError(f"{where}.{name} must be one of {{{', '.join(k + ': ...' for k in KINDS)}}}, got {spec!r}")
        kind, arg = next(iter(spec.items()))
        if name == "lr" and kind != "log_uniform":
            raise ValueError(f"{where}.lr must be log_uniform, got {kind}")
        if kind == "choice":
            if not isinstance(arg, list) or not arg:
                raise ValueError(f"{where}.{name}.choice must be a non-empty list, got {arg!r}")
            dims.append(Dimension(name, kind, choices=tuple(arg)))
            continue
        if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, (int, float)) for v in arg)
                and arg[0] < arg[1] and (kind != "log_uniform" or arg[0] > 0)):
            raise ValueError(f"{where}.{name}.{kind} must be [low, high] with low < high (low > 0 for "
                             f"log_uniform), got {arg!r}")
        dims.append(Dimension(name, kind, float(arg[0]), float(arg[1])))
    return dims


def sample_trials(space: list[Dimension], n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` points of a scrambled Halton sequence over ``space`` (deterministic in ``seed``)."""
    from scipy.stats import qmc

    if n < 1:
        raise ValueError(f"trials must be a positive integer, got {n}")
    points = qmc.Halton(d=len(space), scramble=True, seed=seed).random(n)
    return [{dim.name: dim.value(float(points[i, j])) for j, dim in enumerate(space)} for i in range(n)]


def space_seed(search_seed: int, workload: str, optimizer: str) -> int:
    """A stable seed per (workload, optimizer): the same trials whatever else the preset lists."""
    return (search_seed * 1_000_003 + zlib.crc32(f"{workload}/{optimizer}".encode())) % 2**32


@dataclass(frozen=True)
class Trial:
    """One tuning trial: the ``index``-th point of ``optimizer``'s space on ``workload`` and its run."""

    workload: str
    optimizer: str
    index: int
    settings: dict[str, Any]  # searched setting -> value (``lr`` and at most two others)
    run: PlannedRun


def tuning_preset(preset: Preset) -> Preset:
    """Where trial runs go: ``<results>/tuning/runs``."""
    return replace(preset, name=f"{preset.name}-tuning", results=str(Path(preset.results) / "tuning"))


def check_tuning(preset: Preset, optimizers: dict[str, list[str]]) -> dict[str, list[Dimension]]:
    """Validate the preset's tuning section for ``optimizers`` (workload -> names); the parsed spaces."""
    tuning = preset.tuning
    if not tuning:
        raise ValueError(f"preset {preset.name}: no 'tuning' section")
    trials = tuning.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"preset {preset.name}: tuning.trials must be a positive integer, got {trials!r}")
    spaces = tuning.get("spaces", {})
    names = sorted({n for ns in optimizers.values() for n in ns})
    missing = [n for n in names if n not in spaces]
    if missing:
        raise ValueError(f"preset {preset.name}: tuning.spaces has no search space for {missing}")
    for entry in preset.runs:
        if not MIN_TRIAL_FRACTION <= entry.trial_fraction <= 1:
            raise ValueError(f"preset {preset.name}: {entry.workload}.trial_fraction must lie in "
                             f"[{MIN_TRIAL_FRACTION}, 1], got {entry.trial_fraction}")
    return {n: parse_space(n, spaces[n]) for n in names}


def trial_runs(preset: Preset, entry: PresetRuns, optimizer: str, space: list[Dimension],
               seed: int | None = None) -> list[Trial]:
    """The ``tuning.trials`` trials of ``optimizer`` on ``entry`` (seed ``tuning.seed``, or ``seed``: a
    tie-break's; the entry's epochs times its ``trial_fraction``), into ``<results>/tuning/runs``;
    ValueError when a fraction below 1 has no epochs to shorten."""
    tuning = preset.tuning
    seed = int(tuning.get("seed", 0)) if seed is None else seed
    settings_list = sample_trials(space, int(tuning["trials"]),
                                  space_seed(int(tuning.get("search_seed", 0)), entry.workload, optimizer))
    epochs = entry.epochs
    if entry.trial_fraction < 1:
        if epochs is None:
            raise ValueError(f"{entry.workload}: trial_fraction < 1 needs the entry's epochs")
        epochs = max(1, round(epochs * entry.trial_fraction))
    out = []
    for i, settings in enumerate(settings_list):
        runs = replace(entry, optimizers=(optimizer,), epochs=epochs,
                       set={**entry.set, **{f"optimizer.{k}": v for k, v in settings.items()}})
        (planned,) = plan(replace(tuning_preset(preset), runs=(runs,)), seeds=[seed])
        out.append(Trial(entry.workload, optimizer, i, settings, planned))
    return out


def preset_trials(preset: Preset, spaces: dict[str, list[Dimension]]) -> list[Trial]:
    """Every trial of ``preset``: its entries in order, each optimizer's trials in order."""
    return [t for entry in preset.runs for name in entry_optimizers(entry)
            for t in trial_runs(preset, entry, name, spaces[name])]


def complete(trials: list[Trial]) -> set[tuple[str, str]]:
    """The (workload, optimizer) pairs of ``trials`` whose trials are all finished."""
    pairs = {(t.workload, t.optimizer) for t in trials}
    pairs -= {(t.workload, t.optimizer) for t in trials if not is_finished(t.run.manifest)}
    return pairs


NOISE_Z = 1.96


def noise_threshold(acc: float, num_test: int) -> float:
    """The smallest difference of two final test accuracies near ``acc`` that is not noise:
    ``1.96 sqrt(2 acc (1 - acc) / num_test)``, 1.96 standard errors of the difference of two
    independent binomial proportions on ``num_test`` images (0.0091 at 0.88 on 10,000 images)."""
    return NOISE_Z * math.sqrt(2 * acc * (1 - acc) / num_test)


def _num_test(manifest: Path) -> int | None:
    try:
        value = json.loads(manifest.read_text()).get("num_test")
    except (OSError, json.JSONDecodeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def tied_trials(preset: Preset, trials: list[Trial]) -> list[Trial]:
    """The tie-break runs the finished ``trials`` call for: for every (workload, optimizer) whose two best
    trials (by :func:`experiments.suite.choice.score`) lie within :func:`noise_threshold`, both trials again
    on each of ``tuning.tiebreak_seeds`` (none without that key)."""
    seeds = [int(s) for s in preset.tuning.get("tiebreak_seeds", [])]
    if not seeds:
        return []
    by_pair: dict[tuple[str, str], list[tuple[tuple[float, float], Trial]]] = {}
    for t in trials:
        acc, loss = final_metrics_of(t.run.manifest)
        by_pair.setdefault((t.workload, t.optimizer), []).append((score({"final_test_acc": acc,
                                                                          "final_train_loss": loss}), t))
    entries = {e.workload: e for e in preset.runs}
    spaces = preset.tuning.get("spaces", {})
    out = []
    for (workload, optimizer), scored in by_pair.items():
        scored.sort(key=lambda item: item[0], reverse=True)
        if len(scored) < 2 or not all(math.isfinite(sc[0]) for sc, _ in scored[:2]):
            continue
        a, b = scored[0][0][0], scored[1][0][0]
        n = _num_test(scored[0][1].run.manifest)
        if n is None or abs(a - b) >= noise_threshold((a + b) / 2, n):
            continue
        space = parse_space(optimizer, spaces[optimizer])
        for seed in seeds:
            again = {t.index: t for t in trial_runs(preset, entries[workload], optimizer, space, seed)}
            out += [again[t.index] for _, t in scored[:2]]
    return out


def best_settings(trials: list[Trial], tiebreaks: list[Trial] = ()
                  ) -> tuple[list[dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
    """The table rows of ``trials`` (settings, final metrics, ``chosen``) and the chosen settings per
    workload and optimizer (the best trial of each pair, :mod:`experiments.suite.choice`); writes nothing.
    A trial with finished ``tiebreaks`` (:func:`tied_trials`) is ranked by its mean final test
    accuracy over all its seeds (``mean_test_acc``, ``seeds``) against the other tied trial."""
    rows = []
    extra: dict[tuple[str, str, int], list[float]] = {}
    for t in tiebreaks:
        extra.setdefault((t.workload, t.optimizer, t.index), []).append(final_metrics_of(t.run.manifest)[0])
    for t in trials:
        acc, loss = final_metrics_of(t.run.manifest)
        accs = [acc, *extra.get((t.workload, t.optimizer, t.index), [])]
        rows.append({"workload": t.workload, "optimizer": t.optimizer, "trial": t.index, **{
            f"setting.{k}": v for k, v in t.settings.items()}, "final_test_acc": acc, "final_train_loss": loss,
            "seeds": len(accs), "mean_test_acc": sum(accs) / len(accs),
            "run_id": t.run.run_id, "finished": is_finished(t.run.manifest)})
    best = mark_best(rows)
    for key in {(t.workload, t.optimizer) for t in tiebreaks}:
        tied = [r for r in rows if (r["workload"], r["optimizer"]) == key and r["seeds"] > 1]
        if len(tied) == 2 and all(math.isfinite(r["mean_test_acc"]) for r in tied):
            winner = max(tied, key=lambda r: (r["mean_test_acc"], -r["trial"]))
            best[key] = winner
            for r in rows:
                if (r["workload"], r["optimizer"]) == key:
                    r["chosen"] = r is winner
    chosen: dict[str, dict[str, dict[str, Any]]] = {}
    for (workload, name), row in sorted(best.items()):
        chosen.setdefault(workload, {})[name] = {k.split(".", 1)[1]: v for k, v in row.items()
                                                 if k.startswith("setting.")}
    return rows, chosen


def choose(preset: Preset, spaces: dict[str, list[Dimension]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The chosen settings of every (workload, optimizer) of ``preset`` whose trials, and tie-breaks
    (:func:`tied_trials`), are all finished (``spaces``: :func:`check_tuning` of every optimizer of the
    preset); writes the trials table ``<results>/tuning/<preset>_trials.csv`` and the choice
    ``<preset>_best.json`` for those pairs."""
    trials = preset_trials(preset, spaces)
    done = complete(trials)
    tiebreaks = tied_trials(preset, [t for t in trials if (t.workload, t.optimizer) in done])
    done -= {(t.workload, t.optimizer) for t in tiebreaks if not is_finished(t.run.manifest)}
    rows, chosen = best_settings([t for t in trials if (t.workload, t.optimizer) in done],
                                 [t for t in tiebreaks if (t.workload, t.optimizer) in done])
    out_dir = Path(tuning_preset(preset).results)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = sorted({k for r in rows for k in r if k.startswith("setting.")})
    columns = ["workload", "optimizer", "trial", *settings, "final_test_acc", "final_train_loss", "seeds",
               "mean_test_acc", "chosen", "finished", "run_id"]
    with open(out_dir / f"{preset.name}_trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    write_json(out_dir / f"{preset.name}_best.json", chosen)
    return chosen


def final_runs(preset: Preset, entry: PresetRuns, optimizer: str, settings: dict[str, Any],
               seeds: list[int] | None = None) -> list[PlannedRun]:
    """The finals of ``optimizer`` on ``entry`` with the chosen ``settings``, at full length, on the
    entry's seeds (``seeds`` replaces them; default: the entry's, else the preset's)."""
    runs = replace(entry, optimizers=(optimizer,),
                   set={**entry.set, **{f"optimizer.{k}": v for k, v in settings.items()}})
    return plan(replace(preset, runs=(runs,)), seeds=seeds)
