"""mL-BFGS's three ways of spreading its curvature over ranks: memory, bytes and time per step.

    python -m experiments.bench.distributed --tables modes [--workloads fmnist-cnn cifar10-resnet18]
        [--world-sizes 1 2 4] [--repeats 8]

Modes (``blocks="layer"``, history 10, float32, one ``MLBFGS`` each):

- ``ddp-blocks``: replicated parameters (DDP), ``MLBFGS(process_group=pg)`` (``shard="blocks"``): each
  rank holds whole blocks, balanced by size; one all-gather of the directions per step.
- ``ddp-rows``: replicated parameters, ``MLBFGS(process_group=pg, shard="rows")``: each rank holds its
  rows of every block; one small all-reduce per step (two when a pair forms), then an all-gather of
  the rows' directions. Marked missing when this checkout's MLBFGS has no ``shard`` argument.
- ``fsdp``: the model under ``fully_shard`` (:func:`experiments.runner.fsdp.shard_model`), MLBFGS on its DTensor
  parameters: rows as above and no direction exchange.

Method. For each world size one set of gloo processes on this machine builds the workload's model
once per mode (same weights) and fills every ring on the same random gradients (``update_period`` 1,
history + 2 steps); then, with ``update_period`` 3 (a third of the steps form a pair), it runs
``repeats`` interleaved rounds after one warm-up round: in each round every mode takes one
``optimizer.step()`` on the same fresh gradient, in an order that rotates from round to round, all
ranks starting together after a barrier. A step's time is its slowest rank's; plain and pair-forming
steps have their own medians. Only the optimizer step is timed (its curvature work and its own
collectives); the forward and backward passes and the framework's collectives are not.

Reported per (model, mode, world size):

- curvature memory: :meth:`mlbfgs.MLBFGS.curvature_bytes` of the largest and the smallest rank;
- bytes per step, per rank, as payloads (the tensor a collective works on: an all-reduce's buffer, an
  all-gather's gathered output; the wire carries about ``(N-1)/N`` of an all-gather's and ``2(N-1)/N``
  of an all-reduce's with a ring). The optimizer's come from :meth:`mlbfgs.MLBFGS.communication_bytes`
  when the optimizer has it, else from the same formulas, written here (:func:`formula_bytes`), with
  ``B`` blocks, history ``m``, ``N`` ranks, ``e`` bytes per float32:
  ``ddp-blocks`` all-gather ``N S e`` (``S``: the largest rank's block elements + 1 scalar slot);
  ``fsdp`` all-reduce ``(B (2m + 1) + 1) e``, plus ``B (4m + 5) e`` on a pair-forming step;
  ``ddp-rows`` the same all-reduces and an all-gather ``N R e`` (``R``: the most elements any rank holds
  rows of). When both exist they are compared (the manifest's ``bytes_match``). The model's own
  collectives, which the optimizer never sees, are given beside them (``model_bytes_per_step``): DDP
  all-reduces the gradient (``P e``, ``P`` parameters); FSDP2 all-gathers the parameters in the forward
  pass and again in the backward pass and reduce-scatters the gradient (``3 P' e``, ``P'`` with every
  parameter's rows padded to a multiple of ``N``). All bytes are 0 on one rank.
- step time: the median seconds of plain and pair-forming steps and their ratios to ``ddp-blocks``
  at the same world size, measured in the same processes. Only the ratios compare; seconds from
  different world sizes ran with a different number of processes on the same cores.

Writes ``<out>/sharding_modes.csv`` (columns :data:`COLUMNS`, DEVELOPERS.md) and
``sharding_modes.json`` (command, git commit, settings, checks).
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from experiments.bench.records import gather_to_rank0, provenance, write_csv
from experiments.bench.workload import workload_model
from experiments.runner.atomic import write_json
from mlbfgs import MLBFGS
from mlbfgs.distribution import is_dtensor

MODES: tuple[str, ...] = ("ddp-blocks", "ddp-rows", "fsdp")
HISTORY = 10
FILL_PERIOD, TIMED_PERIOD = 1, 3
FILE_NAME = "sharding_modes.csv"
#: one row per model, mode and world size (analysis/sharding.py reads them)
COLUMNS: tuple[str, ...] = (
    "model", "mode", "world_size", "status", "curvature_bytes_max_rank", "curvature_bytes_min_rank",
    "optimizer_allreduce_bytes", "optimizer_allreduce_pair_bytes", "optimizer_allgather_bytes",
    "optimizer_bytes_per_step", "optimizer_bytes_pair_step", "model_bytes_per_step", "bytes_source",
    "step_seconds", "pair_step_seconds", "step_ratio", "pair_step_ratio", "timed_steps", "timed_pair_steps",
)


def rows_mode_available() -> bool:
    """Whether this checkout's MLBFGS takes ``shard="rows"`` (DDP row sharding)."""
    return "shard" in inspect.signature(MLBFGS).parameters


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _build(mode: str, workload: str) -> tuple[nn.Module, MLBFGS]:
    """The workload's model (the same weights in every mode) and its MLBFGS in ``mode``."""
    from experiments.runner.fsdp import shard_model

    model, _, _ = workload_model(workload)
    settings: dict[str, Any] = dict(lr=0.01, history_size=HISTORY, update_period=FILL_PERIOD, blocks="layer")
    if mode == "fsdp":
        shard_model(model, torch.device("cpu"))
        return model, MLBFGS(_trainable(model), **settings)
    if rows_mode_available():
        settings["shard"] = "rows" if mode == "ddp-rows" else "blocks"
    return model, MLBFGS(_trainable(model), process_group=dist.group.WORLD, **settings)


