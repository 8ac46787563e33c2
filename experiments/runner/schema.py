"""The results schema, stated once: the columns of a run CSV and of a curvature CSV.

The runner writes them (:mod:`experiments.runner.csvlog`, :mod:`experiments.runner.training`) and the analysis reads
and checks them (:mod:`analysis.load`); both import these tuples. DEVELOPERS.md ("results CSVs")
says what each column means.
"""

from __future__ import annotations

from typing import NamedTuple


class RunRow(NamedTuple):
    """A row of a run CSV: one per logged training iteration (kind=train) and per evaluation
    (kind=eval); None leaves a cell empty. Its fields are the file's columns, in order; DEVELOPERS.md
    ("results CSVs") says what each means."""

    run_id: str
    workload: str
    optimizer: str
    seed: int
    kind: str
    epoch: float
    iteration: int
    train_loss: float | None = None
    lr: float | None = None
    wall_s: float | None = None
    grad_evals: int | None = None
    test_loss: float | None = None
    test_acc: float | None = None
    eval_s: float | None = None
    cpu_s: float | None = None


#: The run CSV's columns (the writer's header).
RUN_COLUMNS: tuple[str, ...] = RunRow._fields
#: Columns added after runs were committed: files written before lack them, and readers must not ask.
RUN_LATER_COLUMNS: tuple[str, ...] = ("cpu_s",)
#: The columns every run CSV has, old ones included (what a reader checks).
RUN_REQUIRED: tuple[str, ...] = tuple(c for c in RUN_COLUMNS if c not in RUN_LATER_COLUMNS)
#: Of those, the numeric ones (from the row's types).
RUN_NUMERIC: tuple[str, ...] = tuple(c for c in RUN_REQUIRED
                                     if any(t in str(RunRow.__annotations__[c]) for t in ("int", "float")))
RUN_KINDS: tuple[str, ...] = ("train", "eval")

#: A curvature CSV, one row per pair formed: the block, its raw mu and whether the pair was kept ...
CURVATURE_REQUIRED: tuple[str, ...] = ("run_id", "iteration", "block", "mu", "accepted")
#: ... then the block's diagnostics at that step (``mlbfgs.PairRecord``; empty where an optimizer does
#: not report them; absent from files written before 2026-12-07, read as NaN).
CURVATURE_DIAGNOSTICS: tuple[str, ...] = ("damped_mu", "gamma", "grad_norm", "direction_share")
CURVATURE_COLUMNS: tuple[str, ...] = CURVATURE_REQUIRED + CURVATURE_DIAGNOSTICS
CURVATURE_NUMERIC: tuple[str, ...] = ("iteration", "mu")
