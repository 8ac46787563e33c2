"""The ``analysis`` stage: ``python -m analysis`` on the preset's output folder (figures, tables)."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.suite.presets import Preset


def analysis_command(preset: Preset) -> list[str]:
    """The command: the preset's ``analysis_args``, default ``--results <out> --out <out>/figures --quiet``."""
    results = Path(preset.results)
    return [sys.executable, "-m", "analysis",
            *(preset.analysis_args or ("--results", str(results), "--out", str(results / "figures"), "--quiet"))]


def run_analysis(preset: Preset) -> dict[str, Any]:
    """Run the analysis; what the record keeps of it (command, return code, seconds), or a skipped
    status when the ``analysis`` package cannot be imported."""
    if importlib.util.find_spec("analysis") is None or importlib.util.find_spec("analysis.__main__") is None:
        print("[suite] no runnable `analysis` package: skipping the figures", flush=True)
        return {"status": "skipped (analysis not importable)"}
    cmd = analysis_command(preset)
    print(f"[suite] {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    rc = subprocess.call(cmd)
    return {"command": cmd, "returncode": rc, "seconds": round(time.monotonic() - start, 3)}


def comparison_lines(figures: Path) -> list[str]:
    """The comparison the analysis made, for the end of the job: per workload and configuration the
    final test accuracy with its 95% interval and the iterations to the target (ratio to sgd), from
    ``figures/time_to_target.csv``; then the main figures' paths. Empty without that table."""
    table = figures / "time_to_target.csv"
    if not table.is_file():
        return []
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))

    def num(row: dict[str, str], key: str) -> float:
        try:
            return float(row.get(key) or "nan")
        except ValueError:
            return math.nan

    lines = []
    for workload in dict.fromkeys(r["workload"] for r in rows):
        mine = [r for r in rows if r["workload"] == workload]
        lines.append(f"{workload}: target test accuracy {num(mine[0], 'target'):.4f}")
        width = max(len("optimizer"), *(len(r["label"]) for r in mine))
        lines.append(f"  {'optimizer':<{width}}  {'final test acc [95%]':<26}  iterations to target")
        for r in mine:
            final, low, high = num(r, "final"), num(r, "final_low"), num(r, "final_high")
            acc = f"{final:.4f}" + (f" [{low:.4f}, {high:.4f}]" if math.isfinite(low) else "")
            its, ratio = num(r, "iterations"), num(r, "iterations_ratio")
            reach = (f"{its:,.0f}" + (f" ({ratio:.2f} x sgd)" if math.isfinite(ratio) else "")) if math.isfinite(its) \
                else f"not reached ({r['seeds_reached']}/{r['seeds']} seeds)"
            lines.append(f"  {r['label']:<{width}}  {acc:<26}  {reach}")
    for name in ("performance_profiles.png", *sorted(p.name for p in figures.glob("convergence_*.png"))):
        if (figures / name).is_file():
            lines.append(f"figure: {figures / name}")
    return lines
