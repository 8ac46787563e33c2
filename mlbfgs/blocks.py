"""Parameter blocks: the units of the block-diagonal inverse-Hessian approximation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

BlockSpec = str | int | Sequence[Sequence[torch.Tensor]]

BLOCK_MODES = ("model", "layer")


def build_blocks(params: Sequence[torch.Tensor], spec: BlockSpec) -> list[list[torch.Tensor]]:
    """Split ``params`` (in order) into blocks.

    - ``"model"``: one block with every parameter.
    - ``"layer"``: a new block starts at every parameter with two or more dimensions; 1-D
      parameters (biases, normalisation scales) join the block before them, so a Linear/Conv layer
      and the normalisation after it form one block. For exact module boundaries pass
      :func:`layer_blocks` of the model instead.
    - ``int`` N: N contiguous blocks of about equal element count.
    - a list of lists of parameters: used as given; together they must hold each parameter once.
    """
    params = list(params)
    if not params:
        raise ValueError("params: the optimizer got an empty parameter list")
    if isinstance(spec, str):
        if spec == "model":
            return [params]
        if spec == "layer":
            blocks: list[list[torch.Tensor]] = []
            for p in params:
                if p.dim() >= 2 or not blocks:
                    blocks.append([p])
                else:
                    blocks[-1].append(p)
            return blocks
        raise ValueError(f"blocks: unknown mode {spec!r}; use one of {BLOCK_MODES}, an int, or a list of lists")
    if isinstance(spec, bool):
        raise ValueError("blocks: expected 'model', 'layer', an int >= 1 or a list of lists, got a bool")
    if isinstance(spec, int):
        if not 1 <= spec <= len(params):
            raise ValueError(f"blocks: an int must lie in [1, number of parameters = {len(params)}], got {spec}")
        return _contiguous_blocks(params, spec)
    if isinstance(spec, (str, bytes)) or not isinstance(spec, (list, tuple)):
        raise ValueError(f"blocks: expected 'model', 'layer', an int >= 1 or a list of lists of parameters, got "
                         f"{spec!r} ({type(spec).__name__})")
    if any(isinstance(b, torch.Tensor) for b in spec):
        raise ValueError("blocks: expected a list of lists of parameters (each inner list one block), got a list "
                         "of tensors; for one block pass blocks=[params], or blocks='model'")
    return _explicit_blocks(params, spec)


def _contiguous_blocks(params: list[torch.Tensor], n: int) -> list[list[torch.Tensor]]:
    total = sum(p.numel() for p in params)
    blocks: list[list[torch.Tensor]] = [[]]
    seen = 0
    for i, p in enumerate(params):
        # Close a block once it reaches its share, keeping enough parameters for the blocks left.
        left_params = len(params) - i
        left_blocks = n - len(blocks)
        if blocks[-1] and (seen >= total * len(blocks) / n or left_params <= left_blocks):
            if len(blocks) < n:
                blocks.append([])
        blocks[-1].append(p)
        seen += p.numel()
    return blocks


def _explicit_blocks(params: list[torch.Tensor], spec: Sequence[Sequence[torch.Tensor]]) -> list[list[torch.Tensor]]:
    blocks = [list(b) for b in spec]
    if any(len(b) == 0 for b in blocks):
        raise ValueError("blocks: every block in the list must hold at least one parameter")
    given = [id(p) for b in blocks for p in b]
    wanted = {id(p) for p in params}
    if len(given) != len(set(given)):
        raise ValueError("blocks: a parameter appears in more than one block")
    for b, block in enumerate(blocks):
        for p in block:
            if id(p) not in wanted:
                kind = ("an integer tensor (integer parameters are skipped: they never get a gradient)"
                        if isinstance(p, torch.Tensor) and not can_have_gradient(p) else "not one of the optimizer's")
                raise ValueError(f"blocks: block {b} holds a tensor of shape {tuple(getattr(p, 'shape', ()))} that is "
                                 f"{kind}; the blocks must hold exactly the optimizer's parameters, each once")
    missing = [i for i, p in enumerate(params) if id(p) not in set(given)]
    if missing:
        shape = tuple(params[missing[0]].shape)
        raise ValueError(f"blocks: parameter {missing[0]} (shape {shape}) is in no block"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                         + "; the blocks must hold exactly the optimizer's parameters, each once")
    return blocks


def layer_blocks(model: torch.nn.Module) -> list[list[torch.Tensor]]:
    """One block per module that owns parameters directly (e.g. a Linear's weight and bias).

    A parameter shared by several modules (tied embedding and output weights) is listed once, in the
    block of the first module that owns it, so the result is valid for ``MLBFGS(blocks=...)``.
    Parameters that do not require gradients are left out.
    """
    blocks: list[list[torch.Tensor]] = []
    seen: set[int] = set()
    for module in model.modules():
        own: list[torch.Tensor] = [p for p in module.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in own)
        if own:
            blocks.append(own)
    return blocks


def can_have_gradient(p: torch.Tensor) -> bool:
    """False for integer and bool tensors (an 8-bit quantised weight inside ``model.parameters()``):
    autograd never gives them a gradient, so optimizers skip them, as ``torch.optim.SGD`` does."""
    return p.dtype.is_floating_point or p.dtype.is_complex  # the dtype's flags: no call through the tensor


def check_supported(p: torch.Tensor, index: int, owner: str = "MLBFGS", row_sharded: bool = False) -> None:
    """Raise ``ValueError`` naming parameter ``index`` when ``owner`` (an optimizer that couples
    parameters) cannot train it: complex dtypes, DTensor parameters (FSDP2, tensor parallel) and FSDP1
    flat parameters. With ``row_sharded`` (MLBFGS) the DTensors of ``fully_shard`` (a 1-D mesh,
    placement ``Shard(0)``) are accepted and other DTensors refused with the reason
    (:func:`mlbfgs.distribution.fsdp_rows.row_sharding_problem`)."""
    where = f"params: parameter {index} (shape {tuple(p.shape)}, dtype {p.dtype})"
    if p.is_complex():
        raise ValueError(
            f"{where} is complex; {owner} supports real floating parameters only "
            "(train torch.view_as_real(z) as a real parameter instead)"
        )
    if not p.is_floating_point():
        raise ValueError(f"{where} is not floating point; {owner} trains float16/bfloat16/float32/float64 parameters")
    if type(p).__name__ == "DTensor" or type(getattr(p, "data", None)).__name__ == "DTensor":
        if row_sharded:
            from .distribution.fsdp_rows import row_sharding_problem

            problem = row_sharding_problem(p)
            if problem is None:
                return
            raise ValueError(f"{where} is a DTensor that {problem}")
        raise ValueError(
            f"{where} is a DTensor (FSDP2 or tensor parallel); {owner} does not support sharded parameters yet: "
            "use it with replicated parameters (DDP) and its own block sharding (process_group=...)"
        )
    if getattr(p, "_is_flat_param", False) or getattr(p, "_fsdp_flattened", False):
        raise ValueError(
            f"{where} is an FSDP1 flat parameter (FullyShardedDataParallel); each rank holds a shard of a "
            "flattened concatenation, so curvature pairs would mix parameters. Use DDP with "
            "MLBFGS(process_group=...) instead"
        )


def assign_blocks(sizes: Sequence[float], world_size: int) -> list[int]:
    """Owner rank of each block: greedy, largest block first, to the least-loaded rank.

    Ties go to the lower rank, so every process computes the same assignment.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    load: list[float] = [0] * world_size
    owners = [0] * len(sizes)
    for b in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world_size), key=lambda k: (load[k], k))
        owners[b] = r
        load[r] += sizes[b]
    return owners


def load_imbalance(sizes: Sequence[int], owners: Sequence[int], world_size: int) -> float:
    """Largest rank load divided by the mean load (1.0 = perfectly balanced)."""
    load = [0] * world_size
    for size, r in zip(sizes, owners):
        load[r] += size
    mean = sum(load) / world_size
    return max(load) / mean if mean else 1.0
