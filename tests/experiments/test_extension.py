"""Extension without editing the package: optimizers by import path (``torch.optim:RAdam``), workload JSON
files outside experiments/workloads/, models and datasets by import path or by registration, --help."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from baselines import available_optimizers, build_optimizer, config_class, default_config
from baselines.registry import check_optimizer_name
from experiments import run
from experiments.runner.spec import make_run_spec, optimizer_id
from experiments.workloads.config import ModelConfig, load_workload_dict
from experiments.workloads.data import registry as data_registry
from experiments.workloads.models import build_model
from experiments.workloads.models import registry as model_registry

BUILTIN = ["sgd", "sgd_normalized", "adam", "adamw", "kfac", "slbfgs", "olbfgs", "sqn", "mlbfgs", "mlbfgs_authors",
           "slimqn_authors", "adamw_schedulefree", "muon", "soap", "shampoo"]
NUMBERS = ("kind", "epoch", "iteration", "train_loss", "lr", "grad_evals", "test_loss", "test_acc")
TINY = ["data.train_subset=640", "data.test_subset=200", "eval_interval=4", "optimizer.lr=0.01"]

USER_MODULE = '''
import torch
from torch import nn

from experiments.workloads.data.tensor_data import TensorData


def build_net(input_shape, num_classes, width=16):
    features = 1
    for d in input_shape:
        features *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(features, width), nn.Tanh(), nn.Linear(width, num_classes))


def build_blobs(cfg, device):
    g = torch.Generator().manual_seed(0)
    n_train = cfg.train_subset or 256
    centres = 3 * torch.randn(3, 6, generator=g)
    y = torch.randint(0, 3, (n_train + 64,), generator=g)
    x = centres[y] + torch.randn(len(y), 6, generator=g)
    return TensorData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 3, device=device)


def not_a_model(input_shape, num_classes):
    return "a string"


NOT_CALLABLE = 3


class NoLR(torch.optim.Optimizer):
    def __init__(self, params, momentum=0.0):
        super().__init__(params, {"momentum": momentum})

    def step(self, closure=None):
        return None


class NeedsLR(torch.optim.Optimizer):
    """Plain gradient descent whose lr has no default."""

    def __init__(self, params, lr, *, scale=1.0):
        super().__init__(params, {"lr": lr, "scale": scale})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * group["scale"])
'''


pytestmark = pytest.mark.usefixtures("cached_mnist1d")


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module written into tmp_path and put on sys.path, as a researcher's own code would be; its name."""
    name = f"user_ext_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _main(root: Path, workload: str, optimizers: list[str], *extra: str, iters: int = 8) -> int:
    return run.main(["--workload", workload, "--optimizer", *optimizers, "--seed", "0", "--max-iters", str(iters),
                     "--out", str(root / "runs"), "--checkpoint-dir", str(root / "ck"), "--no-progress",
                     "--threads", str(torch.get_num_threads()), *extra])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _numbers(path: Path) -> list[tuple[str, ...]]:
    return [tuple(r[c] for c in NUMBERS) for r in _rows(path)]


def _workload_file(path: Path, **changes) -> Path:
    raw = load_workload_dict("mnist1d-mlp")
    raw.update(changes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))
    return path


# ---- optimizers by import path ------------------------------------------------------------------------------


def test_build_optimizer_by_import_path_through_the_registry() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = build_optimizer("torch.optim:RAdam", model, lr=0.02, weight_decay=0.1)
    assert type(opt.optimizer) is torch.optim.RAdam
    assert opt.optimizer.param_groups[0]["lr"] == 0.02 and opt.optimizer.param_groups[0]["weight_decay"] == 0.1
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))

    def closure(backward: bool = True) -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        if backward:
            model.zero_grad()
            loss.backward()
            return loss.detach()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure)
    assert opt.grad_evals == 1
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    # the registry's other functions accept the path; the listing stays the built-in names
    assert available_optimizers() == BUILTIN
    assert default_config("torch.optim:NAdam")["momentum_decay"] == 0.004
    assert dataclasses.is_dataclass(config_class("torch.optim:RAdam"))
    assert "lr" in {f.name for f in dataclasses.fields(config_class("torch.optim:RAdam"))}
    check_optimizer_name("torch.optim:RAdam")


