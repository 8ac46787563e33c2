"""In-memory datasets: whole splits as tensors, batches gathered by index (no DataLoader)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from experiments.workloads.data.augment import random_crop_flip
from experiments.workloads.data.base import Batch
from experiments.workloads.data.sampling import (
    batch_generator,
    epoch_permutation,
    global_batch_indices,
    iterations_per_epoch,
    shard,
)

Transform = Callable[[torch.Tensor], torch.Tensor]


class TensorData:
    """Train/test tensors plus a per-batch transform (e.g. uint8 -> normalised float).

    ``augment`` applies random crop + flip to image batches, drawn from a generator that depends
    only on (seed, epoch, batch), so a resumed run sees the same augmented batches.
    """

    def __init__(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        num_classes: int,
        *,
        transform: Transform | None = None,
        augment: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        device = torch.device(device)
        self.x_train, self.y_train = x_train.to(device), y_train.to(device)
        self.x_test, self.y_test = x_test.to(device), y_test.to(device)
        self.num_classes = num_classes
        self.num_train, self.num_test = len(x_train), len(x_test)
        self.transform = transform
        self.augment = augment
        self.device = device
        sample = x_train[:1] if transform is None else transform(x_train[:1].to(device))
        self.input_shape = tuple(sample.shape[1:])

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.transform is None else self.transform(x)

    def train_batches(
        self, *, seed: int, epoch: int, start: int, batch_size: int, rank: int, world_size: int
    ) -> Iterator[Batch]:
        iters = iterations_per_epoch(self.num_train, batch_size, world_size)
        perm = epoch_permutation(self.num_train, seed, epoch).to(self.device)
        for batch in range(start, iters):
            idx = global_batch_indices(perm, batch, batch_size)
            x = self._prepare(self.x_train[idx])
            if self.augment:
                x = random_crop_flip(x, batch_generator(seed, epoch, batch))
            yield shard(x, rank, world_size), shard(self.y_train[idx], rank, world_size)

    def test_batches(self, *, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        idx = torch.arange(rank, self.num_test, world_size, device=self.device)
        for lo in range(0, len(idx), batch_size):
            chunk = idx[lo : lo + batch_size]
            yield self._prepare(self.x_test[chunk]), self.y_test[chunk]


def normalizer(mean: list[float], std: list[float], scale: float = 1.0) -> Transform:
    """uint8/float images (B, C, H, W) -> float32 (x * scale - mean) / std per channel."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def apply(x: torch.Tensor) -> torch.Tensor:
        if x.device not in cache:
            cache[x.device] = (mean_t.to(x.device), std_t.to(x.device))
        m, s = cache[x.device]
        return (x.to(torch.float32) * scale - m) / s

    return apply
