"""One entry point for every format: sniff the content, check it against the suffix, dispatch."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from braintumor.errors import ScanError
from braintumor.imageio.limits import MAX_FILE_BYTES, check_size
from braintumor.imageio.scan import Scan

Source = str | os.PathLike[str] | bytes
Reader = Callable[[bytes, str, int | None], Scan]

# suffix → format name; the reader for each format is imported lazily (pydicom, nibabel, h5py are slow)
_SUFFIX_FORMAT = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".mat": "matlab",
}
SUPPORTED_SUFFIXES = tuple(_SUFFIX_FORMAT)
RASTER_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
#: How people write the formats whose registry name is not already that (``Scan.meta["format"]``, messages).
_DISPLAY_NAMES = {"dicom": "DICOM", "nifti": "NIfTI", "matlab": "Figshare .mat"}


def format_name(fmt: str | None) -> str:
    """The display name of a registry format name: "dicom" → "DICOM", "PNG" → "PNG"."""
    return "unknown format" if fmt is None else _DISPLAY_NAMES.get(fmt, fmt)


def suffix_of(name: str) -> str:
    lower = name.lower()
    return ".nii.gz" if lower.endswith(".nii.gz") else Path(lower).suffix


def sniff(data: bytes) -> str | None:
    """The format the bytes really are, from their magic numbers (None when unrecognised).

    ``DICM`` at offset 128 wins: the DICOM preamble may hold another format's header (PS3.10 §7.1,
    "dual-personality" TIFF/DICOM files)."""
    if data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data.startswith(b"\x1f\x8b") or data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if data.startswith(b"MATLAB") or data[512:520] == b"\x89HDF\r\n\x1a\n" or data.startswith(b"\x89HDF"):
        return "matlab"
    return None


def _reader(fmt: str) -> Reader:
    if fmt in RASTER_FORMATS:
        from braintumor.imageio.raster import read_raster as reader
    elif fmt == "dicom":
        from braintumor.imageio.dicom import read_dicom as reader
    elif fmt == "nifti":
        from braintumor.imageio.nifti import read_nifti as reader
    else:
        from braintumor.imageio.matlab import read_figshare_mat as reader
    return reader


def load_scan(source: Source, name: str | None = None, slice_index: int | None = None) -> Scan:
    """Read a slice from a path, or from ``bytes`` plus its file ``name`` (the name picks the format).

    ``slice_index`` chooses the slice of a NIfTI volume or the frame of a multi-frame DICOM
    (default: the middle one).  Any problem raises ``ScanError("<file>: <reason>")``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "<bytes>"
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise ScanError(name, "no such file" if not path.exists() else "not a regular file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ScanError(name, f"file is larger than {MAX_FILE_BYTES >> 20} MB")
        data = path.read_bytes()
    if not data:
        raise ScanError(name, "file is empty")
    suffix = suffix_of(name)
    claimed = _SUFFIX_FORMAT.get(suffix)
    actual = sniff(data)
    if claimed is None and suffix:
        raise ScanError(name, f"unsupported file type {suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    if actual is None and claimed != "dicom":  # DICOM without the 128-byte preamble has no magic
        kind = "raster" if claimed in RASTER_FORMATS else claimed or "known"
        raise ScanError(name, f"content is not a {kind} image (unrecognised or corrupt data)")
    if claimed and actual and claimed != actual:
        raise ScanError(name, f"content is {actual} data but the extension {suffix!r} says {claimed}")
    fmt = actual or claimed
    assert fmt is not None  # neither a known suffix nor known content was refused above
    try:
        scan = _reader(fmt)(data, name, slice_index)
    except ScanError:
        raise
    except MemoryError:
        raise ScanError(name, "image too large to decode") from None
    except Exception as err:  # third-party decoders raise anything; the user gets one line
        raise ScanError(name, f"cannot read {fmt} data ({type(err).__name__}: {_first_line(err)})") from None
    return _checked(replace(scan, format=fmt, meta={**scan.meta, "format": format_name(fmt)}))


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else "no detail"


def _checked(scan: Scan) -> Scan:
    if scan.pixels.ndim != 2:
        raise ScanError(scan.name, f"expected a 2-D slice, got an array of shape {scan.pixels.shape}")
    check_size(scan.name, *scan.pixels.shape)
    if not np.isfinite(scan.pixels).all():
        raise ScanError(scan.name, "pixel data contains NaN or infinite values")
    return scan
