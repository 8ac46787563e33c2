"""``build_data(config)``: dataset name -> a DataSource (subsets applied, tensors on the device)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from experiments.config import DataConfig
from experiments.data import cifar, fashion_mnist
from experiments.data.base import DataSource
from experiments.data.imagenet import ImageFolderData
from experiments.data.mnist1d import load_mnist1d
from experiments.data.tensor_data import TensorData, normalizer


def _subset(arrays: dict[str, torch.Tensor], cfg: DataConfig) -> dict[str, torch.Tensor]:
    out = dict(arrays)
    if cfg.train_subset is not None:
        out["x_train"], out["y_train"] = out["x_train"][: cfg.train_subset], out["y_train"][: cfg.train_subset]
    if cfg.test_subset is not None:
        out["x_test"], out["y_test"] = out["x_test"][: cfg.test_subset], out["y_test"][: cfg.test_subset]
    return out


def _fashion_mnist(cfg: DataConfig, device: torch.device) -> DataSource:
    arrays = _subset(fashion_mnist.load_fashion_mnist(cfg.dir), cfg)
    transform = normalizer([fashion_mnist.MEAN], [fashion_mnist.STD], scale=1 / 255)
    return TensorData(**arrays, num_classes=10, transform=transform, augment=cfg.augment, device=device)


def _mnist1d(cfg: DataConfig, device: torch.device) -> DataSource:
    if cfg.augment:
        raise ValueError("data.augment must be false for mnist1d (no augmentation defined for sequences)")
    return TensorData(**_subset(load_mnist1d(), cfg), num_classes=10, device=device)


def _cifar(layout: cifar.CifarLayout) -> Callable[[DataConfig, torch.device], DataSource]:
    def build(cfg: DataConfig, device: torch.device) -> DataSource:
        arrays = _subset(cifar.load_cifar(layout, cfg.dir), cfg)
        transform = normalizer(list(layout.mean), list(layout.std), scale=1 / 255)
        return TensorData(
            **arrays, num_classes=layout.num_classes, transform=transform, augment=cfg.augment, device=device
        )

    return build


def _imagenet(cfg: DataConfig, device: torch.device) -> DataSource:
    return ImageFolderData(
        cfg.dir,
        image_size=cfg.image_size or 224,
        train_subset=cfg.train_subset,
        test_subset=cfg.test_subset,
        augment=cfg.augment,
        num_workers=cfg.num_workers,
        device=device,
    )


_BUILDERS: dict[str, Callable[[DataConfig, torch.device], DataSource]] = {
    "fashion-mnist": _fashion_mnist,
    "mnist1d": _mnist1d,
    "cifar10": _cifar(cifar.CIFAR10),
    "cifar100": _cifar(cifar.CIFAR100),
    "imagenet": _imagenet,
}


def available_datasets() -> list[str]:
    return sorted(_BUILDERS)


def build_data(cfg: DataConfig, device: torch.device | str = "cpu") -> DataSource:
    """Load a dataset; DatasetMissingError (with the expected layout) when its files are absent."""
    if cfg.name not in _BUILDERS:
        raise ValueError(f"data.name must be one of {available_datasets()}, got {cfg.name!r}")
    return _BUILDERS[cfg.name](cfg, torch.device(device))
