"""The tumor mask in the source's own format, so imaging tools overlay it on the scan: one writer per format,
keyed by the registry's format names (``Scan.format``), each working from the ``Scan`` alone (the reader keeps
what the writer needs in ``Scan.source``), so an upload's bytes get the same masks as a file on disk.

``analyze --out`` writes them beside the PNG masks, the API returns them (``POST /analyze?mask=seg|nifti``) and
the web page offers them for download."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from braintumor.imageio.scan import Scan

if TYPE_CHECKING:
    from braintumor.imageio.series import Volume


class MaskError(ValueError):
    """No mask in the source's format can be made for this scan; ``str(err)`` is the one-line reason."""


@dataclass(frozen=True)
class MaskWriter:
    """How one format's mask is made and named."""

    kind: str  # the API's ``mask=`` value and its ``mask_<kind>`` field
    title: str  # what people call the file: "DICOM SEG"
    folder: str  # where ``analyze --out`` puts it, beside masks/ and overlays/
    suffix: str
    media_type: str
    encode: Callable[[Scan, np.ndarray, str], bytes]

    def to_bytes(self, scan: Scan, mask: np.ndarray, description: str) -> bytes:
        """The mask file's bytes; ``mask`` is 0/1 at the scan's size.  Raises ``MaskError`` with the reason when
        this scan cannot have one (a DICOM source without geometry, a resized scan)."""
        if scan.source is None:
            raise MaskError(
                f"no {self.title} written: the scan keeps nothing of its source file (resized, or built in code)"
            )
        if mask.shape != scan.shape:
            raise MaskError(f"no {self.title} written: the mask is {mask.shape} but the scan is {scan.shape}")
        return self.encode(scan, mask, description)

    def write(self, scan: Scan, mask: np.ndarray, description: str, path: Path) -> None:
        """The mask file at ``path`` (its folder is made); ``MaskError`` as for ``to_bytes``, and nothing written."""
        data = self.to_bytes(scan, mask, description)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _dicom_seg(scan: Scan, mask: np.ndarray, description: str) -> bytes:
    from braintumor.imageio.dicom_seg import dicom_seg_bytes  # highdicom is slow to import: only when used

    return dicom_seg_bytes(scan, mask, description)


def _nifti_mask(scan: Scan, mask: np.ndarray, description: str) -> bytes:
    from braintumor.imageio.nifti_mask import nifti_mask_bytes

    return nifti_mask_bytes(scan, mask, description)


#: registry format name → its mask writer; formats without one (PNG, JPEG, .mat, …) get the PNG mask only.
MASK_WRITERS: dict[str, MaskWriter] = {
    "dicom": MaskWriter("seg", "DICOM SEG", "seg", ".dcm", "application/dicom", _dicom_seg),
    "nifti": MaskWriter("nifti", "NIfTI mask", "masks", ".nii.gz", "application/gzip", _nifti_mask),
}
#: the API's ``mask=`` value → the registry format name whose writer makes it
MASK_KINDS = {writer.kind: fmt for fmt, writer in MASK_WRITERS.items()}


def mask_writer(scan: Scan) -> MaskWriter | None:
    """The writer for the scan's format, or None when the format has none."""
    return MASK_WRITERS.get(scan.format or "")


def mask_description(label: str | None, confidence: float | None) -> str:
    """What a mask file says about itself: the prediction it outlines."""
    if label is None or confidence is None:
        return "predicted tumor outline"
    return f"predicted {label} (confidence {confidence:.1%})"


def volume_masks(
    volume: Volume, masks: Sequence[np.ndarray], description: str, kinds: Sequence[str] | None = None
) -> tuple[dict[str, bytes], list[str]]:
    """A whole scan's 3-D mask files, by ``mask=`` kind: ``nifti`` (a NIfTI volume's in its own axes and header; a
    DICOM series' placed by its affine) and, for a DICOM series, ``seg`` (one multi-frame SEG referencing every
    source instance); only ``kinds`` when given.  ``masks`` are 0/1, one per slice in the volume's order.  Also
    returns, as warnings, why a file could not be made (geometry unknown, source without the identity a SEG
    needs)."""
    from braintumor.imageio.dicom_seg import series_seg_bytes
    from braintumor.imageio.nifti_mask import affine_mask_bytes, volume_mask_bytes

    files: dict[str, bytes] = {}
    warnings: list[str] = []
    if volume.format == "nifti":
        makers: dict[str, Callable[[], bytes]] = {"nifti": lambda: volume_mask_bytes(volume.slices, masks, description)}
    else:
        makers = {"seg": lambda: series_seg_bytes(volume.slices, masks, description)}
        if volume.affine is not None:
            affine = volume.affine
            makers["nifti"] = lambda: affine_mask_bytes(np.stack(masks), affine, description)
        elif kinds is None or "nifti" in kinds:
            warnings.append("no NIfTI mask written: the series' geometry (pixel spacing, positions) is unknown")
    for kind, make in makers.items():
        if kinds is not None and kind not in kinds:
            continue
        try:
            files[kind] = make()
        except MaskError as err:
            warnings.append(str(err))
    return files, warnings
