"""Direction-kernel table: medians against the bandwidth bound."""

import pandas as pd
import pytest

from analysis.kernel import kernel_markdown, kernel_summary
from analysis.load import load_kernel


def test_kernel_summary_uses_medians(tmp_path) -> None:
    rows = [
        {"method": "compact-float32", "numel": 1000, "history_size": 10, "repeat": r, "seconds": s,
         "bytes_moved": 92000, "bound_seconds": 0.002, "bandwidth_gbs": 46.0}
        for r, s in enumerate([0.003, 0.010, 0.002])
    ]
    (tmp_path / "overhead").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "overhead" / "direction_kernel.csv", index=False)
    summary = kernel_summary(load_kernel(tmp_path))
    assert summary.loc[0, "median_s"] == pytest.approx(0.003)
    assert summary.loc[0, "ratio_to_bound"] == pytest.approx(1.5)
    md = kernel_markdown(summary)
    assert "| compact-float32 | 3.0 | 2.0 | 1.50 |" in md


def test_missing_columns_are_named(tmp_path) -> None:
    (tmp_path / "overhead").mkdir()
    pd.DataFrame([{"method": "x", "seconds": 1.0}]).to_csv(tmp_path / "overhead" / "direction_kernel.csv", index=False)
    with pytest.raises(ValueError, match="bound_seconds"):
        load_kernel(tmp_path)
