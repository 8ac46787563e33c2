"""ImageNet (or any ImageFolder tree with train/ and val/), read by torchvision's ImageFolder.

Too large for memory: batches come from a DataLoader over the same seeded per-epoch order as the
in-memory datasets. Random crops are drawn in the loader workers, so a resumed run sees the same
examples in the same order but not bit-identical augmentations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from experiments.workloads.data.base import Batch
from experiments.workloads.data.errors import DatasetMissingError
from experiments.workloads.data.sampling import epoch_permutation, global_batch_indices, iterations_per_epoch, shard

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def missing_message(data_dir: str | None) -> str:
    where = f"--data-dir {data_dir}" if data_dir else "--data-dir (not given)"
    return (
        f"ImageNet not found: {where}. Expected layout (torchvision ImageFolder): "
        "<data-dir>/train/<class_id>/<image>.JPEG and <data-dir>/val/<class_id>/<image>.JPEG, the same class "
        "folders (e.g. n01440764) in both; val/ must be sorted into class folders. This suite never downloads."
    )


def _has_class_dirs(path: Path) -> bool:
    return path.is_dir() and any(p.is_dir() for p in path.iterdir())


class ImageFolderData:
    def __init__(
        self,
        data_dir: str | None,
        *,
        image_size: int = 224,
        train_subset: int | None = None,
        test_subset: int | None = None,
        augment: bool = True,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        from torchvision import datasets, transforms

        root = Path(data_dir) if data_dir else None
        if root is None or not (_has_class_dirs(root / "train") and _has_class_dirs(root / "val")):
            raise DatasetMissingError(missing_message(data_dir))
        normalize = transforms.Normalize(MEAN, STD)
        resize = max(image_size, int(round(image_size * 256 / 224)))
        train_tf = [transforms.RandomResizedCrop(image_size)]
        if augment:
            train_tf.append(transforms.RandomHorizontalFlip())
        else:
            train_tf = [transforms.Resize(resize), transforms.CenterCrop(image_size)]
        train_tf += [transforms.ToTensor(), normalize]
        test_tf = [transforms.Resize(resize), transforms.CenterCrop(image_size), transforms.ToTensor(), normalize]
        train = datasets.ImageFolder(str(root / "train"), transform=transforms.Compose(train_tf))
        test = datasets.ImageFolder(str(root / "val"), transform=transforms.Compose(test_tf))
        if train.classes != test.classes:
            raise DatasetMissingError(
                missing_message(data_dir) + f" (train/ has {len(train.classes)} classes, val/ {len(test.classes)})"
            )
        self.train = Subset(train, range(min(train_subset or len(train), len(train))))
        self.test = Subset(test, range(min(test_subset or len(test), len(test))))
        self.num_train, self.num_test = len(self.train), len(self.test)
        self.num_classes = len(train.classes)
        self.input_shape = (3, image_size, image_size)
        self.num_workers = num_workers
        self.device = torch.device(device)

    def _loader(self, dataset, batches: list[list[int]]) -> Iterator[Batch]:
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(
        self, *, seed: int, epoch: int, start: int, batch_size: int, rank: int, world_size: int
    ) -> Iterator[Batch]:
        iters = iterations_per_epoch(self.num_train, batch_size, world_size)
        perm = epoch_permutation(self.num_train, seed, epoch)
        batches = [
            shard(global_batch_indices(perm, b, batch_size), rank, world_size).tolist() for b in range(start, iters)
        ]
        return self._loader(self.train, batches)

    def test_batches(self, *, batch_size: int, rank: int, world_size: int) -> Iterator[Batch]:
        idx = list(range(rank, self.num_test, world_size))
        batches = [idx[lo : lo + batch_size] for lo in range(0, len(idx), batch_size)]
        return self._loader(self.test, batches)
