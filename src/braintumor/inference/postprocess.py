"""Mask post-processing: the mask probability map (at the image's size) → a cleaned 0/1 tumor mask.

Its settings (``bundle.Postprocessing``) are chosen by cross-validation and stored in the model card.
"""

from __future__ import annotations

import numpy as np

from braintumor.bundle import Postprocessing

#: 8-connectivity: pixels touching at a corner belong to one region.
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def keep_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Drop 8-connected regions smaller than ``min_fraction`` of the largest one (0 keeps all, 1 only the
    largest, and any tied with it): a tumor is mostly one region; specks far from it are false findings."""
    mask = np.asarray(mask, dtype=bool)
    if min_fraction <= 0 or not mask.any():
        return mask.astype(np.uint8)
    from scipy import ndimage  # here: scipy costs 0.4 s of start-up, and most cards never need it

    labels, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # background
    keep = sizes >= min_fraction * sizes.max()
    keep[0] = False
    kept: np.ndarray = keep[labels].astype(np.uint8)
    return kept


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes (background not reachable from the border, 4-connected, the dual of 8-connected
    regions): the expert outlines include necrotic cores, which the network may leave out."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(np.asarray(mask, dtype=bool)).astype(np.uint8)


def postprocess(mask_prob: np.ndarray, settings: Postprocessing) -> np.ndarray:
    """uint8 0/1 mask from a probability map already resized to the image's size."""
    mask = keep_components(np.asarray(mask_prob) >= settings.threshold, settings.min_component_fraction)
    return fill_holes(mask) if settings.fill_holes else mask
