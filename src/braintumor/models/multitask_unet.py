"""The default network: MONAI's BasicUNet with a classification head on its encoder.

One encoder serves both tasks (segmentation decoder → tumor mask; pooled encoder features →
tumor type), so inference runs one network instead of two.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNet
from torch import nn


class MultiTaskUNet(BasicUNet):
    """encoder (BasicUNet down path) → decoder (BasicUNet up path) → heads (mask logits, class logits)."""

    def __init__(
        self, features: Sequence[int] = (16, 32, 64, 128, 256, 16), num_classes: int = 4, dropout: float = 0.3
    ) -> None:
        super().__init__(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            features=features,
            act="relu",
            norm=("batch", {"affine": True}),
            upsample="deconv",
        )
        deep, deeper = features[3], features[4]
        self.class_head = nn.Sequential(
            nn.Linear(2 * deeper + deep, 128), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg, cls, _ = self.forward_with_features(x)
        return seg, cls

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask logits, class logits and the pooled encoder features the class head reads (for the
        out-of-distribution score)."""
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        pooled = torch.cat([x4.mean((2, 3)), x4.amax((2, 3)), x3.mean((2, 3))], dim=1)
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        return self.final_conv(u1), self.class_head(pooled), pooled
