"""Shared pieces of the benchmarks: models by workload name, timing helpers."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable

import torch
from torch import nn

from experiments.config import load_workload_dict, workload_from_dict
from experiments.models import build_model

# (input shape, classes) of each dataset; the benchmarks need shapes, not data
DATA_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "fashion-mnist": ((1, 28, 28), 10),
    "mnist1d": ((40,), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), 1000),
}


def workload_model(workload: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...], int]:
    """The model of ``workload`` (random init), its input shape and number of classes."""
    cfg = workload_from_dict(load_workload_dict(workload))
    if cfg.data.name not in DATA_SHAPES:
        raise ValueError(f"no input shape known for dataset {cfg.data.name!r}; known: {sorted(DATA_SHAPES)}")
    shape, classes = DATA_SHAPES[cfg.data.name]
    torch.manual_seed(seed)
    return build_model(cfg.model, shape, classes), shape, classes


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
