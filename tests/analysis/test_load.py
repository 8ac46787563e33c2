"""Reading the results tree: schemas, manifests, derived columns, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis.load import (
    SchemaError,
    load_curvature,
    load_distributed,
    load_overhead,
    load_results,
    load_runs,
    manifest_beta,
)
from tests.support.fixtures_results import (
    ABLATION_BETAS,
    ITERS_PER_EPOCH,
    OPTIMIZERS,
    SEEDS,
    WORKLOADS,
    run_id,
    write_results_tree,
)


def test_loads_every_group(results_tree: Path) -> None:
    data = load_results(results_tree)
    n_main = len(WORKLOADS) * len(OPTIMIZERS) * len(SEEDS)
    assert data.runs["run_id"].nunique() == n_main + len(ABLATION_BETAS) * len(SEEDS)
    assert data.manifests is not None and len(data.manifests) == data.runs["run_id"].nunique()
    # curvature files: every slbfgs and mlbfgs run
    assert data.curvature["run_id"].nunique() == 2 * len(WORKLOADS) * len(SEEDS) + len(ABLATION_BETAS) * len(SEEDS)
    assert data.curvature["accepted"].dtype == bool
    assert len(data.overhead) == 2 * len(OPTIMIZERS) * 2 * 5
    assert len(data.distributed) == 1 + 2 + 4
    assert set(data.runs["kind"]) == {"train", "eval"}


def test_beta_comes_from_the_resolved_optimizer_config(results_tree: Path) -> None:
    runs = load_runs(results_tree)
    beta = runs.drop_duplicates("run_id").set_index("run_id")["beta"]
    # the workload default in the manifest says 0.999; the resolved optimizer config says 0.9
    assert beta[run_id("mnist1d_mlp", "mlbfgs", 0, 0.9)] == pytest.approx(0.9)
    assert beta[run_id("mnist1d_mlp", "mlbfgs", 1, 0.99)] == pytest.approx(0.99)
    assert beta[run_id("mnist1d_mlp", "mlbfgs", 0)] == pytest.approx(0.999)
    assert beta[run_id("cifar10_resnet18", "slbfgs", 1)] == 0.0
    assert np.isnan(beta[run_id("cifar10_resnet18", "sgd", 0)])


def test_manifest_beta_lookup_order() -> None:
    assert manifest_beta({"optimizer": "mlbfgs", "optimizer_config": {"beta": 0.9}, "beta": 0.5}) == 0.9
    assert manifest_beta({"optimizer": "mlbfgs", "config": {"optimizer": {"beta": 0.99}}}) == 0.99
    assert manifest_beta({"optimizer": "mlbfgs", "config": {"optimizers": {"mlbfgs": {"beta": 0.95}}}}) == 0.95
    assert manifest_beta({"optimizer": "adam", "config": {"optimizers": {"mlbfgs": {"beta": 0.95}}}}) is None
    assert manifest_beta({"optimizer": "slbfgs", "optimizer_config": {"beta": 0.9}}) == 0.0
    assert manifest_beta({"optimizer": "mlbfgs", "optimizer_config": {"beta": True}}) is None


def test_epoch_progress(results_tree: Path) -> None:
    runs = load_runs(results_tree)
    run = runs[runs["run_id"] == run_id("mnist1d_mlp", "adam", 1)].set_index(["kind", "iteration"])
    # whole epoch numbers (0-based) -> epochs completed: iteration t -> t / ITERS_PER_EPOCH
    assert run.loc[("train", 30), "epoch_progress"] == pytest.approx(30 / ITERS_PER_EPOCH)
    assert run.loc[("train", 1), "epoch_progress"] == pytest.approx(1 / ITERS_PER_EPOCH)
    assert run.loc[("eval", 50), "epoch_progress"] == pytest.approx(2.0)
    assert run.loc[("eval", 0), "epoch_progress"] == 0.0


def test_fractional_epochs_are_used_as_they_are(tmp_path: Path) -> None:
    d = tmp_path / "runs" / "w"
    d.mkdir(parents=True)
    header = (
        "run_id,workload,optimizer,seed,kind,epoch,iteration,train_loss,lr,wall_s,grad_evals,test_loss,test_acc,eval_s"
    )
    rows = [
        "r,w,sgd,0,train,0.5,1,1.0,0.1,0.1,1,,,",
        "r,w,sgd,0,train,1.0,2,0.9,0.1,0.2,2,,,",
        "r,w,sgd,0,eval,1.0,2,,0.1,,,0.5,0.7,0.01",
    ]
    (d / "r.csv").write_text("\n".join([header, *rows]) + "\n")
    runs = load_runs(tmp_path).set_index(["kind", "iteration"])
    assert runs.loc[("train", 1), "epoch_progress"] == 0.5
    assert runs.loc[("eval", 2), "epoch_progress"] == 1.0
    # empty wall_s / grad_evals of the eval row are taken from the train row at that iteration
    assert runs.loc[("eval", 2), "wall_s"] == pytest.approx(0.2)
    assert runs.loc[("eval", 2), "grad_evals"] == 2


@pytest.mark.parametrize(
    ("pattern", "column"),
    [
        ("runs/mnist1d_mlp/mnist1d_mlp__sgd__s0.csv", "wall_s"),
        ("runs/mnist1d_mlp/mnist1d_mlp__sgd__s0.csv", "test_acc"),
        ("runs/mnist1d_mlp/mnist1d_mlp__slbfgs__s0.curvature.csv", "mu"),
        ("overhead/overhead.csv", "seconds"),
        ("distributed/scaling.csv", "direction_seconds"),
    ],
)
def test_missing_column_is_named_with_the_file(tmp_path: Path, pattern: str, column: str) -> None:
    root = write_results_tree(tmp_path / "results")
    path = root / pattern
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    idx = header.index(column)
    path.write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != idx) for line in lines) + "\n")
    with pytest.raises(SchemaError) as err:
        load_results(root)
    message = str(err.value)
    assert column in message.split("expected")[0]
    assert str(path) in message


def test_bad_values_are_reported(tmp_path: Path) -> None:
    root = write_results_tree(tmp_path / "r1", overhead=False, distributed=False)
    path = root / "runs" / "cifar10_resnet18" / "cifar10_resnet18__adam__s0.csv"
    text = path.read_text()
    path.write_text(text.replace(",train,", ",training,", 1))
    with pytest.raises(SchemaError, match="kind holds training"):
        load_runs(root)
    path.write_text(text.replace(",train,0,1,", ",train,0,one,", 1))
    with pytest.raises(SchemaError, match="column iteration holds a non-numeric value 'one'"):
        load_runs(root)


def test_absent_groups_are_none(tmp_path: Path) -> None:
    data = load_results(tmp_path)
    assert (data.runs, data.manifests, data.curvature, data.overhead, data.distributed) == (None,) * 5
    root = write_results_tree(tmp_path / "only_overhead", runs=False, distributed=False)
    assert load_overhead(root) is not None
    assert load_runs(root) is None and load_curvature(root) is None and load_distributed(root) is None


def test_header_only_files_are_accepted(tmp_path: Path) -> None:
    root = write_results_tree(tmp_path / "r", runs=False, distributed=False)
    shutil.copy(root / "overhead" / "overhead.csv", root / "overhead" / "b.csv")
    (root / "overhead" / "b.csv").write_text("model,optimizer,measure,repeat,seconds\n")
    assert len(load_overhead(root)) == 2 * len(OPTIMIZERS) * 2 * 5


def test_a_run_that_has_not_logged_yet_is_left_out_of_runs_but_its_manifest_is_read(results_tree: Path) -> None:
    """A run just started has a header-only CSV: analysing a tree with training in progress must work."""
    workload = WORKLOADS[0]
    started = results_tree / "runs" / workload / "just-started.csv"
    started.write_text((results_tree / "runs" / workload / f"{run_id(workload, OPTIMIZERS[0], SEEDS[0])}.csv")
                       .read_text().splitlines()[0] + "\n")
    started.with_suffix(".json").write_text(json.dumps(
        {"run_id": "just-started", "workload": workload, "optimizer": "sgd", "status": "running", "cpu_s": 1.5}))
    data = load_results(results_tree)
    assert "just-started" not in set(data.runs["run_id"])
    row = data.manifests.set_index("run_id").loc["just-started"]
    assert (row["status"], row["cpu_s"], np.isnan(row["iterations_done"])) == ("running", 1.5, True)
    only = results_tree / "only" / "runs" / workload
    only.mkdir(parents=True)
    shutil.copy(started, only / started.name)
    assert load_runs(results_tree / "only") is None


def test_other_tables_in_the_overhead_folder_are_ignored(tmp_path: Path) -> None:
    root = write_results_tree(tmp_path / "r", runs=False)
    other = root / "overhead" / "bandwidth.csv"
    other.write_text("method,numel,history_size,repeat,seconds,bytes_moved\ncompact,10,5,0,0.1,100\n")
    data = load_results(root)
    assert data.ignored == [str(other)]
    assert len(data.overhead) == 2 * len(OPTIMIZERS) * 2 * 5
    # a file of the schema that lacks a column is still an error, not ignored
    (root / "overhead" / "more.csv").write_text("model,optimizer,measure,repeat\nmlp,sgd,step,0\n")
    with pytest.raises(SchemaError, match="missing column"):
        load_results(root)
