"""The tumor mask as a NIfTI volume that overlays its source in any NIfTI viewer.

The mask comes in the displayed geometry of ``read_nifti`` (the slice reoriented to RAS, then shown
radiologically); here that transform is inverted exactly, so the mask lands in the source array's own axes,
in the analysed slice, and is saved with the source's header (qform, sform, pixdim, units) as uint8.

The NIfTI reader keeps the image class and the bare header in ``Scan.source`` (``nifti_source``), so a mask is
made from the ``Scan`` alone, whether the slice came from a file or from an upload's bytes."""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from braintumor.imageio.scan import NiftiSource, Scan
from braintumor.imageio.writers import MaskError

if TYPE_CHECKING:
    from nibabel import Nifti1Header, Nifti1Image


def nifti_source(head: bytes) -> NiftiSource:
    """The image class and the bare header of a NIfTI file whose (uncompressed) first bytes are ``head``, at least
    the 540 of a NIfTI-2 header.  Only the header itself is kept: not the header extensions, which may carry the
    source's DICOM attributes while a mask needs the geometry only."""
    import nibabel as nib

    klass = nib.Nifti1Image if head[344:348] == b"n+1\x00" else nib.Nifti2Image
    header = klass.header_class.from_fileobj(io.BytesIO(head[: klass.header_class.sizeof_hdr]))
    return NiftiSource(klass, header)


def nifti_mask_bytes(scan: Scan, mask: np.ndarray, description: str) -> bytes:
    """``mask`` (the displayed slice of the NIfTI ``scan``) as a gzipped 0/1 uint8 volume shaped like the source,
    zero outside the analysed slice: the bytes of a ``.nii.gz`` file."""
    return volume_mask_bytes([scan], [mask], description)


def volume_mask_bytes(scans: Sequence[Scan], masks: Sequence[np.ndarray], description: str) -> bytes:
    """The masks of several displayed slices of one NIfTI file (a whole volume's, or one slice's), each put back
    in its slice of a volume shaped like the source, with the source's header: the bytes of a ``.nii.gz``."""
    import nibabel as nib

    source = scans[0].source if scans else None
    if not isinstance(source, NiftiSource) or any(s.source is not source for s in scans):
        raise MaskError("no NIfTI mask written: the slices were not read from one NIfTI file")
    klass, header = source.image_class, source.header.copy()  # the scan's own header stays as read
    shape = tuple(int(n) for n in header.get_data_shape())
    in_plane, n = shape[:2], shape[2] if len(shape) > 2 else 1  # the reader's axes: trailing singletons dropped
    ornt = nib.orientations.io_orientation(header.get_best_affine())  # the affine read_nifti reorients with
    to_source = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    volume = np.zeros((*in_plane, n), np.uint8)
    for scan, mask in zip(scans, masks, strict=True):
        plane = np.asarray(mask, np.uint8).T[::-1, ::-1]  # undo the radiological display: in-plane axes in RAS order
        canonical = np.expand_dims(plane, int(ornt[2, 0]))  # the slice axis back where the reader squeezed it
        slab = nib.orientations.apply_orientation(canonical, to_source)  # R, A, S → the source array's axes
        volume[:, :, scan.slice_index] = slab[:, :, 0]
    return _gzipped(klass(volume.reshape(shape), None, _mask_header(header, description)))


def affine_mask_bytes(masks: np.ndarray, affine_lps: np.ndarray, description: str) -> bytes:
    """A ``(slices, rows, cols)`` 0/1 mask placed by ``affine_lps`` (index ``(row, col, slice, 1)`` → DICOM patient
    coordinates in mm, as ``series.Volume.affine``) as a ``.nii.gz``'s bytes: a DICOM series' 3-D mask for NIfTI
    tools, its affine the series' own (converted to NIfTI's RAS), in both the sform and the qform."""
    import nibabel as nib

    data = np.ascontiguousarray(np.moveaxis(np.asarray(masks, np.uint8), 0, -1))  # (rows, cols, slices)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps  # LPS → RAS
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine, code="scanner")
    image.set_qform(affine, code="scanner")
    _mask_header(image.header, description)
    return _gzipped(image)


def _mask_header(header: Nifti1Header, description: str) -> Nifti1Header:
    header.set_data_dtype(np.uint8)
    header["cal_min"], header["cal_max"] = 0, 1
    header["descrip"] = description.encode("ascii", "replace")[:79]
    header["aux_file"] = b""
    return header


def _gzipped(image: Nifti1Image) -> bytes:
    # an in-memory array is saved unscaled; compresslevel 1 as nibabel's own .nii.gz; mtime 0: the same mask gives
    # the same bytes
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0)
