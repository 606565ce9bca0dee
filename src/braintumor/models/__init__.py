"""Networks by name.  Every network returns ``(mask_logits | None, class_logits | None)``."""

from __future__ import annotations

from torch import nn

#: name → (what it predicts, default input side in px)
ARCHITECTURES = {
    "multitask_unet": ("segmentation+classification", 160),
    "seed_unet": ("segmentation", 256),
    "inception_v3": ("classification", 299),
}


def build_model(name: str, num_classes: int = 4, pretrained: bool = False) -> nn.Module:
    """Instantiate an architecture; unknown names fail with the list of known ones."""
    if name == "multitask_unet":
        from braintumor.models.multitask_unet import MultiTaskUNet

        return MultiTaskUNet(num_classes=num_classes)
    if name == "seed_unet":
        from braintumor.models.seed_unet import SeedUNet

        return SeedUNet()
    if name == "inception_v3":
        from braintumor.models.inception import build_inception_v3

        return build_inception_v3(num_classes=num_classes, pretrained=pretrained)
    raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
