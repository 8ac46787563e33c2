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


BUSY_LOOPS = {
    # one core spinning in pure Python
    "spin": "import sys, time\nt = time.time() + float(sys.argv[1])\nwhile time.time() < t:\n    pass\n",
    # another torch job: 2 intra-op threads multiplying matrices (what a second training run does)
    "torch": (
        "import sys, time, torch\ntorch.set_num_threads(2)\na = torch.randn(384, 384)\n"
        "t = time.time() + float(sys.argv[1])\nwhile time.time() < t:\n    a = torch.tanh(a @ a)\n"
    ),
}


class BusyLoad:
    """``n`` background processes of ``kind`` (see ``BUSY_LOOPS``), bounded: they stop by themselves
    after ``seconds`` even if this process dies, and are killed when the context exits.

    Used to measure what a benchmark or a run reports while other work shares the cores.
    """

    def __init__(self, n: int, seconds: float, kind: str = "spin") -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        if kind not in BUSY_LOOPS:
            raise ValueError(f"kind must be one of {sorted(BUSY_LOOPS)}, got {kind!r}")
        self.n, self.seconds, self.kind = n, seconds, kind
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> BusyLoad:
        import sys

        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOPS[self.kind], str(self.seconds)])
                      for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []
