"""Progress of the suite's training processes, read from their run CSVs and manifests.

The suite starts its runs with ``--no-progress`` (several tqdm bars on one terminal would garble each
other, and a log file would fill with carriage returns), so it reports for them: every
``interval_s`` seconds one line per running process,

    [suite 1/2] 3440/4690 iterations (73.3 %), 8.3 it/min since this start, about 2 h 30 min left

An iteration count is the last complete row of a run's CSV (rows are flushed every ``--flush-rows``
rows, so it lags by at most that many logged rows); the total is the manifest's ``total_iters``. A
lockstep process reports its slowest run. The rate counts only iterations trained since this
invocation started the process (a resumed run's earlier iterations are not in it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from experiments.planning import PlannedRun

_TAIL_BYTES = 8192  # rows are under 300 bytes: the tail holds several complete ones


def iterations_done(csv_path: Path) -> int:
    """The ``iteration`` of the last complete row of a run CSV; 0 when the file or a complete data row
    is missing (a run that has not logged yet)."""
    try:
        with open(csv_path, "rb") as f:
            header = f.readline().decode().strip().split(",")
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read().decode(errors="replace")
    except OSError:
        return 0
    if "iteration" not in header:
        return 0
    column = header.index("iteration")
    lines = tail.split("\n")[:-1]  # the piece after the last newline is a row still being written
    for line in reversed(lines):
        cells = line.split(",")
        if len(cells) == len(header) and cells != header:
            try:
                return int(float(cells[column]))
            except ValueError:
                continue
    return 0


def total_iterations(manifest: Path) -> int | None:
    """The manifest's ``total_iters`` (None before the runner wrote it)."""
    try:
        total = json.loads(manifest.read_text()).get("total_iters")
    except (OSError, ValueError):
        return None
    return int(total) if total else None


def group_progress(group: Sequence[PlannedRun]) -> tuple[int, int | None]:
    """``(iterations, total)`` of a process: its slowest run's iterations and the largest total (None
    when a run's total is not known yet)."""
    done = min(iterations_done(r.manifest.with_suffix(".csv")) for r in group)
    totals = [total_iterations(r.manifest) for r in group]
    return done, None if any(t is None for t in totals) else max(t for t in totals if t is not None)


def format_duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min`` or ``40 s``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


@dataclass
class _Started:
    t0: float
    done0: int | None = None  # iterations when first read (a resumed run starts above 0)


@dataclass
class ProgressReporter:
    """Prints each running process's progress every ``interval_s`` seconds (0: never).

    ``start(label, group)`` when a process starts, ``report(running)`` as often as convenient (it prints
    only when the interval has passed), ``stop(label)`` when it ends.
    """

    interval_s: float
    clock: Callable[[], float] = time.monotonic
    emit: Callable[[str], None] = lambda line: print(line, flush=True)
    _started: dict[str, _Started] = field(default_factory=dict)
    _last: float | None = None

    def __post_init__(self) -> None:
        if self.interval_s < 0:
            raise ValueError(f"progress interval must be >= 0 seconds (0 turns it off), got {self.interval_s}")

    def start(self, label: str, group: Sequence[PlannedRun]) -> None:
        now = self.clock()
        self._started[label] = _Started(now, group_progress(group)[0] if self.interval_s else None)
        if self._last is None:
            self._last = now

    def stop(self, label: str) -> None:
        self._started.pop(label, None)

    def report(self, running: Sequence[tuple[str, Sequence[PlannedRun]]]) -> None:
        if not self.interval_s or self._last is None or self.clock() - self._last < self.interval_s:
            return
        self._last = now = self.clock()
        for label, group in running:
            self.emit(self.line(label, group, now))

    def line(self, label: str, group: Sequence[PlannedRun], now: float) -> str:
        done, total = group_progress(group)
        started = self._started.get(label, _Started(now, done))
        if started.done0 is None:
            started.done0 = done
        if total is None:
            return f"{label} {done} iterations, total not known yet"
        text = f"{label} {done}/{total} iterations ({100 * done / total:.1f} %)"
        elapsed, gained = now - started.t0, done - started.done0
        if gained <= 0 or elapsed <= 0:
            return text + ", no iteration logged since this start yet"
        rate = gained / elapsed
        return (f"{text}, {60 * rate:.1f} it/min since this start, "
                f"about {format_duration(max(0, total - done) / rate)} left")
