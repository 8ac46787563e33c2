"""The record of one suite command, ``<out>/suite_<preset>.json``: what ran, stage by stage.

Layout::

    {"preset", "description", "command", "stages_selected", "mode", "threads", "jobs", "start_time",
     "git_commit", "git_dirty", ["sweep" | "tuning": the preset's section],
     "stages": {"<stage>": {"runs": [{"run_id", "status", ["process_seconds", "mode", "group_size"]}, ...],
                            "seconds": <spent running its runs>},
                "analysis": {"command", "returncode", "seconds"} | {"status": ...}},
     ["chosen": the sweep's rates or the tuning's settings, as in their choice file],
     "end_time", "seconds", "failed_runs", ["total_s_including_setup"]}

A run's status is ``finished``, ``skipped (finished)``, ``copied (finished as a <stage> run)`` or
``failed (exit N)``. The file is rewritten after every process, so an interrupted command leaves
a record of what it did.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from experiments.atomic import write_json
from experiments.manifest import now_iso


class SuiteRecord:
    """The record of one command; ``dry_run`` records keep everything in memory and write nothing."""

    def __init__(self, path: Path, header: dict[str, Any], dry_run: bool = False) -> None:
        self.path = Path(path)
        self.dry_run = dry_run
        self.started = time.time()
        self.data: dict[str, Any] = {**header, "start_time": now_iso(), "stages": {}}

    def stage(self, name: str) -> dict[str, Any]:
        """The entry of stage ``name`` (created on first use): its ``runs`` list and the ``seconds`` spent
        running its processes."""
        return self.data["stages"].setdefault(name, {"runs": [], "seconds": 0.0})

    def add_seconds(self, name: str, seconds: float) -> None:
        """Count ``seconds`` more to stage ``name``."""
        entry = self.stage(name)
        entry["seconds"] = round(entry["seconds"] + seconds, 3)

    def save(self) -> None:
        """Write the record atomically (nothing for a dry run)."""
        if not self.dry_run:
            write_json(self.path, self.data)

    def finish(self, failures: int, started_at: float | None = None) -> None:
        """Close the record: end time, seconds, failed runs and, given the unix time the calling script
        started (``run_all.sh --started-at``), the total including set-up; then write it."""
        self.data.update(end_time=now_iso(), seconds=round(time.time() - self.started, 3), failed_runs=failures)
        if started_at is not None:
            self.data["total_s_including_setup"] = round(time.time() - started_at, 3)
        self.save()
