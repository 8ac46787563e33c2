"""The mL-BFGS direction kernel against the machine's bandwidth bound (the overhead benchmark).

Input ``results/overhead/direction_kernel.csv``, read by :func:`analysis.load.load_kernel`:
``method, numel, history_size, repeat, seconds, bytes_moved, bound_seconds, bandwidth_gbs`` (one row
per repeat).
"""

from __future__ import annotations

import pandas as pd

from analysis.tables import fmt, markdown_table


def kernel_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per method beside its bandwidth bound and their ratio."""
    rows = []
    for method, sub in frame.groupby("method", sort=True):
        median = float(sub["seconds"].median())
        bound = float(sub["bound_seconds"].iloc[0])
        rows.append({"method": method, "numel": int(sub["numel"].iloc[0]),
                     "history_size": int(sub["history_size"].iloc[0]), "median_s": median,
                     "bound_s": bound, "ratio_to_bound": median / bound,
                     "bandwidth_gbs": float(sub["bandwidth_gbs"].iloc[0]), "repeats": len(sub)})
    return pd.DataFrame(rows)


def kernel_markdown(summary: pd.DataFrame) -> str:
    first = summary.iloc[0]
    caption = (
        f"Direction g <- H g for a full ring (M = {first['history_size']}) on {first['numel']:,} parameters; "
        f"median over {first['repeats']} interleaved repeats. Bound = bytes that must move (the ring read twice, "
        f"g read and written) / copy bandwidth ({first['bandwidth_gbs']:.2f} GB/s measured in the same run).\n"
    )
    body = [[r["method"], fmt(r["median_s"] * 1e3, 1), fmt(r["bound_s"] * 1e3, 1), fmt(r["ratio_to_bound"], 2)]
            for _, r in summary.iterrows()]
    return caption + "\n" + markdown_table(["method", "median (ms)", "bound (ms)", "median / bound"], body)
