"""The compiled-step table: medians per variant, their ratio, and the compiler's counts."""

from pathlib import Path

import pandas as pd
import pytest

from analysis.compiled import compiled_markdown, compiled_summary, load_compiled


def _write(root: Path) -> None:
    (root / "compile").mkdir(parents=True)
    rows = [("w", "eager", i, s) for i, s in enumerate([1.0, 3.0, 2.0])]
    rows += [("w", "compiled", i, s) for i, s in enumerate([0.5, 9.0, 1.0])]
    pd.DataFrame(rows, columns=["workload", "variant", "step", "seconds"]).to_csv(root / "compile" / "steps.csv",
                                                                                  index=False)
    pd.DataFrame([{"workload": "w", "unique_graphs": 7, "graphs_added_after_warmup": 0, "graph_breaks": 6,
                   "max_param_difference": 2e-7, "pairs_accepted": 30}]).to_csv(root / "compile" / "summary.csv",
                                                                               index=False)


def test_medians_ratio_and_counts(tmp_path: Path) -> None:
    assert load_compiled(tmp_path) is None
    _write(tmp_path)
    summary = compiled_summary(*load_compiled(tmp_path))
    row = summary.iloc[0]
    assert row["eager_s"] == 2.0 and row["compiled_s"] == 1.0
    assert row["compiled_over_eager"] == pytest.approx(0.5)
    md = compiled_markdown(summary)
    assert "| w | 2000.00 | 1000.00 | 0.50 | 7 | 0 | 6 | 2.0e-07 |" in md
