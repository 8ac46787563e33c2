"""Mixed precision of one run: autocast on the forward pass and the loss; for float16, dynamic loss scaling.

A workload's ``amp`` key (``--amp bf16|fp16``, or ``--set amp=bf16``; ``null``, the default, is off)
chooses it. Parameters, gradients and optimizer state stay in the parameters' dtype (float32); only the
forward pass and the loss run under ``torch.autocast(<device type>, dtype)`` (the evaluation too), so
every optimizer sees float32 gradients.

- ``bf16``: bfloat16 has float32's exponent range; gradients neither overflow nor underflow more than in
  float32, and no scaling is needed.
- ``fp16``: ``torch.amp.GradScaler`` (Micikevicius et al. 2018, "Mixed precision training"). Each
  gradient evaluation back-propagates ``loss * scale``, then ``unscale_`` divides the gradients by the
  scale in place and notes whether any is inf/NaN, and ``update()`` halves the scale after an overflow
  (or doubles it after ``growth_interval`` = 2000 clean steps). A step whose gradients overflowed is
  *skipped*: every ``.grad`` is set to None before the optimizer's step, and by the registry's contract a
  step in which no parameter has a gradient changes nothing (no parameter, momentum buffer, average or
  curvature pair moves; mL-BFGS's ring, averages and step counter stay as they were; tested through the
  runner). ``GradScaler.step`` skips ``optimizer.step()`` in the same case; the runner cannot call it
  because each :class:`baselines.base.TrainingOptimizer` takes its own step. The skipped steps are counted
  (manifest ``amp.skipped_steps``); the iteration counter and the learning-rate schedule move on, as with
  ``GradScaler.step``. Overflow is detected as ``scale after update() < scale before`` (update() backs off
  exactly when an overflow was found). Optimizers that read backward-pass tensors other than ``.grad``
  (K-FAC's output gradients) are told the scale of the evaluation (``TrainingOptimizer.loss_scale``).

float16 loss scaling needs one gradient evaluation per step: an optimizer that evaluates more (oLBFGS, SQN,
closure-driven classes such as ``torch.optim:LBFGS``) would see the scale change between the evaluations
of one step, and is refused (:class:`AmpError`). bfloat16 works with every optimizer.

Devices: autocast and GradScaler exist for CPU and CUDA in the torch release this project pins (2.14);
float16 on a CPU is slow (it exists for the tests), bfloat16 on a CPU is what the tests train with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch

from experiments.workloads.config import AMP_MODES

#: autocast dtype of each ``amp`` value
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: initial loss scale of float16 runs: ``torch.amp.GradScaler``'s default (2**16)
INITIAL_LOSS_SCALE = 2.0**16


class AmpError(ValueError):
    """Mixed precision that this run cannot use (unknown mode, device without autocast, an optimizer that
    evaluates more than one gradient per step with float16 loss scaling)."""


def check_amp(mode: str | None, device: torch.device) -> None:
    """AmpError unless ``mode`` is None or one of :data:`experiments.workloads.config.AMP_MODES` and autocast exists
    on ``device``'s type."""
    if mode is None:
        return
    if mode not in AMP_MODES:
        raise AmpError(f"amp must be None (off) or one of {list(AMP_MODES)}, got {mode!r}")
    if not torch.amp.is_autocast_available(device.type):
        raise AmpError(f"amp {mode!r}: torch {torch.__version__} has no autocast for device type {device.type!r}")


class MixedPrecision:
    """The autocast context and (float16) the loss scaler of one run.

    ``mode``: None, ``"bf16"`` or ``"fp16"``; ``device``: the run's device (its type is the autocast device
    type); ``optimizer``: the ``torch.optim.Optimizer`` whose parameters' gradients are unscaled.
    """

    def __init__(self, mode: str | None, device: torch.device, optimizer: torch.optim.Optimizer) -> None:
        check_amp(mode, device)
        self.mode = mode
        self.device_type = device.type
        self.optimizer = optimizer
        self.skipped_steps = 0
        self.scaler = (torch.amp.GradScaler(device.type, init_scale=INITIAL_LOSS_SCALE)
                       if mode == "fp16" else None)
        self._scale = INITIAL_LOSS_SCALE if self.scaler is not None else 1.0

    @property
    def enabled(self) -> bool:
        return self.mode is not None

    @property
    def scale(self) -> float:
        """The loss scale the next gradient evaluation multiplies by (1.0 without float16 scaling)."""
        return self._scale

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` of the run's device type and dtype; a no-op context when off."""
        if self.mode is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.mode])

    def backward(self, loss: torch.Tensor, params: Iterable[torch.Tensor]) -> bool:
        """Back-propagate ``loss`` and leave unscaled gradients; True when the evaluation overflowed (float16)
        and the step must be skipped: then every ``.grad`` of ``params`` is None and the skip is counted."""
        if self.scaler is None:
            loss.backward()
            return False
        scaler = self.scaler
        scaler.scale(loss).backward()
        scaler.unscale_(self.optimizer)
        used = self._scale
        scaler.update()
        self._scale = scaler.get_scale()  # one host sync, as GradScaler.step's own check of the overflow
        if self._scale >= used:
            return False
        for p in params:
            p.grad = None
        self.skipped_steps += 1
        return True

    def record(self) -> dict[str, Any]:
        """What the manifest keeps: the mode, the skipped steps and (float16) the current loss scale."""
        out: dict[str, Any] = {"dtype": self.mode, "skipped_steps": self.skipped_steps}
        if self.scaler is not None:
            out["loss_scale"] = self._scale
        return out

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state and the skip counter, for checkpoints (resumed runs continue bit-exactly)."""
        return {"mode": self.mode, "skipped_steps": self.skipped_steps,
                "scaler": None if self.scaler is None else self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; ValueError when it was saved with another mode."""
        if state.get("mode") != self.mode:
            raise ValueError(f"amp state was saved with mode {state.get('mode')!r}, this run uses {self.mode!r}")
        self.skipped_steps = int(state["skipped_steps"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
            self._scale = self.scaler.get_scale()
