"""Pictures of a result: the slice with a red outline and translucent fill, and Grad-CAM heat maps."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from braintumor.inference.analyzer import Result

RED = np.array([255, 0, 0], dtype=np.float32)


def display_gray(pixels: np.ndarray) -> np.ndarray:
    """uint8 view of a slice, windowed to its 0.5–99.5 percentiles (estimated on every other row and column:
    4× cheaper, and a display window needs no more)."""
    sample = pixels[::2, ::2] if min(pixels.shape) >= 64 else pixels
    lo, hi = np.percentile(sample, [0.5, 99.5])
    scale = 255.0 / max(float(hi - lo), 1e-6)
    return np.clip((pixels - lo) * scale, 0, 255).astype(np.uint8)


def boundary(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` px of its edge (4-neighbourhood erosion)."""
    inner = mask.astype(bool)
    for _ in range(width):
        padded = np.pad(inner, 1)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask.astype(bool) & ~inner


def overlay(pixels: np.ndarray, mask: np.ndarray, text: str | None = None, alpha: float = 0.3) -> Image.Image:
    """RGB image: translucent red fill and a solid red contour, optional caption at the top."""
    rgb = np.repeat(display_gray(pixels)[..., None], 3, axis=2)
    m = mask.astype(bool)
    if m.any():  # blend only the tumor pixels
        rgb[m] = ((1 - alpha) * rgb[m] + alpha * RED).astype(np.uint8)
        rgb[boundary(m, width=max(1, round(max(mask.shape) / 256)))] = RED.astype(np.uint8)
    image = Image.fromarray(rgb)
    if text:
        _caption(image, text)
    return image


def heatmap(pixels: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """RGB image: the slice under a jet-like colour map of ``cam`` (values in [0, 1])."""
    gray = display_gray(pixels).astype(np.float32)[..., None]
    c = np.clip(cam, 0, 1)[..., None]
    colour = (
        np.concatenate(
            [
                np.clip(1.5 - np.abs(4 * c - 3), 0, 1),
                np.clip(1.5 - np.abs(4 * c - 2), 0, 1),
                np.clip(1.5 - np.abs(4 * c - 1), 0, 1),
            ],
            axis=2,
        )
        * 255
    )
    return Image.fromarray(((1 - alpha) * gray + alpha * colour).astype(np.uint8))


@lru_cache(maxsize=16)
def _font(size: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]:
    """The caption font (loaded once per size) and whether it has '²'."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size), True
    except OSError:  # no DejaVu on this system: Pillow's own font, which lacks '²'
        return ImageFont.load_default(size=size), False


def _caption(image: Image.Image, text: str) -> None:
    draw = ImageDraw.Draw(image)
    size = max(12, image.width // 32)
    font, has_squared = _font(size)
    if not has_squared:
        text = text.replace("²", "2")
    box = draw.textbbox((0, 0), text, font=font)
    draw.rectangle((0, 0, box[2] + 2 * (size // 3), box[3] + 2 * (size // 3)), fill=(0, 0, 0))
    draw.text((size // 3, size // 3), text, fill=(255, 255, 255), font=font)


def caption_of(result: Result) -> str:
    area = "area: needs pixel spacing" if result.area_cm2 is None else f"area {result.area_cm2:.2f} cm²"
    return f"{result.label} ({result.confidence:.0%}), {area}"
