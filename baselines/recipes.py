"""Parameter-group recipes: functions from a model to the param groups an optimizer is built with.

Named by import path (``--param-groups baselines.recipes:muon_groups``; :mod:`baselines.external`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def muon_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Muon for the matrix weights of the hidden layers, AdamW for everything else, as Muon's authors
    recommend (K. Jordan et al., "Muon: an optimizer for hidden layers", 2024; the modded-nanogpt and
    pytorch_optimizer examples): the weights (2-D or more, a convolution's flattened to a matrix) of
    every ``nn.Linear`` / ``nn.Conv*`` except the output layer (the last ``nn.Linear`` in module order)
    go to Muon; embeddings, the output layer, normalisation parameters and biases go to AdamW.

    The groups carry ``use_muon`` (pytorch_optimizer's ``Muon``): True for the first group, False for the
    second; an empty group is left out. Only trainable parameters are listed.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    head = linears[-1] if linears else None
    hidden: list[torch.Tensor] = []
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module is not head:
            w = module.weight
            if w.requires_grad and w.dim() >= 2 and id(w) not in seen:
                hidden.append(w)
                seen.add(id(w))
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    groups = [{"params": hidden, "use_muon": True}, {"params": rest, "use_muon": False}]
    return [g for g in groups if g["params"]]
