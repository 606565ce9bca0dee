"""Plausibility warnings: is this a brain MRI slice, and do the two heads agree?"""

from __future__ import annotations

import numpy as np

from braintumor.imageio import Scan

#: A region below this fraction of the image is noise, not a finding worth a disagreement warning.
MIN_REGION_FRACTION = 0.0005
#: A segmented region this large (fraction of the network input) and this sure (mean mask probability) overrides
#: a "no tumor" from the classifier.  Chosen on the shipped model's validation fold: 0 of 61 no-tumor images
#: changed, 2 of 3 tumor slices called "no tumor" rescued; under skull stripping 57 of 250, under a vertical flip
#: 39 of 71 (docs/experiments.md).
CONFIDENT_REGION_FRACTION, CONFIDENT_REGION_PROBABILITY = 0.005, 0.8


def input_warnings(scan: Scan, model_input: np.ndarray) -> list[str]:
    """Cheap checks for inputs unlike the training slices (colour photos, documents, blank frames)."""
    out = []
    h, w = scan.shape
    if max(h, w) / min(h, w) > 2:
        out.append(f"aspect ratio {w}×{h} is unlike an MRI slice")
    if scan.meta.get("colorful"):
        out.append("colour image: MRI slices are grayscale; this may not be a brain MRI slice")
    if model_input.std() < 0.05:
        out.append("almost uniform image: this may not be a brain MRI slice")
    elif model_input.mean() > 0.6:
        out.append("mostly bright image (MRI slices have a dark background): this may not be a brain MRI slice")
    return out


def consistency_warnings(label: str, tumor_pixels: int, total_pixels: int) -> list[str]:
    """``tumor_pixels``: the segmenter's region before a "no tumor" answer dismisses it."""
    region = tumor_pixels >= MIN_REGION_FRACTION * total_pixels
    if label == "notumor" and region:
        return [
            f"the segmenter marked {tumor_pixels} px but the classifier says no tumor: the region was dismissed "
            "(no outline, area 0); review the image"
        ]
    if label != "notumor" and not tumor_pixels:
        return [f"the classifier says {label} but the segmenter found no region; the area is 0"]
    return []


def decide(probabilities: dict[str, float], mask_prob: np.ndarray, threshold: float) -> tuple[str, list[str]]:
    """The 4-class answer from both heads: the classifier's, except that a confident tumor region never ends as
    a "no tumor" (that answer on an obvious tumor is the worst this tool can give); then the likeliest tumor
    type is reported, with a warning that says why."""
    label = max(probabilities, key=probabilities.__getitem__)
    region = mask_prob >= threshold
    fraction = float(region.mean())
    if label != "notumor" or fraction < CONFIDENT_REGION_FRACTION:
        return label, []
    sureness = float(mask_prob[region].mean())
    if sureness < CONFIDENT_REGION_PROBABILITY:
        return label, []
    tumor = max((c for c in probabilities if c != "notumor"), key=probabilities.__getitem__)
    return tumor, [
        f"the classifier said no tumor ({probabilities['notumor']:.0%}) but the segmenter found a confident "
        f"tumor region ({fraction:.1%} of the slice, mean probability {sureness:.2f}): reported as {tumor}, "
        "the likeliest type; review the image"
    ]
