"""The ``analysis`` stage: ``python -m analysis`` on the preset's output folder (figures, tables)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.presets import Preset


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
