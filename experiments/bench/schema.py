"""The columns of the benchmarks' CSVs, stated once.

The rule between measuring and analysing: each benchmark ``experiments/bench/<name>.py`` writes its
CSV with the columns named here, and the module of ``analysis/`` that reads it imports them from here
(this module imports nothing heavy, so the analysis does not load torch for it).
"""

from __future__ import annotations

#: runner.csv (:mod:`experiments.bench.runner`, read by :mod:`analysis.runner`)
RUNNER_COLUMNS: tuple[str, ...] = ("workload", "optimizer", "contestant", "repeat", "seconds")
#: startup.csv (the same pair)
STARTUP_COLUMNS: tuple[str, ...] = ("workload", "stage", "repeat", "seconds")
#: threads.csv (:mod:`experiments.bench.threads`, read by :mod:`analysis.threads`)
THREADS_COLUMNS: tuple[str, ...] = ("workload", "condition", "threads", "repeat", "seconds", "cpu_seconds")
#: compile/steps.csv and the columns analysis needs of compile/summary.csv (which holds more)
#: (:mod:`experiments.bench.compile`, read by :mod:`analysis.compiled`)
COMPILE_STEP_COLUMNS: tuple[str, ...] = ("workload", "variant", "step", "seconds")
COMPILE_SUMMARY_COLUMNS: tuple[str, ...] = ("workload", "unique_graphs", "graphs_added_after_warmup", "graph_breaks",
                                            "max_param_difference", "pairs_accepted")
#: overhead/optimizers*.csv (:mod:`experiments.bench.overhead`, read by :mod:`analysis.overhead`)
OVERHEAD_COLUMNS: tuple[str, ...] = ("model", "optimizer", "measure", "repeat", "seconds")
#: overhead/direction_kernel.csv (the same benchmark, read by :mod:`analysis.kernel`)
KERNEL_COLUMNS: tuple[str, ...] = ("method", "numel", "history_size", "repeat", "seconds", "bytes_moved",
                                   "bound_seconds", "bandwidth_gbs")
#: distributed/*.csv (:mod:`experiments.bench.distributed`, read by :mod:`analysis.scaling`)
DISTRIBUTED_COLUMNS: tuple[str, ...] = ("model", "world_size", "rank", "blocks", "curvature_bytes", "direction_seconds")
#: construction/construction.csv (:mod:`experiments.bench.construction`, read by :mod:`analysis.construction`)
CONSTRUCTION_COLUMNS: tuple[str, ...] = ("optimizer", "tensors", "repeat", "construct_seconds", "step_seconds")
