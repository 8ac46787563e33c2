"""Progress of the suite's training processes, read from their run CSVs and manifests.

The suite starts its runs with ``--no-progress`` (several processes' tqdm bars on one terminal would
garble each other, and a log file would fill with carriage returns), so it reports for them. On a
terminal each running process gets a tqdm bar of its own (iterations of the total, rate, time left,
and each optimizer's smoothed training loss), refreshed every second; without one (CI, nohup, a log
file) every ``interval_s`` seconds one line per running process,

    [suite 1/2] 3440/4690 iterations (73.3 %), 8.3 it/min, about 2 h 30 min left; loss sgd 0.412, mlbfgs 0.533

The smoothed loss of a run is the mean of the training losses of its last :data:`LOSS_ROWS` complete
rows.

An iteration count is the last complete row of a run's CSV (rows are flushed every ``--flush-rows``
rows, so it lags by at most that many logged rows); the total is the manifest's ``total_iters``. A
lockstep process reports its slowest run among those still training (a diverged, failed or shorter run
has ended and no longer holds the line back). The rate is measured from the first line on (by then the
process has cut a resumed run's CSV back to its checkpoint, or emptied it under ``--force``), and
measured again from a line whose count dropped. The display never stops training: a file it cannot
read makes its line say so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.runner.atomic import read_json
from experiments.runner.manifest import ENDED_STATUSES, run_status
from experiments.suite.planning import PlannedRun

_TAIL_BYTES = 8192  # rows are under 300 bytes: the tail holds several complete ones
LOSS_ROWS = 20  # training rows averaged into the smoothed loss


def _tail_rows(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, the complete data rows of the file's last few kilobytes); empty when unreadable."""
    try:
        with open(csv_path, "rb") as f:
            header = f.readline().decode(errors="replace").strip().split(",")
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read().decode(errors="replace")
    except OSError:
        return [], []
    lines = tail.split("\n")[:-1]  # the piece after the last newline is a row still being written
    rows = [line.split(",") for line in lines]
    return header, [r for r in rows if len(r) == len(header) and r != header]


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def iterations_done(csv_path: Path) -> int:
    """The ``iteration`` of the last complete row of a run CSV; 0 when the file or a complete data row
    is missing (a run that has not logged yet)."""
    header, rows = _tail_rows(csv_path)
    if "iteration" not in header:
        return 0
    column = header.index("iteration")
    for row in reversed(rows):
        value = _number(row[column])
        if value is not None:
            return int(value)
    return 0


def smoothed_loss(csv_path: Path) -> float | None:
    """The mean training loss of the last :data:`LOSS_ROWS` complete train rows of a run CSV; None
    before the first (or when a loss is not finite: the line then says so)."""
    header, rows = _tail_rows(csv_path)
    if "train_loss" not in header or "kind" not in header:
        return None
    kind, column = header.index("kind"), header.index("train_loss")
    cells = [r[column] for r in rows if r[kind] == "train" and r[column].strip()][-LOSS_ROWS:]
    values = [_number(c) for c in cells]
    if not values:
        return None
    if any(v is None for v in values):
        return math.nan
    return sum(v for v in values if v is not None) / len(values)


def group_losses(group: Sequence[PlannedRun]) -> str:
    """``sgd 0.412, mlbfgs 0.533``: each run's smoothed loss, named by its optimizer (numbered when a
    group trains one optimizer in several configurations)."""
    names = [r.optimizer for r in group]
    parts = []
    for i, run in enumerate(group):
        name = run.optimizer
        if names.count(name) > 1:
            name += f"#{names[:i + 1].count(name)}"
        loss = smoothed_loss(run.manifest.with_suffix(".csv"))
        if loss is not None:
            parts.append(f"{name} {loss:.3f}" if math.isfinite(loss) else f"{name} non-finite")
    return ", ".join(parts)


@dataclass(frozen=True)
class RunState:
    """What a run's manifest says about its progress: whether it ended and its total iterations."""

    ended: bool
    total: int | None  # the manifest's ``total_iters``; None before the runner wrote it or when not a positive count


def run_state(manifest: Path) -> RunState:
    """Read the manifest once; an unreadable one is a run still training with no known total."""
    try:
        data = read_json(manifest)
    except (OSError, UnicodeDecodeError):
        data = None
    total = data.get("total_iters") if isinstance(data, dict) else None
    valid = isinstance(total, int) and not isinstance(total, bool) and total > 0
    return RunState(run_status(data) in ENDED_STATUSES, total if valid else None)


