"""What a benchmark writes: rows as CSV, and the provenance every manifest of a benchmark starts with."""

from __future__ import annotations

import csv
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experiments.runner.manifest import git_state


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Write ``rows`` to ``path`` (its folder created) with a header of ``columns`` (default: the keys of
    the first row, in order). ValueError when there are no rows and no columns to name the header."""
    if columns is None:
        if not rows:
            raise ValueError(f"{path}: no rows, and no columns given for the header")
        columns = list(rows[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def provenance(module: str, argv: list[str] | None) -> dict[str, Any]:
    """``command`` (``python -m <module> <args>``, shell-quoted; ``argv`` None means this process's
    ``sys.argv[1:]``), ``git_commit`` and ``git_dirty`` (:func:`experiments.runner.manifest.git_state`)."""
    args = sys.argv[1:] if argv is None else argv
    return {"command": " ".join(shlex.quote(a) for a in ["python", "-m", module, *args]), **git_state()}


def gather_to_rank0(local: Any, out: Path | str) -> None:
    """Collective over the default process group: rank 0 writes every rank's ``local`` (JSON-able) as a
    JSON list in rank order to ``out``; then every rank waits for it and leaves the process group."""
    import json

    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(gathered, f)
    dist.barrier()
    dist.destroy_process_group()
