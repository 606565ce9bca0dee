"""A classification-only reference: a multilayer perceptron on the whole slice, the simplest baseline.

The slice at a small input side (default 64×64, so 4096 pixels) is flattened and passed through dense layers
4096 → 512 → 128 → classes, ReLU and dropout between them. No convolution, no notion of neighbouring pixels:
it shows how much of the task a network gets without any spatial prior. The first layer's width fixes the
input side, so a model folder runs at the side it was trained at.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


class MLP(nn.Module):
    """flatten → dense 512 → ReLU → dropout → dense 128 → ReLU → dropout → dense ``num_classes``.
    Returns ``(None, logits)``; ``forward_with_features`` adds the 128 hidden activations."""

    def __init__(
        self, num_classes: int = 4, size: int = 64, hidden: tuple[int, ...] = (512, 128), dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.size = size
        widths = (size * size, *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for cin, cout in pairwise(widths):
            layers += [nn.Linear(cin, cout), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        _, logits, _ = self.forward_with_features(x)
        return None, logits

    def forward_with_features(self, x: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        """No mask, the class logits, and the last hidden layer's activations (the out-of-distribution score's
        features)."""
        if tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"this MLP reads {self.size}×{self.size} slices, not {x.shape[-2]}×{x.shape[-1]}")
        features = self.features(x)
        return None, self.classifier(features), features
