"""Block-sharded MLBFGS over 2 gloo processes on CPU."""

import os
import time

import pytest
import torch
import torch.multiprocessing as mp

from tests.support import dist_workers as w

WORLD = 2


def spawn(fn, tmp_path, *args) -> None:
    init_file = str(tmp_path / "init")
    mp.start_processes(fn, args=(WORLD, init_file, str(tmp_path), *args), nprocs=WORLD, join=True,
                       start_method="spawn")


@pytest.mark.parametrize("norm", ["global", "kl", "none"])
def test_two_ranks_match_one_process(tmp_path, norm) -> None:
    steps = 20
    spawn(w.equivalence_worker, tmp_path, norm, steps)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    expected, single = w.single_process_reference(norm, steps, WORLD)
    for r in ranks:
        for got, want in zip(r["params"], expected):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    # every block is owned by exactly one rank, and each rank saves only its own blocks
    owned = sorted(b for r in ranks for b in r["owned"])
    assert owned == list(range(len(single.blocks)))
    assert ranks[0]["owned"] and ranks[1]["owned"]
    for r in ranks:
        assert r["block_states"] == r["owned"]
    # curvature memory is split: the ranks together hold what the single process holds
    assert sum(r["bytes"] for r in ranks) == single.curvature_bytes()
    assert sum(r["stats"]["pairs_accepted"] for r in ranks) == single.stats["pairs_accepted"] > 0


def test_mismatched_blocks_raise_on_every_rank(tmp_path) -> None:
    spawn(w.mismatch_worker, tmp_path)
    for r in range(WORLD):
        assert "disagree on the parameter blocks" in (tmp_path / f"rank{r}.txt").read_text()


def test_zero_redundancy_optimizer_is_refused_naming_the_alternative(tmp_path) -> None:
    """Under ZeRO each rank would see only its partition: another method, so it must refuse."""
    spawn(w.zero_worker, tmp_path)
    for r in range(WORLD):
        msg = (tmp_path / f"rank{r}.txt").read_text()
        assert "ZeroRedundancyOptimizer" in msg and "shard='rows'" in msg, msg


def test_dead_rank_gives_an_error_not_a_hang(tmp_path) -> None:
    start = time.monotonic()
    ctx = mp.start_processes(w.dead_rank_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)),
                             nprocs=WORLD, join=False, start_method="spawn")
    for p in ctx.processes:
        p.join(timeout=60)
    assert time.monotonic() - start < 60
    msg = (tmp_path / "rank0.txt").read_text()
    assert "exchanging block directions failed" in msg


def test_loading_with_another_world_size_is_refused(tmp_path) -> None:
    spawn(w.equivalence_worker, tmp_path, "global", 4)
    net = w.model()
    opt = w.MLBFGS(net.parameters(), **w.OPT_KW)
    w.averaged_grads(net, 0, 0, 1)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["mlbfgs"]["world_size"] = 2
    with pytest.raises(ValueError, match="world size 2"):
        opt.load_state_dict(sd)
    assert os.path.exists(tmp_path / "rank0.pt")


@pytest.mark.parametrize("optimizer", ["mlbfgs", "sgd"])
def test_distributed_checkpoint_round_trip_with_sharded_blocks(tmp_path, optimizer) -> None:
    """dcp.save / dcp.load through get_/set_optimizer_state_dict: each rank holds only its own blocks'
    curvature, and the resumed run continues exactly (as SGD does)."""
    spawn(w.dcp_worker, tmp_path, optimizer)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert all(r["diff"] == 0.0 for r in ranks), ranks
    if optimizer == "mlbfgs":
        assert ranks[0]["owned"] and ranks[1]["owned"] and set(ranks[0]["owned"]).isdisjoint(ranks[1]["owned"])
