"""Mask post-processing: the mask probability map (at the image's size) → a cleaned 0/1 tumor mask.

Its settings are chosen by cross-validation and stored in the model card's ``postprocessing`` block; model
folders written before it have only ``mask_threshold``, read as a plain threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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
    return keep[labels].astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes (background not reachable from the border, 4-connected, the dual of 8-connected
    regions): the expert outlines include necrotic cores, which the network may leave out."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(np.asarray(mask, dtype=bool)).astype(np.uint8)


@dataclass(frozen=True)
class Postprocessing:
    """Threshold (``>=``), then keep the large regions, then fill holes."""

    threshold: float = 0.5
    min_component_fraction: float = 0.0
    fill_holes: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"postprocessing threshold must be in (0, 1), got {self.threshold!r}")
        if not 0.0 <= self.min_component_fraction <= 1.0:
            raise ValueError(
                f"postprocessing min_component_fraction must be in [0, 1], got {self.min_component_fraction!r}"
            )

    def apply(self, mask_prob: np.ndarray) -> np.ndarray:
        """uint8 0/1 mask from a probability map already resized to the image's size."""
        mask = keep_components(np.asarray(mask_prob) >= self.threshold, self.min_component_fraction)
        return fill_holes(mask) if self.fill_holes else mask

    def as_card(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> Postprocessing:
        """The card's ``postprocessing`` block, else its ``mask_threshold`` (older model folders) with the
        other settings off."""
        threshold = float(card.get("mask_threshold", 0.5))
        block = card.get("postprocessing")
        if block is None:
            return cls(threshold=threshold)
        unknown = set(block) - {"threshold", "min_component_fraction", "fill_holes"}
        if unknown:
            raise ValueError(f"unknown postprocessing settings in the model card: {sorted(unknown)}")
        return cls(
            threshold=float(block.get("threshold", threshold)),
            min_component_fraction=float(block.get("min_component_fraction", 0.0)),
            fill_holes=bool(block.get("fill_holes", False)),
        )
