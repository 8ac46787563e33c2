"""Optional TensorBoard copy of a run's CSV rows (``python -m experiments.run --tensorboard DIR``).

The CSV stays the record; this writes the same numbers as TensorBoard scalars, one event-file folder
per run, ``DIR/<run id>/``, each tag named like its CSV column and plotted against the row's
``iteration``: train rows give ``train_loss``, ``lr``, ``wall_s``, ``cpu_s``, ``grad_evals``; eval rows
``test_loss``, ``test_acc``, ``eval_s``. Values are TensorBoard's float32 scalars.

It is fed by :class:`experiments.runner.csvlog.CsvLog` when the CSV flushes (rows already materialised, so on
a GPU no extra device sync), which happens after a run's clock stops, and every batch is flushed to
disk at once: the event files hold what the CSV holds, the writer's thread does its work while the
runner waits for it, never inside another run's timed iteration.

Resume: a run resumed from its checkpoint at iteration t writes its new event file with
``purge_step=t+1``, so TensorBoard drops the points past t that the interrupted attempt wrote (as the
CSV is truncated back to the checkpoint) and shows each iteration once. A run that starts over
deletes its folder's old event files.

Needs the ``tensorboard`` package (``pip install 'mlbfgs[tensorboard]'``), imported only here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install 'mlbfgs[tensorboard]' (or: pip install tensorboard)"
# the CSV columns written as scalars, by the row's kind; the rest are the run's identity, the step, or
# (epoch) a function of the step
SCALARS_BY_KIND: dict[str, tuple[str, ...]] = {
    "train": ("train_loss", "lr", "wall_s", "cpu_s", "grad_evals"),
    "eval": ("test_loss", "test_acc", "eval_s"),
}
EVENT_FILE_GLOB = "events.out.tfevents.*"
# every batch of rows is flushed when it is written: the writer's own timer has nothing left to do
_WRITER_FLUSH_SECS = 3600
_WRITER_QUEUE = 4096  # events queued before add_scalar waits for the writer's thread


def require_tensorboard() -> None:
    """Raise ``ModuleNotFoundError`` naming the package and how to install it when tensorboard is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError(
            f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL_HINT}", name="tensorboard")


class TensorBoardLog:
    """The event files of one run in ``log_dir``, written from the rows of its CSV.

    ``columns`` is the CSV's column order (it must hold ``kind`` and ``iteration``);
    ``resume_iteration`` the iteration of the checkpoint the run resumes from (None: a new run, whose
    folder's old event files are deleted).

    Raises ModuleNotFoundError when tensorboard is not installed (:func:`require_tensorboard`), and
    ValueError when ``columns`` lacks ``kind`` or ``iteration``.
    """

    def __init__(self, log_dir: str | Path, columns: Sequence[str], resume_iteration: int | None) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        missing = {"kind", "iteration"} - set(columns)
        if missing:
            raise ValueError(f"columns must include kind and iteration, missing {sorted(missing)} in {list(columns)}")
        self.log_dir = Path(log_dir)
        self._kind, self._iteration = columns.index("kind"), columns.index("iteration")
        self._scalars = {kind: [(name, columns.index(name)) for name in names if name in columns]
                         for kind, names in SCALARS_BY_KIND.items()}
        if resume_iteration is None:
            for old in self.log_dir.glob(EVENT_FILE_GLOB):
                old.unlink()
        self._writer: Any = SummaryWriter(
            log_dir=str(self.log_dir), purge_step=None if resume_iteration is None else resume_iteration + 1,
            max_queue=_WRITER_QUEUE, flush_secs=_WRITER_FLUSH_SECS)

    def write_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Add the scalars of ``rows`` (values in column order, numbers or None) and flush them to disk."""
        if self._writer is None:
            raise ValueError(f"the TensorBoard log in {self.log_dir} is closed")
        for row in rows:
            step = int(row[self._iteration])
            for tag, j in self._scalars.get(row[self._kind], ()):
                value = row[j]
                if value is not None and value != "":
                    self._writer.add_scalar(tag, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (again: nothing)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
