"""The ``Scan``: one 2-D slice, its physical pixel size and where that size came from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:  # pydicom and nibabel are imported where used (they are slow to import)
    from nibabel import Nifti1Header, Nifti1Image
    from pydicom import Dataset

#: ITU-R BT.601 weights: colour-encoded slices (RGB PNG, RGB DICOM) → one gray channel.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class DicomSource:
    """What a DICOM SEG of the slice takes from its source file: a reduced copy of the dataset (identity, geometry
    and the patient/study attributes a SEG must carry; no pixel data), see ``dicom_seg.seg_source``."""

    dataset: Dataset


@dataclass(frozen=True)
class NiftiSource:
    """What a NIfTI mask of the slice takes from its source file: the image class (NIfTI-1 or -2) and the bare
    header (geometry, units; no data scaling is applied to a mask, and no header extensions are kept)."""

    image_class: type[Nifti1Image]  # Nifti2Image is a subclass
    header: Nifti1Header  # Nifti2Header is a subclass; writers change a copy, never this one


@dataclass(frozen=True)
class Scan:
    """A 2-D float32 slice with in-plane spacing ``(row, col)`` in mm, or ``None`` when unknown.

    ``format`` is the registry's name of the file's format ("PNG", "dicom", "nifti", … as in
    ``registry.sniff``; None for a slice not read from a file), and ``source`` what a mask in that format
    (``writers.MASK_WRITERS``) needs from the file, so a mask can be written without the file's path."""

    pixels: np.ndarray
    name: str
    spacing_mm: tuple[float, float] | None = None
    spacing_source: str = "unknown"
    n_slices: int = 1  # slices/frames in the file (NIfTI volume, multi-frame DICOM)
    slice_index: int = 0
    mask: np.ndarray | None = None  # expert mask carried by the file (Figshare .mat)
    # non-identifying facts (format's display name, label, patient id…)
    meta: dict[str, Any] = field(default_factory=dict)
    format: str | None = None
    source: DicomSource | NiftiSource | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape

    def with_spacing(self, spacing_mm: float | tuple[float, float] | None, source: str) -> Scan:
        if spacing_mm is None:
            return replace(self, spacing_mm=None, spacing_source="unknown")
        return replace(self, spacing_mm=as_spacing(spacing_mm), spacing_source=source)

    def resized(self, height: int, width: int) -> Scan:
        """Resample to ``height × width``; the spacing is rescaled so physical size is preserved.  The source is
        dropped: a mask at the new size no longer lies on the file's pixels."""
        from PIL import Image

        h, w = self.shape
        pixels = np.asarray(Image.fromarray(self.pixels).resize((width, height), Image.Resampling.BILINEAR))
        mask = None
        if self.mask is not None:
            mask = np.asarray(
                Image.fromarray(self.mask.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST)
            )
        spacing = None
        if self.spacing_mm is not None:
            spacing = (self.spacing_mm[0] * h / height, self.spacing_mm[1] * w / width)
        return replace(self, pixels=pixels, mask=mask, spacing_mm=spacing, source=None)


def as_spacing(value: float | tuple[float, float] | list[float]) -> tuple[float, float]:
    """``0.49`` or ``(0.49, 0.49)`` → ``(row, col)`` floats; refuses non-positive or non-finite values."""
    # np.isscalar: a number, a NumPy scalar or a numeric string (it narrows neither branch for mypy, hence the casts)
    numbers = (
        [float(cast(float, value))] * 2 if np.isscalar(value) else [float(v) for v in cast(Iterable[float], value)]
    )
    if len(numbers) != 2 or not all(np.isfinite(v) and v > 0 for v in numbers):
        raise ValueError(f"pixel spacing must be one or two positive numbers in mm, got {value!r}")
    return numbers[0], numbers[1]


def area_cm2(pixels: int, spacing_mm: tuple[float, float]) -> float:
    """Area of ``pixels`` pixels of ``row × col`` mm, in cm²."""
    return float(pixels) * spacing_mm[0] * spacing_mm[1] / 100.0