def _row_range(rows: int, world: int, rank: int) -> tuple[int, int]:
    """The rows of dim 0 that ``rank`` holds under ``Shard(0)`` (``torch.chunk`` sizes, possibly none)."""
    size = math.ceil(rows / world) if rows else 0
    start = min(rank * size, rows)
    return start, min(start + size, rows)


def _local_gradient(full: torch.Tensor, param: Any, world: int, rank: int) -> Any:
    """``full`` as a DTensor gradient sharded like ``param`` (the rank's rows of it)."""
    from torch.distributed.tensor import DTensor

    lo, hi = _row_range(full.shape[0], world, rank)
    local = full[lo:hi].contiguous()
    if local.shape != param.to_local().shape:
        raise RuntimeError(f"rank {rank}: rows {lo}:{hi} of a {tuple(full.shape)} gradient do not match the local "
                           f"shard {tuple(param.to_local().shape)}")
    return DTensor.from_local(local, param.device_mesh, param.placements, run_check=False, shape=param.shape,
                              stride=param.stride())


def _set_gradients(models: dict[str, nn.Module], gen: torch.Generator, world: int, rank: int) -> None:
    """The same global gradient in every mode: random, plus a small multiple of the parameters (so that
    pairs see positive curvature); sharded for fully_shard parameters."""
    reference = _trainable(models["ddp-blocks"])
    grads = [torch.randn(p.shape, generator=gen) * 1e-2 + 1e-3 * p.detach() for p in reference]
    for model in models.values():
        for p, g in zip(_trainable(model), grads, strict=True):
            p.grad = _local_gradient(g, p, world, rank) if is_dtensor(p) else g.clone()


def formula_bytes(mode: str, opt: MLBFGS, world: int, element: int = 4) -> tuple[int, int, int]:
    """(all-reduce every step, all-reduce added on a pair-forming step, all-gather every step): the
    optimizer's bytes per rank and step by the module docstring's formulas; zeros on one rank."""
    if world == 1:
        return 0, 0, 0
    m, blocks = opt.config.history_size, len(opt.blocks)
    if mode == "ddp-blocks":
        load = [0] * world
        for size, owner in zip(opt.block_sizes, opt.owners, strict=True):
            load[owner] += size
        return 0, 0, world * (max(load) + 1) * element
    reduce, pair = (blocks * (2 * m + 1) + 1) * element, blocks * (4 * m + 5) * element
    if mode == "fsdp":
        return reduce, pair, 0
    per_rank = [0] * world
    for block in opt.blocks:
        for p in block:
            row = p.numel() // p.shape[0] if p.dim() and p.shape[0] else p.numel()
            for r in range(world):
                lo, hi = _row_range(p.shape[0] if p.dim() else 1, world, r)
                per_rank[r] += (hi - lo) * row
    return reduce, pair, world * max(per_rank) * element


