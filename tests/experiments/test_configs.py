"""Every workload config parses and names valid optimizer settings; every model trains a step;
the LR schedule, the CSV logger's truncation, and the presets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from baselines import available_optimizers, build_optimizer
from experiments.runner.csvlog import CsvLog
from experiments.runner.spec import make_run_spec
from experiments.suite.presets import available_presets, load_preset
from experiments.workloads.config import available_workloads, load_workload_dict, workload_from_dict
from experiments.workloads.models import build_model
from experiments.workloads.schedule import lr_factor

INPUT_SHAPES = {"fashion-mnist": (1, 28, 28), "mnist1d": (40,), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
                "imagenet": (3, 64, 64)}  # imagenet at 64 px keeps the test fast; the model is size-agnostic
NUM_CLASSES = {"fashion-mnist": 10, "mnist1d": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}
EXPECTED = {"fmnist-cnn", "fmnist-resnet", "fmnist-vit", "mnist1d-mlp", "cifar10-resnet18", "cifar100-resnet18",
            "cifar100-deit", "imagenet-resnet50"}


def test_all_workloads_present() -> None:
    assert EXPECTED <= set(available_workloads())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_workload_parses_and_its_optimizer_settings_are_valid(name: str) -> None:
    cfg = workload_from_dict(load_workload_dict(name))
    assert cfg.name == name and cfg.epochs > 0 and cfg.batch_size > 0
    assert cfg.schedule.kind == "cosine"
    assert set(cfg.optimizers) <= set(available_optimizers())
    model = torch.nn.Linear(2, 2)
    for opt in available_optimizers():
        spec = make_run_spec(name, opt, 0)
        assert spec.run_id == f"{name}__{opt}__s0"
        build_optimizer(opt, model, **spec.optimizer_settings)  # raises on an unknown / invalid setting


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_forward_backward(name: str) -> None:
    cfg = workload_from_dict(load_workload_dict(name))
    torch.manual_seed(0)
    model = build_model(cfg.model, INPUT_SHAPES[cfg.data.name], NUM_CLASSES[cfg.data.name])
    x = torch.randn(2, *INPUT_SHAPES[cfg.data.name])
    y = torch.tensor([0, 1])
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES[cfg.data.name])
    F.cross_entropy(logits, y).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_model_sizes_match_their_descriptions() -> None:
    def count(name: str) -> int:
        cfg = workload_from_dict(load_workload_dict(name))
        model = build_model(cfg.model, INPUT_SHAPES[cfg.data.name], NUM_CLASSES[cfg.data.name])
        return sum(p.numel() for p in model.parameters())

    assert 0.40e6 < count("fmnist-cnn") < 0.45e6
    assert 0.26e6 < count("fmnist-resnet") < 0.28e6  # ResNet-20: 0.27M
    assert 11.0e6 < count("cifar10-resnet18") < 11.3e6  # ResNet-18: 11.2M
    assert 5.0e6 < count("cifar100-deit") < 5.8e6  # DeiT-tiny: ~5.5M


def test_unknown_model_and_dataset_names_list_valid_ones() -> None:
    raw = load_workload_dict("fmnist-cnn")
    with pytest.raises(ValueError, match=r"model.name must be one of \["):
        cfg = workload_from_dict({**raw, "model": {"name": "nope"}})
        build_model(cfg.model, (1, 28, 28), 10)
    from experiments.workloads.config import DataConfig
    from experiments.workloads.data import build_data

    with pytest.raises(ValueError, match=r"data.name must be one of \["):
        build_data(DataConfig(name="nope"))


def test_cosine_schedule_endpoints_and_warmup() -> None:
    from experiments.workloads.config import ScheduleConfig

    cos = ScheduleConfig(kind="cosine", final_fraction=1e-3)
    assert lr_factor(cos, 0, 101) == 1.0
    assert lr_factor(cos, 100, 101) == pytest.approx(1e-3)
    assert lr_factor(cos, 50, 101) == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    vals = [lr_factor(cos, t, 101) for t in range(101)]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False))
    warm = ScheduleConfig(kind="cosine", final_fraction=0.0, warmup_iters=10)
    assert [lr_factor(warm, t, 110) for t in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_factor(warm, 10 + 50, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi * 50 / 99)))
    assert lr_factor(ScheduleConfig(kind="constant"), 77, 100) == 1.0


def test_csv_log_truncates_to_checkpoint_offset(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    log = CsvLog(path, ("a", "b"), max_rows=1000, max_seconds=1e9)
    log.write({"a": 1, "b": torch.tensor(0.5)})
    log.write({"a": 2, "b": None})
    offset = log.offset()
    log.write({"a": 3, "b": torch.tensor(float("nan"))})
    log.close()
    assert log.nonfinite_seen
    assert path.read_text() == "a,b\n1,0.5\n2,\n3,nan\n"
    resumed = CsvLog(path, ("a", "b"), resume_offset=offset)
    resumed.write({"a": 3, "b": torch.tensor(True)})
    resumed.close()
    assert path.read_text() == "a,b\n1,0.5\n2,\n3,True\n"
    with pytest.raises(ValueError, match="not in"):
        CsvLog(tmp_path / "y.csv", ("a",)).write({"z": 1})


def test_ablation_preset_changes_one_setting_at_a_time() -> None:
    from experiments.suite.cli import plan

    runs = plan(load_preset("long_ablations"))

    def settings(run) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(tuple(a.split("=", 1)) for a in run.args if a.startswith("optimizer.")))

    configs = {(r.optimizer, settings(r)) for r in runs}
    assert len(configs) == 10 and len(runs) == 50
    centre = ("mlbfgs", settings(runs[0]))
    for optimizer, items in configs - {centre}:
        changed = set(items) ^ set(centre[1])
        assert (optimizer != "mlbfgs") + len({k for k, _ in changed}) == 1, (optimizer, changed)


@pytest.mark.parametrize("name", ["quick", "full"])
def test_presets_parse(name: str) -> None:
    from experiments.suite.cli import plan

    assert name in available_presets()
    preset = load_preset(name)
    runs = plan(preset)
    ids = [r.run_id for r in runs]
    assert len(ids) == len(set(ids)) > 0
    if name == "quick":
        assert {r.workload for r in runs} == {"fmnist-cnn", "mnist1d-mlp"}
        assert {r.optimizer for r in runs} == {"sgd", "adam", "kfac", "slbfgs", "mlbfgs"}
    else:
        assert {r.workload for r in runs} == {"fmnist-cnn", "fmnist-resnet", "mnist1d-mlp", "fmnist-vit"}
        assert {r.seed for r in runs} == {0, 1, 2}
        assert {"sgd", "adam", "kfac", "slbfgs", "mlbfgs"} <= {r.optimizer for r in runs} <= set(available_optimizers())
