"""What a run records, and where: sinks behind one interface, fed by a :class:`Recorder`.

The run CSV is the primary record: rows are buffered (a GPU loss stays a tensor until the buffer
flushes, one device sync per flush) and every flushed batch, materialised, goes to each
:class:`Sink`: the TensorBoard copy (:class:`TensorBoardSink`) and the manifest
(:class:`ManifestSink`, which also takes the checkpoints' progress and the end of the run). Flushes
happen while the run's clock is stopped (:mod:`experiments.runner.training`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from experiments.runner.csvlog import CsvLog
from experiments.runner.dist_context import DistContext
from experiments.runner.manifest import Manifest, now_iso
from experiments.runner.schema import CURVATURE_COLUMNS, RUN_COLUMNS, RunRow
from experiments.runner.tensorboard_log import TensorBoardLog


class Sink(Protocol):
    """A destination of a run's records besides its CSV."""

    def rows(self, rows: list[list[Any]]) -> None:
        """Rows the run CSV just wrote (values in :data:`RUN_COLUMNS` order, tensors materialised)."""
        ...

    def progress(self, fields: dict[str, Any]) -> None:
        """At a checkpoint: iterations done, seconds, and anything else to keep (``amp`` ...)."""
        ...

    def end(self, fields: dict[str, Any]) -> None:
        """The run finished or failed (``status`` and the final fields)."""
        ...

    def close(self) -> None:
        """Write what is buffered (again: nothing)."""
        ...


