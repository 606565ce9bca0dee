"""Plausibility warnings: is this a brain MRI slice, and do the two heads agree?"""

from __future__ import annotations

import numpy as np

from braintumor.imageio import Scan

#: A region below this fraction of the image is noise, not a finding worth a disagreement warning.
MIN_REGION_FRACTION = 0.0005


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
    region = tumor_pixels >= MIN_REGION_FRACTION * total_pixels
    if label == "notumor" and region:
        return [f"the classifier says no tumor but the segmenter outlined {tumor_pixels} px; review the image"]
    if label != "notumor" and not tumor_pixels:
        return [f"the classifier says {label} but the segmenter found no region; the area is 0"]
    return []
