"""Mixed precision in the runner (--amp / the workload key amp): bf16 autocast on the CPU, float16 loss
scaling with skipped overflow steps (mL-BFGS's curvature state untouched), K-FAC's unscaled factors, the
run id, the manifest, the checkpoint; the CUDA versions are marked ``cuda``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from experiments import run
from experiments.runner import amp as amp_module
from experiments.runner.checkpoint import rng_state, set_rng_state
from experiments.runner.dist_context import DistContext
from experiments.runner.spec import make_run_spec
from experiments.runner.training import Run, RunOptions, load_data

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
MLBFGS_SMALL = {"optimizers.mlbfgs.update_period": 2, "optimizers.mlbfgs.history_size": 3}


def _main(tmp_path: Path, optimizers: list[str], *extra: str, iters: int = 12) -> int:
    return run.main(["--workload", "mnist1d-mlp", "--optimizer", *optimizers, "--max-iters", str(iters),
                     "--out", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress",
                     "--threads", "1", "--set", "eval_interval=6", *extra])


def _manifest(tmp_path: Path, run_id: str) -> dict:
    return json.loads((tmp_path / "runs" / "mnist1d-mlp" / f"{run_id}.json").read_text())


def _losses(tmp_path: Path, run_id: str) -> list[float]:
    with open(tmp_path / "runs" / "mnist1d-mlp" / f"{run_id}.csv", newline="") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f) if r["kind"] == "train"]


def _state_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Every entry of the optimizer's state (nested dicts flattened), cloned as a tensor, keyed by its path."""
    out: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, torch.Tensor):
            out[prefix] = value.detach().clone()
        elif isinstance(value, (bool, int, float)):
            out[prefix] = torch.tensor(float(value))
        else:  # settings recorded in the state (strings, tuples): compared by their text
            out[prefix] = torch.tensor(list(repr(value).encode()))

    walk("state", opt.state_dict()["state"])
    return out


def _runs(tmp_path: Path, amps: list[str | None], optimizer: str = "mlbfgs", iters: int = 40) -> list[Run]:
    """One started :class:`Run` of ``optimizer`` on mnist1d-mlp per entry of ``amps``, built as lockstep builds
    them: the same data and the same RNG state, so the same initial weights."""
    ctx = DistContext()
    out, data, start = [], None, None
    for amp in amps:
        overrides = {**MLBFGS_SMALL, **({} if amp is None else {"amp": amp})}
        spec = make_run_spec("mnist1d-mlp", optimizer, 0, overrides=overrides, max_iters=iters)
        if data is None:
            data, start = load_data(spec, ctx), rng_state(ctx.device)
        set_rng_state(start, ctx.device)
        opts = RunOptions(out=tmp_path / f"runs-{amp}", checkpoint_root=tmp_path / f"ck-{amp}")
        out.append(Run(spec, opts, ctx, data))
        out[-1].start()
    return out


def test_amp_is_a_workload_key_that_enters_the_run_id() -> None:
    plain = make_run_spec("mnist1d-mlp", "sgd", 0)
    assert plain.run_id == "mnist1d-mlp__sgd__s0" and "amp" not in plain.workload.to_dict()
    ids = {amp: make_run_spec("mnist1d-mlp", "sgd", 0, overrides={"amp": amp}).run_id for amp in ("bf16", "fp16")}
    assert len(set(ids.values())) == 2 and all(i.startswith("mnist1d-mlp__sgd__s0__") for i in ids.values())
    assert make_run_spec("mnist1d-mlp", "sgd", 0, overrides={"amp": None}).run_id == plain.run_id
    with pytest.raises(ValueError, match=r"mnist1d-mlp.amp must be null \(off\) or one of \['bf16', 'fp16'\], "
                                         r"got 'fp32'"):
        make_run_spec("mnist1d-mlp", "sgd", 0, overrides={"amp": "fp32"})


