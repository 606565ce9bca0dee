"""Which of the files given to ``analyze`` (or uploaded to the page) are whole scans, decided from their headers
alone.

A whole scan is analysed slice by slice and measured in 3-D (``inference.volume``): volume mode is automatic,
never asked for.  It is

- two or more DICOM files that share a SeriesInstanceUID (a series; in any folders, in any order),
- a multi-frame DICOM file with two or more frames,
- a NIfTI file with two or more slices, or
- a ``.zip`` (of a DICOM series, ``imageio.archive``).

Everything else (PNG, JPEG, Figshare ``.mat``, a lone DICOM slice, a 2-D NIfTI) is one slice, as before.  A file
whose header cannot be read is also left to the single-slice path, whose reader reports why in one line."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence

from braintumor.imageio.registry import sniff, suffix_of
from braintumor.imageio.series import Item

#: bytes read to recognise a file and read a NIfTI header (a NIfTI-2 header is 540 bytes)
_HEAD = 548


def split_whole_scans(items: Sequence[Item]) -> tuple[list[int], list[list[int]]]:
    """``(slices, scans)`` as indices into ``items``: the files analysed one by one, and the whole scans, each the
    indices of its files (a series' files in input order; ``read_series`` orders them by position), in the order
    their first file comes."""
    groups: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    slices: list[int] = []
    for i, item in enumerate(items):
        key, n = _peek(item, i)
        if key is None:
            slices.append(i)
            continue
        groups.setdefault(key, []).append(i)
        counts[key] = n
    scans = []
    for key, members in groups.items():
        if len(members) > 1 or counts[key] > 1:
            scans.append(members)
        else:
            slices.append(members[0])
    return sorted(slices), scans


def _peek(item: Item, index: int) -> tuple[str | None, int]:
    """The file's whole-scan key (a series UID, or the file itself for a multi-slice file) and its slice count;
    ``(None, 1)`` for a file that is not part of any whole scan or whose header cannot be read."""
    name = item[0] if isinstance(item, tuple) else str(item)
    own = f"file {index}"
    if suffix_of(name) == ".zip":
        return own, 2  # a zip stands for a series: read (or refused) as one
    try:
        if isinstance(item, tuple):
            stream: io.BufferedIOBase = io.BytesIO(item[1])
        else:
            stream = open(item, "rb")  # noqa: SIM115 (closed below)
        with stream:
            head = stream.read(_HEAD)
            fmt = sniff(head)
            if fmt == "nifti":
                return own, _nifti_slices(stream, head)
            if fmt == "dicom":
                stream.seek(0)
                return _dicom_key(stream, own)
    except Exception:  # any unreadable header: the single-slice path reports it in one line
        pass
    return None, 1


def _nifti_slices(stream: io.BufferedIOBase, head: bytes) -> int:
    import nibabel as nib

    if head.startswith(b"\x1f\x8b"):
        stream.seek(0)
        with gzip.GzipFile(fileobj=stream) as inflated:
            head = inflated.read(_HEAD)
    klass = nib.Nifti1Header if head[344:348] in (b"n+1\x00", b"ni1\x00") else nib.Nifti2Header
    shape = klass.from_fileobj(io.BytesIO(head[: klass.sizeof_hdr])).get_data_shape()
    return int(shape[2]) if len(shape) > 2 else 1


def _dicom_key(stream: io.BufferedIOBase, own: str) -> tuple[str | None, int]:
    import pydicom

    ds = pydicom.dcmread(stream, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "NumberOfFrames"])
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid:  # cannot be placed in a series: one slice (its middle frame), as the single-slice reader reads it
        return None, 1
    return (own, frames) if frames > 1 else (f"series {uid}", 1)
