"""Which of the files given to ``analyze`` are whole scans, decided from their headers alone.

A whole scan is analysed slice by slice and measured in 3-D (``inference.volume``): volume mode is automatic,
never asked for.  It is

- two or more DICOM files that share a SeriesInstanceUID (a series; in any folders, in any order),
- a multi-frame DICOM file with two or more frames, or
- a NIfTI file with two or more slices.

Everything else (PNG, JPEG, Figshare ``.mat``, a lone DICOM slice, a 2-D NIfTI) is one slice, as before.  A file
whose header cannot be read is also left to the single-slice path, whose reader reports why in one line."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

from braintumor.imageio.registry import sniff

#: bytes read to recognise a file and read a NIfTI header (a NIfTI-2 header is 540 bytes)
_HEAD = 548


def split_whole_scans(paths: list[Path]) -> tuple[list[Path], list[list[Path]]]:
    """``(slices, scans)``: the files analysed one by one, and the whole scans, each a list of its files (a
    series' files in input order; ``read_series`` orders them by position), in the order their first file
    comes."""
    groups: dict[str, list[Path]] = {}
    counts: dict[str, int] = {}
    slices: list[Path] = []
    for path in paths:
        key, n = _peek(path)
        if key is None:
            slices.append(path)
            continue
        groups.setdefault(key, []).append(path)
        counts[key] = n
    scans = []
    for key, files in groups.items():
        if len(files) > 1 or counts[key] > 1:
            scans.append(files)
        else:
            slices.append(files[0])
    order = {p: i for i, p in enumerate(paths)}
    return sorted(slices, key=order.__getitem__), scans


def _peek(path: Path) -> tuple[str | None, int]:
    """The file's whole-scan key (a series UID, or the file itself for a multi-slice file) and its slice count;
    ``(None, 1)`` for a file that is not part of any whole scan or whose header cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
        fmt = sniff(head)
        if fmt == "nifti":
            return str(path), _nifti_slices(path, head)
        if fmt == "dicom":
            return _dicom_key(path)
    except Exception:  # any unreadable header: the single-slice path reports it in one line
        pass
    return None, 1


def _nifti_slices(path: Path, head: bytes) -> int:
    import nibabel as nib

    if head.startswith(b"\x1f\x8b"):
        with gzip.open(path, "rb") as f:
            head = f.read(_HEAD)
    klass = nib.Nifti1Header if head[344:348] in (b"n+1\x00", b"ni1\x00") else nib.Nifti2Header
    shape = klass.from_fileobj(io.BytesIO(head[: klass.sizeof_hdr])).get_data_shape()
    return int(shape[2]) if len(shape) > 2 else 1


def _dicom_key(path: Path) -> tuple[str | None, int]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "NumberOfFrames"])
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid:  # cannot be placed in a series: one slice (its middle frame), as the single-slice reader reads it
        return None, 1
    return (str(path), frames) if frames > 1 else (f"series {uid}", 1)
