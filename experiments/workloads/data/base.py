"""What the runner needs from a dataset."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class DataSource(Protocol):
    num_train: int
    num_test: int
    num_classes: int
    input_shape: tuple[int, ...]

    def train_batches(
        self, *, seed: int, epoch: int, start: int, batch_size: int, rank: int, world_size: int
    ) -> Iterator[Batch]:
        """This rank's share of the global batches ``start, start+1, ...`` of ``epoch``, on the device."""
        ...

    def test_batches(self, *, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        """This rank's share of the (possibly subset) test set, on the device."""
        ...
