"""Networks by name.  Every network returns ``(mask_logits | None, class_logits | None)``."""

from __future__ import annotations

from torch import nn

from braintumor.errors import OptionError

#: name → (what it predicts, default input side in px)
ARCHITECTURES = {
    "multitask_unet": ("segmentation+classification", 160),
    "seed_unet": ("segmentation", 256),
    "inception_v3": ("classification", 299),
    "alexnet": ("classification", 224),
    "mlp": ("classification", 64),
}

#: name → one sentence for the model card: what the network is, and where it departs from its reference
DESCRIPTIONS = {
    "multitask_unet": "MONAI BasicUNet (16-32-64-128-256) with a classification head on its pooled encoder "
    "features: one network for the tumor mask and the tumor type",
    "seed_unet": "the replaced project's segmenter: a small U-Net, one 3×3 convolution per level (16-32-64, "
    "bottleneck 128), trained with BCE; no class output",
    "inception_v3": "the replaced project's classifier: InceptionV3 (Szegedy et al. 2016) for one gray channel; "
    "no mask output",
    "alexnet": "classification-only reference: AlexNet (Krizhevsky et al. 2012) for one gray channel, 5 "
    "convolutions (96-256-384-384-256) and 3 dense layers (4096-4096-classes, dropout 0.5); batch "
    "normalisation after each convolution instead of local response normalisation, and adaptive average "
    "pooling to 6×6 before the dense layers so any input side ≥ 63 px works; no mask output",
    "mlp": "classification-only reference: the slice flattened (side × side pixels) through dense layers "
    "512-128-classes with ReLU and dropout 0.5; no convolution, no mask output",
}


def build_model(name: str, num_classes: int = 4, pretrained: bool = False, size: int | None = None) -> nn.Module:
    """Instantiate an architecture; unknown names fail with the list of known ones.

    ``size``: the input side, for the networks whose weights depend on it (``mlp``); None is the default side."""
    if name == "multitask_unet":
        from braintumor.models.multitask_unet import MultiTaskUNet

        return MultiTaskUNet(num_classes=num_classes)
    if name == "seed_unet":
        from braintumor.models.seed_unet import SeedUNet

        return SeedUNet()
    if name == "inception_v3":
        from braintumor.models.inception import build_inception_v3

        return build_inception_v3(num_classes=num_classes, pretrained=pretrained)
    if name == "alexnet":
        from braintumor.models.alexnet import AlexNet

        return AlexNet(num_classes=num_classes)
    if name == "mlp":
        from braintumor.models.mlp import MLP

        return MLP(num_classes=num_classes, size=size or ARCHITECTURES["mlp"][1])
    raise OptionError("--arch", f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
