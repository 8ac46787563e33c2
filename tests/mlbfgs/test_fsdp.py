"""MLBFGS on fully_shard (FSDP2) parameters: row-sharded curvature over 2 and 4 gloo processes on CPU.

After 20 steps the gathered parameters equal single-process MLBFGS on the same global batch; each
rank holds 1/N of the row state (up to one row per parameter); a step runs one all-reduce, two when
it forms a pair, and no other collective; a distributed checkpoint resumes exactly and reshards to
other world sizes; unsupported parameter kinds are refused at construction.
"""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

from mlbfgs import MLBFGS
from tests.support import fsdp_workers as w

M = w.OPT_KW["history_size"]
ELEM = 8  # float64


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[dict]:
    """One start of 4 processes runs every configuration on 4 ranks and on 2 (two 2-rank meshes)."""
    tmp = tmp_path_factory.mktemp("fsdp")
    mp.start_processes(w.equivalence_worker, args=(4, str(tmp / "init"), str(tmp)), nprocs=4, join=True,
                       start_method="spawn")
    return [torch.load(tmp / f"rank{r}.pt") for r in range(4)]


def ranks_of(runs: list[dict], world: int, cfg: tuple[str, str, str]) -> list[dict]:
    """The results of ``cfg`` on the ``world`` ranks that ran it, in rank order."""
    outs = [r[world][cfg] for r in runs if cfg in r[world]]
    assert len(outs) == world, (world, cfg, len(outs))
    return outs


WORLDS = [2, 4]


@pytest.fixture(scope="module")
def references() -> dict:
    return {cfg: w.single_process(*cfg) for cfg in w.CONFIGS}


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("cfg", w.CONFIGS, ids=["-".join(c) for c in w.CONFIGS])
def test_gathered_parameters_match_one_process(runs, references, world, cfg) -> None:
    expected, single = references[cfg]
    for got in ranks_of(runs, world, cfg):
        for a, b in zip(got["params"], expected):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        # every rank tracks every block: the same counters as the single process
        assert got["stats"]["pairs_accepted"] == single.stats["pairs_accepted"] > 0
        assert got["stats"]["step"] == w.STEPS


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("cfg", w.CONFIGS, ids=["-".join(c) for c in w.CONFIGS])
def test_row_state_is_divided_by_the_ranks(runs, references, world, cfg, capsys) -> None:
    outs = ranks_of(runs, world, cfg)
    _, single = references[cfg]
    replicated = w.check_rows_divided(outs, single, world)
    with capsys.disabled():
        print(f"\n{'-'.join(cfg)}: curvature bytes per rank, 1 rank {single.curvature_bytes()}, "
              f"{world} ranks {[out['bytes'] for out in outs]} (replicated {replicated})")


@pytest.mark.parametrize("world", WORLDS)
def test_one_all_reduce_per_step_two_when_a_pair_forms(runs, world) -> None:
    for cfg in w.CONFIGS:
        for out in ranks_of(runs, world, cfg):
            steps = out["steps"]
            assert sum(pair for _, pair in steps) == 6, cfg  # t = 4, 7, ..., 19
            for t, (counts, pair) in enumerate(steps, start=1):
                assert counts == {"all_reduce": 2 if pair else 1}, (cfg, t, counts)


def test_a_non_finite_gradient_on_one_rank_skips_the_step_on_every_rank(runs) -> None:
    for out in runs:
        skip = out["skip"]
        assert skip["stats"]["skipped_steps"] == 1 and skip["stats"]["step"] == 6
        assert skip["unchanged"] and skip["finite_after"]


def test_step_allocates_nothing_after_warmup(runs) -> None:
    for out in runs:
        assert out["allocations"] == []


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_resumes_exactly_and_reshards(runs) -> None:
    """torch.distributed.checkpoint: saved on 2 ranks, resumed on 2 bit-exact against training straight
    through; loaded on 4 and on 1 (resharded), it continues to match the uninterrupted run."""
    expected, _ = w.single_process(*w.DCP_CONFIG, steps=w.DCP_SAVE_AT + w.DCP_AFTER)
    saved_by = [r["dcp"] for r in runs[:2]]
    for out in saved_by:
        for a, b in zip(out["2->2"], out["straight"]):
            assert torch.equal(a, b)
    for got in [saved_by[0]["straight"], *(r["dcp"]["2->4"] for r in runs), runs[0]["dcp"]["2->1"]]:
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_state_of_one_kind_is_refused_by_the_other(one_process_group) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (1,))
    net, plain = w.sharded_model("mlp", mesh), w.model("mlp")
    opt, plain_opt = MLBFGS(net.parameters(), lr=0.1), MLBFGS(plain.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="saved with row-sharded curvature .fully_shard.* runs with whole blocks"):
        plain_opt.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="saved with whole blocks .* runs with row-sharded curvature .fully_shard"):
        opt.load_state_dict(plain_opt.state_dict())
    other_shards = opt.state_dict()  # as if saved on more ranks and loaded without the checkpoint helpers
    other_shards["state"][0]["mlbfgs_rows"]["param_avg"] = torch.zeros(10, 12, dtype=torch.float64)
    with pytest.raises(ValueError, match="another number of ranks.*torch.distributed.checkpoint"):
        opt.load_state_dict(other_shards)


# ---------------------------------------------------------------- refused at construction
@pytest.fixture
def one_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield dist
    dist.destroy_process_group()


def _distributed(net: torch.nn.Module, weight_placements, bias_placements, mesh) -> torch.nn.Module:
    from torch.distributed.tensor import distribute_tensor

    for m in net:
        if isinstance(m, torch.nn.Linear):
            m.weight = torch.nn.Parameter(distribute_tensor(m.weight.detach(), mesh, weight_placements))
            m.bias = torch.nn.Parameter(distribute_tensor(m.bias.detach(), mesh, bias_placements))
    return net


