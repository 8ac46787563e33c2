"""CIFAR-10 / CIFAR-100 in torchvision's on-disk format (the python pickles), never downloaded."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.workloads.data.errors import DatasetMissingError


@dataclass(frozen=True)
class CifarLayout:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    archive: str


CIFAR10 = CifarLayout(
    name="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    num_classes=10,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    archive="cifar-10-python.tar.gz",
)
CIFAR100 = CifarLayout(
    name="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    num_classes=100,
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    archive="cifar-100-python.tar.gz",
)


def missing_message(layout: CifarLayout, data_dir: str | None) -> str:
    files = ", ".join((*layout.train_files, *layout.test_files, layout.meta_file))
    where = f"--data-dir {data_dir}" if data_dir else "--data-dir (not given)"
    return (
        f"{layout.name} not found: {where}. Expected layout: <data-dir>/{layout.folder}/ holding {files} "
        f"(torchvision's python-pickle format, i.e. {layout.archive} from "
        "https://www.cs.toronto.edu/~kriz/cifar.html extracted into <data-dir>). This suite never downloads."
    )


def _read_batches(folder: Path, files: tuple[str, ...], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry[label_key])
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64)


def load_cifar(layout: CifarLayout, data_dir: str | None) -> dict[str, torch.Tensor]:
    """uint8 images (N, 3, 32, 32) and int64 labels of both splits."""
    folder = Path(data_dir) / layout.folder if data_dir else None
    needed = (*layout.train_files, *layout.test_files, layout.meta_file)
    if folder is None or not all((folder / name).is_file() for name in needed):
        raise DatasetMissingError(missing_message(layout, data_dir))
    x_train, y_train = _read_batches(folder, layout.train_files, layout.label_key)
    x_test, y_test = _read_batches(folder, layout.test_files, layout.label_key)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
