"""``--fsdp``: the runner's model under ``torch.distributed.fsdp.fully_shard`` (FSDP2) instead of DDP.

Every parameter becomes a DTensor sharded on dim 0 over a 1-D device mesh of the whole world (gloo on
the CPU, NCCL on CUDA): each rank keeps its rows of the weights, gradients and optimizer state, and
FSDP gathers the full weights for each forward and backward pass. The model is sharded unit by unit
(:func:`fsdp_units`), then the root, and the optimizer is built on the sharded parameters:

- ``mlbfgs`` and ``slbfgs`` (:class:`mlbfgs.MLBFGS`) keep their curvature by rows too
  (:mod:`mlbfgs.distribution.fsdp_rows`): one small all-reduce per step, no direction exchange;
- ``sgd``, ``adam``, ``adamw`` and ``torch.optim`` classes by import path update element by element,
  which DTensors do shard by shard;
- every other optimizer couples parameters across their rows (K-FAC's factors, the L-BFGS variants'
  dot products, the authors' codes, normalised SGD's global norm) and is refused before any data is read
  (:func:`check_fsdp_run`).

The data are read as with DDP: every rank takes its share of each global batch, and FSDP averages the
gradients over the ranks (its reduce-scatter), so the mathematics is DDP's; float32 rounding differs
(the sums run in another order). Evaluation runs on every rank's share of the test set (every rank must
join each forward pass: :class:`EvenTestBatches`); rank 0 logs. Checkpoints go through
``torch.distributed.checkpoint`` with the state-dict helpers (:func:`sharded_state`,
:func:`load_sharded_state`; :class:`experiments.runner.checkpoint.CheckpointStore`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from experiments.runner.spec import RunSpec
from experiments.workloads.data.base import Batch, DataSource

#: the built-in optimizers that train fully_shard parameters (MLBFGS by rows; the others element by element)
FSDP_OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "mlbfgs", "slbfgs")
#: torch.optim classes (by import path) that couple parameters, refused like the built-ins that do
REFUSED_TORCH_OPTIMIZERS: tuple[str, ...] = ("LBFGS", "SparseAdam")
#: modules whose children are sharded as units of their own (they hold no parameters themselves)
CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def check_fsdp_optimizer(name: str) -> None:
    """ValueError naming ``name`` and the optimizers ``--fsdp`` accepts when ``name`` cannot train
    ``fully_shard`` (DTensor) parameters: built-ins other than :data:`FSDP_OPTIMIZERS`, and by import path
    anything outside ``torch.optim`` or one of :data:`REFUSED_TORCH_OPTIMIZERS`."""
    if ":" in name:
        module, _, cls = name.partition(":")
        if (module == "torch.optim" or module.startswith("torch.optim.")) and cls not in REFUSED_TORCH_OPTIMIZERS:
            return
        why = ("it is not a torch.optim class (only those are known to update DTensor parameters shard by shard)"
               if cls not in REFUSED_TORCH_OPTIMIZERS else "it couples parameters across their rows")
    elif name in FSDP_OPTIMIZERS:
        return
    else:
        why = "it couples parameters across their rows (factors, dot products or norms over whole parameters)"
    raise ValueError(f"--fsdp: optimizer {name!r} cannot train fully_shard (FSDP2) parameters: {why}; with --fsdp "
                     f"use one of {list(FSDP_OPTIMIZERS)} or a torch.optim class (e.g. torch.optim:RAdam), or run "
                     f"{name!r} with DDP (without --fsdp)")


def check_fsdp_run(spec: RunSpec) -> None:
    """ValueError naming the setting when the run cannot train under ``--fsdp``: its optimizer
    (:func:`check_fsdp_optimizer`), or ``amp`` ``"fp16"`` (each rank would find overflows in its own
    gradient shards only and skip steps the others take; ``"bf16"`` needs no loss scaling and is allowed)."""
    check_fsdp_optimizer(spec.optimizer)
    if spec.workload.amp == "fp16":
        raise ValueError(f"--fsdp: amp 'fp16' is not supported ({spec.run_id}: its loss scaling would skip steps on "
                         "some ranks only); use --amp bf16 or none")


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The submodules sharded as units before the root: the root's children that hold parameters, where
    a container (:data:`CONTAINERS`) is replaced by its own children, recursively. A SmallCNN's convolutions
    and dense layers, an MLP's layers, a ResNet's stem, residual blocks and classifier; a model that wraps
    one big module (the ViT) gets that module as its one unit."""
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, CONTAINERS) and not any(True for _ in child.parameters(recurse=False)):
                visit(child)
            elif any(True for _ in child.parameters()):
                units.append(child)

    visit(model)
    return units


def shard_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` (already on ``device``) under ``fully_shard`` on a 1-D mesh of every rank of the default
    process group: each of :func:`fsdp_units`, then the root. Returns ``model`` itself (fully_shard changes
    its class in place); its parameters are then DTensors sharded on dim 0. Needs torch.distributed
    initialised (ValueError otherwise)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("--fsdp: torch.distributed is not initialised; launch the runner with torchrun")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in fsdp_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


class EvenTestBatches:
    """A data source whose test batches come in the same number on every rank, for models whose forward
    pass is a collective (FSDP gathers the weights in it): a rank whose share ran out passes an empty batch
    (no examples: it adds nothing to the loss sums or the counts) while another rank still has one. Costs one
    all-reduce of one number per test batch. Everything else is ``data``'s."""

    def __init__(self, data: DataSource, device: torch.device) -> None:
        self.data = data
        self.device = device

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data, name)

    def test_batches(self, *, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        """``data``'s test batches of this rank, then empty batches until no rank has one left."""
        local = iter(self.data.test_batches(batch_size=batch_size, rank=rank, world_size=world_size))
        empty: Batch = (torch.zeros((0, *self.data.input_shape), device=self.device),
                        torch.zeros(0, dtype=torch.long, device=self.device))
        flag = torch.zeros(1, device=self.device)
        while True:
            batch = next(local, None)
            flag.fill_(0.0 if batch is None else 1.0)
            dist.all_reduce(flag)
            if flag.item() == 0.0:
                return
            if batch is None:
                yield empty
            else:
                x, y = batch
                empty = (x[:0], y[:0])
                yield batch


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The model's and the optimizer's state as ``torch.distributed.checkpoint`` saves and loads it
    (``get_model_state_dict``, ``get_optimizer_state_dict``: DTensor shards, resharded on load)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    return {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Put ``state`` (:func:`sharded_state`'s structure, filled by ``torch.distributed.checkpoint.load``)
    into ``model`` and ``optimizer`` with ``set_model_state_dict`` and ``set_optimizer_state_dict``."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
