"""Parameter-group recipes for optimizers named by import path (``--param-groups module:function``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from baselines.external import build_external, recipe_groups
from baselines.recipes import muon_groups
from experiments import run


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16),
                         nn.ReLU(), nn.Linear(16, 10))


def test_muon_groups_send_hidden_matrices_to_muon_and_the_rest_to_adamw() -> None:
    model = _cnn()
    model[0].bias.requires_grad_(False)
    muon, adamw = muon_groups(model)
    assert muon["use_muon"] is True and adamw["use_muon"] is False
    assert [id(p) for p in muon["params"]] == [id(model[0].weight), id(model[4].weight)]
    expected_rest = [model[1].weight, model[1].bias, model[4].bias, model[6].weight, model[6].bias]
    assert [id(p) for p in adamw["params"]] == [id(p) for p in expected_rest]  # the head, norms, biases


def test_a_recipe_builds_muon_that_the_flat_list_cannot() -> None:
    pytest.importorskip("pytorch_optimizer")
    model = _cnn()
    opt = build_external("pytorch_optimizer:Muon", model, {"param_groups": "baselines.recipes:muon_groups"})
    assert [g["use_muon"] for g in opt.optimizer.param_groups] == [True, False]
    with pytest.raises(ValueError, match="--param-groups"):
        build_external("pytorch_optimizer:Muon", model, {})


@pytest.mark.parametrize(("recipe", "message"), [
    ("baselines.recipes:no_such_recipe", "has no attribute 'no_such_recipe'"),
    ("not a path", "import path"),
    ("tests.baselines.test_recipes:_leaves_out_the_head", "leaves out trainable parameter"),
    ("tests.baselines.test_recipes:_lists_twice", "twice"),
])
def test_bad_recipes_are_named(recipe: str, message: str) -> None:
    with pytest.raises(ValueError, match="param_groups") as err:
        recipe_groups(recipe, _cnn())
    assert message in str(err.value)


def _leaves_out_the_head(model: nn.Module) -> list[dict]:
    return [{"params": list(model.parameters())[:-2]}]


def _lists_twice(model: nn.Module) -> list[dict]:
    params = list(model.parameters())
    return [{"params": params}, {"params": params[:1]}]


def test_the_runner_records_the_recipe_in_the_run_id_and_manifest(tmp_path: Path) -> None:
    pytest.importorskip("pytorch_optimizer")
    common = ["--workload", "mnist1d-mlp", "--optimizer", "pytorch_optimizer:Muon", "--max-iters", "5",
              "--out", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress",
              "--threads", str(torch.get_num_threads())]
    assert run.main([*common, "--param-groups", "baselines.recipes:muon_groups"]) == 0
    assert run.main(common) == 2  # the flat list: refused at the check, naming the way out
    (manifest,) = (tmp_path / "runs").rglob("*.json")
    record = json.loads(manifest.read_text())
    assert "baselines.recipes:muon_groups" in json.dumps(record)
    assert manifest.stem.endswith(tuple("0123456789abcdef"))  # a hash of the non-default settings
