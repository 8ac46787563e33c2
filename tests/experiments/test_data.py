"""Dataset loaders: missing-data messages, fixture datasets in the real on-disk formats, sampling."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import run
from experiments.workloads.config import DataConfig, ModelConfig
from experiments.workloads.data import DatasetMissingError, build_data
from experiments.workloads.data.augment import random_crop_flip
from experiments.workloads.data.fashion_mnist import read_idx
from experiments.workloads.data.sampling import epoch_permutation, global_batch_indices, shard
from experiments.workloads.models import build_model


def _run(tmp_path: Path, workload: str, *extra: str) -> int:
    return run.main(["--workload", workload, "--optimizer", "sgd", "--out", str(tmp_path / "runs"),
                     "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress",
                     "--threads", str(torch.get_num_threads()), *extra])


# ---- missing data: one clear message naming the expected layout ------------------------------------


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        ("cifar10-resnet18", ["CIFAR-10 not found", "cifar-10-batches-py", "data_batch_1", "test_batch",
                              "batches.meta", "never downloads"]),
        ("cifar100-resnet18", ["CIFAR-100 not found", "cifar-100-python", "train, test, meta"]),
        ("cifar100-deit", ["CIFAR-100 not found", "cifar-100-python"]),
        ("imagenet-resnet50", ["ImageNet not found", "<data-dir>/train/<class_id>/", "<data-dir>/val/<class_id>/"]),
    ],
)
def test_missing_data_dir_gives_the_expected_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workload: str, expected: list[str]
) -> None:
    for extra in ([], ["--data-dir", str(tmp_path / "nowhere")]):
        assert _run(tmp_path, workload, *extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err  # one message, no traceback
        for text in expected:
            assert text in err
        assert ("nowhere" in err) == bool(extra)
    assert not (tmp_path / "runs").exists()  # nothing written for a run that cannot start


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "fmnist-cnn", "--data-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "apt-get install dataset-fashion-mnist" in err and "train-images-idx3-ubyte.gz" in err


# ---- fixture datasets in the real formats ----------------------------------------------------------


def _write_cifar(root: Path, hundred: bool, per_file: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    train_files = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    key = "fine_labels" if hundred else "labels"
    classes = 100 if hundred else 10
    written: dict[str, list] = {"train_x": [], "train_y": [], "test_x": [], "test_y": []}
    for split, files in (("train", train_files), ("test", ["test"] if hundred else ["test_batch"])):
        for name in files:
            data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
            labels = rng.integers(0, classes, size=per_file).tolist()
            entry = {"data": data, key: labels, "filenames": [f"{i}.png" for i in range(per_file)]}
            if hundred:
                entry["coarse_labels"] = [y // 5 for y in labels]
            with open(folder / name, "wb") as f:
                pickle.dump(entry, f)
            written[f"{split}_x"].append(data.reshape(-1, 3, 32, 32))
            written[f"{split}_y"].extend(labels)
    meta = {"fine_label_names": [str(i) for i in range(100)]} if hundred else {"label_names": list("abcdefghij")}
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f)
    return {k: (np.concatenate(v) if k.endswith("_x") else np.array(v)) for k, v in written.items()}


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_loader_reads_pickled_batches(tmp_path: Path, hundred: bool) -> None:
    written = _write_cifar(tmp_path, hundred)
    name = "cifar100" if hundred else "cifar10"
    data = build_data(DataConfig(name=name, dir=str(tmp_path)))
    assert (data.num_train, data.num_test) == (len(written["train_y"]), len(written["test_y"]))
    assert data.num_classes == (100 if hundred else 10) and data.input_shape == (3, 32, 32)
    x, y = next(data.test_batches(batch_size=100, rank=0, world_size=1))
    mean = np.array([0.5071, 0.4865, 0.4409] if hundred else [0.4914, 0.4822, 0.4465]).reshape(1, 3, 1, 1)
    std = np.array([0.2673, 0.2564, 0.2762] if hundred else [0.2470, 0.2435, 0.2616]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(x.numpy(), (written["test_x"] / 255.0 - mean) / std, rtol=1e-5, atol=1e-5)
    assert y.tolist() == written["test_y"].tolist()
    # a whole epoch of training batches covers the training set exactly once
    seen = torch.cat([yb for _, yb in data.train_batches(seed=0, epoch=0, start=0, batch_size=6, rank=0,
                                                          world_size=1)])
    assert sorted(seen.tolist()) == sorted(written["train_y"].tolist())
    model = build_model(ModelConfig("resnet", {"arch": "resnet18", "cifar_stem": True}), data.input_shape,
                        data.num_classes)
    assert model(x[:2]).shape == (2, data.num_classes)


def test_cifar_workload_trains_end_to_end_on_fixture(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "data", hundred=False, per_file=4)
    assert _run(tmp_path, "cifar10-resnet18", "--data-dir", str(tmp_path / "data"), "--max-iters", "2",
                "--set", "batch_size=4", "eval_batch_size=3") == 0
    rows = next((tmp_path / "runs" / "cifar10-resnet18").glob("*.csv")).read_text().splitlines()
    assert [r.split(",")[4] for r in rows[1:]] == ["eval", "train", "train", "eval"]


def _write_image_folder(root: Path, classes: tuple[str, ...], per_class: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(10 + i, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"img{i}.png")


def test_imagefolder_loader_reads_pngs_and_resnet50_runs(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, ("n01", "n02", "n03"), per_class=2)
    data = build_data(DataConfig(name="imagenet", dir=str(tmp_path), image_size=32, augment=True))
    assert (data.num_train, data.num_test, data.num_classes) == (6, 6, 3)
    x, y = next(data.train_batches(seed=0, epoch=0, start=0, batch_size=4, rank=0, world_size=1))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1, 2}
    xt, yt = next(data.test_batches(batch_size=6, rank=0, world_size=1))
    assert sorted(yt.tolist()) == [0, 0, 1, 1, 2, 2]
    model = build_model(ModelConfig("resnet", {"arch": "resnet50"}), data.input_shape, data.num_classes)
    model.eval()
    with torch.no_grad():
        assert model(xt).shape == (6, 3)


def test_imagefolder_without_val_is_missing(tmp_path: Path) -> None:
    _write_image_folder(tmp_path, ("a", "b"), per_class=1)
    for p in sorted((tmp_path / "val").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    with pytest.raises(DatasetMissingError, match="val/<class_id>"):
        build_data(DataConfig(name="imagenet", dir=str(tmp_path)))


def test_idx_reader_decodes_header_and_data(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 4) + data.tobytes())
    np.testing.assert_array_equal(read_idx(path), data)


def test_fashion_mnist_loads_from_debian_package() -> None:
    root = Path("/usr/share/datasets/fashion-mnist")
    if not (root / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("dataset-fashion-mnist not installed")
    data = build_data(DataConfig(name="fashion-mnist", dir=str(root), train_subset=256, test_subset=100))
    assert (data.num_train, data.num_test, data.input_shape) == (256, 100, (1, 28, 28))
    x, y = next(data.test_batches(batch_size=100, rank=0, world_size=1))
    assert abs(float(x.mean())) < 0.3 and 0.7 < float(x.std()) < 1.3  # normalised
    assert set(y.tolist()) <= set(range(10)) and len(set(y.tolist())) > 5


def test_mnist1d_is_generated_offline() -> None:
    data = build_data(DataConfig(name="mnist1d"))
    assert (data.num_train, data.num_test, data.input_shape, data.num_classes) == (4000, 1000, (40,), 10)


# ---- sampling and augmentation -------------------------------------------------------------------


def test_ranks_partition_each_global_batch() -> None:
    perm = epoch_permutation(100, seed=5, epoch=2)
    assert torch.equal(perm, epoch_permutation(100, seed=5, epoch=2))
    assert not torch.equal(perm, epoch_permutation(100, seed=5, epoch=3))
    batch = global_batch_indices(perm, 1, 12)
    parts = [shard(batch, r, 3) for r in range(3)]
    assert all(len(p) == 4 for p in parts)
    assert sorted(torch.cat(parts).tolist()) == sorted(batch.tolist())


def test_random_crop_flip_matches_a_per_image_loop() -> None:
    x = torch.randn(5, 2, 6, 7)
    out = random_crop_flip(x, torch.Generator().manual_seed(3), padding=2)
    gen = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 5, (5, 2), generator=gen)
    flips = torch.rand(5, generator=gen) < 0.5
    for i in range(5):
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        oy, ox = offsets[i].tolist()
        ref = padded[:, oy : oy + 6, ox : ox + 7]
        if flips[i]:
            ref = ref.flip(-1)
        torch.testing.assert_close(out[i], ref)
