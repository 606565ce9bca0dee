"""The reference segmenter of the project we replace: a small U-Net, one 3×3 conv per level.

Encoder 16-32-64, bottleneck 128, 256×256 input, trained with BCE.  Kept for side-by-side figures.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class SeedUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.ModuleList([_conv(1, 16), _conv(16, 32), _conv(32, 64)])
        self.bottleneck = _conv(64, 128)
        self.up = nn.ModuleList([nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in (128, 64, 32)])
        self.dec = nn.ModuleList([_conv(128, 64), _conv(64, 32), _conv(32, 16)])
        self.out = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.out(x), None
