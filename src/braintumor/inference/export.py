"""PyTorch ↔ model folder: save/load safetensors weights, export the ONNX graph used for fast CPU inference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from braintumor.inference.bundle import ONNX, WEIGHTS, read_card, verified_file
from braintumor.models import build_model

if TYPE_CHECKING:  # imported where used: it pulls MONAI
    from braintumor.models.multitask_unet import MultiTaskUNet


def save_weights(net: nn.Module, model_dir: str | Path) -> Path:
    path = Path(model_dir) / WEIGHTS
    save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(path))
    return path


def load_torch_model(model_dir: str | Path) -> tuple[nn.Module, dict]:
    """The network of a model folder in eval mode, weights verified by checksum (safetensors only)."""
    card = read_card(model_dir)
    net = build_model(card["architecture"], num_classes=len(card["classes"]))
    net.load_state_dict(load_file(str(verified_file(model_dir, WEIGHTS, card))))
    return net.eval(), card


class _Probabilities(nn.Module):
    """The graph we ship: probabilities, not logits, so the ONNX path needs no post-processing maths; and the
    pooled encoder features, from which the out-of-distribution score is computed."""

    def __init__(self, net: MultiTaskUNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seg, cls, features = self.net.forward_with_features(x)
        return torch.sigmoid(seg), torch.softmax(cls, dim=1), features


def export_onnx(net: nn.Module, size: int, model_dir: str | Path) -> Path:
    from braintumor.models.multitask_unet import MultiTaskUNet

    if not isinstance(net, MultiTaskUNet):  # the analyzer's graph has a mask head, a class head and features
        raise ValueError(f"only a multitask_unet exports to the ONNX graph the analyzer runs, not {type(net).__name__}")
    path = Path(model_dir) / ONNX
    contiguous = net.eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # overloads omit it
    wrapper = _Probabilities(contiguous).eval()
    example = torch.zeros(1, 1, size, size)
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["mask_prob", "class_prob", "features"],
        dynamic_axes={
            "image": {0: "batch"},
            "mask_prob": {0: "batch"},
            "class_prob": {0: "batch"},
            "features": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    return path
