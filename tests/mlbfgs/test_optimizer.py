"""MLBFGS as a torch.optim.Optimizer: state round-trip, AMP, param groups, bad input."""

import io

import pytest
import torch

from mlbfgs import MLBFGS


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def batches(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 10, generator=gen)
    y = x[:, :4].argmax(1)
    for _ in range(n):
        idx = torch.randint(0, 256, (32,), generator=gen)
        yield x[idx], y[idx]


def make_opt(model: torch.nn.Module, blocks: str = "layer") -> MLBFGS:
    groups = [
        {"params": list(model[0].parameters()), "weight_decay": 1e-3},
        {"params": list(model[2].parameters()), "lr": 0.02},
    ]
    # "last first": a partition whose first block does not start at the groups' first parameter (the
    # authors' partition on the ResNet lists the stem last)
    partition = [list(model[2].parameters()), list(model[0].parameters())] if blocks == "last first" else blocks
    return MLBFGS(groups, lr=0.05, update_period=4, beta=0.9, pair_momentum=0.5, history_size=3,
                  blocks=partition)


def train(model, opt, sched, data) -> None:
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("blocks", ["layer", "last first"])
def test_resume_is_bit_exact(blocks: str) -> None:
    n, m = 23, 17  # pairs are formed before and after the checkpoint; the ring wraps
    data = list(batches(n + m))

    straight = make_model()
    opt = make_opt(straight, blocks)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n + m)
    train(straight, opt, sched, data)

    first = make_model()
    opt1 = make_opt(first, blocks)
    sched1 = torch.optim.lr_scheduler.CosineAnnealingLR(opt1, T_max=n + m)
    train(first, opt1, sched1, data[:n])
    blob = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict(), "sched": sched1.state_dict()}, blob)
    blob.seek(0)
    ckpt = torch.load(blob, weights_only=False)

    resumed = make_model(seed=99)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(ckpt["model"])
    opt2 = make_opt(resumed, blocks)
    opt2.load_state_dict(ckpt["opt"])
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=n + m)
    sched2.load_state_dict(ckpt["sched"])
    train(resumed, opt2, sched2, data[n:])

    assert opt.stats["pairs_accepted"] > opt.config.history_size  # the ring did wrap
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_resume_without_curvature_state_differs() -> None:
    # the control for the test above: dropping the optimizer state changes the result
    data = list(batches(40))
    a, b = make_model(), make_model()
    oa, ob = make_opt(a), make_opt(b)
    sa = torch.optim.lr_scheduler.CosineAnnealingLR(oa, T_max=40)
    sb = torch.optim.lr_scheduler.CosineAnnealingLR(ob, T_max=40)
    train(a, oa, sa, data)
    train(b, ob, sb, data[:23])
    fresh = make_opt(b)
    sf = torch.optim.lr_scheduler.CosineAnnealingLR(fresh, T_max=40)
    sf.load_state_dict(sb.state_dict())
    train(b, fresh, sf, data[23:])
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def snapshot(opt: MLBFGS) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in opt.block_state(0).items()}


def test_grad_scaler_skips_inf_steps_and_keeps_history() -> None:
    model = make_model()
    opt = MLBFGS(model.parameters(), lr=0.05, update_period=2, beta=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    data = list(batches(12))
    for x, y in data[:9]:
        opt.zero_grad()
        scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    assert opt.block_state(0)["num_pairs"] > 0
    before = snapshot(opt)
    params = [p.detach().clone() for p in model.parameters()]
    step = opt.stats["step"]
    x, y = data[9]
    opt.zero_grad()
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()
    assert opt.stats["step"] == step
    for p, q in zip(params, model.parameters()):
        assert torch.equal(p, q)
    after = snapshot(opt)
    for k, v in before.items():
        assert torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k]


def test_nonfinite_gradient_never_enters_the_averages() -> None:
    model = make_model()
    opt = MLBFGS(model.parameters(), lr=0.05, update_period=3, beta=0.9)
    for x, y in batches(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    before = snapshot(opt)
    for p in model.parameters():
        p.grad.fill_(float("nan"))
    opt.step()
    assert opt.stats["skipped_steps"] == 1
    after = snapshot(opt)
    assert torch.equal(before["grad_avg"], after["grad_avg"]) and torch.equal(before["param_avg"], after["param_avg"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_degenerate_pairs_are_rejected_and_counted() -> None:
    w = torch.nn.Parameter(torch.ones(5))
    opt = MLBFGS([w], lr=0.0, update_period=2, beta=0.5)  # lr 0: s = 0, no curvature information
    for _ in range(7):
        w.grad = torch.randn(5)
        opt.step()
    assert opt.stats["pairs_rejected"] == 3 and opt.stats["pairs_accepted"] == 0
    assert opt.block_state(0)["num_pairs"] == 0
    assert [r.accepted for r in opt.last_pairs] == [False]


def test_closure_groups_and_scheduler_train() -> None:
    model = make_model()
    opt = make_opt(model)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5)
    losses = []
    for x, y in batches(60):
        def closure(x=x, y=y):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        losses.append(float(opt.step(closure).detach()))
        sched.step()
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])
    assert opt.param_groups[1]["lr"] == pytest.approx(0.02 * 0.5**3)


@pytest.mark.parametrize("history_dtype", [None, torch.bfloat16])
def test_bfloat16_parameters(history_dtype) -> None:
    model = make_model().to(torch.bfloat16)
    opt = MLBFGS(model.parameters(), lr=0.05, update_period=3, history_dtype=history_dtype)
    losses = []
    for x, y in batches(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x.bfloat16()).float(), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    st = opt.block_state(0)
    assert st["history"].dtype == (history_dtype or torch.float32)
    assert st["grad_avg"].dtype == torch.float32
    assert st["num_pairs"] > 0
    assert sum(losses[-5:]) < sum(losses[:5])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    cpu, gpu = make_model(), make_model().cuda()
    oc = MLBFGS(cpu.parameters(), lr=0.05, update_period=3)
    og = MLBFGS(gpu.parameters(), lr=0.05, update_period=3)
    for x, y in batches(20):
        for model, opt, dev in ((cpu, oc, "cpu"), (gpu, og, "cuda")):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x.to(dev)), y.to(dev)).backward()
            opt.step()
    for a, b in zip(cpu.parameters(), gpu.parameters()):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"lr": -1.0}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"history_size": 0}, "history_size"),
        ({"update_period": 0}, "update_period"),
        ({"beta": 1.0}, "beta"),
        ({"pair_momentum": -0.1}, "pair_momentum"),
        ({"damping": 1.0}, "damping"),
        ({"curvature_bounds": (2.0, 3.0)}, "curvature_bounds"),
        ({"direction_norm": "l2"}, "direction_norm"),
        ({"kl_clip": 0.0}, "kl_clip"),
        ({"history_dtype": torch.int32}, "history_dtype"),
        ({"blocks": "neuron"}, "blocks"),
    ],
)
def test_invalid_arguments_name_themselves(kwargs, name) -> None:
    args = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=name):
        MLBFGS(make_model().parameters(), **args)


def test_curvature_keys_per_group_are_refused() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="beta"):
        MLBFGS([{"params": model.parameters(), "beta": 0.5}], lr=0.1)


def test_load_state_dict_checks_blocks() -> None:
    model = make_model()
    opt = MLBFGS(model.parameters(), lr=0.1, blocks="layer")
    for x, y in batches(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    other = MLBFGS(model.parameters(), lr=0.1, blocks="model")
    with pytest.raises(ValueError, match="block sizes"):
        other.load_state_dict(opt.state_dict())
