"""``soap``: ``pytorch_optimizer.SOAP`` (Vyas et al. 2024; Adam in the eigenbases of Shampoo's factors) with the
authors' defaults."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Any

import pytorch_optimizer
import torch
from torch import nn

from ..base import TrainingOptimizer
from ..config import check_int, check_nonneg, check_positive, check_unit_interval
from ..contract import PicklableOptimizer
from .common import betas_pair, build_peer, flatten_lists, float_lr, restart_if_cleared, unflatten_lists


class SOAP(PicklableOptimizer, pytorch_optimizer.SOAP):
    """pytorch_optimizer's SOAP (the authors' algorithm and defaults), kept whole by deepcopy and pickle,
    restarting when its state is cleared, taking a tensor lr, and checkpointed with its per-parameter lists
    (the Kronecker factors and eigenbases) flattened to tensors (torch.distributed.checkpoint needs them so).

    Gradients large enough that their outer products overflow (|g| about 1e19 in float32) leave no eigenbasis
    to compute: that is refused by name, where the library's eigensolver fails."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_state_dict_post_hook(flatten_lists)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the library restores types from the dict it was given, after torch's loading: it must get the lists
        super().load_state_dict(unflatten_lists(self, state_dict))

    # the constructor's named parameters stay the library's (import-path users and the argument check see them)
    __init__.__signature__ = inspect.signature(pytorch_optimizer.SOAP.__init__)  # type: ignore[attr-defined]

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        restart_if_cleared(self, {"step": None})
        with float_lr(self):
            try:
                return super().step(closure)
            except torch.linalg.LinAlgError as err:
                raise FloatingPointError(
                    "soap: the eigenbasis of a Kronecker factor (sum of g g^T) could not be computed: the factor is "
                    "not finite, from NaN or infinite gradients, or from gradients past the square root of the "
                    f"dtype's largest value (about 1e19 in float32), where g g^T overflows: scale the loss down ({err})"
                ) from err


@dataclass(frozen=True)
class SOAPConfig:
    """``soap``: the SOAP authors' defaults (Vyas et al. 2024, as pytorch_optimizer keeps them): lr 3e-3, betas
    (0.95, 0.95), shampoo_beta 0.95, eigenbases refreshed every 10 steps, factors up to 10,000 wide, weight decay 0
    (a workload setting, as for every optimizer here)."""

    lr: float = 3e-3
    betas: tuple[float, float] = (0.95, 0.95)
    shampoo_beta: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    precondition_frequency: int = 10

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        object.__setattr__(self, "betas", betas_pair("betas", self.betas))
        check_unit_interval("shampoo_beta", self.shampoo_beta)
        check_positive("eps", self.eps)
        check_nonneg("weight_decay", self.weight_decay)
        check_int("precondition_frequency", self.precondition_frequency, minimum=1)


def build_soap(model: nn.Module, cfg: SOAPConfig) -> TrainingOptimizer:
    return build_peer("soap", SOAP, model, asdict(cfg))
