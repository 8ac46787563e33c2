"""MLBFGS under DDP with ``shard="rows"``: every rank holds its rows of every block, over 2 and 4 gloo
processes on CPU (float64).

After 20 steps the parameters equal single-process MLBFGS on the same global batch (rtol 1e-9) and are
the same on every rank; each rank holds 1/N of the row state (up to one row per parameter); a step runs
one all-reduce and one all-gather (two all-reduces when it forms a pair) and nothing else, of the sizes
``communication_bytes()`` states (checked for whole blocks and fully_shard too); checkpoints resume
exactly on the same number of ranks and reshard through torch.distributed.checkpoint; bad arguments
are refused.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.multiprocessing as mp
from torch.profiler import ProfilerActivity, profile

from mlbfgs import MLBFGS, CommunicationBytes
from tests.support import dist_workers as dw
from tests.support import fsdp_workers as w
from tests.support.conformance import move_state

M = w.OPT_KW["history_size"]
ELEM = 8  # float64
WORLDS = [2, 4]
GATHER = ("all_gather_single", "all_gather_into_tensor")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[dict]:
    """One start of 4 processes runs every configuration on 4 ranks and on 2 (two 2-rank groups)."""
    tmp = tmp_path_factory.mktemp("ddp_rows")
    mp.start_processes(dw.ddp_rows_worker, args=(4, str(tmp / "init"), str(tmp)), nprocs=4, join=True,
                       start_method="spawn")
    return [_with_comm_bytes(torch.load(tmp / f"rank{r}.pt")) for r in range(4)]


def _with_comm_bytes(out: dict) -> dict:
    """The workers save ``communication_bytes()`` as a plain tuple (what torch.load reads back safely)."""
    for value in out.values():
        if isinstance(value, dict):
            if "comm" in value:
                value["comm"] = CommunicationBytes(*value["comm"])
            _with_comm_bytes(value)
    return out


@pytest.fixture(scope="module")
def references() -> dict:
    return {cfg: w.single_process(*cfg) for cfg in w.CONFIGS}


def ranks_of(runs: list[dict], world: int, cfg: tuple[str, str, str]) -> list[dict]:
    """The results of ``cfg`` on the ``world`` ranks that ran it, in rank order."""
    outs = [r[world][cfg] for r in runs if cfg in r[world]]
    assert len(outs) == world, (world, cfg, len(outs))
    return outs


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("cfg", w.CONFIGS, ids=["-".join(c) for c in w.CONFIGS])
def test_parameters_match_one_process_and_every_rank_holds_the_same(runs, references, world, cfg) -> None:
    expected, single = references[cfg]
    outs = ranks_of(runs, world, cfg)
    for got in outs:
        for a, b in zip(got["params"], expected):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        assert got["stats"]["pairs_accepted"] == single.stats["pairs_accepted"] > 0
        assert got["stats"]["step"] == w.STEPS
    for other in outs[1:]:  # the replicas stay identical: every rank applies the same gathered direction
        assert all(torch.equal(a, b) for a, b in zip(outs[0]["params"], other["params"]))


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("cfg", w.CONFIGS, ids=["-".join(c) for c in w.CONFIGS])
def test_row_state_is_divided_by_the_ranks(runs, references, world, cfg, capsys) -> None:
    outs = ranks_of(runs, world, cfg)
    _, single = references[cfg]
    replicated = w.check_rows_divided(outs, single, world)
    with capsys.disabled():
        print(f"\n{'-'.join(cfg)}: curvature bytes per rank, 1 rank {single.curvature_bytes()}, "
              f"{world} ranks {[out['bytes'] for out in outs]} (replicated {replicated}), "
              f"imbalance {outs[0]['imbalance']:.3f}, per step {outs[0]['comm']}")


def _sizes(calls: list[tuple[str, int]], names: tuple[str, ...]) -> list[int]:
    return [size for name, size in calls if name in names]


@pytest.mark.parametrize("world", WORLDS)
def test_one_all_reduce_and_one_all_gather_per_step_of_the_stated_sizes(runs, world) -> None:
    for cfg in w.CONFIGS:
        for out in ranks_of(runs, world, cfg):
            steps, comm = out["steps"], out["comm"]
            assert sum(pair for _, pair in steps) == 6, cfg  # t = 4, 7, ..., 19
            for t, (calls, pair) in enumerate(steps, start=1):
                names = sorted(name for name, _ in calls)
                assert len(names) == (3 if pair else 2) and names.count("all_reduce") == (2 if pair else 1), \
                    (cfg, t, calls)
                reduced = _sizes(calls, ("all_reduce",))
                assert reduced[0] == comm.all_reduce and reduced[1:] == ([comm.all_reduce_pair] if pair else [])
                assert _sizes(calls, GATHER) == [comm.all_gather]
            # the gathered buffer holds world segments of the largest rank's rows
            assert comm.all_gather % (world * ELEM) == 0 and comm.all_gather > 0


def test_whole_block_and_fully_shard_bytes_are_those_stated(runs) -> None:
    for out in runs:
        blocks, fsdp = out["blocks_bytes"], out["fsdp_bytes"]
        assert blocks["comm"].all_reduce == blocks["comm"].all_reduce_pair == 0
        for calls in blocks["steps"]:
            assert len(calls) == 1 and _sizes(calls, GATHER) == [blocks["comm"].all_gather]
        assert fsdp["comm"].all_gather == 0
        assert [pair for _, pair in fsdp["steps"]] == [False, False, False, True, False]
        for calls, pair in fsdp["steps"]:
            expected = [fsdp["comm"].all_reduce] + ([fsdp["comm"].all_reduce_pair] if pair else [])
            assert calls == [("all_reduce", size) for size in expected]
        n_blocks = 3  # the MLP by layer
        assert fsdp["comm"] == CommunicationBytes((n_blocks * (2 * M + 1) + 1) * ELEM, n_blocks * (4 * M + 5) * ELEM, 0)


def test_comm_dtype_rounds_the_exchange_and_keeps_replicas_identical(runs) -> None:
    expected, _ = w.single_process(*dw.ROWS_CONFIG, steps=10)
    first = runs[0]["bf16"]["params"]
    for r in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(first, r["bf16"]["params"]))
    diff = max(float((a - b).abs().max()) for a, b in zip(first, expected))
    assert 1e-7 < diff < 1e-2  # bfloat16 directions: close to, but not, the float64 run
    full = runs[0][4][dw.ROWS_CONFIG]["comm"]
    assert runs[0]["bf16"]["comm"] == full._replace(all_gather=full.all_gather // 4)  # 2 bytes, not 8


def test_ranks_that_disagree_on_the_shard_mode_fail_at_construction(runs) -> None:
    for out in runs:
        assert "disagree on the parameter blocks or the shard mode" in out["mismatch"]


def test_groups_added_later(runs) -> None:
    """A group added mid-run gets its own blocks and every rank's rows of them, as in one process."""
    expected = dw.groups_added_later(None, reference=True)
    for out in (r["groups"] for r in runs):
        assert out["blocks"] == expected["blocks"] == 3 and out["stats"] == expected["stats"]
        for a, b in zip(out["params"], expected["params"]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_a_0_dim_parameter_is_one_row(runs) -> None:
    expected = dw.scalar_parameter_run(None, reference=True)
    for out in (r["scalar"] for r in runs):
        for a, b in zip(out["params"], expected["params"]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # the temperature's row lives on rank 0 only: its state (4 vectors, 2 pair vectors, 2m ring rows) is there
    per_row = (4 + 2 + 2 * M) * ELEM
    assert runs[0]["scalar"]["bytes"] - runs[1]["scalar"]["bytes"] == per_row  # ranks 0 and 1: a row of each else


def test_checkpoints_resume_exactly_and_reshard(runs) -> None:
    """Saved on 2 ranks: resumed on 2 bit-exact (torch.distributed.checkpoint, and one state_dict() file
    per rank); resumed on 4 and on 1 through the distributed checkpoint (resharded), it continues to
    match the run that was never interrupted."""
    expected, _ = w.single_process(*dw.ROWS_CONFIG, steps=dw.ROWS_SAVE_AT + dw.ROWS_AFTER)
    for out in (r["ckpt"] for r in runs[:2]):
        for key in ("dcp 2->2", "state_dict 2->2"):
            assert all(torch.equal(a, b) for a, b in zip(out[key], out["straight"])), key
    for got in [runs[0]["ckpt"]["straight"], *(r["ckpt"]["dcp 2->4"] for r in runs), runs[0]["ckpt"]["dcp 2->1"]]:
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- one process
@pytest.fixture
def one_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield dist
    dist.destroy_process_group()


def test_bad_shard_values_are_refused() -> None:
    for bad in ("row", "Rows", None, 2):
        with pytest.raises(ValueError, match=r"shard: expected one of \('blocks', 'rows'\)"):
            MLBFGS(w.model("mlp").parameters(), lr=0.1, shard=bad)


def test_rows_without_a_process_group_is_the_single_process() -> None:
    cfg = ("cnn", "layer", "kl")
    expected, _ = w.single_process(*cfg)
    net = w.model("cnn")
    opt = MLBFGS(net.parameters(), blocks="layer", direction_norm="kl", shard="rows", **w.OPT_KW)
    assert not opt.row_sharded and opt.communication_bytes() == CommunicationBytes(0, 0, 0)
    for step in range(w.STEPS):
        dw.rows_backward(net, "cnn", step)
        opt.step()
    assert all(torch.equal(a.detach(), b) for a, b in zip(net.parameters(), expected))


def test_one_rank_group_matches_one_process_and_allocates_nothing(one_process_group) -> None:
    """A 1-rank group (no collective runs, the gathered buffer is filled by a copy): the same numbers as
    one process to rtol 1e-9, the single process's row state without its reduced-dtype norms, and no
    tensor allocation in a step after warm-up."""
    _, single = w.single_process("mlp", "layer", "global")
    net = w.model("mlp")
    groups = [{"params": list(net[0].parameters())}, {"params": [p for m in net[2:] for p in m.parameters()],
                                                      "momentum": 0.5}]
    opt = MLBFGS(groups, blocks="layer", process_group=one_process_group.group.WORLD, shard="rows", **w.OPT_KW)
    ref_net = w.model("mlp")
    ref_groups = [{"params": list(ref_net[0].parameters())},
                  {"params": [p for m in ref_net[2:] for p in m.parameters()], "momentum": 0.5}]
    ref = MLBFGS(ref_groups, blocks="layer", **w.OPT_KW)
    assert opt.row_sharded and opt.communication_bytes() == CommunicationBytes(0, 0, 0)
    for step in range(w.STEPS):
        for n, o in ((net, opt), (ref_net, ref)):
            dw.rows_backward(n, "mlp", step)
            o.step()
    for a, b in zip(net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-12)
    assert opt.curvature_bytes() == single.curvature_bytes() - len(single.blocks) * 2 * M * ELEM
    # no pair in the profiled steps, yet past the first period, so the direction is rescaled
    opt.config = dataclasses.replace(opt.config, update_period=1000)
    opt.state[next(iter(net.parameters()))]["mlbfgs"]["step"] = 1500
    events = []
    for norm in ("global", "kl", "none"):
        opt.config = dataclasses.replace(opt.config, direction_norm=norm)
        opt.step()
        events += [f"{norm}: {name}" for name in _allocations(opt.step, 3)]
    assert events == []


@pytest.mark.parametrize("how", ["new_containers", "top_level_tensors", "data_assignment"])
def test_one_rank_rows_state_moved_mid_training_is_the_state_used(one_process_group, how) -> None:
    """Row-sharded, the rows live in the optimizer's buffers and ``state`` holds DTensor views of them:
    whatever replaces those views is what the next step reads (tests/baselines/test_conformance_frameworks.py)."""
    nets = [w.model("mlp"), w.model("mlp")]
    opts = [MLBFGS(n.parameters(), blocks="layer", process_group=one_process_group.group.WORLD, shard="rows",
                   **w.OPT_KW) for n in nets]
    for step in range(2 * w.STEPS):
        if step == w.STEPS:
            move_state(opts[1], nets[1], how)
        for n, o in zip(nets, opts):
            dw.rows_backward(n, "mlp", step)
            o.step()
    for a, b in zip(*(n.parameters() for n in nets)):
        assert torch.equal(a.detach(), b.detach())
    # and the state is the live one: state_dict() holds the rows the steps after the move wrote
    saved = [o.state_dict()["state"] for o in opts]
    assert saved[0].keys() == saved[1].keys()
    for k in saved[0]:
        for name, value in _tensors_of(saved[0][k]).items():
            other = _tensors_of(saved[1][k])[name]
            assert torch.equal(value, other), (k, name)


def _tensors_of(entry: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a state entry by path, DTensors as their local rows."""
    out: dict[str, torch.Tensor] = {}
    for name, value in entry.items():
        if isinstance(value, dict):
            out.update(_tensors_of(value, f"{prefix}{name}."))
        elif isinstance(value, torch.Tensor):
            out[prefix + name] = value.to_local() if hasattr(value, "to_local") else value
    return out


def _allocations(fn, repeat: int) -> list[str]:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(repeat):
            fn()
    return [e.name for e in prof.events() if e.cpu_memory_usage > 0]


def test_arguments_that_cannot_apply_are_refused(one_process_group) -> None:
    pg = one_process_group.group.WORLD
    with pytest.raises(ValueError, match="history_dtype: torch.bfloat16 is not supported with shard='rows'"):
        MLBFGS(w.model("mlp").parameters(), lr=0.1, process_group=pg, shard="rows", history_dtype=torch.bfloat16)
    rows = MLBFGS(w.model("mlp").parameters(), lr=0.1, process_group=pg, shard="rows")
    blocks = MLBFGS(w.model("mlp").parameters(), lr=0.1, process_group=pg)
    with pytest.raises(ValueError, match="saved with whole blocks .* runs with row-sharded"):
        rows.load_state_dict(blocks.state_dict())
    with pytest.raises(ValueError, match="saved with row-sharded .* runs with whole blocks"):
        blocks.load_state_dict(rows.state_dict())
    with pytest.raises(ValueError, match="parameter 6 does not match"):  # DTensors cannot join replicated rows
        from torch.distributed.device_mesh import init_device_mesh

        sharded = w.sharded_model("mlp", init_device_mesh("cpu", (1,)))
        rows.add_param_group({"params": [next(iter(sharded.parameters()))]})
