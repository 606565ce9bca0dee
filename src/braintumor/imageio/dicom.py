"""DICOM through pydicom: PixelSpacing, rescale, MONOCHROME1, multi-frame, compressed syntaxes."""

from __future__ import annotations

import io

import numpy as np

from braintumor.errors import ScanError
from braintumor.imageio.registry import check_size
from braintumor.imageio.scan import LUMA, Scan


def read_dicom(data: bytes, name: str, slice_index: int | None = None) -> Scan:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not data[128:132] == b"DICM")
    except InvalidDicomError:
        raise ScanError(name, "not a valid DICOM file") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ScanError(name, "DICOM file has no pixel data (not an image object)")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    check_size(name, rows, cols)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        array = ds.pixel_array
    except (NotImplementedError, RuntimeError) as err:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
        name_of = getattr(syntax, "name", str(syntax))
        if "handler" in str(err).lower() or "plugin" in str(err).lower() or "decod" in str(err).lower():
            raise ScanError(name, f"compressed transfer syntax '{name_of}' needs a decoder: "
                                  "pip install 'braintumor[dicom-codecs]'") from None
        raise
    samples = int(ds.get("SamplesPerPixel", 1))
    if frames > 1:
        index = frames // 2 if slice_index is None else int(slice_index)
        if not 0 <= index < frames:
            raise ScanError(name, f"frame {index} out of range: the file has {frames} frames")
        array = array[index]
    else:
        index = 0
    pixels = array.astype(np.float32)
    if samples == 3:
        pixels = pixels[..., :3] @ LUMA
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels  # inverted gray scale: high values are dark
    spacing, source = _spacing(ds)
    return Scan(pixels=pixels.astype(np.float32), name=name, spacing_mm=spacing, spacing_source=source,
                n_slices=frames, slice_index=index, meta={"format": "DICOM", "modality": str(ds.get("Modality", ""))})


def _spacing(ds) -> tuple[tuple[float, float] | None, str]:
    """PixelSpacing is (row spacing, column spacing), i.e. vertical then horizontal, in mm."""
    value = ds.get("PixelSpacing")
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(sequence)  # enhanced multi-frame objects keep it in their functional groups
        if value is None and groups and "PixelMeasuresSequence" in groups[0]:
            value = groups[0].PixelMeasuresSequence[0].get("PixelSpacing")
    if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
        return (float(value[0]), float(value[1])), "DICOM PixelSpacing"
    return None, "unknown"