def test_optimizer_whose_step_needs_a_closure_is_driven_with_one() -> None:
    """torch.optim.LBFGS.step(closure) re-evaluates the batch; each evaluation is one gradient evaluation."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = build_optimizer("torch.optim:LBFGS", model, lr=0.5, max_iter=5)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    calls = []

    def closure(backward: bool = True) -> torch.Tensor:
        calls.append(backward)
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    first = nn.functional.cross_entropy(model(x), y).item()
    loss = opt.step(closure)
    assert loss.item() == pytest.approx(first)  # the loss of the first evaluation, as the built-ins return
    assert 1 < opt.grad_evals == len(calls) <= 5 * 5 // 4 + 1
    assert nn.functional.cross_entropy(model(x), y).item() < first


def test_dotted_optimizers_train_log_and_record_like_builtins(tmp_path: Path) -> None:
    """RAdam and NAdam by import path in lockstep on mnist1d-mlp: rows, lr schedule, gradient counts, manifests."""
    names = ["torch.optim:RAdam", "torch.optim:NAdam"]
    assert _main(tmp_path, "mnist1d-mlp", names, "--set", *TINY) == 0
    rows = {}
    for name, cls in zip(names, (torch.optim.RAdam, torch.optim.NAdam), strict=True):
        spec = make_run_spec("mnist1d-mlp", name, 0, overrides=run.parse_overrides(TINY), max_iters=8)
        assert spec.run_id.startswith(f"mnist1d-mlp__torch-optim--{cls.__name__}__s0__")
        csv_path = tmp_path / "runs" / "mnist1d-mlp" / f"{spec.run_id}.csv"
        rows[name] = _rows(csv_path)
        train = [r for r in rows[name] if r["kind"] == "train"]
        assert [int(r["iteration"]) for r in train] == list(range(1, 9))
        assert [int(r["grad_evals"]) for r in train] == list(range(1, 9))
        assert {r["optimizer"] for r in rows[name]} == {name}
        assert float(train[0]["lr"]) == pytest.approx(0.01) and float(train[-1]["lr"]) == pytest.approx(1e-5)
        assert [int(r["iteration"]) for r in rows[name] if r["kind"] == "eval"] == [0, 4, 8]

        manifest = json.loads(csv_path.with_suffix(".json").read_text())
        assert manifest["optimizer"] == name and manifest["status"] == "finished"
        resolved = manifest["optimizer_config"]
        # the constructor's arguments: the override, the workload's shared weight decay, the signature's defaults
        assert resolved["lr"] == 0.01 and resolved["weight_decay"] == 1e-4 and resolved["betas"] == [0.9, 0.999]
        assert set(resolved) == set(default_config(name))
        assert manifest["grad_evals"] == 8
    # same initial model and batches, different update rules
    first, second = ([float(r["train_loss"]) for r in rows[n] if r["kind"] == "train"] for n in names)
    assert first[0] == second[0] and first[1:] != second[1:]


def test_lockstep_specs_take_import_paths(tmp_path: Path) -> None:
    """``--spec`` (what the suite launches) accepts an import path beside a built-in name."""
    overrides = dict(item.split("=", 1) for item in TINY)
    files = []
    for name in ("torch.optim:NAdam", "adam"):
        files.append(tmp_path / f"{name.replace(':', '_')}.json")
        files[-1].write_text(json.dumps({"workload": "mnist1d-mlp", "optimizer": name, "seed": 0, "max_iters": 3,
                                         "overrides": {k: json.loads(v) for k, v in overrides.items()}}))
    assert run.main(["--spec", *map(str, files), "--out", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    manifests = {json.loads(p.read_text())["optimizer"]: json.loads(p.read_text())
                 for p in (tmp_path / "mnist1d-mlp").glob("*.json")}
    assert set(manifests) == {"torch.optim:NAdam", "adam"}
    nadam = manifests["torch.optim:NAdam"]
    assert nadam["mode"] == "lockstep" and nadam["status"] == "finished" and nadam["grad_evals"] == 3
    assert "--optimizer torch.optim:NAdam" in nadam["command"]  # reproduces the run alone


@pytest.mark.parametrize("name", ["torch.optim:RAdam", "torch.optim:LBFGS"])
def test_resume_of_a_dotted_optimizer_is_bit_identical(tmp_path: Path, name: str) -> None:
    args = ("--checkpoint-every", "5", "--flush-rows", "1", "--set", *TINY)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _main(straight, "mnist1d-mlp", [name], *args, iters=12) == 0
    assert _main(resumed, "mnist1d-mlp", [name], *args, "--keep-checkpoint", iters=12) == 0
    (manifest_path,) = (resumed / "runs" / "mnist1d-mlp").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["status"] = "running"  # as if killed after its last checkpoint (iteration 10)
    manifest_path.write_text(json.dumps(manifest))
    assert _main(resumed, "mnist1d-mlp", [name], *args, iters=12) == 0

    manifest = json.loads(manifest_path.read_text())
    assert manifest["attempts"][-1]["resumed_from_iteration"] == 10
    assert manifest["status"] == "finished"
    csv_name = manifest_path.with_suffix(".csv").name
    assert _numbers(manifest_path.with_suffix(".csv")) == _numbers(straight / "runs" / "mnist1d-mlp" / csv_name)


def test_optimizer_defaults_reach_an_imported_class_only_if_its_constructor_takes_them() -> None:
    assert make_run_spec("mnist1d-mlp", "torch.optim:RAdam", 0).optimizer_settings == {"weight_decay": 1e-4}
    assert make_run_spec("mnist1d-mlp", "torch.optim:LBFGS", 0).optimizer_settings == {}
    assert make_run_spec("mnist1d-mlp", "sgd", 0).optimizer_settings["weight_decay"] == 1e-4


def test_run_ids_of_import_paths_are_readable_distinct_and_file_safe() -> None:
    assert optimizer_id("torch.optim:RAdam") == "torch-optim--RAdam"
    assert optimizer_id("a.b:C") != optimizer_id("a:b.C")
    assert optimizer_id("sgd") == "sgd"
    ids = {make_run_spec("mnist1d-mlp", name, 0).run_id for name in ("torch.optim:RAdam", "torch.optim:NAdam")}
    assert ids == {"mnist1d-mlp__torch-optim--RAdam__s0", "mnist1d-mlp__torch-optim--NAdam__s0"}
    assert not any(c in run_id for run_id in ids for c in ":./\\")
    assert make_run_spec("mnist1d-mlp", "sgd", 0).run_id == "mnist1d-mlp__sgd__s0"  # built-ins unchanged


def test_a_workload_optimizers_section_may_name_an_import_path(tmp_path: Path) -> None:
    path = _workload_file(tmp_path / "w.json", name="ext-sections",
                          optimizers={"torch.optim:RAdam": {"lr": 0.02}, "sgd": {"lr": 0.1}})
    spec = make_run_spec(str(path), "torch.optim:RAdam", 0)
    assert spec.optimizer_settings == {"weight_decay": 1e-4, "lr": 0.02}
    bad = _workload_file(tmp_path / "bad.json", name="ext-bad", optimizers={"torch.optim.RAdam": {"lr": 0.02}})
    with pytest.raises(ValueError, match=r"ext-bad.optimizers: .*torch.optim:RAdam"):
        make_run_spec(str(bad), "sgd", 0)


@pytest.mark.parametrize("optimizer, extra, message", [
    ("no_such_module_xyz:Opt", (), "optimizer: module 'no_such_module_xyz' of 'no_such_module_xyz:Opt' does not "
                                   "import"),
    ("torch.optim:NoSuchOptimizer", (), r"optimizer: 'torch.optim' has no attribute 'NoSuchOptimizer'.*'RAdam'"),
    ("torch.nn:Linear", (), "optimizer: 'torch.nn:Linear' is class Linear, not a torch.optim.Optimizer subclass"),
    ("torch.optim.RAdam", (), r"optimizer must be one of .* \(did you mean 'torch.optim:RAdam'\?\)"),
    ("torch.optim:RAdam", ("--set", "optimizer.learning_rate=0.1"),
     r"unknown argument\(s\) \['learning_rate'\] for optimizer 'torch.optim:RAdam'; valid arguments: \[.*'lr'"),
    ("torch.optim:", (), "optimizer: 'torch.optim:' is not an import path of the form 'module.path:Name'"),
])
def test_bad_optimizer_paths_and_arguments_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     optimizer: str, extra: tuple[str, ...], message: str) -> None:
    assert _main(tmp_path, "mnist1d-mlp", [optimizer], *extra) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_bad_user_optimizer_classes_are_named(user_module: str) -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"param groups have no 'lr'"):
        build_optimizer(f"{user_module}:NoLR", model)
    with pytest.raises(ValueError, match=r"argument\(s\) \['lr'\] have no default and must be given"):
        build_optimizer(f"{user_module}:NeedsLR", model)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['momentum'\].*valid arguments: \['lr', 'scale'\]"):
        build_optimizer(f"{user_module}:NeedsLR", model, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"'torch.optim:RAdam' with arguments \{'lr': -1.0\}: ValueError: .*-1"):
        build_optimizer("torch.optim:RAdam", model, lr=-1.0)
    opt = build_optimizer(f"{user_module}:NeedsLR", model, lr=0.1, scale=2.0)
    assert opt.optimizer.param_groups[0]["scale"] == 2.0


# ---- workload files --------------------------------------------------------------------------------------------


def test_workload_file_outside_the_package_runs(tmp_path: Path) -> None:
    path = _workload_file(tmp_path / "elsewhere" / "tiny.json", name="my-tiny",
                          optimizers={"torch.optim:RAdam": {"lr": 0.02}, "sgd": {"lr": 0.07}})
    assert _main(tmp_path, str(path), ["torch.optim:RAdam", "sgd"], "--set", "data.train_subset=640",
                 "eval_interval=4", iters=4) == 0
    for opt, lr in (("torch-optim--RAdam", 0.02), ("sgd", 0.07)):
        (csv_path,) = (tmp_path / "runs" / "my-tiny").glob(f"my-tiny__{opt}__s0__*.csv")
        manifest = json.loads(csv_path.with_suffix(".json").read_text())
        assert manifest["workload"] == "my-tiny" and manifest["config"]["name"] == "my-tiny"
        assert manifest["config"]["file"] == str(path.resolve())
        assert manifest["optimizer_config"]["lr"] == lr
        assert {r["workload"] for r in _rows(csv_path)} == {"my-tiny"}
    # a built-in workload's manifest keeps its tree as it was (no file key)
    assert "file" not in make_run_spec("mnist1d-mlp", "sgd", 0).workload.to_dict()


def test_a_workload_file_run_id_follows_its_content_not_its_path(tmp_path: Path) -> None:
    """Editing the file changes the run id (no stale skip or resume); the same content elsewhere, or a
    --set that writes what the file says, is the same run; the description is no part of it."""
    def run_id(path: Path, **overrides: object) -> str:
        return make_run_spec(str(path), "sgd", 0, overrides=overrides or None).run_id

    base = _workload_file(tmp_path / "a" / "w.json", name="my-wl")
    raw = json.loads(base.read_text())
    first = run_id(base)
    assert first.startswith("my-wl__sgd__s0__")
    assert run_id(_workload_file(tmp_path / "b" / "other.json", **raw)) == first  # same content, other path
    assert run_id(_workload_file(tmp_path / "c" / "w.json", **{**raw, "description": "reworded"})) == first
    base.write_text(json.dumps({**raw, "model": {**raw["model"], "args": {"hidden": [3]}}}))  # edited in place
    wider = run_id(base)
    assert wider != first
    base.write_text(json.dumps({**raw, "optimizers": {"sgd": {"lr": 0.5}}}))
    faster = run_id(base)
    assert len({first, wider, faster}) == 3
    base.write_text(json.dumps(raw))
    assert run_id(base) == first
    assert run_id(base, **{"model.args.hidden": [3]}) == wider  # a --set equal to the edit is the same run
    # a built-in's id still hashes only what differs from its own file
    assert make_run_spec("mnist1d-mlp", "sgd", 0).run_id == "mnist1d-mlp__sgd__s0"


def test_editing_a_workload_file_trains_a_new_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _workload_file(tmp_path / "w.json", name="my-edit")
    assert _main(tmp_path, str(path), ["sgd"], iters=2) == 0
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "model": {**raw["model"], "args": {"hidden": [3]}}}))
    capsys.readouterr()
    assert _main(tmp_path, str(path), ["sgd"], iters=2) == 0
    assert "skipped" not in capsys.readouterr().out
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "my-edit").glob("*.json")]
    hidden = sorted(m["config"]["model"]["args"]["hidden"] for m in manifests)
    assert hidden == sorted([[3], raw["model"]["args"]["hidden"]]) and {m["status"] for m in manifests} == {"finished"}


@pytest.mark.parametrize("change, message", [
    ({"batch_sise": 3}, r"workload: unknown key\(s\) \['batch_sise'\]; allowed keys"),
    ({"schedule": {"kind": "step"}}, r"my-file.schedule.kind must be one of \['cosine', 'constant'\]"),
    ({"name": "mnist1d-mlp"}, "'name' is 'mnist1d-mlp', a built-in workload's name"),
    ({"name": "my file/x"}, "'name' must be letters, digits, '-' and '_'"),
    ({"epochs": 0}, "my-file.epochs must be a positive integer"),
])
def test_workload_file_is_validated_like_the_builtins(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      change: dict, message: str) -> None:
    path = _workload_file(tmp_path / "w.json", **{"name": "my-file", **change})
    assert _main(tmp_path, str(path), ["sgd"]) == 2
    assert re.search(message, capsys.readouterr().err)
    with pytest.raises(ValueError, match=message):
        make_run_spec(str(path), "sgd", 0)


def test_missing_or_malformed_workload_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"workload: no file '.*nope.json'"):
        make_run_spec(str(tmp_path / "nope.json"), "sgd", 0)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"broken.json: not valid JSON"):
        make_run_spec(str(tmp_path / "broken.json"), "sgd", 0)
    with pytest.raises(ValueError, match=r"workload must be one of \[.*mnist1d-mlp.*\] or the path of a workload"):
        make_run_spec("no-such-workload", "sgd", 0)


# ---- models and datasets ----------------------------------------------------------------------------------------


def _blobs_workload(path: Path, model: str, data: str) -> Path:
    raw = {"name": "blobs-net", "data": {"name": data, "train_subset": 128}, "model": {"name": model,
           "args": {"width": 8}}, "epochs": 1, "batch_size": 32, "eval_interval": 2}
    path.write_text(json.dumps(raw))
    return path


def _check_blobs_run(root: Path) -> None:
    (csv_path,) = (root / "runs" / "blobs-net").glob("blobs-net__sgd__s0*.csv")
    manifest = json.loads(csv_path.with_suffix(".json").read_text())
    assert manifest["parameters"] == 6 * 8 + 8 + 8 * 3 + 3  # the user's builder, with its model.args
    assert manifest["num_train"] == 128 and manifest["num_test"] == 64  # the user's dataset
    assert [int(r["iteration"]) for r in _rows(csv_path) if r["kind"] == "train"] == [1, 2, 3, 4]


def test_model_and_dataset_by_import_path(tmp_path: Path, user_module: str) -> None:
    path = _blobs_workload(tmp_path / "blobs.json", f"{user_module}:build_net", f"{user_module}:build_blobs")
    assert _main(tmp_path, str(path), ["sgd"], iters=4) == 0
    _check_blobs_run(tmp_path)


def test_model_and_dataset_by_registration(tmp_path: Path, user_module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setattr(model_registry.MODELS, "builders", dict(model_registry.MODELS.builders))
    monkeypatch.setattr(data_registry.DATASETS, "builders", dict(data_registry.DATASETS.builders))
    user = importlib.import_module(user_module)
    from experiments.workloads.data import available_datasets, register_dataset
    from experiments.workloads.models import available_models, register_model

    register_model("test-net", user.build_net)
    register_dataset("test-blobs", user.build_blobs)
    assert "test-net" in available_models() and "test-blobs" in available_datasets()
    path = _blobs_workload(tmp_path / "blobs.json", "test-net", "test-blobs")
    assert _main(tmp_path, str(path), ["sgd"], iters=4) == 0
    _check_blobs_run(tmp_path)

    with pytest.raises(ValueError, match="'test-net' is already registered"):
        register_model("test-net", user.not_a_model)
    register_model("test-net", user.not_a_model, replace=True)
    with pytest.raises(ValueError, match="'mlp' is already registered"):
        register_model("mlp", user.build_net, replace=True)
    with pytest.raises(ValueError, match="without ':'"):
        register_dataset("a:b", user.build_blobs)
    with pytest.raises(ValueError, match="must be callable"):
        register_dataset("x", 3)


@pytest.mark.parametrize("model, data, message", [
    ("{m}:nope", "mnist1d",
     r"model.name: '{m}' has no attribute 'nope' \('{m}:nope'\); its callables: \[.*'build_net'"),
    ("{m}:NOT_CALLABLE", "mnist1d", r"model.name: '{m}:NOT_CALLABLE' is a int, not a callable model builder"),
    ("no_such_pkg_xyz:f", "mnist1d", "model.name: module 'no_such_pkg_xyz' of 'no_such_pkg_xyz:f' does not import"),
    ("nope", "mnist1d", r"model.name must be one of \[.*'mlp'.*\] or an import path"),
    ("mlp", "{m}:nope", r"data.name: '{m}' has no attribute 'nope'"),
    ("mlp", "nope", r"data.name must be one of \[.*'mnist1d'.*\] or an import path"),
])
def test_bad_model_and_dataset_names_are_named(tmp_path: Path, user_module: str, capsys: pytest.CaptureFixture[str],
                                               model: str, data: str, message: str) -> None:
    path = _workload_file(tmp_path / "w.json", name="bad-names", model={"name": model.format(m=user_module)},
                          data={"name": data.format(m=user_module)})
    assert _main(tmp_path, str(path), ["sgd"]) == 2
    assert re.search(message.format(m=user_module), capsys.readouterr().err)


def test_model_builder_results_and_arguments_are_checked(user_module: str) -> None:
    with pytest.raises(ValueError, match="its builder returned a str, not a torch.nn.Module"):
        build_model(ModelConfig(f"{user_module}:not_a_model"), (6,), 3)
    with pytest.raises(ValueError, match=r"model.args \['depth'\] do not fit its builder build_net"):
        build_model(ModelConfig(f"{user_module}:build_net", {"depth": 2}), (6,), 3)
    model = build_model(ModelConfig(f"{user_module}:build_net", {"width": 5}), (2, 3), 4)
    assert model(torch.zeros(7, 2, 3)).shape == (7, 4)


def test_dataset_builder_must_return_a_data_source(user_module: str) -> None:
    from experiments.workloads.config import DataConfig

    with pytest.raises(ValueError, match=r"returned a str without \['num_train'"):
        data_registry.build_data(DataConfig(name=f"{user_module}:not_a_model"))


# ---- --help -----------------------------------------------------------------------------------------------------


def test_help_lists_optimizers_workloads_models_and_datasets() -> None:
    from baselines import describe
    from experiments.workloads.config import available_workloads
    from experiments.workloads.data import available_datasets
    from experiments.workloads.models import available_models

    text = run.build_parser().format_help()
    for name in available_optimizers():
        assert f"  {name} " in text and describe(name) in text
    assert "module.path:Class" in text and "torch.optim:RAdam" in text
    assert "path/to/workload.json" in text and "module.path:function" in text
    for name in [*available_workloads(), *available_models(), *available_datasets()]:
        assert name in text
