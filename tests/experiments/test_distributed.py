"""torchrun with 2 CPU ranks (gloo): one CSV written by rank 0, the same training as one process."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

ARGS = ["--workload", "mnist1d-mlp", "--optimizer", "mlbfgs", "--seed", "2", "--max-iters", "30", "--threads", "1",
        "--no-progress", "--checkpoint-every", "12", "--set", "optimizer.update_period=5", 'optimizer.blocks="layer"',
        "eval_interval=10", "batch_size=64"]


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("shard", ["blocks", "rows"])  # the registry's default is rows; blocks: whole ones per rank
def test_two_rank_run_matches_single_process(tmp_path: Path, shard: str) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not installed next to the interpreter")
    out2, out1 = tmp_path / "w2", tmp_path / "w1"
    subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "experiments.run", *ARGS,
                    f'optimizer.shard="{shard}"', "--out", str(out2 / "runs"),
                    "--checkpoint-dir", str(out2 / "ck")],
                   cwd=REPO, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "experiments.run", *ARGS, f'optimizer.shard="{shard}"',
                    "--out", str(out1 / "runs"), "--checkpoint-dir", str(out1 / "ck")],
                   cwd=REPO, check=True, capture_output=True)

    files2 = sorted(p.name for p in (out2 / "runs" / "mnist1d-mlp").iterdir())
    assert files2 == sorted(p.name for p in (out1 / "runs" / "mnist1d-mlp").iterdir())
    run_csv = next(p for p in (out2 / "runs").rglob("*.csv") if not p.name.endswith(".curvature.csv"))
    rows2, rows1 = _read(run_csv), _read(out1 / "runs" / "mnist1d-mlp" / run_csv.name)
    assert [int(r["iteration"]) for r in rows2 if r["kind"] == "train"] == list(range(1, 31))  # rank 0 only
    assert len(rows2) == len(rows1)
    for a, b in zip(rows2, rows1, strict=True):
        assert (a["kind"], a["iteration"]) == (b["kind"], b["iteration"])
        for col in ("train_loss", "test_loss", "test_acc"):
            if a[col]:
                assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-4, abs=1e-5), (a["iteration"], col)

    curv2 = _read(run_csv.with_name(run_csv.stem + ".curvature.csv"))
    curv1 = _read(out1 / "runs" / "mnist1d-mlp" / (run_csv.stem + ".curvature.csv"))
    assert [(r["iteration"], r["block"]) for r in curv2] == [(r["iteration"], r["block"]) for r in curv1]
    assert {r["block"] for r in curv2} == {"0", "1", "2"}  # every block once, whichever rank computed it
    for a, b in zip(curv2, curv1, strict=True):
        assert float(a["mu"]) == pytest.approx(float(b["mu"]), rel=1e-3)

    manifest = json.loads(run_csv.with_suffix(".json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "finished"
