"""A workload's model without its data, and a synthetic batch of the workload's shape."""

from __future__ import annotations

import torch
from torch import nn

from experiments.workloads.config import load_workload_dict, workload_from_dict
from experiments.workloads.data.registry import dataset_info
from experiments.workloads.models import build_model


def workload_model(workload: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...], int]:
    """The model of ``workload`` (a file name in ``experiments/workloads/``), randomly initialised from
    ``seed``, with its input shape (one example, no batch dimension) and number of classes, as the data
    registry declares them for the workload's dataset (the data itself is not loaded).

    ValueError for an unknown workload (listing the valid names) or a dataset with no declared shape.
    """
    cfg = workload_from_dict(load_workload_dict(workload))
    info = dataset_info(cfg.data)
    torch.manual_seed(seed)
    return build_model(cfg.model, info.input_shape, info.num_classes), info.input_shape, info.num_classes


def synthetic_batch(
    shape: tuple[int, ...], classes: int, batch: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch to time iterations on: inputs ``(batch, *shape)`` from a standard normal and labels
    ``(batch,)`` uniform in ``[0, classes)``, both drawn from a generator seeded with ``seed``."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen)
    return x, y
