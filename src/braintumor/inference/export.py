"""PyTorch ↔ model folder: save/load safetensors weights, export the ONNX graph used for fast CPU inference."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    net = build_model(card["architecture"], num_classes=len(card["classes"]), size=int(card["input"]["size"]))
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


class _ClassProbabilities(nn.Module):
    """The graph of a classification-only network (no mask head): class probabilities and the features its
    last layer reads. The network's ``forward_with_features`` returns ``(None, class_logits, features)``."""

    net: Any  # an nn.Module with forward_with_features (no common base class declares it)

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, cls, features = self.net.forward_with_features(x)
        return torch.softmax(cls, dim=1), features


class _MaskProbability(nn.Module):
    """The graph of a segmentation-only network (no class head): the mask probability map alone. The network's
    ``forward`` returns ``(mask_logits, None)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seg, _ = self.net(x)
        return torch.sigmoid(seg)


def export_onnx(net: nn.Module, size: int, model_dir: str | Path) -> Path:
    """``model.onnx`` of any network: ``image`` → ``mask_prob``, ``class_prob``, ``features`` for a multitask_unet
    (the analyzer's graph), ``image`` → ``class_prob``, ``features`` for a classification-only network (evaluate
    scores it without masks), ``image`` → ``mask_prob`` for a segmentation-only one (scored without classes)."""
    from braintumor.models.multitask_unet import MultiTaskUNet

    contiguous = net.eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # overloads omit it
    wrapper: nn.Module
    if isinstance(contiguous, MultiTaskUNet):
        wrapper, outputs = _Probabilities(contiguous), ["mask_prob", "class_prob", "features"]
    elif callable(getattr(contiguous, "forward_with_features", None)):
        wrapper, outputs = _ClassProbabilities(contiguous), ["class_prob", "features"]
    else:
        wrapper, outputs = _MaskProbability(contiguous), ["mask_prob"]
    path = Path(model_dir) / ONNX
    example = torch.zeros(1, 1, size, size)
    with warnings.catch_warnings():
        # only the batch axis is dynamic: an input side read while tracing (a shape check, alexnet's pooling
        # matrices) is a constant of the graph by design
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper.eval(),
            (example,),
            str(path),
            input_names=["image"],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in ["image", *outputs]},
            opset_version=17,
            dynamo=False,
        )
    return path
