"""Planning: a preset's (workload x optimizer x seed) grid as runs with their ids, arguments and files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.runner.spec import make_run_spec
from experiments.suite.presets import Preset, PresetRuns


@dataclass(frozen=True)
class PlannedRun:
    """One run to train: what ``python -m experiments.run`` gets and where its manifest lies."""

    workload: str  # the workload's name (a workload file's 'name' key; its path is in ``args``)
    optimizer: str
    seed: int
    run_id: str
    args: tuple[str, ...]  # the per-run arguments of ``python -m experiments.run``
    manifest: Path  # <results>/runs/<workload>/<run_id>.json; the CSV is next to it (.csv)
    data_key: str = ""  # runs with equal (workload, seed, data_key) can share a lockstep process
    nproc: int = 1  # data-parallel processes asked for (torchrun; experiments/suite/execution.py: launch_width)

    @property
    def group_key(self) -> tuple[str, int, str]:
        return (self.workload, self.seed, self.data_key)


def is_dotted_path(name: str) -> bool:
    """Whether ``name`` is an optimizer given as ``module.path:ClassName`` (checked by the runner)."""
    return ":" in name


def entry_optimizers(entry: PresetRuns) -> list[str]:
    """The optimizer names of a preset entry: its list, or every registered optimizer for ``"all"``."""
    from baselines import available_optimizers

    return available_optimizers() if entry.optimizers == "all" else list(entry.optimizers)


def check_optimizer_names(preset: Preset) -> None:
    """ValueError naming the registered optimizers when an entry of ``preset`` names another one.

    A dotted path ``module.path:ClassName`` is accepted here; the runner imports and checks it.
    """
    from baselines import available_optimizers

    registered = available_optimizers()
    for entry in preset.runs:
        for name in entry_optimizers(entry):
            if name not in registered and not is_dotted_path(name):
                raise ValueError(f"preset {preset.name}: optimizer must be one of {registered} or "
                                 f"'module.path:ClassName', got {name!r}")


def plan(preset: Preset, seeds: list[int] | None = None, workloads: list[str] | None = None,
         optimizers: list[str] | None = None) -> list[PlannedRun]:
    """The runs of ``preset`` with their files under ``<preset.results>/runs``.

    Order: seed-major (every optimizer gets a first seed before any a second), then the preset's entries,
    then each entry's optimizers. ``seeds`` replaces every entry's seeds (default: the entry's ``seeds``,
    else the preset's); ``workloads`` / ``optimizers`` keep only those (default: all). ValueError for an
    optimizer that is neither registered (``baselines.available_optimizers()``) nor a dotted path.
    """
    check_optimizer_names(preset)
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
            for name in entry_optimizers(entry):
                if optimizers and name not in optimizers:
                    continue
                spec = make_run_spec(entry.workload_arg, name, seed, overrides=entry.set, epochs=entry.epochs,
                                     max_iters=entry.max_iters)
                args = ["--workload", entry.workload_arg, "--optimizer", name, "--seed", str(seed)]
                if entry.epochs is not None:
                    args += ["--epochs", str(entry.epochs)]
                if entry.max_iters is not None:
                    args += ["--max-iters", str(entry.max_iters)]
                if entry.set:
                    args += ["--set", *(f"{key}={cli_value(value)}" for key, value in entry.set.items())]
                data_key = json.dumps(spec.workload.to_dict()["data"], sort_keys=True)
                out.append(PlannedRun(entry.workload, name, seed, spec.run_id, tuple(args),
                                      spec.manifest_path(runs_dir), data_key, entry.nproc_per_node))
    return out


def cli_value(value: Any) -> str:
    """A ``--set`` value as the runner parses it: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)
