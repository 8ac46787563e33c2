"""``bash experiments/gpu_check.sh OUTDIR --dry-run``: every step of the device check on the CPU with the
smallest settings (so that the script cannot rot), and the verdict's limits on synthetic numbers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from baselines import available_optimizers
from experiments.bench import acceptance
from tests.support import REPO

SCRIPT = REPO / "experiments" / "gpu_check.sh"
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").is_file(), reason="needs dataset-fashion-mnist")
def test_dry_run_runs_every_step_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "check"
    # --no-install: a lent machine's own interpreter (here this one) with the checkout on PYTHONPATH
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(SCRIPT), str(out), "--dry-run", "--no-install"], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr + (out / "gpu_check.log").read_text()
    log = (out / "gpu_check.log").read_text()
    for name in ("cuda-tests", "overhead-fp32", "overhead-bf16", "lockstep", "analysis", "acceptance"):
        assert f"== {name}: exit 0 after" in log, name
    # 1. the CUDA tests exist, were selected by their marker and skip on the CPU
    suite = ET.parse(out / "cuda_tests.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) >= 10 and int(suite.get("skipped")) == int(suite.get("tests"))
    names = {case.get("name") for case in ET.parse(out / "cuda_tests.xml").getroot().iter("testcase")}
    assert {"test_cuda_matches_cpu", "test_cuda_bfloat16_history_follows_the_cpu",
            "test_cuda_fp16_skipped_step_leaves_mlbfgs_state_unchanged"} <= names
    assert not any(n.startswith("test_bf16_lockstep") for n in names)  # CPU tests are not selected
    # 2. overhead in float32 and under bf16 autocast, side by side, and the kernel against the bandwidth
    models = {r["model"] for r in _csv(out / "overhead" / "optimizers.csv")}
    models_bf16 = {r["model"] for r in _csv(out / "overhead" / "optimizers_bf16.csv")}
    assert models == {"mnist1d-mlp"} and models_bf16 == {"mnist1d-mlp (bf16 autocast)"}
    assert {r["optimizer"] for r in _csv(out / "overhead" / "optimizers_bf16.csv")} == {
        "sgd", "adam", "kfac", "slbfgs", "mlbfgs", "mlbfgs_authors"}
    assert json.loads((out / "overhead" / "manifest_bf16.json").read_text())["amp"] == "bf16"
    assert {r["method"] for r in _csv(out / "overhead" / "direction_kernel.csv")} >= {"compact-float32"}
    # 3. the lockstep comparison of every registered optimizer
    manifests = [json.loads(p.read_text()) for p in (out / "runs" / "fmnist-resnet").glob("*.json")]
    assert sorted(m["optimizer"] for m in manifests) == sorted(available_optimizers())
    assert all(m["status"] == "finished" and m["mode"] == "lockstep" for m in manifests)
    # 4. the analysis and the verdict (not judged on the CPU)
    overhead_md = (out / "figures" / "overhead.md").read_text()
    assert "mnist1d-mlp (bf16 autocast)" in overhead_md
    verdict = (out / "acceptance.md").read_text()
    assert "limits not judged" in verdict and verdict.rstrip().endswith("verdict: reported (not judged)")
    environment = (out / "environment.txt").read_text()
    assert "torch" in environment
    assert f"python: {sys.executable} with PYTHONPATH={REPO} (no install)" in environment


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    for args in ([], ["--dry-run"], [str(tmp_path / "o"), "--nope"],
                 [str(tmp_path / "o"), "--data-dir", str(tmp_path / "empty")]):
        proc = subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, args
    assert "train-images-idx3-ubyte.gz" in proc.stderr and not (tmp_path / "o").exists()


def _fake_check(root: Path, device: str, bf16_ratio: float, kernel_ratio: float, failures: int = 0) -> Path:
    """An OUTDIR as gpu_check.sh leaves it, with chosen numbers."""
    over = root / "overhead"
    over.mkdir(parents=True)
    (over / "manifest.json").write_text(json.dumps({"device": device}))
    rows = ["model,optimizer,measure,repeat,seconds"]
    for model, ratio in (("cifar10-resnet18", 1.3), ("cifar10-resnet18 (bf16 autocast)", bf16_ratio)):
        for rep in range(3):
            rows += [f"{model},sgd,iteration,{rep},0.010", f"{model},mlbfgs,iteration,{rep},{0.010 * ratio:.6f}"]
    (over / "optimizers.csv").write_text("\n".join(rows) + "\n")
    kernel = ["method,numel,history_size,repeat,seconds,bytes_moved,bound_seconds,bandwidth_gbs"]
    kernel += [f"compact-float32,1000,10,{rep},{0.002 * kernel_ratio:.6f},1000000,0.002,4000" for rep in range(3)]
    (over / "direction_kernel.csv").write_text("\n".join(kernel) + "\n")
    (root / "cuda_tests.xml").write_text(
        f'<testsuites><testsuite name="pytest" tests="12" failures="{failures}" errors="0" skipped="0">'
        "</testsuite></testsuites>")
    runs = root / "runs" / "fmnist-resnet"
    runs.mkdir(parents=True)
    header = ("run_id,workload,optimizer,seed,kind,epoch,iteration,train_loss,lr,wall_s,grad_evals,test_loss,"
              "test_acc,eval_s,cpu_s")
    (runs / "r.csv").write_text(f"{header}\nr,fmnist-resnet,sgd,0,eval,0,0,,0.1,0,0,2.3,0.1,0.1,0\n")
    (runs / "r.json").write_text(json.dumps({"run_id": "r", "optimizer": "sgd", "status": "finished",
                                             "final_test_acc": 0.1, "train_s": 1.0, "outcome": "completed"}))
    return root


@pytest.mark.parametrize(("bf16_ratio", "kernel_ratio", "failures", "passes"),
                         [(1.05, 1.2, 0, True), (1.2, 1.2, 0, False), (1.05, 1.8, 0, False), (1.05, 1.2, 1, False)])
def test_verdict_judges_the_limits_on_a_gpu(tmp_path: Path, bf16_ratio: float, kernel_ratio: float, failures: int,
                                           passes: bool) -> None:
    root = _fake_check(tmp_path / "out", "NVIDIA H200", bf16_ratio, kernel_ratio, failures)
    assert acceptance.main([str(root)]) == (0 if passes else 1)
    text = (root / "acceptance.md").read_text()
    assert f"mlbfgs iteration / sgd on cifar10-resnet18 (bf16 autocast): {bf16_ratio:.3f} (limit 1.1)" in text
    assert "mlbfgs iteration / sgd on cifar10-resnet18: 1.300\n" in text  # float32: reported, not limited
    assert text.rstrip().endswith("verdict: PASS" if passes else "verdict: FAIL")
    # the same numbers from a CPU are reported, never judged
    cpu = _fake_check(tmp_path / "cpu", "cpu", bf16_ratio, kernel_ratio, failures)
    assert acceptance.main([str(cpu)]) == 0
    assert "verdict: reported (not judged)" in (cpu / "acceptance.md").read_text()
