"""Optimizers with train and eval modes (schedule-free AdamW): the runner evaluates and checkpoints their
eval-mode weights and steps from their train-mode weights, also after a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments import run
from experiments.runner.dist_context import DistContext
from experiments.runner.evaluate import evaluate
from experiments.runner.spec import make_run_spec
from experiments.runner.training import Run, RunOptions, load_data

pytest.importorskip("schedulefree")

OPTIMIZER = "schedulefree:AdamWScheduleFree"
SETTINGS = ["optimizer.lr=0.01", "eval_interval=10", "checkpoint_interval=10"]


def test_the_evaluated_accuracy_is_that_of_the_eval_mode_weights(tmp_path: Path) -> None:
    spec = make_run_spec("mnist1d-mlp", OPTIMIZER, 0, overrides=run.parse_overrides(SETTINGS), max_iters=25)
    opts = RunOptions(out=tmp_path / "runs", checkpoint_root=tmp_path / "ck")
    ctx = DistContext()
    trainer = Run(spec, opts, ctx, load_data(spec, ctx))
    trainer.start()
    while not trainer.done:
        trainer.step()
    opt = trainer.opt.optimizer
    assert opt.param_groups[0]["train_mode"], "the optimizer must be back in train mode after an evaluation"
    batch = spec.workload.eval_batch_size
    train_loss, _, _ = evaluate(trainer.raw_model, trainer.eval_data, batch, ctx)
    opt.eval()
    eval_loss, eval_acc, _ = evaluate(trainer.raw_model, trainer.eval_data, batch, ctx)
    opt.train()
    assert (trainer.last_eval["test_loss"], trainer.last_eval["test_acc"]) == (eval_loss, eval_acc)
    assert train_loss != eval_loss, "the two weights coincide: the test could not tell them apart"
    trainer.finish()


def _trainer(tmp_path: Path, name: str) -> Run:
    spec = make_run_spec("mnist1d-mlp", OPTIMIZER, 0, overrides=run.parse_overrides(SETTINGS), max_iters=30)
    opts = RunOptions(out=tmp_path / name / "runs", checkpoint_root=tmp_path / name / "ck")
    ctx = DistContext()
    return Run(spec, opts, ctx, load_data(spec, ctx))


def test_a_resumed_run_equals_the_continuous_one(tmp_path: Path) -> None:
    """The checkpoint holds eval-mode weights; the resumed run switches back before its first step."""
    whole = _trainer(tmp_path, "whole")
    whole.start()
    while not whole.done:
        whole.step()
    part = _trainer(tmp_path, "part")
    part.start()
    for _ in range(20):  # a checkpoint at iteration 20, then the process "ends"
        part.step()
    part.close_logs()
    resumed = _trainer(tmp_path, "part")
    assert resumed.iteration == 20, "the run did not resume from its checkpoint"
    resumed.start()
    while not resumed.done:
        resumed.step()
    assert resumed.last_eval == whole.last_eval
    for a, b in zip(whole.raw_model.parameters(), resumed.raw_model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("optimizer", ["adamw_schedulefree", "schedulefree:AdamWScheduleFree"])
def test_schedule_free_trains_at_a_constant_lr_after_the_warm_up_unless_the_run_says_otherwise(optimizer: str) -> None:
    """Its averaging replaces the schedule (Defazio et al. 2024): the workload's cosine decay would anneal it twice."""
    assert make_run_spec("mnist1d-mlp", "sgd", 0).workload.schedule.kind == "cosine"
    spec = make_run_spec("mnist1d-mlp", optimizer, 0, overrides={"schedule.warmup_iters": 5})
    assert spec.workload.schedule.kind == "constant" and spec.workload.schedule.warmup_iters == 5
    assert make_run_spec("mnist1d-mlp", optimizer, 0).run_id == f"mnist1d-mlp__{optimizer.replace(':', '--')}__s0"
    chosen = make_run_spec("mnist1d-mlp", optimizer, 0, overrides={"schedule.kind": "cosine"})
    assert chosen.workload.schedule.kind == "cosine"
