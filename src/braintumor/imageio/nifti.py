"""NIfTI through nibabel: 2-D or 3-D, a slice of the last axis, spacing from the header zooms."""

from __future__ import annotations

import gzip

import numpy as np

from braintumor.errors import ScanError
from braintumor.imageio.scan import Scan


def read_nifti(data: bytes, name: str, slice_index: int | None = None) -> Scan:
    import nibabel as nib

    if data.startswith(b"\x1f\x8b"):
        data = gzip.decompress(data)
    image = nib.Nifti1Image.from_bytes(data) if data[344:348] == b"n+1\x00" else nib.Nifti2Image.from_bytes(data)
    shape = image.shape
    while len(shape) > 2 and shape[-1] == 1:  # trailing singleton axes are not dimensions
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ScanError(name, f"NIfTI has {len(image.shape)} dimensions {tuple(image.shape)}; "
                              "expected a 2-D slice or a 3-D volume")
    zooms = image.header.get_zooms()
    volume = np.asanyarray(image.dataobj).reshape(shape)
    n = shape[2] if len(shape) == 3 else 1
    index = n // 2 if slice_index is None else int(slice_index)
    if not 0 <= index < n:
        raise ScanError(name, f"slice {index} out of range: the volume has {n} slices")
    plane = volume[:, :, index] if len(shape) == 3 else volume
    # array axes are (x, y): rotate so rows run top→bottom along y, columns along x
    pixels = np.rot90(np.asarray(plane, dtype=np.float32)).copy()
    spacing, source = None, "unknown"
    if len(zooms) >= 2 and all(np.isfinite(z) and z > 0 for z in zooms[:2]):
        spacing, source = (float(zooms[1]), float(zooms[0])), "NIfTI header (pixdim)"
    return Scan(pixels=pixels, name=name, spacing_mm=spacing, spacing_source=source, n_slices=n,
                slice_index=index, meta={"format": "NIfTI"})
