"""The record of a preset's output folder, ``<out>/suite_<preset>.json``: every suite command run on it,
stage by stage, oldest first.

Layout::

    {"preset", "description", ["sweep" | "tuning": the preset's section],
     ["chosen": the sweep's rates or the tuning's settings, as in their choice file (the latest)],
     "invocations": [
         {"command", "stages_selected", "mode", "threads", "jobs", "git_commit", "git_dirty", "start_time",
          "stages": {"<stage>": {"runs": [{"run_id", "status", ["process_seconds", "mode", "group_size"]}, ...],
                                 "seconds": <spent running its runs>},
                     "analysis": {"command", "returncode", "seconds"} | {"status": ...}},
          "end_time", "seconds", "failed_runs", ["total_s_including_setup"]},
         ...],
     "seconds": <the invocations' seconds summed>}

A run's status is ``finished``, ``skipped (finished)``, ``copied (finished as a <stage> run)`` or
``failed (exit N)``. Each command appends its invocation to the record it finds (a record of the earlier
one-command layout, the top level holding one command's keys, becomes the first invocation), and the
file is rewritten after every process, so an interrupted command leaves a record of what it did (an
invocation without ``end_time``). :func:`invocations` reads both layouts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from experiments.runner.atomic import read_json, write_json
from experiments.runner.manifest import now_iso

PRESET_KEYS = ("preset", "description", "sweep", "tuning", "chosen")  # the record's own keys, not a command's


def invocations(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The commands of a record, oldest first: its ``invocations``, or for a record of a one-command layout
    (those written before the list existed, e.g. results/quick/suite_quick.json with ``runs`` and ``suite_s``,
    results/examples/suite_radam_nadam.json with ``stages`` and ``seconds``) its top level as the one command
    (without the preset's keys); [] for a record of neither."""
    if isinstance(record.get("invocations"), list):
        return record["invocations"]
    if record.get("command") is None and record.get("stages") is None:
        return []
    return [{k: v for k, v in record.items() if k not in PRESET_KEYS}]


def command_seconds(command: dict[str, Any]) -> float:
    """The seconds one command of :func:`invocations` took (``suite_s`` in the oldest layout; 0 when it was
    interrupted before its end)."""
    return float(command.get("seconds") or command.get("suite_s") or 0.0)


def _total_seconds(commands: list[dict[str, Any]]) -> float:
    return round(sum(command_seconds(c) for c in commands), 3)


class SuiteRecord:
    """The record at ``path`` with this command appended; ``dry_run`` records keep everything in memory and
    write nothing.

    ``preset`` holds the record's own keys (``preset``, ``description``, the sweep or tuning section),
    ``command`` this command's (``command``, ``stages_selected``, ``mode``, ``threads``, ``jobs``, the git
    state). :attr:`current` is this command's entry of ``invocations``.
    """

    def __init__(self, path: Path, preset: dict[str, Any], command: dict[str, Any], dry_run: bool = False) -> None:
        self.path = Path(path)
        self.dry_run = dry_run
        self.started = time.time()
        previous = read_json(self.path) if self.path.exists() else None
        if self.path.exists() and not isinstance(previous, dict):
            print(f"[suite] {self.path} is not a readable record: starting a new one", file=sys.stderr, flush=True)
            previous = None
        earlier = invocations(previous) if previous is not None else []
        kept = {k: previous[k] for k in PRESET_KEYS if previous is not None and k in previous}
        self.current: dict[str, Any] = {**command, "start_time": now_iso(), "stages": {}}
        self.data: dict[str, Any] = {**kept, **preset, "invocations": [*earlier, self.current],
                                     "seconds": _total_seconds(earlier)}

    def stage(self, name: str) -> dict[str, Any]:
        """This command's entry of stage ``name`` (created on first use): its ``runs`` list and the
        ``seconds`` spent running its processes."""
        return self.current["stages"].setdefault(name, {"runs": [], "seconds": 0.0})

    def add_seconds(self, name: str, seconds: float) -> None:
        """Count ``seconds`` more to stage ``name``."""
        entry = self.stage(name)
        entry["seconds"] = round(entry["seconds"] + seconds, 3)

    def save(self) -> None:
        """Write the record atomically (nothing for a dry run)."""
        if not self.dry_run:
            write_json(self.path, self.data)

    def finish(self, failures: int, started_at: float | None = None) -> None:
        """Close this command's entry: end time, seconds, failed runs and, given the unix time the calling
        script started (``run_all.sh --started-at``), the total including set-up; sum the seconds of every
        command; then write it."""
        self.current.update(end_time=now_iso(), seconds=round(time.time() - self.started, 3), failed_runs=failures)
        if started_at is not None:
            self.current["total_s_including_setup"] = round(time.time() - started_at, 3)
        self.data["seconds"] = _total_seconds(self.data["invocations"])
        self.save()
