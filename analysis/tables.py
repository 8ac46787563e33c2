"""Byte-stable markdown and CSV output: fixed float formats, no timestamps, ``\\n`` line ends."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

#: Text of a missing number in tables.
MISSING = "n/a"


def fmt(value: float | int | None, digits: int, missing: str = MISSING) -> str:
    """``value`` with ``digits`` decimals (fixed point), or ``missing`` when absent / not finite."""
    if value is None:
        return missing
    value = float(value)
    if not math.isfinite(value):
        return missing
    text = f"{value:.{digits}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` has one character per column, ``l`` or ``r`` (default: first
    column left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} characters for {len(header)} columns")
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` with ``\\n`` line ends (same bytes on every platform)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return path


def write_csv(path: Path, frame: pd.DataFrame, float_format: str = "%.6f") -> Path:
    """Write ``frame`` as CSV with a fixed float format, no index, empty cells for missing values."""
    return write_text(path, frame.to_csv(index=False, float_format=float_format, lineterminator="\n", na_rep=""))