def test_bf16_lockstep_run_trains_under_autocast_and_records_it(tmp_path: Path) -> None:
    assert _main(tmp_path, ["sgd", "mlbfgs"], "--amp", "bf16") == 0
    assert _main(tmp_path, ["sgd"]) == 0  # the same run in float32
    for optimizer in ("sgd", "mlbfgs"):
        spec = make_run_spec("mnist1d-mlp", optimizer, 0, overrides={"eval_interval": 6, "amp": "bf16"}, max_iters=12)
        manifest = _manifest(tmp_path, spec.run_id)
        assert manifest["status"] == "finished" and manifest["config"]["amp"] == "bf16"
        assert manifest["amp"] == {"dtype": "bf16", "skipped_steps": 0}
        assert "amp=bf16" in manifest["command"]  # the command that reproduces the run alone (--set amp=bf16)
    bf16 = _losses(tmp_path, make_run_spec("mnist1d-mlp", "sgd", 0, overrides={"eval_interval": 6, "amp": "bf16"},
                                           max_iters=12).run_id)
    fp32 = _losses(tmp_path, make_run_spec("mnist1d-mlp", "sgd", 0, overrides={"eval_interval": 6},
                                           max_iters=12).run_id)
    assert len(bf16) == len(fp32) == 12
    # autocast is on: the first loss (same weights, same batch) differs in bfloat16, but not by much
    assert bf16[0] != fp32[0] and abs(bf16[0] - fp32[0]) < 0.05 * fp32[0]


def test_spec_requests_take_amp(tmp_path: Path) -> None:
    files = []
    for name in ("sgd", "adam"):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(json.dumps({"workload": "mnist1d-mlp", "optimizer": name, "seed": 0, "max_iters": 3,
                                         "overrides": {"amp": "bf16"}}))
    assert run.main(["--spec", *map(str, files), "--out", str(tmp_path / "runs"), "--checkpoint-dir",
                     str(tmp_path / "ck"), "--no-progress", "--threads", "1"]) == 0
    manifests = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs" / "mnist1d-mlp").glob("*.json"))]
    assert sorted(m["optimizer"] for m in manifests) == ["adam", "sgd"]
    assert all(m["amp"]["dtype"] == "bf16" and m["run_id"].count("__") == 3 for m in manifests)


def test_fp16_skipped_step_leaves_mlbfgs_state_and_weights_unchanged(tmp_path: Path) -> None:
    (r,) = _runs(tmp_path, ["fp16"])
    inner = r.opt.optimizer
    while inner.block_state(0)["num_pairs"] < 2:  # pairs in the ring, so that "unchanged" means something
        r.step()
    assert r.amp.skipped_steps == 0
    # an overflowing scale, as a checkpoint would restore it: the next evaluations overflow in float16
    state = r.amp.state_dict()
    state["scaler"]["scale"] = 2.0**60
    r.amp.load_state_dict(state)
    skipped = 0
    while r.amp.skipped_steps == skipped:
        before = _state_tensors(inner)
        weights = [p.detach().clone() for p in r.raw_model.parameters()]
        steps_before = inner.stats["step"]
        r.step()
        if r.amp.skipped_steps == skipped:
            break  # not skipped: the scale came down
        skipped += 1
        after = _state_tensors(inner)
        assert after.keys() == before.keys()
        for key in before:  # ring, averages, anchors, counters: bit for bit
            assert torch.equal(after[key], before[key]), key
        assert all(torch.equal(p, w) for p, w in zip(r.raw_model.parameters(), weights, strict=True))
        assert inner.stats["step"] == steps_before and inner.stats["skipped_steps"] == 0
        assert all(p.grad is None for p in r.raw_model.parameters())
        assert skipped < 60
    assert skipped >= 20  # 2**60 halves to a scale that fits float16's range
    assert inner.stats["step"] == steps_before + 1  # the first clean step is taken
    assert r.iteration == inner.stats["step"] + skipped  # every iteration either stepped or was skipped
    assert r.amp.scale < 2.0**60


def test_fp16_run_counts_skips_in_manifest_and_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amp_module, "INITIAL_LOSS_SCALE", 2.0**40)  # the first steps overflow
    assert _main(tmp_path, ["mlbfgs"], "--amp", "fp16", "--keep-checkpoint", "--checkpoint-every", "5",
                 "--set", "optimizers.mlbfgs.update_period=2", iters=30) == 0
    spec = make_run_spec("mnist1d-mlp", "mlbfgs", 0, overrides={"eval_interval": 6, "amp": "fp16",
                                                                "optimizers.mlbfgs.update_period": 2}, max_iters=30)
    manifest = _manifest(tmp_path, spec.run_id)
    record = manifest["amp"]
    assert record["dtype"] == "fp16" and 0 < record["skipped_steps"] < 30
    assert record["loss_scale"] == 2.0 ** (40 - record["skipped_steps"])  # halved once per overflow
    payload = torch.load(next((tmp_path / "ck").rglob("*.pt")), weights_only=False)
    assert payload["amp"]["mode"] == "fp16" and payload["amp"]["scaler"]["scale"] == record["loss_scale"]
    assert payload["amp"]["skipped_steps"] == record["skipped_steps"]
    losses = _losses(tmp_path, spec.run_id)
    assert all(torch.isfinite(torch.tensor(losses)))  # the loss itself is float32: skips never show as NaN


