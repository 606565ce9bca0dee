"""NIfTI through nibabel: a 2-D slice or one slice of a 3-D volume, shown as DICOM shows it.

The header is checked before any data is read; a ``.nii.gz`` is streamed, so only the bytes up to the
requested slice are ever inflated.  The slice is reoriented with the affine (nibabel's closest canonical
RAS orientation) and displayed in the radiological convention of DICOM viewers: patient right on the image's
left, anterior or superior at the top.  Spacing comes from ``pixdim`` converted from ``xyzt_units`` to mm.
The scan keeps the image class and bare header as ``Scan.source``: what a NIfTI mask of the slice is saved with.
"""

from __future__ import annotations

import gzip
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from braintumor.errors import ScanError
from braintumor.imageio.limits import check_declared_bytes, check_size
from braintumor.imageio.nifti_mask import nifti_source
from braintumor.imageio.scan import Scan

if TYPE_CHECKING:
    from nibabel import Nifti1Header  # Nifti2Header is a subclass

#: ``xyzt_units`` spatial codes (as nibabel names them) → mm
_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001}


def read_nifti(data: bytes, name: str, slice_index: int | None = None) -> Scan:
    import nibabel as nib
    from nibabel.fileholders import FileHolder

    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if data.startswith(b"\x1f\x8b") else io.BytesIO(data)
    head = stream.read(548)
    klass = nib.Nifti1Image if head[344:348] == b"n+1\x00" else nib.Nifti2Image
    header = klass.header_class.from_fileobj(io.BytesIO(head))
    shape = tuple(int(n) for n in header.get_data_shape())
    while len(shape) > 2 and shape[-1] == 1:  # trailing singleton axes are not dimensions
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ScanError(
            name,
            f"NIfTI has {len(header.get_data_shape())} dimensions {tuple(header.get_data_shape())}; "
            "expected a 2-D slice or a 3-D volume",
        )
    check_size(name, shape[1], shape[0])
    check_declared_bytes(name, int(np.prod(shape)) * header.get_data_dtype().itemsize, "NIfTI header")
    stream.seek(0)
    image = klass.from_file_map({"header": FileHolder(fileobj=stream), "image": FileHolder(fileobj=stream)})
    n = shape[2] if len(shape) == 3 else 1
    index = n // 2 if slice_index is None else int(slice_index)
    if not 0 <= index < n:
        raise ScanError(name, f"slice {index} out of range: the volume has {n} slices")
    ornt = nib.orientations.io_orientation(image.affine)
    normal = int(ornt[2, 0])
    pixels = display_plane(image.dataobj, shape, ornt, normal, index)
    spacing, source = _spacing(header, ornt, normal)
    return Scan(
        pixels=pixels,
        name=name,
        spacing_mm=spacing,
        spacing_source=source,
        n_slices=n,
        slice_index=index,
        meta={"orientation": "".join(nib.aff2axcodes(image.affine))},
        source=nifti_source(head),
    )


def display_plane(proxy: Any, shape: tuple[int, ...], ornt: np.ndarray, normal: int, k: int) -> np.ndarray:
    """Slice ``k`` of a NIfTI image's data (``shape``: its 2 or 3 dimensions, trailing singletons dropped) as
    float32 in radiological display: reoriented to R, A, S, columns right → left, rows anterior → posterior or
    superior → inferior. Reads that one slice only."""
    import nibabel as nib

    if len(proxy.shape) >= 3:  # (x, y, z) or (x, y, z, 1, …): one slab, the singleton axes indexed away
        slab = proxy[(slice(None), slice(None), slice(k, k + 1)) + (0,) * (len(proxy.shape) - 3)]
    else:
        slab = np.asanyarray(proxy)
    slab = np.asarray(slab, dtype=np.float32).reshape(shape[0], shape[1], 1)
    plane = np.squeeze(nib.orientations.apply_orientation(slab, ornt), axis=normal)
    return np.ascontiguousarray(plane[::-1, ::-1].T)


def _spacing(header: Nifti1Header, ornt: np.ndarray, normal: int) -> tuple[tuple[float, float] | None, str]:
    """(row, col) spacing in mm of the displayed plane, or unknown; unset units follow the common mm default."""
    zooms = list(header.get_zooms()[:3]) + [1.0] * (3 - len(header.get_zooms()[:3]))
    canonical = [0.0, 0.0, 0.0]
    for axis in range(3):
        canonical[int(ornt[axis, 0])] = float(zooms[axis])
    first, second = (a for a in range(3) if a != normal)
    pair = (canonical[second], canonical[first])
    if not all(np.isfinite(z) and z > 0 for z in pair):
        return None, "unknown"
    unit = header.get_xyzt_units()[0]
    if unit == "unknown":
        return pair, "NIfTI header (pixdim; xyzt_units not set, read as mm as most NIfTI tools do)"
    if unit not in _TO_MM:
        return None, "unknown"
    return (pair[0] * _TO_MM[unit], pair[1] * _TO_MM[unit]), f"NIfTI header (pixdim in {unit})"
