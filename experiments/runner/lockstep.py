"""Lockstep: several runs of one (workload, seed) trained in one process, one iteration each in turn.

Why: seconds measured by separate processes at different moments measure the machine's load as much
as the optimizer. In lockstep every run advances one iteration, then the next run does, on the same
batch sequence; each run's iteration (batch, forward, backward, step) is timed on its own clock
(:class:`experiments.runner.training.Run`). Whatever load the machine carries at a given moment, every run
feels it alike, so the ratios of their seconds hold.

What each run keeps to itself: its model, optimizer, checkpoint and files (one CSV and manifest per
run, as in separate mode), and its RNG streams. Every random draw of training comes from torch
generators (initialisation, dropout; the data order and augmentation use their own seeded torch
generators), and the global torch generator (CUDA's too on a GPU) is swapped in before a run's turn
and saved after it, a few microseconds. Python's ``random`` and NumPy's global generator cost 0.1-0.3
ms to save and restore, more than an MNIST-1D iteration, and nothing draws from them after the data
are loaded, so they are not swapped per turn: instead lockstep checks every ``HOST_RNG_CHECK_EVERY``
turns and at the end that they are still in the state every run started from, and raises naming the
runs when one drew from them (use ``--mode separate`` for such code). A run is built from the same RNG
state a fresh process reaches after seeding and loading the data, so its losses are bit-identical to
the same run trained alone with the same thread count; interleaving changes the clock and nothing
else (tested).

Kill and resume: every run checkpoints on its own schedule; on restart each resumes from its own
checkpoint and the runs behind catch up first (the runs with the fewest iterations move each round).
Finished runs are skipped. A run that ends before the others (diverged, or shorter) is finished at once
(manifest written, checkpoint dropped), so an interruption later does not make a rerun train it again.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from experiments.runner.checkpoint import rng_state, set_rng_state
from experiments.runner.dist_context import DistContext
from experiments.runner.spec import RunSpec
from experiments.runner.training import Run, RunOptions, load_data, skip_finished

HOST_RNG_CHECK_EVERY = 256  # turns between checks that nothing drew from Python's or NumPy's global RNG


def torch_rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The global torch generator's state (and the CUDA device's on a GPU): what a turn swaps."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_torch_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def host_rng_state() -> tuple[Any, Any]:
    """Python's and NumPy's global generator states (compared, not swapped, in lockstep)."""
    return random.getstate(), np.random.get_state()


def same_host_rng_state(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    (py_a, np_a), (py_b, np_b) = a, b
    return py_a == py_b and np_a[0] == np_b[0] and np.array_equal(np_a[1], np_b[1]) and tuple(np_a[2:]) == tuple(
        np_b[2:])


class HostRngDrawError(RuntimeError):
    """A lockstep run drew from Python's ``random`` or NumPy's global generator during training."""


def check_group(specs: list[RunSpec]) -> None:
    """A lockstep group shares its data: same seed, same data config, distinct run ids."""
    if not specs:
        raise ValueError("a lockstep group needs at least one run")
    first = specs[0]
    for spec in specs[1:]:
        if spec.seed != first.seed:
            raise ValueError(f"lockstep runs must share the seed: {first.run_id} has {first.seed}, "
                             f"{spec.run_id} has {spec.seed}")
        if spec.workload.data != first.workload.data:
            raise ValueError(f"lockstep runs must share the data config: {first.run_id} and {spec.run_id} differ "
                             f"({first.workload.data} vs {spec.workload.data})")
    ids = [s.run_id for s in specs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"a lockstep group lists the same run twice: {duplicates}")


def train_lockstep(specs: list[RunSpec], opts: RunOptions, ctx: DistContext,
                   commands: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Train ``specs`` in lockstep in this process (skipping finished ones); one summary per spec, in order.

    ``commands`` maps a run id to the command that reproduces the run alone (for its manifest).

    Raises ValueError for a distributed context (torchrun runs one optimizer per launch) or a group
    whose runs do not share seed and data.
    """
    if ctx.enabled:
        raise ValueError("lockstep runs several optimizers in one process; under torchrun give one --optimizer")
    check_group(specs)
    summaries: dict[str, dict[str, Any]] = {}
    pending = []
    for spec in specs:
        skipped = skip_finished(spec, opts)
        if skipped is not None:
            summaries[spec.run_id] = skipped
        else:
            pending.append(spec)
    if pending:
        data = load_data(pending[0], ctx)
        start_state = rng_state(ctx.device)  # a fresh process's RNGs after seeding and loading the data
        runs: list[Run] = []
        streams: dict[str, Any] = {}
        host = None
        try:
            for spec in pending:
                set_rng_state(start_state, ctx.device)
                run_opts = replace(opts, command=(commands or {}).get(spec.run_id, opts.command))
                run = Run(spec, run_opts, ctx, data)
                runs.append(run)
                run.start()
                streams[spec.run_id] = torch_rng_state(ctx.device)
                if host is None:
                    host = host_rng_state()
                elif not same_host_rng_state(host, host_rng_state()):
                    raise HostRngDrawError(f"{spec.run_id}: Python's or NumPy's global RNG is not in the state of "
                                           "the group's other runs (a resumed run that drew from them?); use --mode "
                                           "separate")
            ended = _drive(runs, streams, host, opts, ctx)
        except BaseException:
            # an error that stops the group (or an interrupt): every run's rows so far reach its CSV and
            # TensorBoard files; their manifests still say running, and a rerun resumes them
            for run in runs:
                run.close_logs()
            raise
        for run in runs:  # a run done before the first turn (nothing left to train) ends here
            summaries[run.spec.run_id] = ended[run.spec.run_id] if run.spec.run_id in ended else run.finish()
    return [summaries[s.run_id] for s in specs]


