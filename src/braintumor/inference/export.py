"""PyTorch ↔ model folder: save/load safetensors weights, export the ONNX graph used for fast CPU inference."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from braintumor.bundle import ONNX, WEIGHTS, ModelCard, read_card, verified_file, write_card
from braintumor.models import build_model

if TYPE_CHECKING:  # imported where used: it pulls MONAI
    from braintumor.models.multitask_unet import MultiTaskUNet


def save_weights(net: nn.Module, model_dir: str | Path, half: bool = False) -> Path:
    """``model.safetensors``; ``half``: floating-point tensors in float16 (half the bytes, for ensemble members)."""
    path = Path(model_dir) / WEIGHTS
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(path))
    return path


def load_torch_model(model_dir: str | Path) -> tuple[nn.Module, ModelCard]:
    """The network of a model folder in eval mode, weights verified by checksum (safetensors only)."""
    card = read_card(model_dir)
    net = build_model(card.architecture, num_classes=len(card.classes), size=card.input.size)
    weights = load_file(str(verified_file(model_dir, WEIGHTS, card)))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
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


def halve_onnx_weights(path: str | Path, min_elements: int = 1024) -> None:
    """Store the graph's large float32 weights as float16, each followed by a Cast back to float32: the file
    halves, ONNX Runtime folds the casts when it loads the graph, and the arithmetic stays in float32."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph, casts = model.graph, []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= min_elements:
            name = init.name
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{name}.fp16"))
            casts.append(helper.make_node("Cast", [f"{name}.fp16"], [name], to=TensorProto.FLOAT))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_member(run_dir: str | Path, dest: str | Path, notes: dict[str, str]) -> ModelCard:
    """A trained model folder as a compact ensemble member in ``dest``: float16 weights in both files (about half
    the bytes), the same card with ``notes`` added to its training block."""
    from dataclasses import replace

    net, card = load_torch_model(run_dir)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    save_weights(net, dest, half=True)
    export_onnx(net, card.input.size, dest)
    halve_onnx_weights(dest / ONNX)
    assert card.training is not None, "a trained model folder says how it trained"
    training = replace(card.training, notes={**card.training.notes, **notes})
    return write_card(dest, replace(card, training=training))
