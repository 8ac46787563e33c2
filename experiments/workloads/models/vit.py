"""Vision Transformer from ``transformers``' ViTConfig, random init (no download), logits out."""

from __future__ import annotations

import torch
from torch import nn


class ViTClassifier(nn.Module):
    """ViTForImageClassification returning plain logits. Defaults are DeiT-tiny's width (192, 3 heads)."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        num_classes: int,
        patch_size: int = 4,
        hidden_size: int = 192,
        num_layers: int = 12,
        num_heads: int = 3,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTForImageClassification

        if image_size % patch_size:
            raise ValueError(f"patch_size ({patch_size}) must divide image_size ({image_size})")
        config = ViTConfig(
            image_size=image_size,
            patch_size=patch_size,
            num_channels=in_channels,
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=mlp_ratio * hidden_size,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            num_labels=num_classes,
        )
        self.vit = ViTForImageClassification(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=x).logits
