"""Atomic file writes: write a temporary file next to the target, then os.replace it.

The temporary file is created with mode 0o666 and the process umask applies, as for any file
opened with ``open(path, "w")`` (0644 under the usual umask 022): the written file is readable
like the rest of the run's outputs, unlike ``tempfile.mkstemp``'s private 0600.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_NEW_FILE_MODE = 0o666  # the kernel removes the umask's bits, as open() does
_NAME_ATTEMPTS = 100


def _create_tmp(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside ``path``: its descriptor (open for writing) and its path."""
    for _ in range(_NAME_ATTEMPTS):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, _CREATE_FLAGS, _NEW_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path} after {_NAME_ATTEMPTS} attempts")


def _replace_from_tmp(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_tmp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (values JSON cannot hold are written as ``str``), atomically."""
    blob = (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode()
    _replace_from_tmp(Path(path), lambda f: f.write(blob))


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path``, atomically."""
    _replace_from_tmp(Path(path), lambda f: torch.save(obj, f))


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing or not valid JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