def _drive(runs: list[Run], streams: dict[str, Any], host: Any, opts: RunOptions,
           ctx: DistContext) -> dict[str, dict[str, Any]]:
    """Advance the runs in turn until each is done; the summaries of the runs that ended, by run id.

    A run is finished (manifest, checkpoint dropped) as soon as it is done, so a diverged or shorter run
    is not retrained when the group is interrupted later. A run that raises an unexpected error is
    recorded as failed and the others go on. Numerical failures end a run as diverged."""
    from tqdm import tqdm

    first = runs[0].spec
    total = sum(r.total for r in runs)
    desc = f"{first.workload.name} s{first.seed} lockstep x{len(runs)}"
    with tqdm(total=total, initial=sum(r.iteration for r in runs), desc=desc, dynamic_ncols=True, leave=False,
              disable=not opts.progress) as bar:
        active = [r for r in runs if not r.done]
        ended: dict[str, dict[str, Any]] = {}
        turns = 0
        while active:
            behind = min(r.iteration for r in active)  # after a resume, the runs behind catch up first
            for run in active:
                if run.iteration != behind:
                    continue
                set_torch_rng_state(streams[run.spec.run_id], ctx.device)
                try:
                    run.step()
                except Exception as err:  # one broken run must not take the group down
                    import traceback

                    traceback.print_exc()
                    ended[run.spec.run_id] = run.fail(err)
                streams[run.spec.run_id] = torch_rng_state(ctx.device)
                if run.done and run.spec.run_id not in ended:
                    ended[run.spec.run_id] = run.finish()
                bar.update(1)
                turns += 1
                if turns % HOST_RNG_CHECK_EVERY == 0:
                    _check_host(host, active, behind)
            active = [r for r in active if r.spec.run_id not in ended]
        _check_host(host, runs, None)
    return ended


def _check_host(host: Any, runs: list[Run], iteration: int | None) -> None:
    if not same_host_rng_state(host, host_rng_state()):
        where = "by the end" if iteration is None else f"around iteration {iteration}"
        raise HostRngDrawError(
            f"one of {[r.spec.run_id for r in runs]} drew from Python's `random` or NumPy's global RNG {where}; "
            "lockstep swaps only torch's generators per turn, so their streams would mix: use --mode separate, "
            "or draw from a torch.Generator"
        )
