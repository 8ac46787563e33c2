"""Atomic file writes: write a temporary file next to the target, then os.replace it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _replace_from_tmp(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    blob = (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode()
    _replace_from_tmp(Path(path), lambda f: f.write(blob))


def save_torch(path: str | Path, obj: Any) -> None:
    _replace_from_tmp(Path(path), lambda f: torch.save(obj, f))


def read_json(path: str | Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
