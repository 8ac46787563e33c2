"""Model families of the suite behind one function, ``build_model(config, input_shape, num_classes)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from experiments.config import ModelConfig

MODELS = ("small-cnn", "mlp", "resnet-he", "resnet", "vit")


def available_models() -> list[str]:
    return list(MODELS)


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Instantiate ``cfg.name`` with ``cfg.args`` for inputs of ``input_shape`` (without the batch dim)."""
    args: dict[str, Any] = dict(cfg.args)
    if cfg.name == "mlp":
        from experiments.models.mlp import MLP

        features = 1
        for d in input_shape:
            features *= d
        if "hidden" in args:
            args["hidden"] = tuple(args["hidden"])
        return MLP(features, num_classes, **args)
    if len(input_shape) != 3:
        raise ValueError(f"model {cfg.name!r} needs image inputs (C, H, W), got input shape {input_shape}")
    channels, height, width = input_shape
    if cfg.name == "small-cnn":
        from experiments.models.small_cnn import SmallCNN

        if "channels" in args:
            args["channels"] = tuple(args["channels"])
        return SmallCNN(in_channels=channels, num_classes=num_classes, image_size=height, **args)
    if cfg.name == "resnet-he":
        from experiments.models.resnet_he import ResNetHe

        return ResNetHe(in_channels=channels, num_classes=num_classes, **args)
    if cfg.name == "resnet":
        from experiments.models.resnet_imagenet import build_resnet

        return build_resnet(in_channels=channels, num_classes=num_classes, **args)
    if cfg.name == "vit":
        from experiments.models.vit import ViTClassifier

        if height != width:
            raise ValueError(f"vit needs square images, got {height}x{width}")
        return ViTClassifier(image_size=height, in_channels=channels, num_classes=num_classes, **args)
    raise ValueError(f"model.name must be one of {available_models()}, got {cfg.name!r}")
