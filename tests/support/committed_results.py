"""The files committed under ``results/`` (tests that hold the committed results to the code read them)."""

from __future__ import annotations

import subprocess

from tests.support import REPO


def committed_results() -> list[str]:
    """Paths under ``results/`` that git tracks, relative to the repository root (untracked runs left out)."""
    listed = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True, check=True)
    return listed.stdout.split()
