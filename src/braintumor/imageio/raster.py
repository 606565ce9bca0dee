"""PNG, JPEG, BMP, TIFF through Pillow: any mode → one float32 gray channel, spacing unknown."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from braintumor.errors import ScanError
from braintumor.imageio.limits import MAX_PIXELS, check_size
from braintumor.imageio.scan import LUMA, Scan

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def read_raster(data: bytes, name: str, slice_index: int | None = None) -> Scan:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ScanError(name, "image dimensions exceed the decompression bomb limit") from None
        check_size(name, image.height, image.width)
        image.load()  # raises on truncated data
    return Scan(pixels=to_gray(image), name=name, meta={"colorful": _colorful(image)})


def to_gray(image: Image.Image) -> np.ndarray:
    """Gray float32 with the original value range (16-bit stays 16-bit); alpha is ignored."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("1", "CMYK", "YCbCr", "HSV", "LAB"):
        image = image.convert("RGB" if image.mode != "1" else "L")
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., 0] if image.mode == "LA" else array[..., :3].astype(np.float32) @ LUMA
    return array.astype(np.float32)


def _colorful(image: Image.Image) -> bool:
    """True for real colour content (RGB-encoded grayscale, common in MRI exports, is not)."""
    if image.mode not in ("RGB", "RGBA", "P"):
        return False
    rgb = np.asarray(image.convert("RGB").reduce(max(1, min(image.size) // 64)), dtype=np.int16)
    return float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean()) > 8.0
