"""The reference classifier of the project we replace: InceptionV3 (299×299), here for grayscale input.

The architecture is defined in the project (Szegedy et al. 2016, the layout torchvision and Keras use)
so the benchmark runs on the base install; ImageNet weights come only through the optional ``timm``
extra, when they can be downloaded.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class Conv(nn.Sequential):
    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3),
            nn.ReLU(inplace=True),
        )


class _Branches(nn.Module):
    """Runs parallel branches (each a Sequential) and concatenates them along channels."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


def _pool_proj(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.AvgPool2d(3, 1, 1), Conv(cin, cout, 1))


def block_a(cin: int, pool: int) -> _Branches:
    return _Branches(
        Conv(cin, 64, 1),
        nn.Sequential(Conv(cin, 48, 1), Conv(48, 64, 5, padding=2)),
        nn.Sequential(Conv(cin, 64, 1), Conv(64, 96, 3, padding=1), Conv(96, 96, 3, padding=1)),
        _pool_proj(cin, pool),
    )


def block_b(cin: int) -> _Branches:
    return _Branches(
        Conv(cin, 384, 3, stride=2),
        nn.Sequential(Conv(cin, 64, 1), Conv(64, 96, 3, padding=1), Conv(96, 96, 3, stride=2)),
        nn.MaxPool2d(3, 2),
    )


def block_c(cin: int, c7: int) -> _Branches:
    return _Branches(
        Conv(cin, 192, 1),
        nn.Sequential(Conv(cin, c7, 1), Conv(c7, c7, (1, 7), padding=(0, 3)), Conv(c7, 192, (7, 1), padding=(3, 0))),
        nn.Sequential(
            Conv(cin, c7, 1),
            Conv(c7, c7, (7, 1), padding=(3, 0)),
            Conv(c7, c7, (1, 7), padding=(0, 3)),
            Conv(c7, c7, (7, 1), padding=(3, 0)),
            Conv(c7, 192, (1, 7), padding=(0, 3)),
        ),
        _pool_proj(cin, 192),
    )


def block_d(cin: int) -> _Branches:
    return _Branches(
        nn.Sequential(Conv(cin, 192, 1), Conv(192, 320, 3, stride=2)),
        nn.Sequential(
            Conv(cin, 192, 1),
            Conv(192, 192, (1, 7), padding=(0, 3)),
            Conv(192, 192, (7, 1), padding=(3, 0)),
            Conv(192, 192, 3, stride=2),
        ),
        nn.MaxPool2d(3, 2),
    )


class _SplitPair(nn.Module):
    """A branch that forks into a 1×3 and a 3×1 convolution (block E)."""

    def __init__(self, stem: nn.Module, cin: int):
        super().__init__()
        self.stem, self.a, self.b = stem, Conv(cin, 384, (1, 3), padding=(0, 1)), Conv(cin, 384, (3, 1), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return torch.cat([self.a(x), self.b(x)], 1)


def block_e(cin: int) -> _Branches:
    return _Branches(
        Conv(cin, 320, 1),
        _SplitPair(Conv(cin, 384, 1), 384),
        _SplitPair(nn.Sequential(Conv(cin, 448, 1), Conv(448, 384, 3, padding=1)), 384),
        _pool_proj(cin, 192),
    )


class InceptionV3(nn.Module):
    """Stem → 3×A → B → 4×C → D → 2×E → global pool → dropout → linear.  Returns ``(None, logits)``."""

    def __init__(self, num_classes: int = 4, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            Conv(in_channels, 32, 3, stride=2),
            Conv(32, 32, 3),
            Conv(32, 64, 3, padding=1),
            nn.MaxPool2d(3, 2),
            Conv(64, 80, 1),
            Conv(80, 192, 3),
            nn.MaxPool2d(3, 2),
            block_a(192, 32),
            block_a(256, 64),
            block_a(288, 64),
            block_b(288),
            block_c(768, 128),
            block_c(768, 160),
            block_c(768, 160),
            block_c(768, 192),
            block_d(768),
            block_e(1280),
            block_e(2048),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(2048, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, self.head(self.features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        """No mask, the class logits, and the 2048 pooled features the linear layer reads."""
        pooled = self.head[:3](self.features(x))  # pool, flatten, dropout (the identity in eval mode)
        return None, self.head[3](pooled), pooled


class _TimmWrapper(nn.Module):
    net: Any  # a timm model: forward_features, forward_head and get_classifier are timm's, not nn.Module's

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, self.net(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        """No mask, the class logits, and the pooled features timm's classifier reads."""
        pooled = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return None, self.net.get_classifier()(pooled), pooled


def build_inception_v3(num_classes: int = 4, pretrained: bool = False) -> nn.Module:
    """From scratch, or ImageNet-pretrained through timm (the RGB stem summed to one gray channel)."""
    if not pretrained:
        return InceptionV3(num_classes)
    try:
        import timm
    except ImportError:
        log.warning("ImageNet weights need the 'timm' extra (pip install 'braintumor[timm]'); training from scratch")
        return InceptionV3(num_classes)
    try:
        return _TimmWrapper(timm.create_model("inception_v3", pretrained=True, num_classes=num_classes, in_chans=1))
    except Exception as err:  # offline, hub unreachable, cache missing
        log.warning(
            "could not download ImageNet weights for inception_v3 (%s); training from scratch",
            str(err).splitlines()[0][:120] if str(err) else type(err).__name__,
        )
        return InceptionV3(num_classes)