def test_fsdp1_flat_parameters_are_refused(one_process_group) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel

    net = FullyShardedDataParallel(w.model("mlp"), process_group=one_process_group.group.WORLD,
                                   device_id=torch.device("cpu"))
    with pytest.raises(ValueError, match="parameter 0 .*FSDP1 flat parameter"):
        MLBFGS(net.parameters(), lr=0.1)


@pytest.mark.parametrize("kind", ["replicate", "shard1", "mesh2d"])
def test_other_dtensors_are_refused(one_process_group, kind) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard

    if kind == "mesh2d":  # HSDP-like: replicated over one mesh dimension, sharded over the other
        mesh = init_device_mesh("cpu", (1, 1))
        placements, match = [Replicate(), Shard(0)], "2-D device mesh"
        net = _distributed(w.model("mlp"), placements, placements, mesh)
    elif kind == "replicate":
        mesh = init_device_mesh("cpu", (1,))
        net, match = _distributed(w.model("mlp"), [Replicate()], [Replicate()], mesh), "only Shard\\(0\\)"
    else:  # tensor parallel, column-wise
        mesh = init_device_mesh("cpu", (1,))
        net, match = _distributed(w.model("mlp"), [Shard(1)], [Replicate()], mesh), "only Shard\\(0\\)"
    with pytest.raises(ValueError, match=f"parameter 0 .*DTensor.*{match}"):
        MLBFGS(net.parameters(), lr=0.1)


def test_fully_shard_arguments_that_cannot_apply_are_refused(one_process_group) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (1,))
    net = w.sharded_model("mlp", mesh)
    with pytest.raises(ValueError, match="history_dtype"):
        MLBFGS(net.parameters(), lr=0.1, history_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="process_group"):
        MLBFGS(net.parameters(), lr=0.1, process_group=one_process_group.group.WORLD)
    with pytest.raises(ValueError, match="comm_dtype"):
        MLBFGS(net.parameters(), lr=0.1, comm_dtype=torch.bfloat16)
    plain = torch.nn.Linear(3, 2).double()
    with pytest.raises(ValueError, match="parameter 0 is a DTensor but parameter 6"):
        MLBFGS([*net.parameters(), *plain.parameters()], lr=0.1)


def test_one_rank_fully_shard_matches_one_process(one_process_group) -> None:
    """The row-sharded path on a single rank (its all-reduce is a no-op) against the plain optimizer."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (1,))
    net = w.sharded_model("cnn", mesh, per_layer=True)
    opt = MLBFGS(net.parameters(), blocks="layer", **w.OPT_KW)
    assert opt.row_sharded
    for step in range(w.STEPS):
        w.local_backward(net, "cnn", step, 0, 1)
        opt.step()
    expected, single = w.single_process("cnn", "layer", "global")
    for a, b in zip(net.parameters(), expected):
        torch.testing.assert_close(a.full_tensor().detach(), b, rtol=1e-9, atol=1e-12)
    assert opt.curvature_bytes() == single.curvature_bytes() - len(single.blocks) * 2 * M * ELEM


def test_state_dict_survives_torch_save(one_process_group, tmp_path) -> None:
    """``torch.save`` of ``state_dict()`` (its rows are DTensor views into the block buffers, at
    non-zero offsets) and ``load_state_dict`` of the file in a fresh optimizer: the run continues
    bit-exactly."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (1,))

    def build():
        net = w.sharded_model("mlp", mesh)
        return net, MLBFGS(net.parameters(), blocks="layer", **w.OPT_KW)

    def train(net, opt, start: int, steps: int) -> list[torch.Tensor]:
        for step in range(start, start + steps):
            w.local_backward(net, "mlp", step, 0, 1)
            opt.step()
        return [p.full_tensor().detach().clone() for p in net.parameters()]

    net, opt = build()
    train(net, opt, 0, 8)
    torch.save({"model": net.state_dict(), "optim": opt.state_dict()}, tmp_path / "ckpt.pt")
    straight = train(net, opt, 8, 6)
    fresh, fopt = build()
    saved = torch.load(tmp_path / "ckpt.pt")
    fresh.load_state_dict(saved["model"])
    fopt.load_state_dict(saved["optim"])
    assert all(torch.equal(a, b) for a, b in zip(train(fresh, fopt, 8, 6), straight))


def test_groups_added_later_under_fully_shard(one_process_group) -> None:
    """A group added mid-run (e.g. unfreezing) gets its own blocks, as in one process; a plain
    parameter cannot join fully_shard ones (nor the other way round)."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (1,))
    net, ref = w.sharded_model("mlp", mesh), w.model("mlp")
    ps, rps = list(net.parameters()), list(ref.parameters())
    opt = MLBFGS(ps[:2], blocks="layer", **w.OPT_KW)
    ropt = MLBFGS(rps[:2], blocks="layer", **w.OPT_KW)
    for step in range(12):
        if step == 5:
            opt.add_param_group({"params": ps[2:]})
            ropt.add_param_group({"params": rps[2:]})
        for m, o in ((net, opt), (ref, ropt)):
            w.local_backward(m, "mlp", step, 0, 1)
            o.step()
    assert len(opt.blocks) == 3 and opt.stats == ropt.stats
    for a, b in zip(ps, rps):
        torch.testing.assert_close(a.full_tensor().detach(), b.detach(), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="parameter 6 does not match"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]})
    with pytest.raises(ValueError, match="parameter 6 does not match"):
        MLBFGS(w.model("mlp").parameters(), lr=0.1).add_param_group({"params": [ps[0]]})
