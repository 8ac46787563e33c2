"""Buffered CSV writer: rows may hold 0-d tensors, materialised together at flush (one host sync).

Flushes every ``max_rows`` rows or ``max_seconds`` seconds, whichever comes first, so a crash loses
at most a few seconds of rows; the checkpoint records ``offset()`` and a resumed run truncates the
file back to it, so rows written after the last checkpoint are never duplicated. ``on_flush`` receives
each flushed batch of rows, materialised (the optional TensorBoard copy,
:mod:`experiments.runner.tensorboard_log`), so whatever mirrors the CSV costs nothing between flushes.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from experiments.runner.schema import CURVATURE_COLUMNS, RUN_COLUMNS  # noqa: F401 - the writers' schema, re-exported


class CsvLog:
    def __init__(
        self,
        path: str | Path,
        columns: Sequence[str],
        *,
        resume_offset: int | None = None,
        max_rows: int = 64,
        max_seconds: float = 2.0,
        on_flush: Callable[[list[list[Any]]], None] | None = None,
    ) -> None:
        """Start a new file (header only), or with ``resume_offset`` truncate an existing one to it.

        ``on_flush`` is called with every batch of rows written, after they are written: values in
        column order, tensors already turned into Python numbers, empty cells None.
        """
        self.path = Path(path)
        self.on_flush = on_flush
        self.columns = tuple(columns)
        self._column_set = frozenset(self.columns)
        self.max_rows, self.max_seconds = max_rows, max_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_offset is None:
            self._file = open(self.path, "w", newline="")
        else:
            self._file = open(self.path, "r+", newline="")
            self._file.truncate(resume_offset)
            self._file.seek(resume_offset)
        # the csv module formats cells in C: '' for None, str() for numbers (shortest round-trip floats,
        # 'nan', 'inf'), True/False, quotes only where a cell needs them
        self._writer = csv.writer(self._file, lineterminator="\n")
        if resume_offset is None:
            self._writer.writerow(self.columns)
            self._file.flush()
        self._rows: list[list[Any]] = []
        self._last_flush = time.monotonic()
        self.nonfinite_seen = False  # a non-finite float was written (e.g. a diverged loss)

    def write(self, row: dict[str, Any]) -> None:
        unknown = row.keys() - self._column_set
        if unknown:
            raise ValueError(f"row has columns {sorted(unknown)} not in {list(self.columns)}")
        self.write_values([row.get(c) for c in self.columns])

    def write_values(self, values: Sequence[Any]) -> None:
        """Append one row given as values in column order (a :class:`~experiments.runner.schema.RunRow`,
        or a list: the runner's per-iteration fast path)."""
        if len(values) != len(self.columns):
            raise ValueError(f"row has {len(values)} values for {len(self.columns)} columns {list(self.columns)}")
        self._rows.append(list(values))
        if len(self._rows) >= self.max_rows or time.monotonic() - self._last_flush >= self.max_seconds:
            self.flush()

    def _materialise(self) -> None:
        slots = [(i, j) for i, r in enumerate(self._rows) for j, v in enumerate(r) if isinstance(v, torch.Tensor)]
        if not slots:
            return
        tensors = [self._rows[i][j] for i, j in slots]
        first = tensors[0]
        with torch.no_grad():
            if all(t.dim() == 0 and t.dtype == first.dtype and t.device == first.device for t in tensors):
                # the common case (one loss per row): one stack, one copy to the host; tolist gives Python
                # floats holding the exact values, as a float64 cast would
                values = torch.stack(tensors).tolist()
            else:
                values = torch.stack([t.reshape(()).to(torch.float64) for t in tensors]).cpu().tolist()
        for (i, j), t, v in zip(slots, tensors, values, strict=True):
            if t.dtype == torch.bool:
                v = bool(v)
            elif not t.dtype.is_floating_point:
                v = int(v)
            elif type(v) is not float:
                v = float(v)
            self._rows[i][j] = v

    def flush(self, fsync: bool = False) -> None:
        written: list[list[Any]] = []
        if self._rows:
            self._materialise()
            if not self.nonfinite_seen:
                self.nonfinite_seen = any(isinstance(v, float) and not math.isfinite(v)
                                          for row in self._rows for v in row)
            self._writer.writerows(self._rows)
            written, self._rows = self._rows, []
        self._file.flush()
        if fsync:
            os.fsync(self._file.fileno())
        self._last_flush = time.monotonic()
        if written and self.on_flush is not None:
            self.on_flush(written)

    def offset(self) -> int:
        """Byte length of the file after flushing everything buffered (for checkpoints)."""
        self.flush(fsync=True)
        return self._file.tell()

    def close(self) -> None:
        """Write what is buffered and close the file (again: nothing)."""
        if self._file.closed:
            return
        self.flush()
        self._file.close()
