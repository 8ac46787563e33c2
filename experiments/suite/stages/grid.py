"""The ``grid`` stage: a preset's (workload x optimizer x seed) grid as listed, nothing chosen."""

from __future__ import annotations

from experiments.suite.planning import check_optimizer_names, plan
from experiments.suite.presets import Preset
from experiments.suite.stages.context import StageContext


def check(preset: Preset) -> None:
    """ValueError naming the allowed optimizers when the grid names another one."""
    check_optimizer_names(preset)


def check_ready(ctx: StageContext) -> None:
    """Nothing to check: the grid needs no earlier stage."""


def run(ctx: StageContext) -> int:
    """Train the selected runs of the grid (seed-major order, see :func:`experiments.suite.planning.plan`);
    the number of runs that failed."""
    runs = plan(ctx.preset, ctx.seeds, ctx.workloads, ctx.optimizers)
    print(f"[suite] grid: {len(runs)} runs", flush=True)
    return ctx.execute("grid", runs)
