"""DICOM through pydicom: PixelSpacing, rescale, MONOCHROME1, multi-frame, compressed syntaxes.

Sizes are checked before decoding, a deflated dataset is inflated with a cap, and only the requested frame
of a multi-frame file is decoded.  The scan keeps, as ``Scan.source``, the reduced copy of the dataset a DICOM
SEG is made from (``dicom_seg.seg_source``: identity, geometry, required patient/study attributes; no pixels)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np

from braintumor.errors import ScanError
from braintumor.imageio.dicom_seg import seg_source
from braintumor.imageio.limits import check_declared_bytes, check_size, inflate
from braintumor.imageio.scan import LUMA, Scan

if TYPE_CHECKING:
    from pydicom import Dataset

_DEFLATED = "1.2.840.10008.1.2.1.99"


def read_dicom(data: bytes, name: str, slice_index: int | None = None) -> Scan:
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import pixel_array

    try:
        ds = _dataset(data, name)
    except InvalidDicomError:
        raise ScanError(name, "not a valid DICOM file") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ScanError(name, "DICOM file has no pixel data (not an image object)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    check_size(name, rows, cols)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if frames < 1 or samples not in (1, 3, 4):
        raise ScanError(name, f"implausible DICOM header: {frames} frames, {samples} samples per pixel")
    check_declared_bytes(name, rows * cols * frames * samples * max(1, bits // 8), "DICOM pixel data")
    index = frames // 2 if slice_index is None else int(slice_index)
    if not 0 <= index < frames:
        raise ScanError(name, f"frame {index} out of range: the file has {frames} frames")
    try:
        array = pixel_array(ds, index=index if frames > 1 else None)  # one frame decoded, not all of them
    except (NotImplementedError, RuntimeError) as err:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown") if hasattr(ds, "file_meta") else "unknown"
        name_of = getattr(syntax, "name", str(syntax))
        if "handler" in str(err).lower() or "plugin" in str(err).lower() or "decod" in str(err).lower():
            raise ScanError(
                name, f"compressed transfer syntax '{name_of}' needs a decoder: pip install 'braintumor[dicom-codecs]'"
            ) from None
        raise
    pixels = array.astype(np.float32)
    if samples == 3:
        pixels = pixels[..., :3] @ LUMA
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels  # inverted gray scale: high values are dark
    spacing, source = _spacing(ds)
    try:
        seg = seg_source(ds)
    except Exception:  # an attribute only a SEG needs is unreadable: the slice is still analysed, without a SEG
        seg = None
    return Scan(
        pixels=pixels.astype(np.float32),
        name=name,
        spacing_mm=spacing,
        spacing_source=source,
        n_slices=frames,
        slice_index=index,
        meta={"modality": str(ds.get("Modality", ""))},
        source=seg,
    )


def _dataset(data: bytes, name: str) -> Dataset:
    """The dataset; a Deflated Explicit VR Little Endian body is inflated here with the size cap (pydicom
    would inflate it whole, however large)."""
    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_dataset
    from pydicom.uid import ExplicitVRLittleEndian

    has_marker = data[128:132] == b"DICM"
    if has_marker:
        stream = io.BytesIO(data)
        stream.seek(132)
        meta = _read_file_meta_info(stream)
        if str(meta.get("TransferSyntaxUID", "")) == _DEFLATED:
            body = inflate(name, data[stream.tell() :], -15, "deflated DICOM dataset")
            ds = pydicom.dataset.FileDataset(
                name,
                read_dataset(io.BytesIO(body), is_implicit_VR=False, is_little_endian=True),
                file_meta=meta,
                preamble=data[:128],
            )
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # pixel data of a deflated file is native
            return ds
    return pydicom.dcmread(io.BytesIO(data), force=not has_marker)


def _spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str]:
    """PixelSpacing is (row spacing, column spacing), i.e. vertical then horizontal, in mm."""
    value = ds.get("PixelSpacing")
    for sequence in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(sequence)  # enhanced multi-frame objects keep it in their functional groups
        if value is None and groups and "PixelMeasuresSequence" in groups[0]:
            value = groups[0].PixelMeasuresSequence[0].get("PixelSpacing")
    if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
        return (float(value[0]), float(value[1])), "DICOM PixelSpacing"
    return None, "unknown"
