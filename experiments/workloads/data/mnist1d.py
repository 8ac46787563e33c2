"""MNIST-1D (Greydanus 2020), generated offline with the ``mnist1d`` package's default arguments."""

from __future__ import annotations

import torch


def load_mnist1d() -> dict[str, torch.Tensor]:
    """4000 train / 1000 test sequences of length 40, 10 classes (the package's seeded defaults).

    Calls ``make_dataset`` only: the package's ``get_dataset`` would try to download.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    return {
        "x_train": torch.as_tensor(data["x"], dtype=torch.float32),
        "y_train": torch.as_tensor(data["y"], dtype=torch.int64),
        "x_test": torch.as_tensor(data["x_test"], dtype=torch.float32),
        "y_test": torch.as_tensor(data["y_test"], dtype=torch.int64),
    }
