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

from experiments.atomic import read_json, write_json

REPO_ROOT = Path(__file__).resolve().parent.parent


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
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


class Manifest:
    """Holds the manifest dict; ``save()`` writes it atomically. Attempts accumulate across resumes."""

    def __init__(self, path: str | Path, base: dict[str, Any], resumed_from: int | None) -> None:
        self.path = Path(path)
        previous = read_json(self.path) if resumed_from is not None else None
        self.data: dict[str, Any] = dict(base)
        self.data["start_time"] = previous["start_time"] if previous else now_iso()
        self.data["attempts"] = list(previous.get("attempts", [])) if previous else []
        self.data["attempts"].append({"start_time": now_iso(), "resumed_from_iteration": resumed_from})
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
