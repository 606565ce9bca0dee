"""A classification-only reference: AlexNet (Krizhevsky, Sutskever and Hinton 2012), for one input channel.

The classic layout: five convolutions (96, 256, 384, 384 and 256 channels; 11×11 stride 4, 5×5, then 3×3),
max-pooling (3×3, stride 2) after the first, second and fifth, then three fully connected layers
(4096 → 4096 → classes) with dropout 0.5 before the first two. Default input 224×224. Two departures from
the paper, both stated in the model card's description:

* batch normalisation after every convolution (without a convolution bias) in place of local response
  normalisation, so it trains from scratch on a few thousand slices;
* adaptive average pooling to 6×6 before the first dense layer, so its input (256·6·6 = 9216) is fixed
  whatever the input side (224 already gives 6×6; the smallest side that passes the three pools is 63).
  It is written as two small matrix products, which export to ONNX at any side.
"""

from __future__ import annotations

import torch
from torch import nn

#: the side of the last feature map, as in the paper at 224 px
GRID = 6
#: the smallest input side whose feature maps survive the three 3×3 stride-2 max-pools
MIN_SIZE = 63


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def pool_matrix(n: int, out: int) -> torch.Tensor:
    """``(out, n)`` weights of adaptive average pooling along one axis: row i averages the inputs
    ``floor(i·n/out) … ceil((i+1)·n/out) − 1``, the bins of ``nn.AdaptiveAvgPool2d``."""
    m = torch.zeros(out, n)
    for i in range(out):
        lo, hi = (i * n) // out, -(-(i + 1) * n // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x: torch.Tensor, out: int) -> torch.Tensor:
    """``nn.AdaptiveAvgPool2d(out)`` as ``A_h · x · A_wᵀ``: the same numbers, and an ONNX graph at any input side
    (torch's exporter refuses output sizes that do not divide the input's)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    rows, cols = pool_matrix(h, out).to(x), pool_matrix(w, out).to(x)
    return rows @ x @ cols.T


class AlexNet(nn.Module):
    """conv 11×11/4 → pool → conv 5×5 → pool → 3 × conv 3×3 → pool → 6×6 → dense 4096 → 4096 → classes.
    Returns ``(None, logits)``; ``forward_with_features`` adds the second dense layer's 4096 activations."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv(in_channels, 96, 11, stride=4, padding=2),
            nn.MaxPool2d(3, 2),
            *_conv(96, 256, 5, padding=2),
            nn.MaxPool2d(3, 2),
            *_conv(256, 384, 3, padding=1),
            *_conv(384, 384, 3, padding=1),
            *_conv(384, 256, 3, padding=1),
            nn.MaxPool2d(3, 2),
        )
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(256 * GRID * GRID, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(4096, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        _, logits, _ = self.forward_with_features(x)
        return None, logits

    def forward_with_features(self, x: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        """No mask, the class logits, and the last hidden layer's activations (the out-of-distribution score's
        features)."""
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"AlexNet needs an input side of at least {MIN_SIZE} px, not {min(x.shape[-2:])}")
        features = self.dense(adaptive_avg_pool(self.features(x), GRID))
        return None, self.classifier(features), features
