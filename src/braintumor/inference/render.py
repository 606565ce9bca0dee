"""Pictures of a result: the slice with a red outline and translucent fill, and Grad-CAM heat maps."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from braintumor.inference.results import Classification, Segmentation
from braintumor.inference.runtime import NO_AREA

if TYPE_CHECKING:
    from braintumor.inference.volume import VolumeResult


def display_gray(pixels: np.ndarray) -> np.ndarray:
    """uint8 view of a slice, windowed to its 0.5–99.5 percentiles (estimated on every other row and column:
    4× cheaper, and a display window needs no more)."""
    sample = pixels[::2, ::2] if min(pixels.shape) >= 64 else pixels
    lo, hi = np.percentile(sample, [0.5, 99.5])
    scale = 255.0 / max(float(hi - lo), 1e-6)
    gray: np.ndarray = np.clip((pixels - lo) * scale, 0, 255).astype(np.uint8)
    return gray


def boundary(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` px of its edge (4-neighbourhood erosion)."""
    inner = mask.astype(bool)
    for _ in range(width):
        padded = np.pad(inner, 1)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge: np.ndarray = mask.astype(bool) & ~inner
    return edge


#: Expert and predicted outlines where both are drawn (the page, the gallery): Okabe–Ito blue and orange, a pair
#: that stays distinct with every common colour-vision deficiency.
EXPERT_RGB, PREDICTED_RGB = (0, 114, 178), (230, 159, 0)

#: Overlay palette: 240 gray levels, 15 levels of the translucent red fill, and the red contour.  One byte per
#: pixel makes the PNG ~3× cheaper to encode than RGB (the largest cost of ``analyze --out``).
_GRAYS, _FILLS, _CONTOUR = 240, 15, 255


@lru_cache(maxsize=4)
def _palette(alpha: float) -> list[int]:
    grays = [round(i * 255 / (_GRAYS - 1)) for i in range(_GRAYS)]
    fills = [(k + 0.5) * 256 / _FILLS for k in range(_FILLS)]
    fill_rgb = [(round((1 - alpha) * g + alpha * 255), round((1 - alpha) * g), round((1 - alpha) * g)) for g in fills]
    return [c for g in grays for c in (g, g, g)] + [c for rgb in fill_rgb for c in rgb] + [255, 0, 0]


def overlay(pixels: np.ndarray, mask: np.ndarray, text: str | None = None, alpha: float = 0.3) -> Image.Image:
    """Palette image (mode "P"): translucent red fill and a solid red contour, optional caption at the top.
    Convert to RGB for formats without palettes (JPEG)."""
    gray = display_gray(pixels)
    index = (gray.astype(np.uint16) * (_GRAYS - 1) // 255).astype(np.uint8)
    m = mask.astype(bool)
    if m.any():  # blend only the tumor pixels
        index[m] = _GRAYS + (gray[m].astype(np.uint16) * _FILLS // 256).astype(np.uint8)
        index[boundary(m, width=max(1, round(max(mask.shape) / 256)))] = _CONTOUR
    image = Image.fromarray(index, mode="P")
    image.putpalette(_palette(alpha))
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
def font(size: int) -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]:
    """The caption font (loaded once per size) and whether it has '²'."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size), True
    except OSError:  # no DejaVu on this system: Pillow's own font, which lacks '²'
        return ImageFont.load_default(size=size), False


def _caption(image: Image.Image, text: str) -> None:
    draw = ImageDraw.Draw(image)
    size = max(12, image.width // 32)
    face, has_squared = font(size)
    if not has_squared:
        text = text.replace("²", "2")
    box = draw.textbbox((0, 0), text, font=face)
    black, white = (0, _GRAYS - 1) if image.mode == "P" else ((0, 0, 0), (255, 255, 255))  # palette indices
    draw.rectangle((0, 0, box[2] + 2 * (size // 3), box[3] + 2 * (size // 3)), fill=black)
    draw.text((size // 3, size // 3), text, fill=white, font=face)


def caption_of(result: Segmentation) -> str:
    """The overlay's caption: type and confidence (a model that classifies), then the area."""
    area = NO_AREA if result.area_cm2 is None else f"area {result.area_cm2:.2f} cm²"
    return f"{result.label} ({result.confidence:.0%}), {area}" if isinstance(result, Classification) else area


def montage(result: VolumeResult, columns: int = 4, tile: int = 256) -> Image.Image | None:
    """The tumor slices of a whole scan side by side (``columns`` a row, each ``tile`` px wide), outlined as
    ``overlay`` draws them and captioned with the slice number and its area; None when no slice holds tumor."""
    if not result.tumor_slices:
        return None
    tiles = []
    for k in result.tumor_slices:
        r = result.results[k]
        area = "" if r.area_cm2 is None else f", {r.area_cm2:.2f} cm²"
        image = overlay(r.scan.pixels, r.mask).convert("RGB")
        image = image.resize((tile, max(1, round(tile * image.height / image.width))))
        _caption(image, f"slice {k + 1}/{result.n_slices}{area}")  # after resizing: legible at the tile's size
        tiles.append(image)
    height = max(t.height for t in tiles)
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * height))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * tile, (i // columns) * height))
    return sheet
