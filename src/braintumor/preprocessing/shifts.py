"""Acquisition shifts: how scans from other sources differ from the Figshare slices.

Each shift maps a 2-D slice (and its tumor mask) to what another site's pipeline would hand us:
skull-stripped, z-scored, 16-bit, windowed, cropped or zoomed out, rotated, with a strong bias field
or noise.  Training applies them to every class alike, so "unlike a Figshare slice" stops being
evidence for "no tumor"; ``braintumor shifts`` measures the model on each of them.  Numpy + SciPy only.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy import ndimage as ndi

Pair = tuple[np.ndarray, np.ndarray]  # a slice and its tumor mask


class Shift(Protocol):
    """(slice, tumor mask[, generator]) → the shifted pair; the seeded shifts draw from ``rng``."""

    def __call__(self, pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair: ...


def otsu_threshold(pixels: np.ndarray) -> float:
    """Otsu's threshold on a 256-bin histogram (between background and tissue)."""
    hist, edges = np.histogram(pixels, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centres)
    total_w, total_m = weight[-1], mean[-1]
    between = (total_m * weight - mean * total_w) ** 2 / np.maximum(weight * (total_w - weight), 1e-12)
    return float(centres[int(np.argmax(between[:-1]))])


def brain_mask(pixels: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """An estimated brain mask: tissue above Otsu's threshold, eroded to cut the skull and scalp off, the
    largest component, grown back and hole-filled.  ``keep`` (e.g. a tumor mask) is always inside it."""
    side = min(pixels.shape)
    radius = max(1, side // 25)
    tissue = ndi.gaussian_filter(pixels.astype(np.float32), 1.0) > otsu_threshold(pixels)
    structure = ndi.generate_binary_structure(2, 1)
    core = ndi.binary_erosion(tissue, structure, iterations=radius)
    labels, n = ndi.label(core)
    if n == 0:
        brain = tissue
    else:
        sizes = ndi.sum(core, labels, index=range(1, n + 1))
        brain = ndi.binary_dilation(labels == 1 + int(np.argmax(sizes)), structure, iterations=radius) & tissue
        brain = ndi.binary_fill_holes(ndi.binary_closing(brain, structure, iterations=radius))
    if keep is not None:
        brain = brain | (keep > 0)
    return brain.astype(bool)


def skull_strip(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
    """Everything outside the estimated brain set to the image minimum (as brain-extraction tools do)."""
    brain = brain_mask(pixels, keep=mask)
    return np.where(brain, pixels, pixels.min()).astype(np.float32), mask


def zscore_brain(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
    """Skull-stripped, then z-scored inside the brain with a background of exactly 0 (challenge-data style:
    dark tissue ends up *below* the background)."""
    brain = brain_mask(pixels, keep=mask)
    values = pixels[brain]
    z = (pixels - values.mean()) / max(float(values.std()), 1e-6)
    return np.where(brain, z, 0.0).astype(np.float32), mask


def zscore(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
    """Whole-image z-score as float (a linear change: the preprocessing should undo it)."""
    return ((pixels - pixels.mean()) / max(float(pixels.std()), 1e-6)).astype(np.float32), mask


def to_16bit(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
    """The slice stretched over a 12-to-16-bit scanner range."""
    lo, hi = float(pixels.min()), float(pixels.max())
    return np.round((pixels - lo) / max(hi - lo, 1e-6) * 40000 + 1000).astype(np.float32), mask


def gamma(value: float) -> Shift:
    def apply(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
        lo, hi = float(pixels.min()), float(pixels.max())
        unit = (pixels - lo) / max(hi - lo, 1e-6)
        return (unit**value * (hi - lo) + lo).astype(np.float32), mask

    apply.__doc__ = f"Intensity gamma {value:g} (another windowing/contrast curve)."
    return apply


def zoom(factor: float) -> Shift:
    """``factor`` > 1: the field of view cropped about the centre (tighter); < 1: padded (looser)."""

    def apply(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
        h, w = pixels.shape
        if factor >= 1:
            ch, cw = round(h / factor), round(w / factor)
            top, left = (h - ch) // 2, (w - cw) // 2
            return pixels[top : top + ch, left : left + cw].copy(), mask[top : top + ch, left : left + cw].copy()
        ph, pw = round(h * (1 / factor - 1) / 2), round(w * (1 / factor - 1) / 2)
        return (
            np.pad(pixels, ((ph, ph), (pw, pw)), constant_values=float(pixels.min())),
            np.pad(mask, ((ph, ph), (pw, pw))),
        )

    return apply


def rotate90(k: int) -> Shift:
    def apply(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
        return np.rot90(pixels, k).copy(), np.rot90(mask, k).copy()

    return apply


def flip_vertical(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
    return pixels[::-1].copy(), mask[::-1].copy()


def bias_field(strength: float) -> Shift:
    """A smooth multiplicative field, from ``1 - strength`` to ``1 + strength`` across the slice."""

    def apply(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
        rng = rng or np.random.default_rng(0)
        h, w = pixels.shape
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        a, b, c = rng.uniform(-1, 1, 3)
        field = a * (xx - 0.5) + b * (yy - 0.5) + c * ((xx - 0.5) * (yy - 0.5) * 4)
        field = 1 + strength * field / max(float(np.abs(field).max()), 1e-6)
        return (pixels * field).astype(np.float32), mask

    return apply


def noise(relative_std: float) -> Shift:
    """Gaussian noise with a standard deviation relative to the slice's intensity range."""

    def apply(pixels: np.ndarray, mask: np.ndarray, rng: np.random.Generator | None = None) -> Pair:
        rng = rng or np.random.default_rng(0)
        spread = float(pixels.max() - pixels.min())
        return (pixels + rng.normal(0, relative_std * spread, pixels.shape)).astype(np.float32), mask

    return apply


#: The shifts ``braintumor shifts`` reports, by name.
SHIFTS: dict[str, Shift] = {
    "skull_stripped": skull_strip,
    "skull_stripped_zscored": zscore_brain,
    "zscored": zscore,
    "16bit": to_16bit,
    "gamma_0.5": gamma(0.5),
    "gamma_2": gamma(2.0),
    "zoom_in_1.4": zoom(1.4),
    "zoom_out_0.7": zoom(0.7),
    "rotate_90": rotate90(1),
    "flip_vertical": flip_vertical,
    "bias_field_0.4": bias_field(0.4),
    "noise_0.08": noise(0.08),
}