def test_fp16_refuses_optimizers_with_several_evaluations(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _main(tmp_path, ["olbfgs"], "--amp", "fp16", iters=2) == 2
    err = capsys.readouterr().err
    assert "amp 'fp16' (loss scaling) needs one gradient evaluation per step; olbfgs evaluates 2" in err
    assert "use amp 'bf16'" in err
    assert _main(tmp_path, ["olbfgs"], "--amp", "bf16", iters=2) == 0  # bfloat16 needs no scaling


def test_kfac_factors_are_float32_and_unscaled_under_amp(tmp_path: Path) -> None:
    runs = dict(zip((None, "bf16", "fp16"), _runs(tmp_path, [None, "bf16", "fp16"], optimizer="kfac"), strict=True))
    for r in runs.values():
        r.step()  # the first step updates the factors and their eigenbases
    assert runs["fp16"].amp.skipped_steps == 0 and runs["fp16"].opt.loss_scale == amp_module.INITIAL_LOSS_SCALE
    ref = runs[None].opt.preconditioner.layers
    for amp in ("bf16", "fp16"):
        for layer, base in zip(runs[amp].opt.preconditioner.layers, ref, strict=True):
            for key in ("A", "G"):
                got, want = layer.factors[key], base.factors[key]
                assert got.dtype == torch.float32
                # the same batch and weights: equal up to the autocast dtype's rounding (not scale**2 apart)
                assert torch.linalg.norm(got - want) <= 0.05 * torch.linalg.norm(want), (amp, key)


# ---- CUDA (bash experiments/gpu_check.sh runs these) -----------------------------------------------


@pytest.mark.cuda
@requires_cuda
def test_cuda_fp16_overflow_is_skipped_through_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(amp_module, "INITIAL_LOSS_SCALE", 2.0**40)
    assert _main(tmp_path, ["sgd", "kfac", "mlbfgs", "mlbfgs_authors"], "--device", "cuda", "--amp", "fp16",
                 "--set", "optimizers.mlbfgs.update_period=2", iters=40) == 0
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "mnist1d-mlp").glob("*.json")]
    assert len(manifests) == 4
    for m in manifests:
        assert m["status"] == "finished" and "cuda" in m["device"].lower()
        assert 0 < m["amp"]["skipped_steps"] < 40 and m["amp"]["loss_scale"] < 2.0**40


@pytest.mark.cuda
@requires_cuda
def test_cuda_fp16_skipped_step_leaves_mlbfgs_state_unchanged(tmp_path: Path) -> None:
    spec = make_run_spec("mnist1d-mlp", "mlbfgs", 0, overrides={**MLBFGS_SMALL, "amp": "fp16"}, max_iters=40)
    ctx = DistContext(device=torch.device("cuda", 0))
    r = Run(spec, RunOptions(out=tmp_path / "runs", checkpoint_root=tmp_path / "ck"), ctx, load_data(spec, ctx))
    r.start()
    while r.opt.optimizer.block_state(0)["num_pairs"] < 2:
        r.step()
    state = r.amp.state_dict()
    state["scaler"]["scale"] = 2.0**60
    r.amp.load_state_dict(state)
    before = _state_tensors(r.opt.optimizer)
    r.step()
    assert r.amp.skipped_steps == 1
    after = _state_tensors(r.opt.optimizer)
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.cuda
@requires_cuda
def test_cuda_bf16_lockstep_of_every_paper_optimizer(tmp_path: Path) -> None:
    names = ["sgd", "adam", "kfac", "slimqn_authors", "mlbfgs_authors", "mlbfgs"]
    assert _main(tmp_path, names, "--device", "cuda", "--amp", "bf16", iters=30) == 0
    for p in (tmp_path / "runs" / "mnist1d-mlp").glob("*.json"):
        m = json.loads(p.read_text())
        assert m["outcome"] == "completed" and m["amp"]["dtype"] == "bf16", m["run_id"]