class TensorBoardSink:
    """The run CSV's numbers as TensorBoard event files (``<dir>/<run id>/``)."""

    def __init__(self, log_dir: Path, resume_iteration: int | None) -> None:
        self.log = TensorBoardLog(log_dir, RUN_COLUMNS, resume_iteration)

    def rows(self, rows: list[list[Any]]) -> None:
        self.log.write_rows(rows)

    def progress(self, fields: dict[str, Any]) -> None:
        return None

    def end(self, fields: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        self.log.close()


class ManifestSink:
    """The run's manifest (``<run id>.json``): what it is, then its progress and its end."""

    def __init__(self, path: Path, base: dict[str, Any], resume_iteration: int | None, iteration: int) -> None:
        self.manifest = Manifest(path, base, resume_iteration)
        self.manifest.update(iterations_done=iteration)
        self.manifest.save()

    def rows(self, rows: list[list[Any]]) -> None:
        return None

    def progress(self, fields: dict[str, Any]) -> None:
        self.manifest.update(**fields)
        self.manifest.save()

    def end(self, fields: dict[str, Any]) -> None:
        self.manifest.update(end_time=now_iso(), **fields)
        self.manifest.save()

    def close(self) -> None:
        return None


class CurvatureLog:
    """The curvature CSV, created on the first record (most optimizers never write one)."""

    def __init__(self, path: Path, resume_offset: int | None, resuming: bool, max_rows: int) -> None:
        self.path = path
        self.max_rows = max_rows
        self.log: CsvLog | None = None
        if resuming and resume_offset is not None:  # a file begun before a column was added keeps its header
            with open(path, newline="") as f:
                columns = next(csv.reader(f), CURVATURE_COLUMNS)
            self.log = CsvLog(path, columns, resume_offset=resume_offset, max_rows=max_rows)
        elif path.exists():
            path.unlink()

    def write(self, run_id: str, iteration: int, records: list[dict[str, Any]]) -> None:
        if self.log is None:
            self.log = CsvLog(self.path, CURVATURE_COLUMNS, max_rows=self.max_rows)
        columns = self.log.columns
        for rec in records:
            row = {"run_id": run_id, "iteration": iteration, **rec}
            self.log.write_values([row.get(c) for c in columns])

    def offset(self) -> int | None:
        return None if self.log is None else self.log.offset()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


class RecordGather:
    """Distributed runs: each rank sees the pairs of its own blocks (``shard="blocks"``), or its rows of every
    block (``"rows"``, whose records are global). Records wait on every rank and are gathered to rank 0 at
    checkpoints and at the end (one collective each), in iteration order, one per (iteration, block)."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        self.pending: list[tuple[int, dict[str, Any]]] = []

    def add(self, iteration: int, records: list[dict[str, Any]]) -> None:
        self.pending.extend((iteration, rec) for rec in records)

    def gather(self, sink: CurvatureLog | None, run_id: str) -> None:
        local = [(it, {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in rec.items()})
                 for it, rec in self.pending]
        self.pending = []
        parts: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(parts, local)
        if sink is None:
            return
        # whole blocks per rank: each block's records come from one rank; rows per rank (shard="rows"): every rank
        # holds every block's (global) record, and rank 0's stands for all
        first: dict[tuple[int, int], dict[str, Any]] = {}
        for part in parts:
            for iteration, rec in part:
                first.setdefault((iteration, int(rec["block"])), rec)
        for (iteration, _), rec in sorted(first.items()):
            sink.write(run_id, iteration, [rec])


class Recorder:
    """A run's records: the run CSV and the curvature CSV (on rank 0), the other sinks, and the gathering
    of curvature records across ranks. Every method is called outside the run's clock.

    Args:
        run_id: the run's id (the curvature rows' first cell).
        csv_path, curvature_path: the two CSVs.
        offsets: where a resumed run's CSVs end (``{"run": bytes, "curvature": bytes}``), or Nones.
        resuming: the run resumes from a checkpoint.
        flush_rows: CSV rows buffered before a write.
        sinks: the other destinations (TensorBoard, manifest), fed after every CSV flush.
        main: this rank writes files (rank 0).
        gather: curvature records are gathered from every rank (block-sharded distributed runs).
    """

    def __init__(self, run_id: str, csv_path: Path, curvature_path: Path, offsets: dict[str, int | None],
                 resuming: bool, flush_rows: int, sinks: list[Sink], main: bool, gather: RecordGather | None) -> None:
        self.run_id, self.sinks, self.gatherer = run_id, sinks, gather
        self.run_log: CsvLog | None = None
        self.curv_log: CurvatureLog | None = None
        if main:
            self.run_log = CsvLog(csv_path, RUN_COLUMNS, resume_offset=offsets["run"], max_rows=flush_rows,
                                  on_flush=self._fan_out)
            self.curv_log = CurvatureLog(curvature_path, offsets["curvature"], resuming, flush_rows)

    def _fan_out(self, rows: list[list[Any]]) -> None:
        for sink in self.sinks:
            sink.rows(rows)

    @property
    def nonfinite_seen(self) -> bool:
        """A non-finite number reached the run CSV (a diverged loss)."""
        return self.run_log is not None and self.run_log.nonfinite_seen

    def row(self, row: RunRow) -> None:
        if self.run_log is not None:
            self.run_log.write_values(row)

    def curvature(self, iteration: int, records: list[dict[str, Any]]) -> None:
        if self.gatherer is not None:
            self.gatherer.add(iteration, records)
        elif self.curv_log is not None:
            self.curv_log.write(self.run_id, iteration, records)

    def offsets(self) -> dict[str, int | None]:
        """Flush everything and say where the CSVs end (what a checkpoint records); gathers first."""
        self.gather()
        if self.run_log is None or self.curv_log is None:
            return {"run": None, "curvature": None}
        return {"run": self.run_log.offset(), "curvature": self.curv_log.offset()}

    def progress(self, fields: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.progress(fields)

    def gather(self) -> None:
        """The curvature records still waiting on other ranks (at the end; one collective)."""
        if self.gatherer is not None:
            self.gatherer.gather(self.curv_log, self.run_id)

    def end(self, fields: dict[str, Any]) -> None:
        """Close the logs, then tell every sink how the run ended."""
        self.close()
        for sink in self.sinks:
            sink.end(fields)

    def close(self) -> None:
        """Write what the logs buffer and close them: the CSVs, then the sinks (again: nothing)."""
        if self.run_log is not None:
            self.run_log.close()
        if self.curv_log is not None:
            self.curv_log.close()
        for sink in self.sinks:
            sink.close()
