"""One process trains a run at a time: an exclusive lock on ``<out>/<workload>/<run_id>.lock``, beside the
run's manifest (the file two processes training the same run would both write).

The lock is ``fcntl.flock`` on that file, taken without waiting: the kernel releases it when the process
ends, however it ends (a crash or ``kill -9`` leaves an unlocked file that the next process takes). The
holder writes its pid into the file, so the refusal names it; a clean release deletes the file. Under
torchrun the first process (rank 0) holds the locks of the launch and tells the others whether it got
them. Where ``fcntl`` does not exist (Windows) nothing is locked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from experiments.runner.dist_context import DistContext


class RunBusyError(Exception):
    """Another process holds the lock of a run this process was asked to train."""


class RunLock:
    """The held lock of one run (see the module docstring); :meth:`release` gives it up."""

    def __init__(self, path: Path, fd: int, created: tuple[Path, ...] = ()) -> None:
        self.path, self.fd = path, fd
        self.created = created  # folders made for the lock file, deepest first

    def release(self) -> None:
        """Delete the lock file while still holding it, then close it (which unlocks), and remove the
        folders made for it if nothing else was written there (a run that never started leaves nothing)."""
        if self.fd < 0:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = -1
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote its files there
                break


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def acquire(path: Path, run_id: str) -> RunLock | None:
    """Lock run ``run_id`` through the file ``path`` (created with its folder); None where ``fcntl`` does not
    exist. RunBusyError naming the run and the holder's pid when another process holds it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not locked
        return None
    created = tuple(d for d in (path.parent, *path.parent.parents) if not d.exists())
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise RunBusyError(f"run {run_id} is being trained by another process (pid {pid}; lock {path})") from None
        try:  # the holder we waited on may have deleted the file before we locked it: lock the current one
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return RunLock(path, fd, created)


@contextmanager
def hold_runs(runs: dict[str, Path], ctx: DistContext) -> Iterator[None]:
    """Hold the locks of ``runs`` (run id -> lock file) for the ``with`` block, released on leaving it.

    Under torchrun rank 0 takes them and every rank learns the outcome (one all-reduce). RunBusyError (on
    every rank) when another process holds one of them; none is kept then.
    """
    held: list[RunLock] = []
    busy: RunBusyError | None = None
    try:
        if ctx.is_main:
            try:
                for run_id, path in runs.items():
                    lock = acquire(path, run_id)
                    if lock is not None:
                        held.append(lock)
            except RunBusyError as err:
                busy = err
        if ctx.sum([0.0 if busy is None else 1.0])[0] > 0:
            raise busy or RunBusyError(f"a run of {sorted(runs)} is being trained by another process")
        yield
    finally:
        for lock in held:
            lock.release()
