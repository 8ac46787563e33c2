"""``dataset_info``: the input shape and classes of every dataset, known without loading it, agree with
what its loader yields."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.workloads.config import DataConfig
from experiments.workloads.data import build_data
from experiments.workloads.data.registry import IMAGENET_CLASSES, DatasetInfo, available_datasets, dataset_info
from tests.experiments.test_data import _write_cifar, _write_image_folder

BUILT_IN = tuple(available_datasets())  # read at collection, before any test registers a dataset of its own


def test_every_built_in_dataset_declares_its_shape() -> None:
    for name in BUILT_IN:
        info = dataset_info(name)
        assert isinstance(info, DatasetInfo) and info.num_classes >= 2 and all(d > 0 for d in info.input_shape)


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_info_matches_the_loader(tmp_path: Path, hundred: bool) -> None:
    _write_cifar(tmp_path, hundred, per_file=2)
    cfg = DataConfig(name="cifar100" if hundred else "cifar10", dir=str(tmp_path))
    data = build_data(cfg)
    assert dataset_info(cfg) == DatasetInfo(data.input_shape, data.num_classes)


def test_imagenet_info_follows_image_size(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, ("n01", "n02"), per_class=1)
    cfg = DataConfig(name="imagenet", dir=str(tmp_path), image_size=40)
    assert dataset_info(cfg).input_shape == build_data(cfg).input_shape == (3, 40, 40)
    # the fixture tree has 2 class folders; without data the shape is ImageNet-1k's
    assert dataset_info(cfg).num_classes == IMAGENET_CLASSES == 1000
    assert dataset_info("imagenet").input_shape == (3, 224, 224)


def test_mnist1d_info_matches_the_generator_arguments() -> None:
    from mnist1d.data import get_dataset_args, get_templates

    # the loader generates with these defaults (generating takes seconds; test_experiments_data does it)
    expected = DatasetInfo((get_dataset_args().final_seq_length,), len(get_templates()["y"]))
    assert dataset_info("mnist1d") == expected


def test_fashion_mnist_info_matches_the_loader() -> None:
    root = Path("/usr/share/datasets/fashion-mnist")
    if not (root / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist not installed")
    data = build_data(DataConfig(name="fashion-mnist", dir=str(root), train_subset=10, test_subset=10))
    assert dataset_info("fashion-mnist") == DatasetInfo(data.input_shape, data.num_classes)


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"must be one of the built-in datasets \[.*'mnist1d'.*\], got 'nope'"):
        dataset_info("nope")
