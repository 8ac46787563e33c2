"""The JSON manifest of a run: what ran (config, commit, versions, command) and how far it got."""

from __future__ import annotations

import datetime as dt
import math
import platform
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from experiments.runner.atomic import read_json, write_json

REPO_ROOT = Path(__file__).resolve().parents[2]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


#: Paths whose changes do not make the code dirty: results written by runs (a suite updates its record
#: under results/ while it trains, which would otherwise mark every run it starts as dirty).
DATA_PATHS: tuple[str, ...] = ("results",)


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """``git_commit`` (HEAD, None outside a git checkout) and ``git_dirty`` (tracked files outside
    :data:`DATA_PATHS` differ from HEAD; None when git cannot tell)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                 *(f":(exclude){p}" for p in DATA_PATHS))
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def device_description(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index} {torch.cuda.get_device_name(device)}"
    return f"cpu ({platform.machine()}, {platform.processor() or 'unknown'}, {threads} threads)"


def command_line(argv: list[str]) -> str:
    """The command that reproduces a run (torchrun adds its own launcher in front)."""
    return " ".join(shlex.quote(a) for a in ["python", "-m", "experiments.run", *argv])


#: Statuses of a run that has stopped training for good: "finished" (diverged runs included: they end
#: early and finish) or "failed"; "running" is the other one.
ENDED_STATUSES: tuple[str, ...] = ("finished", "failed")


def run_status(manifest: Any) -> str | None:
    """The ``status`` of a parsed manifest; None when it is not a JSON object with a text status."""
    status = manifest.get("status") if isinstance(manifest, dict) else None
    return status if isinstance(status, str) else None


def is_finished(path: str | Path) -> bool:
    return run_status(read_json(path)) == "finished"


#: The code an attempt ran (from :func:`git_state`).
GIT_FIELDS: tuple[str, ...] = ("git_commit", "git_dirty")

#: Fields of a run's first attempt that a resume keeps: the run records the code it started from.
START_FIELDS: tuple[str, ...] = ("start_time", *GIT_FIELDS)


class Manifest:
    """Holds the manifest dict; ``save()`` writes it atomically. Attempts accumulate across resumes.

    ``git_commit``/``git_dirty``/``start_time`` are the run's first attempt's; each entry of ``attempts``
    holds its own start time and ``git_commit``/``git_dirty`` (from ``base``), so a run resumed at a later
    commit shows both."""

    def __init__(self, path: str | Path, base: dict[str, Any], resumed_from: int | None) -> None:
        self.path = Path(path)
        previous = read_json(self.path) if resumed_from is not None else None
        self.data: dict[str, Any] = dict(base)
        self.data["start_time"] = now_iso()
        if previous:
            self.data.update({k: previous[k] for k in START_FIELDS if k in previous})
        self.data["attempts"] = list(previous.get("attempts", [])) if previous else []
        self.data["attempts"].append({"start_time": now_iso(), "resumed_from_iteration": resumed_from,
                                      **{k: base[k] for k in GIT_FIELDS if k in base}})
        self.data.update(status="running", end_time=None)
        self._attempt_start = time.monotonic()

    def update(self, **fields: Any) -> None:
        self.data.update({k: _finite_or_none(v) for k, v in fields.items()})
        attempt = self.data["attempts"][-1]
        attempt["elapsed_s"] = round(time.monotonic() - self._attempt_start, 3)
        attempt["last_update"] = now_iso()
        self.data["total_s"] = round(sum(a.get("elapsed_s", 0.0) for a in self.data["attempts"]), 3)

    def save(self) -> None:
        write_json(self.path, self.data)



def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: a diverged run's final loss is written as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
