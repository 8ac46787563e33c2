"""Per-run checkpoints: one file per rank and iteration, and a ``latest.json`` pointer.

Every rank writes ``it<iteration>.r<rank>.pt`` atomically (ranks hold different optimizer state when
curvature blocks are distributed); after a barrier rank 0 moves the pointer and deletes older files.
A crash at any point leaves the pointer on a complete set of files.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.atomic import read_json, save_torch, write_json

POINTER = "latest.json"


class CheckpointStore:
    def __init__(self, directory: str | Path, rank: int, world_size: int) -> None:
        self.dir = Path(directory)
        self.rank, self.world_size = rank, world_size

    def _file(self, iteration: int, rank: int) -> Path:
        return self.dir / f"it{iteration:09d}.r{rank}.pt"

    def save(self, iteration: int, payload: dict[str, Any], barrier: Callable[[], None]) -> None:
        save_torch(self._file(iteration, self.rank), payload)
        barrier()
        if self.rank == 0:
            write_json(self.dir / POINTER, {"iteration": iteration, "world_size": self.world_size})
            keep = {self._file(iteration, r).name for r in range(self.world_size)}
            for old in self.dir.glob("it*.r*.pt"):
                if old.name not in keep:
                    old.unlink(missing_ok=True)
        barrier()

    def latest_iteration(self) -> int | None:
        pointer = read_json(self.dir / POINTER)
        if pointer is None:
            return None
        if pointer["world_size"] != self.world_size:
            raise ValueError(
                f"checkpoint in {self.dir} was written with world size {pointer['world_size']}, "
                f"this run has {self.world_size}; resume with the same number of processes or delete it"
            )
        return int(pointer["iteration"])

    def load(self, iteration: int, map_location: torch.device | str) -> dict[str, Any]:
        return torch.load(self._file(iteration, self.rank), map_location=map_location, weights_only=False)

    def clear(self) -> None:
        if self.rank == 0 and self.dir.exists():
            shutil.rmtree(self.dir)


def rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
