"""Planning: a preset's (workload x optimizer x seed) grid as runs with their ids, arguments and files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from experiments.runner.spec import RunSpec, make_run_spec
from experiments.suite.presets import Preset, PresetRuns


@dataclass(frozen=True)
class PlannedRun:
    """A run (its :class:`~experiments.runner.spec.RunSpec`) placed in a results tree, with the processes
    it asks for; everything else is read from the spec."""

    spec: RunSpec
    manifest: Path  # <results>/runs/<workload>/<run_id>.json; the CSV is next to it (.csv)
    nproc: int = 1  # data-parallel processes asked for (torchrun; experiments/suite/execution.py: launch_width)

    @property
    def workload(self) -> str:
        """The workload's name (a workload file's ``name`` key)."""
        return self.spec.workload.name

    @property
    def optimizer(self) -> str:
        return self.spec.optimizer

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def args(self) -> tuple[str, ...]:
        """The arguments of ``python -m experiments.run`` that train it alone."""
        return tuple(self.spec.cli_args())

    @property
    def group_key(self) -> tuple[str, int, str]:
        """Runs with equal keys (workload, seed, data) can share a lockstep process."""
        return (self.workload, self.seed, json.dumps(self.spec.workload.to_dict()["data"], sort_keys=True))


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
                out.append(PlannedRun(spec, spec.manifest_path(runs_dir), entry.nproc_per_node))
    return out
