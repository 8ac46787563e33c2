"""A run's model and optimizer built from its settings before any data is loaded, so that arguments their
constructors refuse are configuration errors (the runner's exit status 2, ``error: <setting>: <message>``)
instead of a traceback after the data have been read.

The check builds the model on PyTorch's meta device (shapes only: no memory, no initialisation cost), with
the input shape and classes the dataset declares (:func:`experiments.workloads.data.registry.dataset_info`), and the
optimizer on its parameters. A constructor that refuses its arguments raises ``ValueError`` or ``TypeError``;
when it does so on the meta device the model is built again on the CPU to tell a real refusal from one of the
meta device. Any other error, or a dataset that declares no shape, leaves the check to the run itself, which
builds through the same functions (:func:`build_checked_model`, :func:`build_checked_optimizer`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from experiments.runner.spec import RunSpec

CONSTRUCTION_ERRORS = (ValueError, TypeError)  # what a constructor raises for arguments it refuses


class ConfigurationError(ValueError):
    """A run's model or optimizer refused its settings; the message names the setting and what was passed."""


def build_checked_model(spec: RunSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The run's model (``model.name`` with ``model.args``) for inputs of ``input_shape`` (no batch dimension)
    and ``num_classes`` labels. ConfigurationError naming ``<workload>.model``, the model and its arguments
    when the builder refuses them (a ValueError or TypeError)."""
    from experiments.workloads.models import build_model

    model_cfg = spec.workload.model
    try:
        return build_model(model_cfg, input_shape, num_classes)
    except CONSTRUCTION_ERRORS as err:
        raise ConfigurationError(
            f"{spec.workload.name}.model: model {model_cfg.name!r} with args {dict(model_cfg.args)} (inputs "
            f"{tuple(input_shape)}, {num_classes} classes): {type(err).__name__}: {err}") from err


def build_checked_optimizer(spec: RunSpec, model: nn.Module, settings: dict[str, Any] | None = None) -> Any:
    """The run's optimizer (a :class:`baselines.TrainingOptimizer`) on ``model``'s parameters with ``settings``
    (default: the run's optimizer settings). ConfigurationError naming the optimizer and the settings
    passed when its constructor refuses them (a ValueError or TypeError)."""
    from baselines import build_optimizer

    settings = spec.optimizer_settings if settings is None else settings
    try:
        return build_optimizer(spec.optimizer, model, **settings)
    except CONSTRUCTION_ERRORS as err:
        text = str(err)
        if isinstance(err, ValueError) and repr(spec.optimizer) in text:  # the registry named it already
            raise ConfigurationError(text) from err
        raise ConfigurationError(f"optimizer {spec.optimizer!r} with settings {settings}: "
                                 f"{type(err).__name__}: {err}") from err


def _build_both(spec: RunSpec, input_shape: tuple[int, ...], num_classes: int, device: str) -> None:
    with torch.device(device):
        model = build_checked_model(spec, input_shape, num_classes)
    build_checked_optimizer(spec, model)


def check_construction(spec: RunSpec) -> None:
    """Build the run's model and optimizer without its data (see the module docstring); ConfigurationError
    (a ValueError) when either refuses its settings. Does nothing for a dataset that declares no shape."""
    from experiments.workloads.data.registry import dataset_info

    try:
        info = dataset_info(spec.workload.data)
    except ValueError:  # a dataset of the user's: its shape is known once it is loaded (the run checks then)
        return
    for device in ("meta", "cpu"):  # the CPU only to confirm a refusal on the meta device
        try:
            _build_both(spec, info.input_shape, info.num_classes, device)
            return
        except ConfigurationError:
            if device == "cpu":
                raise
        except Exception:  # a builder that cannot run here (e.g. on the meta device): the run will build it
            return
