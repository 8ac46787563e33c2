"""The rescaling factor of the "kl" direction norm, shared by whole blocks and rows."""

from __future__ import annotations

import torch


def kl_factor_(gd: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """In place: ``gd <- nu = min(1, sqrt(kappa / g.d))`` (``nu = 1`` when ``g.d <= 0``)."""
    return gd.clamp_(min=1e-30).reciprocal_().mul_(kappa).sqrt_().clamp_(max=1.0)
