"""Grad-CAM of the classifier's decision (MONAI's implementation), mapped back onto the slice.

Needs torch (the 'train' extra): load once with ``Explainer(model_dir)``, then ``explain(scan)``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

from braintumor.imageio import Scan
from braintumor.inference.export import load_torch_model
from braintumor.preprocessing import output_to_image, to_model_input


class _ClassLogits(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[1]


class Explainer:
    """Grad-CAM on the deepest encoder stage (the features the class head pools)."""

    def __init__(self, model_dir: str | Path, target_layer: str = "net.down_4"):
        net, self.card = load_torch_model(model_dir)
        self.size = self.card.input.size
        self.cam = GradCAM(nn_module=_ClassLogits(net).eval(), target_layers=target_layer)
        self._lock = threading.Lock()  # hooks keep per-call state: one explanation at a time

    def explain(self, scan: Scan, class_index: int | None = None) -> np.ndarray:
        """Heat map in [0, 1] at the slice's own size for ``class_index`` (default: the predicted class)."""
        x, geometry = to_model_input(scan.pixels, self.size)
        with self._lock:
            cam = self.cam(torch.from_numpy(x)[None, None], class_idx=class_index)
        return np.clip(output_to_image(cam[0, 0].detach().numpy(), geometry), 0, 1)
