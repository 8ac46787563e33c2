"""The runner's --fsdp (experiments/runner/fsdp.py): 2 gloo ranks under torchrun with the model under fully_shard.

A run writes the CSV and manifest as DDP does and trains the same numbers as one process (to float32
rounding); stopped after its checkpoint and resumed (torch.distributed.checkpoint) it writes the same loss
rows bit for bit; optimizers that cannot train sharded parameters, float16 loss scaling and a lone process
are refused before any data is read; a checkpoint of one kind is refused by the other.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torchvision
from torch import nn

from experiments import run
from experiments.runner.checkpoint import POINTER, CheckpointStore
from experiments.runner.fsdp import FSDP_OPTIMIZERS, check_fsdp_optimizer, fsdp_units
from experiments.workloads.models.mlp import MLP
from experiments.workloads.models.small_cnn import SmallCNN
from tests.support import REPO

ITERS, CHECKPOINT_AT = 24, 12
# test_subset 201 with evaluation batches of 50: rank 0 holds 101 examples (3 batches), rank 1 100 (2
# batches); the forward pass is a collective under FSDP, so without the padding of EvenTestBatches rank 0
# would wait for rank 1 forever
ARGS = ["--workload", "mnist1d-mlp", "--optimizer", "mlbfgs", "--seed", "3", "--max-iters", str(ITERS),
        "--threads", "1", "--no-progress", "--checkpoint-every", str(CHECKPOINT_AT), "--keep-checkpoint",
        "--set", "optimizer.update_period=4", "eval_interval=8", "batch_size=64", "data.test_subset=201",
        "eval_batch_size=50"]
LOSSES = ("kind", "iteration", "train_loss", "test_loss", "test_acc", "grad_evals")


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to the interpreter")
    return subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "experiments.run", *ARGS,
                           "--fsdp", "--out", str(out / "runs"), "--checkpoint-dir", str(out / "ck"), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _run_files(out: Path) -> tuple[Path, Path]:
    csv_path = next(p for p in (out / "runs").rglob("*.csv") if not p.name.endswith(".curvature.csv"))
    return csv_path, csv_path.with_suffix(".json")


def test_fsdp_run_matches_one_process_and_resumes_bit_exactly(tmp_path: Path) -> None:
    fsdp, single = tmp_path / "fsdp", tmp_path / "single"
    done = _torchrun(fsdp)
    assert done.returncode == 0, done.stderr[-3000:]
    subprocess.run([sys.executable, "-m", "experiments.run", *ARGS, "--out", str(single / "runs"),
                    "--checkpoint-dir", str(single / "ck")], cwd=REPO, check=True, capture_output=True, timeout=600)

    csv_path, manifest_path = _run_files(fsdp)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "finished" and manifest["world_size"] == 2 and manifest["fsdp"] is True
    assert "--fsdp" in manifest["command"]
    straight = _read(csv_path)
    assert [int(r["iteration"]) for r in straight if r["kind"] == "train"] == list(range(1, ITERS + 1))  # rank 0
    evals = [r for r in straight if r["kind"] == "eval"]
    assert [int(r["iteration"]) for r in evals] == [0, 8, 16, 24]
    # every test example counted once: accuracies are multiples of 1/201
    assert all(abs(float(r["test_acc"]) * 201 - round(float(r["test_acc"]) * 201)) < 1e-6 for r in evals)

    # the same run id as one process (--fsdp is not part of it), and the same numbers up to float32 rounding
    ones = _read(single / "runs" / "mnist1d-mlp" / csv_path.name)
    assert len(ones) == len(straight)
    for a, b in zip(straight, ones, strict=True):
        assert (a["kind"], a["iteration"]) == (b["kind"], b["iteration"])
        for col in ("train_loss", "test_loss", "test_acc"):
            if a[col]:
                assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-4, abs=1e-5), (a["iteration"], col)
    curvature = _read(csv_path.with_name(csv_path.stem + ".curvature.csv"))
    single_curvature = _read(single / "runs" / "mnist1d-mlp" / (csv_path.stem + ".curvature.csv"))
    # every rank holds every block's rows: rank 0 writes each pair once, as one process does
    assert [(r["iteration"], r["block"]) for r in curvature] == [(r["iteration"], r["block"]) for r in
                                                                   single_curvature]

    # the kept checkpoint: per-rank files and a torch.distributed.checkpoint folder, the pointer says dcp
    pointer = json.loads(next((fsdp / "ck").rglob(POINTER)).read_text())
    assert pointer["format"] == "dcp" and pointer["world_size"] == 2
    assert 0 < pointer["iteration"] < ITERS
    folder = next((fsdp / "ck").rglob(POINTER)).parent
    assert (folder / f"it{pointer['iteration']:09d}.dcp").is_dir()
    assert sorted(p.name for p in folder.glob("*.pt")) == [f"it{pointer['iteration']:09d}.r{r}.pt" for r in (0, 1)]

    # stopped there (as if interrupted: the manifest says running), the rerun resumes and writes the same rows
    manifest["status"] = "running"
    manifest_path.write_text(json.dumps(manifest))
    resumed = _torchrun(fsdp)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    manifest = json.loads(manifest_path.read_text())
    assert manifest["attempts"][-1]["resumed_from_iteration"] == pointer["iteration"]
    again = _read(csv_path)
    assert [tuple(r[c] for c in LOSSES) for r in again] == [tuple(r[c] for c in LOSSES) for r in straight]


@pytest.mark.parametrize("optimizer", ["kfac", "olbfgs", "sqn", "mlbfgs_authors", "slimqn_authors",
                                       "sgd_normalized", "torch.optim:LBFGS"])
def test_optimizers_that_cannot_train_sharded_parameters_are_refused(optimizer, capsys) -> None:
    code = run.main(["--workload", "mnist1d-mlp", "--optimizer", optimizer, "--fsdp", "--max-iters", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--fsdp: optimizer {optimizer!r} cannot train fully_shard" in err
    assert all(name in err for name in FSDP_OPTIMIZERS)


def test_elementwise_optimizers_and_torch_optim_classes_are_accepted() -> None:
    for name in (*FSDP_OPTIMIZERS, "torch.optim:RAdam"):
        check_fsdp_optimizer(name)
    with pytest.raises(ValueError, match="not a torch.optim class"):
        check_fsdp_optimizer("mypackage.optim:Shampoo")


def test_fp16_and_a_lone_process_are_refused(capsys, monkeypatch) -> None:
    base = ["--workload", "mnist1d-mlp", "--optimizer", "sgd", "--fsdp", "--max-iters", "2"]
    assert run.main([*base, "--amp", "fp16"]) == 2
    assert "--fsdp: amp 'fp16' is not supported" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert run.main(base) == 2
    assert "launch it with torchrun --nproc_per_node 2" in capsys.readouterr().err


def test_units_are_the_layers_below_containers() -> None:
    cnn = SmallCNN()
    assert fsdp_units(cnn) == [cnn.features[0], cnn.features[3], cnn.classifier[1], cnn.classifier[3]]
    mlp = MLP(40, 10)
    assert fsdp_units(mlp) == [m for m in mlp.net if isinstance(m, nn.Linear)]
    resnet = torchvision.models.resnet18(num_classes=10)
    units = fsdp_units(resnet)
    assert units == [resnet.conv1, resnet.bn1, *resnet.layer1, *resnet.layer2, *resnet.layer3, *resnet.layer4,
                     resnet.fc]
    covered = {id(p) for u in units for p in u.parameters()}
    assert covered == {id(p) for p in resnet.parameters()}


def test_a_checkpoint_of_one_kind_is_refused_by_the_other(tmp_path: Path) -> None:
    (tmp_path / POINTER).write_text(json.dumps({"iteration": 5, "world_size": 2, "format": "dcp"}))
    assert CheckpointStore(tmp_path, 0, 2, sharded=True).latest_iteration() == 5
    with pytest.raises(ValueError, match=r"written by a sharded run \(--fsdp\)"):
        CheckpointStore(tmp_path, 0, 2).latest_iteration()
    (tmp_path / POINTER).write_text(json.dumps({"iteration": 5, "world_size": 2}))  # before sharded runs existed
    assert CheckpointStore(tmp_path, 0, 2).latest_iteration() == 5
    with pytest.raises(ValueError, match="written by a replicated run"):
        CheckpointStore(tmp_path, 0, 2, sharded=True).latest_iteration()
    with pytest.raises(ValueError, match="sharded_state"):
        CheckpointStore(tmp_path, 0, 1).save(1, {}, lambda: None, {"model": {}})
