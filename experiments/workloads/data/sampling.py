"""Data order: a seeded permutation per epoch, global batches split across data-parallel ranks.

Everything is a function of (seed, epoch, batch index), so the position in the data stream is just
(epoch, batch index) and resuming needs no sampler state. A global batch is the same set of examples
whatever the world size; rank r takes elements r, r + W, r + 2W, ... of it.
"""

from __future__ import annotations

import torch

_EPOCH_STRIDE = 1_000_003
_BATCH_STRIDE = 7_919


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed * _EPOCH_STRIDE + epoch)
    return torch.randperm(n, generator=gen)


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """Generator for the random augmentation of one global batch (independent of the world size)."""
    return torch.Generator().manual_seed((seed * _EPOCH_STRIDE + epoch) * _BATCH_STRIDE + batch + 1)


def iterations_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    """Full global batches per epoch (the last partial batch is dropped)."""
    if batch_size % world_size:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by the world size ({world_size})")
    iters = n // batch_size
    if iters == 0:
        raise ValueError(f"batch_size ({batch_size}) is larger than the training set ({n} examples)")
    return iters


def global_batch_indices(perm: torch.Tensor, batch: int, batch_size: int) -> torch.Tensor:
    return perm[batch * batch_size : (batch + 1) * batch_size]


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    return indices[rank::world_size] if world_size > 1 else indices