def model_bytes(mode: str, model: nn.Module, world: int, element: int = 4) -> int:
    """The model's own collectives per rank and step (payloads, see the module docstring); 0 on one rank."""
    if world == 1:
        return 0
    if mode != "fsdp":
        return sum(p.numel() for p in _trainable(model)) * element
    padded = 0
    for p in _trainable(model):
        rows = p.shape[0] if p.dim() else 1
        padded += math.ceil(rows / world) * world * (p.numel() // rows if rows else 0)
    return 3 * padded * element


def _worker(rank: int, world: int, init_file: str, workload: str, repeats: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=900))
    modes = [m for m in MODES if m != "ddp-rows" or rows_mode_available()]
    built = {mode: _build(mode, workload) for mode in modes}
    models = {mode: model for mode, (model, _) in built.items()}
    opts = {mode: opt for mode, (_, opt) in built.items()}
    gen = torch.Generator().manual_seed(0)  # the same gradients on every rank, as after DDP's all-reduce
    for _ in range(HISTORY + 2):
        _set_gradients(models, gen, world, rank)
        for mode in modes:
            opts[mode].step()
    for opt in opts.values():
        opt.config = dataclasses.replace(opt.config, update_period=TIMED_PERIOD)
    times: dict[str, list[tuple[float, bool]]] = {mode: [] for mode in modes}
    for round_ in range(repeats + 1):  # round 0 warms up
        _set_gradients(models, gen, world, rank)
        shift = round_ % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            dist.barrier()
            start = time.perf_counter()
            opts[mode].step()
            seconds = time.perf_counter() - start
            if round_ > 0:
                times[mode].append((seconds, bool(opts[mode].last_pairs)))
    local = {}
    for mode in modes:
        opt = opts[mode]
        accounted = opt.communication_bytes() if hasattr(opt, "communication_bytes") else None
        local[mode] = {
            "curvature_bytes": opt.curvature_bytes(),
            "times": times[mode],
            "formula": formula_bytes(mode, opt, world),
            "accounted": None if accounted is None else (accounted.all_reduce, accounted.all_reduce_pair,
                                                         accounted.all_gather),
            "model_bytes": model_bytes(mode, models[mode], world),
        }
    gather_to_rank0(local, out)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(workload: str, world: int, ranks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The CSV rows of one world size from every rank's measurements (one row per mode, :data:`MODES`
    order; a mode nobody measured gets ``status`` missing), and whether the optimizer's byte accounting
    agreed with the formulas wherever it exists."""
    rows, match = [], True
    reference: dict[str, float | None] = {}
    for mode in MODES:
        if mode not in ranks[0]:
            rows.append({c: None for c in COLUMNS} | {
                "model": workload, "mode": mode, "world_size": world,
                "status": "missing: this checkout's MLBFGS has no shard='rows' option"})
            continue
        per_rank = [r[mode] for r in ranks]
        first = per_rank[0]
        if first["accounted"] is not None:
            match &= tuple(first["accounted"]) == tuple(first["formula"])
        reduce, pair, gather = first["accounted"] if first["accounted"] is not None else first["formula"]
        steps = list(zip(*(r["times"] for r in per_rank), strict=True))  # per step: every rank's (seconds, pair)
        slowest = [(max(s for s, _ in step), step[0][1]) for step in steps]
        plain = _median([s for s, pair_step in slowest if not pair_step])
        paired = _median([s for s, pair_step in slowest if pair_step])
        if mode == "ddp-blocks":
            reference = {"plain": plain, "pair": paired}
        rows.append({
            "model": workload, "mode": mode, "world_size": world, "status": "measured",
            "curvature_bytes_max_rank": max(r["curvature_bytes"] for r in per_rank),
            "curvature_bytes_min_rank": min(r["curvature_bytes"] for r in per_rank),
            "optimizer_allreduce_bytes": reduce, "optimizer_allreduce_pair_bytes": pair,
            "optimizer_allgather_bytes": gather, "optimizer_bytes_per_step": reduce + gather,
            "optimizer_bytes_pair_step": reduce + pair + gather, "model_bytes_per_step": first["model_bytes"],
            "bytes_source": "optimizer" if first["accounted"] is not None else "formula",
            "step_seconds": plain, "pair_step_seconds": paired,
            "step_ratio": _ratio(plain, reference.get("plain")),
            "pair_step_ratio": _ratio(paired, reference.get("pair")),
            "timed_steps": sum(1 for _, p in slowest if not p), "timed_pair_steps": sum(1 for _, p in slowest if p),
        })
    return rows, match


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference


def run(workloads: list[str], world_sizes: list[int], repeats: int, out_dir: Path,
        argv: list[str] | None = None) -> bool:
    """Measure every workload at every world size; write ``<out_dir>/sharding_modes.csv`` and its ``.json``
    manifest (``argv``: the command-line arguments it records). True when the optimizer's byte accounting
    matched the formulas everywhere it exists."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    match = True
    started = time.perf_counter()
    for workload in workloads:
        for world in world_sizes:
            with tempfile.TemporaryDirectory() as tmp:
                result = os.path.join(tmp, "ranks.json")
                mp.start_processes(_worker, args=(world, os.path.join(tmp, "init"), workload, repeats, result),
                                   nprocs=world, join=True, start_method="spawn")
                with open(result) as f:
                    ranks = json.load(f)
            found, ok = summarise(workload, world, ranks)
            match &= ok
            rows += found
            _print(found)
    path = out_dir / FILE_NAME
    write_csv(path, rows, COLUMNS)
    write_json(path.with_suffix(".json"), {
        **provenance("experiments.bench.distributed", argv), "torch": torch.__version__, "history_size": HISTORY,
        "blocks": "layer", "dtype": "float32", "fill_update_period": FILL_PERIOD,
        "timed_update_period": TIMED_PERIOD, "world_sizes": world_sizes, "repeats": repeats,
        "threads_per_process": 1, "cpu_count": os.cpu_count(), "ddp_rows_available": rows_mode_available(),
        "bytes_match": match, "wall_seconds": round(time.perf_counter() - started, 1),
    })
    print(f"wrote {path}")
    return match


def _print(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        head = f"{r['model']}  N={r['world_size']}  {r['mode']:<10}"
        if r["status"] != "measured":
            print(f"{head}  {r['status']}")
            continue
        print(f"{head}  curvature {r['curvature_bytes_max_rank'] / 2**20:8.2f} MiB (largest rank)  "
              f"optimizer {r['optimizer_bytes_per_step'] / 2**10:10.1f} KiB/step  "
              f"model {r['model_bytes_per_step'] / 2**20:7.2f} MiB/step  step x{r['step_ratio']:.2f} "
              f"pair step x{(r['pair_step_ratio'] or float('nan')):.2f} of ddp-blocks")
