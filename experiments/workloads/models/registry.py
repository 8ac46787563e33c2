"""Model builders by name: the built-in families, names registered by user code, and import paths.

A builder is called as ``builder(input_shape, num_classes, **args)`` and returns a ``torch.nn.Module``
mapping a batch ``(B, *input_shape)`` to logits ``(B, num_classes)``:

- ``input_shape``: one example's shape without the batch dimension (the dataset's ``input_shape``,
  e.g. ``(40,)`` for MNIST-1D, ``(3, 32, 32)`` for CIFAR), a tuple of ints;
- ``num_classes``: the dataset's number of labels;
- ``args``: the workload's ``model.args`` mapping, as keyword arguments (JSON values: lists, not tuples).

A workload's ``model.name`` is a registered name (:func:`available_models`: the built-ins, then names
given to :func:`register_model` in this process, e.g. by a script before it calls
``experiments.run.main()``) or an import path ``"my_pkg.models:build_net"``, imported and called.
Import paths also work where runs start in new processes (``python -m experiments.suite``); registered
names live only in the process that registered them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from experiments.workloads.builders import BuilderRegistry
from experiments.workloads.config import ModelConfig

ModelBuilder = Callable[..., nn.Module]


def _mlp(input_shape: tuple[int, ...], num_classes: int, **args: Any) -> nn.Module:
    from experiments.workloads.models.mlp import MLP

    features = 1
    for d in input_shape:
        features *= d
    if "hidden" in args:
        args["hidden"] = tuple(args["hidden"])
    return MLP(features, num_classes, **args)


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(f"model {name!r} needs image inputs (C, H, W), got input shape {input_shape}")
    channels, height, width = input_shape
    return channels, height, width


def _small_cnn(input_shape: tuple[int, ...], num_classes: int, **args: Any) -> nn.Module:
    from experiments.workloads.models.small_cnn import SmallCNN

    channels, height, _ = _image_shape("small-cnn", input_shape)
    if "channels" in args:
        args["channels"] = tuple(args["channels"])
    return SmallCNN(in_channels=channels, num_classes=num_classes, image_size=height, **args)


def _resnet_he(input_shape: tuple[int, ...], num_classes: int, **args: Any) -> nn.Module:
    from experiments.workloads.models.resnet_he import ResNetHe

    channels, _, _ = _image_shape("resnet-he", input_shape)
    return ResNetHe(in_channels=channels, num_classes=num_classes, **args)


def _resnet(input_shape: tuple[int, ...], num_classes: int, **args: Any) -> nn.Module:
    from experiments.workloads.models.resnet_imagenet import build_resnet

    channels, _, _ = _image_shape("resnet", input_shape)
    return build_resnet(in_channels=channels, num_classes=num_classes, **args)


def _vit(input_shape: tuple[int, ...], num_classes: int, **args: Any) -> nn.Module:
    from experiments.workloads.models.vit import ViTClassifier

    channels, height, width = _image_shape("vit", input_shape)
    if height != width:
        raise ValueError(f"vit needs square images, got {height}x{width}")
    return ViTClassifier(image_size=height, in_channels=channels, num_classes=num_classes, **args)


_BUILDERS: dict[str, ModelBuilder] = {
    "small-cnn": _small_cnn,
    "mlp": _mlp,
    "resnet-he": _resnet_he,
    "resnet": _resnet,
    "vit": _vit,
}
BUILTIN_MODELS = tuple(_BUILDERS)
MODELS: BuilderRegistry[ModelBuilder] = BuilderRegistry(
    "model.name", "register_model", "builder(input_shape, num_classes, **args)", _BUILDERS)


def available_models() -> list[str]:
    """The registered model names: the built-ins, then those registered in this process."""
    return MODELS.names()


def register_model(name: str, builder: ModelBuilder, *, replace: bool = False) -> None:
    """Make ``name`` a valid ``model.name`` in this process, built by ``builder`` (see the module docstring).

    ValueError when ``name`` is not a non-empty string without ``:`` (import paths are resolved, not
    registered), ``builder`` is not callable, or ``name`` is taken (unless ``replace``; built-ins cannot be
    replaced).
    """
    MODELS.register(name, builder, replace=replace)


def model_builder(name: str) -> ModelBuilder:
    """The builder of ``model.name`` = ``name`` (a registered name, or an import path, imported now);
    errors as :meth:`experiments.workloads.builders.BuilderRegistry.lookup`."""
    return MODELS.lookup(name)


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Instantiate ``cfg.name`` with ``cfg.args`` for inputs of ``input_shape`` (without the batch dim).

    ValueError for an unknown name (see :func:`model_builder`), ``cfg.args`` that the builder's signature
    does not accept (naming them), or a builder that does not return a ``torch.nn.Module``.
    """
    builder = model_builder(cfg.name)
    args: dict[str, Any] = dict(cfg.args)
    try:
        inspect.signature(builder).bind(tuple(input_shape), num_classes, **args)
    except TypeError as err:
        raise ValueError(f"model {cfg.name!r}: model.args {sorted(args)} do not fit its builder "
                         f"{getattr(builder, '__name__', builder)}{_signature(builder)}: {err}") from None
    except ValueError:  # no signature to check (a builtin): the call will tell
        pass
    model = builder(tuple(input_shape), num_classes, **args)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {cfg.name!r}: its builder returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _signature(builder: ModelBuilder) -> str:
    try:
        return str(inspect.signature(builder))
    except (TypeError, ValueError):
        return "(...)"
