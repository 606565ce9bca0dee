"""The tumor mask as a NIfTI volume that overlays its source in any NIfTI viewer.

The mask comes in the displayed geometry of ``read_nifti`` (the slice reoriented to RAS, then shown
radiologically); here that transform is inverted exactly, so the mask lands in the source array's own axes,
in the analysed slice, and is saved with the source's header (qform, sform, pixdim, units) as uint8."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # nibabel is imported where used (it is slow to import)
    from nibabel import Nifti1Header, Nifti1Image


def write_nifti_mask(source: Path, mask: np.ndarray, index: int, description: str, path: Path) -> None:
    """Write ``mask`` (the displayed slice ``index`` of ``source``) as a 0/1 uint8 volume shaped like the source,
    zero outside that slice."""
    import nibabel as nib

    klass, header = _header(source)
    shape = tuple(int(n) for n in header.get_data_shape())
    in_plane, n = shape[:2], shape[2] if len(shape) > 2 else 1  # the reader's axes: trailing singletons dropped
    ornt = nib.orientations.io_orientation(header.get_best_affine())  # the affine read_nifti reorients with
    plane = mask.T[::-1, ::-1]  # undo the radiological display: the two in-plane axes in R, A, S order
    canonical = np.expand_dims(plane, int(ornt[2, 0]))  # the slice axis back where the reader squeezed it
    to_source = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    slab = nib.orientations.apply_orientation(canonical, to_source)  # R, A, S → the source array's axes
    volume = np.zeros((*in_plane, n), np.uint8)
    volume[:, :, index] = slab[:, :, 0]
    header.set_data_dtype(np.uint8)
    header["cal_min"], header["cal_max"] = 0, 1
    header["descrip"] = description.encode("ascii", "replace")[:79]
    header["aux_file"] = b""
    nib.save(klass(volume.reshape(shape), None, header), path)  # an in-memory array is saved unscaled


def _header(source: Path) -> tuple[type[Nifti1Image], Nifti1Header]:
    """The image class and the bare header of ``source``, read as ``read_nifti`` reads it (gzip recognised by its
    content, not the suffix).  Only the header's bytes are read: not the data, and not the header extensions,
    which may carry the source's DICOM attributes while the mask needs its geometry only."""
    import nibabel as nib

    with open(source, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    with gzip.open(source) if compressed else open(source, "rb") as stream:
        head = stream.read(nib.Nifti2Header.sizeof_hdr)
    klass = nib.Nifti1Image if head[344:348] == b"n+1\x00" else nib.Nifti2Image
    return klass, klass.header_class.from_fileobj(io.BytesIO(head[: klass.header_class.sizeof_hdr]))