def group_progress(group: Sequence[PlannedRun]) -> tuple[int, int | None] | None:
    """``(iterations, total)`` of a process: the slowest run still training and the largest total among
    those runs; total None while a run's total is not known yet. None when every run has ended."""
    states = [(r, run_state(r.manifest)) for r in group]
    training = [(r, s) for r, s in states if not s.ended]
    if not training:
        return None
    done = min(iterations_done(r.manifest.with_suffix(".csv")) for r, _ in training)
    totals = [s.total for _, s in training]
    return done, None if any(t is None for t in totals) else max(t for t in totals if t is not None)


def format_duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min`` or ``40 s``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


@dataclass
class _Baseline:
    t0: float  # when the rate is measured from
    done0: int  # iterations then
    last: int  # iterations at the last line


@dataclass
class ProgressReporter:
    """Prints each running process's progress every ``interval_s`` seconds (0: never).

    ``start(label)`` when a process starts, ``report(running)`` as often as convenient (it prints only
    when the interval has passed since the first start or the last lines), ``stop(label)`` when it ends.
    """

    interval_s: float
    clock: Callable[[], float] = time.monotonic
    emit: Callable[[str], None] = lambda line: print(line, flush=True)
    bars: bool = False  # a tqdm bar per process, refreshed every second, instead of lines (a terminal)
    _baselines: dict[str, _Baseline | None] = field(default_factory=dict)
    _last: float | None = None
    _bars: dict[str, Any] = field(default_factory=dict)
    _last_bar: float = -math.inf

    def __post_init__(self) -> None:
        if not self.interval_s >= 0:  # also NaN
            raise ValueError(f"progress interval must be >= 0 seconds (0 turns it off), got {self.interval_s}")

    def start(self, label: str) -> None:
        self._baselines[label] = None  # measured at its first line
        if self._last is None:
            self._last = self.clock()

    def stop(self, label: str) -> None:
        self._baselines.pop(label, None)
        bar = self._bars.pop(label, None)
        if bar is not None:
            bar.close()

    def report(self, running: Sequence[tuple[str, Sequence[PlannedRun]]]) -> None:
        if self.bars:
            self._update_bars(running)
            return
        if not self.interval_s or self._last is None or self.clock() - self._last < self.interval_s:
            return
        self._last = now = self.clock()
        for label, group in running:
            try:
                text = self.line(label, group, now)
            except Exception as err:  # a display: it must never stop the training it reports on
                text = f"{label} progress unavailable ({type(err).__name__}: {err})"
            self.emit(text)

    def line(self, label: str, group: Sequence[PlannedRun], now: float) -> str:
        progress = group_progress(group)
        if progress is None:
            return f"{label} all {len(group)} run(s) ended"
        done, total = progress
        base = self._baselines.get(label)
        if base is None or done < base.last:  # first line, or the CSV was cut back: measure from here
            self._baselines[label] = _Baseline(now, done, done)
            rate_text = "measuring the rate"
        else:
            base.last = done
            elapsed, gained = now - base.t0, done - base.done0
            rate = gained / elapsed if elapsed > 0 else 0.0
            if rate <= 0:
                rate_text = "no new iteration logged"
            elif total is None:
                rate_text = f"{60 * rate:.1f} it/min"
            else:
                rate_text = f"{60 * rate:.1f} it/min, about {format_duration(max(0, total - done) / rate)} left"
        losses = group_losses(group)
        rate_text += f"; loss {losses}" if losses else ""
        if total is None:
            return f"{label} {done} iterations (total not known yet), {rate_text}"
        return f"{label} {done}/{total} iterations ({100 * done / total:.1f} %), {rate_text}"

    def _update_bars(self, running: Sequence[tuple[str, Sequence[PlannedRun]]]) -> None:
        """tqdm bars (rate and time left are tqdm's own), at most once a second."""
        from tqdm import tqdm

        now = self.clock()
        if now - self._last_bar < 1.0:
            return
        self._last_bar = now
        for label, group in running:
            try:
                progress = group_progress(group)
                if progress is None:
                    continue
                done, total = progress
                bar = self._bars.get(label)
                if bar is None:
                    bar = self._bars[label] = tqdm(total=total, desc=label, unit="it", position=len(self._bars),
                                                   initial=done, dynamic_ncols=True, leave=True)
                if total is not None and bar.total != total:
                    bar.total = total
                bar.update(max(0, done - bar.n))
                bar.set_postfix_str(group_losses(group), refresh=True)
            except Exception as err:  # a display: it must never stop the training it reports on
                self.emit(f"{label} progress unavailable ({type(err).__name__}: {err})")
