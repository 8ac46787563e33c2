"""SIGTERM stops a command the way Ctrl-C does: ``kill <pid>`` of the suite or of a runner raises
:class:`Terminated` in its main thread, so the ``finally`` blocks run (the suite stops its child processes,
a runner writes the rows it buffers and releases its run locks) instead of the process vanishing at once.

:class:`Terminated` is a ``SystemExit`` (status 143 = 128 + SIGTERM): no ``except Exception`` takes it for
a failure of the run, and nothing prints a traceback. The handler is installed by the commands' ``__main__``
entry points only, not by their ``main()`` functions (tests and scripts that call those keep their own).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

TERMINATED_STATUS = 128 + signal.SIGTERM


class Terminated(SystemExit):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(TERMINATED_STATUS)


def sigterm_as_exit() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (nothing when called from another thread,
    where Python cannot install signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
