"""Start a command and SIGKILL it once a condition holds (for the kill-and-resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def kill_when(cmd: list[str], cwd: Path, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Run ``cmd``; as soon as ``ready()`` is true, SIGKILL it. Fails the test if the command ends first
    or ``ready()`` stays false for ``timeout`` seconds (``what`` names the awaited condition)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if ready():
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.005)
        else:
            pytest.fail(f"no {what} within {timeout} s")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
