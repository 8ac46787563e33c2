"""Fashion-MNIST from its IDX .gz files (Debian package dataset-fashion-mnist), read with gzip + numpy."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from experiments.workloads.data.errors import DatasetMissingError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
MEAN, STD = 0.2860, 0.3530  # training-set pixel statistics on the [0, 1] scale


def read_idx(path: Path) -> np.ndarray:
    """Decode an IDX file (optionally gzip-compressed): magic (0, 0, dtype, ndim), big-endian dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} but holds {data.size} bytes")
    return data.reshape(tuple(dims))


def missing_message(directory: Path) -> str:
    names = ", ".join(FILES.values())
    return (
        f"Fashion-MNIST not found in {directory}: expected the IDX files {names} there. "
        f"Install them with `sudo apt-get install dataset-fashion-mnist` (puts them in {DEFAULT_DIR}) "
        "or point data.dir (--data-dir) at a directory holding them."
    )


def load_fashion_mnist(directory: str | None = None) -> dict[str, torch.Tensor]:
    """uint8 images (N, 1, 28, 28) and int64 labels for the train and test splits."""
    root = Path(directory or DEFAULT_DIR)
    paths = {key: root / name for key, name in FILES.items()}
    if not all(p.is_file() for p in paths.values()):
        raise DatasetMissingError(missing_message(root))
    arrays = {key: read_idx(p) for key, p in paths.items()}
    out = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        out[f"x_{split}"] = torch.from_numpy(images.copy()).unsqueeze(1)
        out[f"y_{split}"] = torch.from_numpy(labels.astype(np.int64))
    return out
