"""What a stage runs with: the preset, the command line's selection, how runs execute, the record."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from experiments.suite.execution import ExecOptions, execute, reuse_runs
from experiments.suite.planning import PlannedRun, entry_optimizers
from experiments.suite.presets import Preset, PresetRuns
from experiments.suite.stages.record import SuiteRecord


@dataclass
class StageContext:
    """One command's preset (pointed at its output folder), selection and record."""

    preset: Preset
    stages: tuple[str, ...]  # the selected stages, in the preset's order
    opts: ExecOptions
    record: SuiteRecord
    workloads: list[str] | None = None  # only these workloads of the preset (None: all)
    optimizers: list[str] | None = None  # only these optimizers (None: all)
    seeds: list[int] | None = None  # replaces the seeds of the grid, the finals and the ablation runs

    @property
    def dry_run(self) -> bool:
        return self.opts.dry_run

    def entries(self) -> list[PresetRuns]:
        """The preset's run entries of the selected workloads, in the preset's order."""
        return [e for e in self.preset.runs if not self.workloads or e.workload in self.workloads]

    def names(self, entry: PresetRuns) -> list[str]:
        """The selected optimizers of ``entry``, in its order."""
        return [n for n in entry_optimizers(entry) if not self.optimizers or n in self.optimizers]

    def execute(self, stage: str, runs: list[PlannedRun], results: Path | None = None, split: bool = False) -> int:
        """Run ``runs`` as part of ``stage`` (into ``results``, default the preset's folder); the failures.
        ``split``: lockstep groups may be dealt into several processes (tuning trials only, whose seconds
        no table compares: :func:`experiments.suite.execution.groups`)."""
        opts = self.opts if results is None else replace(self.opts, results=results)
        start = time.monotonic()
        failures = execute(runs, self.record.stage(stage)["runs"], self.record.save, opts, split)
        if runs and not self.dry_run:
            self.record.add_seconds(stage, time.monotonic() - start)
            self.record.save()
        return failures

    def execute_finals(self, stage: str, runs: list[PlannedRun], source: Path, source_stage: str) -> int:
        """Run ``runs`` as :meth:`execute` does, first copying those already finished as runs of
        ``source_stage`` (same run id, in the runs folder ``source``) instead of training them again
        (not with ``--force``, which retrains)."""
        if self.opts.force:
            return self.execute(stage, runs)
        copied = reuse_runs(source, runs, dry_run=self.dry_run)
        status = f"copied (finished as a {source_stage} run)"
        self.record.stage(stage)["runs"] += [{"run_id": r.run_id, "status": status} for r in copied]
        return self.execute(stage, [r for r in runs if r not in copied])
