"""The MLBFGS step eager against ``torch.compile`` (``results/compile/``, written by
``python -m experiments.bench.compile``): median milliseconds per step, interleaved, with the
compiler's graph counts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.load import read_checked_csv
from analysis.tables import fmt, markdown_table
from experiments.bench.schema import COMPILE_STEP_COLUMNS as STEP_COLUMNS
from experiments.bench.schema import COMPILE_SUMMARY_COLUMNS as SUMMARY_COLUMNS


def load_compiled(results: Path | str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(per-step rows, per-workload compiler counts), or None when the benchmark has not run."""
    root = Path(results) / "compile"
    steps, counts = root / "steps.csv", root / "summary.csv"
    if not (steps.is_file() and counts.is_file()):
        return None
    return (read_checked_csv(steps, STEP_COLUMNS, ("step", "seconds")),
            read_checked_csv(counts, SUMMARY_COLUMNS, SUMMARY_COLUMNS[1:]))


def compiled_summary(steps: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per step of each variant, the ratio compiled / eager and the graph counts."""
    med = steps.groupby(["workload", "variant"], sort=True)["seconds"].median().unstack("variant")
    out = pd.DataFrame({
        "workload": med.index,
        "eager_s": med["eager"].to_numpy(),
        "compiled_s": med["compiled"].to_numpy(),
    })
    out["compiled_over_eager"] = out["compiled_s"] / out["eager_s"]
    return out.merge(counts[list(SUMMARY_COLUMNS)], on="workload", how="left")


def compiled_markdown(summary: pd.DataFrame) -> str:
    caption = (
        "MLBFGS step alone (blocks per layer, M 10, T 5 so that pair steps are timed too), eager against "
        "`torch.compile(opt.step)` (inductor), alternating step by step after a warm-up that compiles every "
        "phase; medians. 'graphs' = graphs compiled in all (one per phase), 'after warm-up' = graphs compiled "
        "while timing (recompiles), 'breaks' = graph breaks at the phases that decide on the host.\n"
    )
    header = ["workload", "eager (ms)", "compiled (ms)", "compiled / eager", "graphs", "after warm-up", "breaks",
              "max abs. theta difference"]
    body = [[r.workload, fmt(r.eager_s * 1e3, 2), fmt(r.compiled_s * 1e3, 2), fmt(r.compiled_over_eager, 2),
             str(int(r.unique_graphs)), str(int(r.graphs_added_after_warmup)), str(int(r.graph_breaks)),
             f"{r.max_param_difference:.1e}"] for r in summary.itertuples()]
    return caption + "\n" + markdown_table(header, body, "lrrrrrrr")
