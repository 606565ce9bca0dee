"""Pad to a square, resize to the network's side, scale intensities; and the exact inverse for outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Intensities are scaled to [0, 1] between these percentiles of the (resized) slice.
LOW_PERCENTILE, HIGH_PERCENTILE = 0.0, 99.9


@dataclass(frozen=True)
class Geometry:
    """How a ``height × width`` slice was placed in the ``side × side`` square before resizing."""

    height: int
    width: int
    top: int
    left: int
    side: int


def _square(array: np.ndarray, fill: float) -> tuple[np.ndarray, Geometry]:
    h, w = array.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    if h == w:
        return array, Geometry(h, w, 0, 0, side)
    square = np.full((side, side), fill, dtype=array.dtype)
    square[top : top + h, left : left + w] = array
    return square, Geometry(h, w, top, left, side)


#: the name model cards give ``to_model_input`` (``InputSpec.preprocessing``): a card naming another is refused
PREPROCESSING = "pad-square-min/bilinear/p0-p99.9"


def to_model_input(pixels: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """float32 ``size × size`` in [0, 1] (aspect kept by zero-padding) and the geometry to undo it."""
    small, geometry = square_resize(pixels, size)
    return scale_intensity(small), geometry


def square_resize(pixels: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """float32 ``size × size``: padded to a square with the slice minimum, bilinear resize; intensities as they
    were (the first half of ``to_model_input``)."""
    pixels = np.asarray(pixels, dtype=np.float32)
    square, geometry = _square(pixels, float(pixels.min()))
    small = np.asarray(
        Image.fromarray(square, mode="F").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    )
    return small, geometry


def scale_intensity(pixels: np.ndarray) -> np.ndarray:
    """The [p0, p99.9] intensity range → [0, 1], clipped: any linear rescaling of a scan gives the same input."""
    lo, hi = np.percentile(pixels, [LOW_PERCENTILE, HIGH_PERCENTILE])
    scaled: np.ndarray = np.clip((pixels - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)
    return scaled


def mask_to_input(mask: np.ndarray, size: int) -> np.ndarray:
    """A 0/1 mask placed like its image: padded to a square, resized (area-averaged, then ≥ 0.5)."""
    square, _ = _square(np.asarray(mask, dtype=np.float32), 0.0)
    small = np.asarray(
        Image.fromarray(square, mode="F").resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    )
    return (small >= 0.5).astype(np.uint8)


def output_to_image(prob: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A ``size × size`` probability map back at the slice's own ``height × width`` (bilinear)."""
    full = np.asarray(
        Image.fromarray(prob.astype(np.float32), mode="F").resize(
            (geometry.side, geometry.side), Image.Resampling.BILINEAR
        )
    )
    return full[geometry.top : geometry.top + geometry.height, geometry.left : geometry.left + geometry.width]
