"""Per-run checkpoints: one file per rank and iteration, and a ``latest.json`` pointer.

Every rank writes ``it<iteration>.r<rank>.pt`` atomically (ranks hold different optimizer state when
curvature blocks are distributed); after a barrier rank 0 moves the pointer and deletes older files.
A crash at any point leaves the pointer on a complete set of files.

Sharded runs (``--fsdp``, ``sharded=True``) also write the model and optimizer through
``torch.distributed.checkpoint`` into the folder ``it<iteration>.dcp`` (every rank its shards, written
before the per-rank files); the pointer then says ``"format": "dcp"``, and a run of the other kind refuses
the checkpoint instead of loading what it cannot read.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.runner.atomic import read_json, save_torch, write_json

POINTER = "latest.json"


#: the pointer's ``format``: per-rank torch files only, or with a torch.distributed.checkpoint folder
FORMATS = ("torch", "dcp")


class CheckpointStore:
    """The checkpoints of one run in ``directory``, as rank ``rank`` of ``world_size`` sees them;
    ``sharded``: the run keeps its model and optimizer in ``torch.distributed.checkpoint`` folders."""

    def __init__(self, directory: str | Path, rank: int, world_size: int, sharded: bool = False) -> None:
        self.dir = Path(directory)
        self.rank, self.world_size = rank, world_size
        self.format = FORMATS[1] if sharded else FORMATS[0]

    def _file(self, iteration: int, rank: int) -> Path:
        return self.dir / f"it{iteration:09d}.r{rank}.pt"

    def _dcp_dir(self, iteration: int) -> Path:
        return self.dir / f"it{iteration:09d}.dcp"

    def save(self, iteration: int, payload: dict[str, Any], barrier: Callable[[], None],
             sharded_state: dict[str, Any] | None = None) -> None:
        """Write ``payload`` (this rank's file) and, for a sharded store, ``sharded_state`` through
        ``torch.distributed.checkpoint.save`` (a collective: every rank calls it); then move the pointer."""
        if (sharded_state is not None) != (self.format == "dcp"):
            raise ValueError(f"sharded_state: give it exactly when the store is sharded (format {self.format!r})")
        if sharded_state is not None:
            import torch.distributed.checkpoint as dcp

            dcp.save(sharded_state, checkpoint_id=self._dcp_dir(iteration))
        save_torch(self._file(iteration, self.rank), payload)
        barrier()
        if self.rank == 0:
            write_json(self.dir / POINTER, {"iteration": iteration, "world_size": self.world_size,
                                            "format": self.format})
            keep = {self._file(iteration, r).name for r in range(self.world_size)} | {self._dcp_dir(iteration).name}
            for old in self.dir.glob("it*"):
                if old.name not in keep and (old.name.endswith(".pt") or old.name.endswith(".dcp")):
                    if old.is_dir():
                        shutil.rmtree(old, ignore_errors=True)
                    else:
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
        saved = pointer.get("format", FORMATS[0])  # pointers written before sharded runs existed
        if saved != self.format:
            kinds = {"torch": "a replicated run (DDP or one process)", "dcp": "a sharded run (--fsdp)"}
            raise ValueError(
                f"checkpoint in {self.dir} was written by {kinds.get(saved, saved)}, this run is "
                f"{kinds[self.format]}; resume it as it was started (with or without --fsdp) or use --force"
            )
        return int(pointer["iteration"])

    def load(self, iteration: int, map_location: torch.device | str) -> dict[str, Any]:
        """This rank's payload of ``iteration``."""
        return torch.load(self._file(iteration, self.rank), map_location=map_location, weights_only=False)

    def load_sharded(self, iteration: int, state: dict[str, Any]) -> None:
        """Fill ``state`` (a template of the saved structure, e.g. :func:`experiments.runner.fsdp.sharded_state`)
        in place from the ``torch.distributed.checkpoint`` folder of ``iteration`` (a collective)."""
        import torch.distributed.checkpoint as dcp

        dcp.load(state, checkpoint_id=self._dcp_dir(iteration))

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
