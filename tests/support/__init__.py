"""What the test modules share: the repository's root, synthetic results, worker functions for the
distributed tests (importable by spawned processes), process helpers and the committed results."""

from pathlib import Path

#: the repository's root
REPO = Path(__file__).resolve().parents[2]
