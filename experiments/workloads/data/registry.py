"""``build_data(config)``: dataset name -> a DataSource (subsets applied, tensors on the device).

``dataset_info(config)``: the input shape and number of classes of a dataset, without loading it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from experiments.workloads.builders import BuilderRegistry
from experiments.workloads.config import DataConfig
from experiments.workloads.data import cifar, fashion_mnist
from experiments.workloads.data.base import DataSource
from experiments.workloads.data.imagenet import ImageFolderData
from experiments.workloads.data.mnist1d import load_mnist1d
from experiments.workloads.data.tensor_data import TensorData, normalizer


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset, known without loading it.

    ``input_shape``: one example's shape without the batch dimension, e.g. ``(3, 32, 32)`` (channels,
    height, width) for CIFAR or ``(40,)`` for an MNIST-1D sequence; ``num_classes``: the number of labels.
    """

    input_shape: tuple[int, ...]
    num_classes: int


IMAGENET_IMAGE_SIZE = 224  # side in pixels when the workload's data.image_size is not set
IMAGENET_CLASSES = 1000  # ImageNet-1k; a loaded ImageFolder tree counts its own class folders


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
        image_size=cfg.image_size or IMAGENET_IMAGE_SIZE,
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


def _square_rgb(side: int, classes: int) -> DatasetInfo:
    return DatasetInfo((3, side, side), classes)


# the shape and classes each builder above yields, known without loading (tests compare the two)
_INFO: dict[str, Callable[[DataConfig], DatasetInfo]] = {
    "fashion-mnist": lambda cfg: DatasetInfo((1, 28, 28), 10),
    "mnist1d": lambda cfg: DatasetInfo((40,), 10),  # the mnist1d package's default final_seq_length
    "cifar10": lambda cfg: _square_rgb(32, cifar.CIFAR10.num_classes),
    "cifar100": lambda cfg: _square_rgb(32, cifar.CIFAR100.num_classes),
    "imagenet": lambda cfg: _square_rgb(cfg.image_size or IMAGENET_IMAGE_SIZE, IMAGENET_CLASSES),
}


BUILTIN_DATASETS = tuple(sorted(_BUILDERS))
DatasetBuilder = Callable[[DataConfig, torch.device], DataSource]
DATASETS: BuilderRegistry[DatasetBuilder] = BuilderRegistry(
    "data.name", "register_dataset", "builder(cfg, device) -> DataSource", _BUILDERS)
# what the runner reads of a DataSource (experiments/workloads/data/base.py)
_SOURCE_ATTRIBUTES = ("num_train", "num_test", "num_classes", "input_shape", "train_batches", "test_batches")


def available_datasets() -> list[str]:
    """The registered dataset names: the built-ins and those given to :func:`register_dataset` in this process."""
    return sorted(DATASETS.names())


def register_dataset(name: str, builder: DatasetBuilder, *, replace: bool = False) -> None:
    """Make ``name`` a valid ``data.name`` in this process (e.g. in a script before it calls
    ``experiments.run.main()``; runs started in new processes need an import path instead).

    ``builder(cfg, device)`` gets the workload's :class:`~experiments.workloads.config.DataConfig` (``dir``, the
    subsets, ``augment`` ...) and the ``torch.device`` of the run, and returns a
    :class:`~experiments.workloads.data.base.DataSource` (``TensorData(x_train, y_train, x_test, y_test,
    num_classes, device=device)`` for tensors in memory). ValueError when ``name`` is not a non-empty
    string without ``:``, ``builder`` is not callable, or ``name`` is taken (unless ``replace``; built-ins
    cannot be replaced).
    """
    DATASETS.register(name, builder, replace=replace)


def dataset_builder(name: str) -> DatasetBuilder:
    """The builder of ``data.name`` = ``name``: a registered name, or an import path
    ``"my_pkg.data:build_data"`` (imported now) of a builder as :func:`register_dataset` describes;
    errors as :meth:`experiments.workloads.builders.BuilderRegistry.lookup`."""
    return DATASETS.lookup(name)


def build_data(cfg: DataConfig, device: torch.device | str = "cpu") -> DataSource:
    """Load a dataset; DatasetMissingError (with the expected layout) when its files are absent.

    ValueError for an unknown ``cfg.name`` (see :func:`dataset_builder`) or a builder whose result lacks
    what the runner reads of a DataSource (naming the missing attributes).
    """
    source = dataset_builder(cfg.name)(cfg, torch.device(device))
    missing = [a for a in _SOURCE_ATTRIBUTES if not hasattr(source, a)]
    if missing:
        raise ValueError(f"data.name {cfg.name!r}: its builder returned a {type(source).__name__} without {missing}; "
                         "a dataset builder returns a DataSource (experiments/workloads/data/base.py)")
    return source


def dataset_info(cfg: DataConfig | str) -> DatasetInfo:
    """Input shape and number of classes of a dataset, without reading or generating its data.

    ``cfg``: a workload's ``DataConfig`` (its ``image_size`` sets ImageNet's shape, default
    :data:`IMAGENET_IMAGE_SIZE`) or just a dataset name. Known for the datasets built in here; ValueError
    naming them for any other name (such a dataset declares no shape: build it and read its
    ``input_shape`` and ``num_classes``).
    """
    cfg = DataConfig(name=cfg) if isinstance(cfg, str) else cfg
    if cfg.name not in _INFO:
        raise ValueError(f"dataset_info: data.name must be one of the built-in datasets {sorted(_INFO)}, got "
                         f"{cfg.name!r} (any other dataset: build it and read input_shape and num_classes)")
    return _INFO[cfg.name](cfg)
