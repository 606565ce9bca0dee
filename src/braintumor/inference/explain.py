"""Grad-CAM of the classifier's decision (MONAI's implementation), mapped back onto the slice.

Needs torch (the 'train' extra): load once with ``Explainer(model_dir)`` (a model or an ensemble folder), then
``explain(scan)``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

from braintumor.bundle import member_dirs, read_card
from braintumor.imageio import Scan
from braintumor.inference.export import load_torch_model
from braintumor.preprocessing import output_to_image, to_model_input


class _ClassLogits(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)[1]  # (mask, logits)
        return logits


class Explainer:
    """Grad-CAM on the deepest encoder stage (the features the class head pools); for an ensemble, the mean of its
    members' maps for one class, so the map explains the type the ensemble reports."""

    def __init__(self, model_dir: str | Path, members: int | None = None, target_layer: str = "net.down_4"):
        self.card = read_card(model_dir)
        folders = member_dirs(model_dir, self.card)[:members] if self.card.members else [Path(model_dir)]
        self.size = self.card.input.size
        self.cams = [
            GradCAM(nn_module=_ClassLogits(load_torch_model(f)[0]).eval(), target_layers=target_layer) for f in folders
        ]
        self._lock = threading.Lock()  # hooks keep per-call state: one explanation at a time

    def explain(self, scan: Scan, class_index: int | None = None) -> np.ndarray:
        """Heat map in [0, 1] at the slice's own size for ``class_index`` (default: the class the networks' mean
        probability ranks first)."""
        x, geometry = to_model_input(scan.pixels, self.size)
        batch = torch.from_numpy(x)[None, None]
        with self._lock:
            if class_index is None:
                with torch.inference_mode():
                    probs = [cam.nn_module.model(batch).softmax(1) for cam in self.cams]  # no backward
                class_index = int(torch.stack(probs).mean(0).argmax(1)[0])
            maps = [cam(batch, class_idx=class_index)[0, 0].detach().numpy() for cam in self.cams]
        heat: np.ndarray = np.clip(output_to_image(np.mean(maps, axis=0), geometry), 0, 1)
        return heat
