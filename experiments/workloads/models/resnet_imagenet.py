"""torchvision's ImageNet ResNets (random init), optionally with the 3x3 stem used for 32x32 inputs.

``cifar_stem=True`` replaces the 7x7/stride-2 convolution and the max-pool by one 3x3/stride-1
convolution: the ResNet-18 usually trained on CIFAR (and by the mL-BFGS reference).
"""

from __future__ import annotations

from torch import nn

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")


def build_resnet(arch: str, in_channels: int, num_classes: int, cifar_stem: bool = False) -> nn.Module:
    from torchvision import models

    if arch not in ARCHS:
        raise ValueError(f"model.args.arch must be one of {list(ARCHS)}, got {arch!r}")
    model = getattr(models, arch)(weights=None, num_classes=num_classes)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model
