"""Turning a slice into network input and network output back into the slice's geometry.

Numpy + Pillow only, so training (which caches inputs) and torch-free inference share one code path.
"""

from braintumor.preprocessing.geometry import (
    PREPROCESSING,
    Geometry,
    mask_to_input,
    output_to_image,
    scale_intensity,
    square_resize,
    to_model_input,
)

__all__ = [
    "PREPROCESSING",
    "Geometry",
    "mask_to_input",
    "output_to_image",
    "scale_intensity",
    "square_resize",
    "to_model_input",
]
