"""Whole scans: DICOM files assembled into series, a multi-frame DICOM or a 3-D NIfTI read as one ``Volume``.

An MRI exam is a series of slices: DICOM files that share a SeriesInstanceUID (or the frames of one multi-frame
file), or one NIfTI volume.  ``read_series`` groups DICOM files by SeriesInstanceUID and orders each series by
ImagePositionPatient projected on the slice normal (the cross product of ImageOrientationPatient's row and column
cosines): never by file name or InstanceNumber, which scanners and exports number as they like.  The slice
spacing comes from those positions, not from SliceThickness (slices may overlap or have gaps between them).

A series is refused, as one ``ScanError`` line naming the files, when it cannot be one volume: it mixes
orientations, pixel spacings, image sizes or frames of reference, two slices lie at the same position, or its
slices cannot be placed (no position or orientation).  Uneven spacing between consecutive slices (a missing
slice, a stack of two acquisitions) is *reported* in ``Volume.gaps``, never hidden.

Every file goes through the same reading policy as a single slice (``load_scan``: suffix against content, file
size, declared sizes, decompression caps), and one read assembles at most ``MAX_SLICES`` slices, counted before
their pixels are decoded."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np

from braintumor.errors import ScanError
from braintumor.imageio.limits import MAX_FILE_BYTES, check_declared_bytes, check_size
from braintumor.imageio.registry import format_name, load_scan, sniff, suffix_of
from braintumor.imageio.scan import LUMA, DicomSource, Scan

if TYPE_CHECKING:
    from pydicom import Dataset

#: Most slices one ``read_series``/``read_volume`` call assembles, all series together (a web server reads
#: strangers' uploads: 1000 slices of 512×512 float32 are already 1 GB).  Clinical brain series have 20–300.
MAX_SLICES = 1000
#: Two slices closer than this along the normal (mm) lie at the same position (DICOM decimal strings carry
#: positions to about 1e-4 mm).
DUPLICATE_TOLERANCE_MM = 0.01
#: A step between consecutive slices that differs from the series' regular step by more than this fraction is
#: uneven (a gap): scanners write positions rounded to ~0.01 mm, so 5 % is far above rounding noise.
GAP_TOLERANCE = 0.05
#: Direction cosines that differ by more than this are different orientations (about 0.06°).
ORIENTATION_TOLERANCE = 1e-3
#: Pixel spacings that differ by more than this fraction are different spacings.
SPACING_TOLERANCE = 1e-3
#: Patient coordinates: NIfTI's RAS (+x right, +y anterior) → DICOM's LPS (+x left, +y posterior).
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: ``xyzt_units`` spatial codes (as nibabel names them) → mm, as ``nifti.read_nifti`` converts them
_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}

T = TypeVar("T")

#: A file for ``read_series``: a path, or ``(name, bytes)`` as an upload gives it (the name picks the format).
Item = str | os.PathLike[str] | tuple[str, bytes]


@dataclass(frozen=True, eq=False)
class Volume:
    """A whole scan: its slices in order, where they lie, and how far apart.

    ``slices`` are the ``Scan``s a single-slice read of the same file (and frame or slice index) gives, unchanged:
    same pixels, spacing, name, ``slice_index`` and ``source``, so each one can be analysed, and its mask written,
    exactly as on the 2-D path.  A DICOM series is ordered by position along the slice normal (ascending); a NIfTI
    volume keeps its own slice order (``slices[k]`` is ``load_scan(file, slice_index=k)``).

    ``affine`` maps an index ``(row, col, slice, 1)`` (``slices[slice].pixels[row, col]``) to patient coordinates in
    mm in DICOM's LPS convention (a NIfTI's RAS affine is converted), or is None when the in-plane spacing or the
    geometry is unknown.  For one slice its third column is the unit normal (there is no slice spacing).

    ``slice_spacing_mm`` is the regular step between slices, from their positions (the lower median of the steps:
    a missing slice does not change it), None for one slice.  ``gaps`` are the indices ``i`` where the step from
    slice ``i`` to ``i + 1`` differs from it by more than ``GAP_TOLERANCE``; ``slice_positions_mm`` are the slices'
    positions along the normal, relative to the first one."""

    name: str
    slices: tuple[Scan, ...]
    spacing_mm: tuple[float, float] | None  # in-plane (row, col)
    slice_spacing_mm: float | None
    affine: np.ndarray | None = None
    spacing_source: str = "unknown"
    format: str | None = None  # the registry's name: "dicom" or "nifti"
    series_uid: str | None = None
    instance_uids: tuple[str, ...] = ()  # SOPInstanceUID of each slice (a multi-frame file's repeats per frame)
    gaps: tuple[int, ...] = ()
    slice_positions_mm: tuple[float, ...] = ()

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, cols)``."""
        rows, cols = self.slices[0].shape
        return len(self.slices), rows, cols

    @property
    def voxel_mm3(self) -> float | None:
        """Row × column × slice spacing in mm³, or None when any of them is unknown."""
        if self.spacing_mm is None or self.slice_spacing_mm is None:
            return None
        return self.spacing_mm[0] * self.spacing_mm[1] * self.slice_spacing_mm

    @property
    def origin(self) -> np.ndarray | None:
        """Patient position (LPS, mm) of the centre of the first pixel of the first slice."""
        return None if self.affine is None else self.affine[:3, 3].copy()

    @property
    def orientation(self) -> np.ndarray | None:
        """3×3 matrix whose columns are the unit directions (LPS) of increasing row, column and slice index."""
        if self.affine is None:
            return None
        axes = self.affine[:3, :3]
        unit: np.ndarray = axes / np.linalg.norm(axes, axis=0)
        return unit

    def array(self) -> np.ndarray:
        """The slices stacked as one ``(slices, rows, cols)`` float32 array (a copy)."""
        return np.stack([s.pixels for s in self.slices]).astype(np.float32, copy=False)


class _Slice(NamedTuple):
    """One DICOM slice (a file, or one frame of a multi-frame file) and what places it in its series."""

    scan: Scan
    series_uid: str
    instance_uid: str
    frame_of_reference: str
    position: np.ndarray | None  # ImagePositionPatient (LPS mm)
    orientation: np.ndarray | None  # ImageOrientationPatient: row cosines, then column cosines
    spacing: tuple[float, float] | None


def read_volume(source: str | os.PathLike[str] | bytes, name: str | None = None) -> Volume:
    """One file as a ``Volume``: a 2-D or 3-D NIfTI, or a DICOM file (all the frames of a multi-frame one, placed
    by their per-frame positions).  Bytes need their file ``name`` (it picks the format).  Any problem raises
    ``ScanError``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        item: Item = (name or "<bytes>", bytes(source))
    else:
        item = (name or str(source), file_bytes(Path(source), name or str(source)))
    volumes = read_series([item])
    assert len(volumes) == 1, "one file is one volume"
    return volumes[0]


def read_series(items: Iterable[Item]) -> list[Volume]:
    """The volumes in a set of files, in the order their first file comes: DICOM files grouped by
    SeriesInstanceUID and ordered by position along the slice normal; each NIfTI file a volume of its own.

    Items are paths or ``(name, bytes)`` pairs, taken one at a time (an iterator is never held whole, so a zip's
    members are inflated one by one).  A file that cannot be read, a 2-D format (PNG, JPEG, …), a series that is
    not one volume (see the module's docstring) or more than ``MAX_SLICES`` slices in all raise ``ScanError``: one
    line, naming the file or the series."""
    volumes: list[Volume | str] = []  # a NIfTI volume, or the series UID a DICOM series will take this place
    series: dict[str, list[_Slice]] = {}
    total = 0
    for count, item in enumerate(items, 1):
        if count > MAX_SLICES:  # every file holds a slice at least: refused before it is read
            name = item[0] if isinstance(item, tuple) else str(item)
            raise ScanError(name, _too_many(count))
        name, data = item if isinstance(item, tuple) else (str(item), file_bytes(Path(item), str(item)))
        if not data:
            raise ScanError(name, "file is empty")
        if sniff(data) == "nifti" and suffix_of(name) in (".nii", ".nii.gz", ""):
            volume = _guarded(name, "nifti", _nifti_volume, data, name, MAX_SLICES - total)
            total += volume.n_slices
            volumes.append(volume)
            continue
        first = load_scan(data, name, slice_index=0)  # the single-slice reading policy, and its one-line errors
        if first.format != "dicom":
            raise ScanError(name, f"{format_name(first.format)} is a 2-D image format: a volume is DICOM or NIfTI")
        if total + first.n_slices > MAX_SLICES:
            raise ScanError(name, _too_many(total + first.n_slices))
        slices = _guarded(name, "dicom", _dicom_slices, data, name, first)
        total += len(slices)
        for s in slices:
            if s.series_uid not in series:
                series[s.series_uid] = []
                volumes.append(s.series_uid)
            series[s.series_uid].append(s)
    return [v if isinstance(v, Volume) else _assemble(v, series[v]) for v in volumes]


def _too_many(n: int) -> str:
    return f"{n} slices: one read assembles at most {MAX_SLICES} (braintumor.imageio.series.MAX_SLICES)"


def file_bytes(path: Path, name: str) -> bytes:
    """The file's bytes, with the checks ``load_scan`` makes before reading a path."""
    if not path.is_file():
        raise ScanError(name, "no such file" if not path.exists() else "not a regular file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ScanError(name, f"file is larger than {MAX_FILE_BYTES >> 20} MB")
    return path.read_bytes()


def _guarded(name: str, fmt: str, read: Callable[..., T], *args: Any) -> T:
    """``read(*args)``, with any decoder's exception turned into the registry's one-line ``ScanError``."""
    try:
        return read(*args)
    except ScanError:
        raise
    except MemoryError:
        raise ScanError(name, "image too large to decode") from None
    except Exception as err:  # third-party decoders raise anything; the user gets one line
        lines = str(err).strip().splitlines()
        detail = lines[0][:200] if lines else "no detail"
        raise ScanError(name, f"cannot read {fmt} data ({type(err).__name__}: {detail})") from None


def _checked_pixels(name: str, pixels: np.ndarray) -> np.ndarray:
    if not np.isfinite(pixels).all():
        raise ScanError(name, "pixel data contains NaN or infinite values")
    return pixels


# --- NIfTI ----------------------------------------------------------------------------------------------------


def _nifti_volume(data: bytes, name: str, budget: int) -> Volume:
    """Every slice of a NIfTI file, each exactly as ``read_nifti`` shows it (reoriented to RAS, displayed
    radiologically), read one slice at a time (a ``.nii.gz`` is inflated once, front to back)."""
    import nibabel as nib
    from nibabel.fileholders import FileHolder

    from braintumor.imageio.nifti import _spacing, display_plane
    from braintumor.imageio.nifti_mask import nifti_source

    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if data.startswith(b"\x1f\x8b") else io.BytesIO(data)
    head = stream.read(548)
    klass = nib.Nifti1Image if head[344:348] == b"n+1\x00" else nib.Nifti2Image
    header = klass.header_class.from_fileobj(io.BytesIO(head))
    full = tuple(int(n) for n in header.get_data_shape())
    shape = full
    while len(shape) > 2 and shape[-1] == 1:  # trailing singleton axes are not dimensions
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ScanError(name, f"NIfTI has {len(full)} dimensions {full}; expected a 2-D slice or a 3-D volume")
    check_size(name, shape[1], shape[0])
    check_declared_bytes(name, int(np.prod(shape)) * header.get_data_dtype().itemsize, "NIfTI header")
    n = shape[2] if len(shape) == 3 else 1
    if n > budget:
        raise ScanError(name, _too_many(MAX_SLICES - budget + n))
    stream.seek(0)
    image = klass.from_file_map({"header": FileHolder(fileobj=stream), "image": FileHolder(fileobj=stream)})
    ornt = nib.orientations.io_orientation(image.affine)
    normal = int(ornt[2, 0])
    spacing, spacing_source = _spacing(header, ornt, normal)
    meta = {"orientation": "".join(nib.aff2axcodes(image.affine)), "format": format_name("nifti")}
    source = nifti_source(head)
    slices = []
    for k in range(n):
        pixels = _checked_pixels(name, display_plane(image.dataobj, shape, ornt, normal, k))
        slices.append(
            Scan(
                pixels=pixels,
                name=name,
                spacing_mm=spacing,
                spacing_source=spacing_source,
                n_slices=n,
                slice_index=k,
                meta=dict(meta),
                format="nifti",
                source=source,
            )
        )
    unit = _TO_MM.get(header.get_xyzt_units()[0])
    zooms = header.get_zooms()
    step = float(zooms[2]) * unit if unit is not None and len(zooms) > 2 and n > 1 else None
    if step is not None and not (np.isfinite(step) and step > 0):
        step = None
    affine = None
    if spacing is not None and unit is not None:
        scaled = np.array(image.affine, dtype=np.float64)
        scaled[:3] *= unit
        affine = _RAS_TO_LPS @ scaled @ _display_to_array(ornt, shape[:2])
        if step is None:  # one slice: the third column is the unit normal
            affine[:3, 2] /= np.linalg.norm(affine[:3, 2]) or 1.0
    return Volume(
        name=name,
        slices=tuple(slices),
        spacing_mm=spacing,
        slice_spacing_mm=step,
        affine=affine,
        spacing_source=spacing_source,
        format="nifti",
        slice_positions_mm=tuple(k * (step or 0.0) for k in range(n)),
    )


def _display_to_array(ornt: np.ndarray, in_plane: tuple[int, ...]) -> np.ndarray:
    """4×4 matrix: displayed index ``(row, col, slice, 1)`` → the file's array index ``(i, j, k, 1)``.

    ``read_nifti`` flips each array axis to point R, A or S (``ornt``), keeps the two in-plane axes in RAS order
    (``first``, ``second``) and shows ``plane[::-1, ::-1].T``: the column runs back along ``first``, the row back
    along ``second``; the slice is the array's third axis, unflipped."""
    to_array = np.zeros((4, 4))
    to_array[2, 2] = to_array[3, 3] = 1.0
    normal = int(ornt[2, 0])
    first, second = (axis for axis in range(3) if axis != normal)
    for displayed, canonical in ((1, first), (0, second)):  # column, row
        axis = next(a for a in (0, 1) if int(ornt[a, 0]) == canonical)
        if ornt[axis, 1] > 0:  # not flipped by the reorientation: the display runs it backwards
            to_array[axis, displayed], to_array[axis, 3] = -1.0, in_plane[axis] - 1.0
        else:
            to_array[axis, displayed] = 1.0
    return to_array


# --- DICOM ----------------------------------------------------------------------------------------------------


def _dicom_slices(data: bytes, name: str, first: Scan) -> list[_Slice]:
    """The slices of one DICOM file: the file itself, or each frame of a multi-frame file (frame 0 as
    ``load_scan`` read it, the others decoded here from one parse, by the same rules as ``read_dicom``)."""
    from braintumor.imageio.dicom import _dataset

    if first.n_slices == 1:
        ds = first.source.dataset if isinstance(first.source, DicomSource) else _dataset(data, name)
        enhanced = "PerFrameFunctionalGroupsSequence" in ds  # a one-frame enhanced image: placed by its groups
        return [_placed(name, ds, first, 0 if enhanced else None)]
    ds = _dataset(data, name)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != first.n_slices:
        raise ScanError(
            name,
            f"multi-frame DICOM ({first.n_slices} frames) without a PerFrameFunctionalGroupsSequence item per "
            "frame: its frames cannot be placed",
        )
    return [_placed(name, ds, scan, i) for i, scan in enumerate(_frames(name, ds, first))]


def _frames(name: str, ds: Dataset, first: Scan) -> list[Scan]:
    """Every frame as a ``Scan`` like ``read_dicom`` makes it (rescale, MONOCHROME1, colour to gray)."""
    from pydicom.pixels import pixel_array

    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    inverted = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    scans = [first]
    for index in range(1, first.n_slices):
        pixels = pixel_array(ds, index=index).astype(np.float32)
        if samples == 3:
            pixels = pixels[..., :3] @ LUMA
        pixels = pixels * slope + intercept
        if inverted:
            pixels = pixels.max() + pixels.min() - pixels
        pixels = _checked_pixels(name, pixels.astype(np.float32))
        scans.append(replace(first, pixels=pixels, slice_index=index))
    return scans


def _placed(name: str, ds: Dataset, scan: Scan, frame: int | None) -> _Slice:
    """The slice with its series, identity and geometry (a frame's from its functional groups)."""
    series_uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not series_uid:
        raise ScanError(name, "DICOM file has no SeriesInstanceUID: it cannot be placed in a series")
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    spacing = scan.spacing_mm
    if frame is not None:
        shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
        item = ds.PerFrameFunctionalGroupsSequence[frame]
        position = _group_value(item, shared, "PlanePositionSequence", "ImagePositionPatient", per_frame_only=True)
        orientation = _group_value(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient") or orientation
        own = _group_value(item, None, "PixelMeasuresSequence", "PixelSpacing")  # a frame's own spacing, if any
        if own is not None:
            row, col = _numbers(name, own, 2, "PixelSpacing")
            spacing = (row, col)
    return _Slice(
        scan=scan,
        series_uid=series_uid,
        instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
        frame_of_reference=str(ds.get("FrameOfReferenceUID", "") or ""),
        position=None if position is None else np.array(_numbers(name, position, 3, "ImagePositionPatient")),
        orientation=None if orientation is None else _cosines(name, orientation),
        spacing=spacing,
    )


def _group_value(
    item: Dataset, shared: Dataset | None, sequence: str, keyword: str, per_frame_only: bool = False
) -> Any:
    """``keyword`` of a multi-frame's per-frame functional group item, else of the shared one (None: neither)."""
    for group in (item,) if per_frame_only or shared is None else (item, shared):
        if sequence in group and len(group[sequence].value) and keyword in group[sequence].value[0]:
            return group[sequence].value[0].get(keyword)
    return None


def _numbers(name: str, value: Any, count: int, keyword: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or not all(np.isfinite(numbers)):
        raise ScanError(name, f"{keyword} is not {count} numbers: {str(value)[:80]!r}")
    return numbers


def _cosines(name: str, value: Any) -> np.ndarray:
    """ImageOrientationPatient: two orthogonal unit vectors (row, then column direction), normalised."""
    numbers = np.array(_numbers(name, value, 6, "ImageOrientationPatient")).reshape(2, 3)
    norms = np.linalg.norm(numbers, axis=1)
    if not (np.all(np.abs(norms - 1) < 0.01) and abs(float(numbers[0] @ numbers[1])) < 0.01):
        raise ScanError(name, f"ImageOrientationPatient {list(numbers.ravel())} is not two orthogonal unit vectors")
    cosines: np.ndarray = (numbers / norms[:, None]).ravel()
    return cosines


def _assemble(series_uid: str, slices: list[_Slice]) -> Volume:
    """One series as a volume, or ``ScanError`` saying why it is not one."""
    names = list(dict.fromkeys(s.scan.name for s in slices))
    common = _common(names) if len(names) > 1 else ""
    title = common or (names[0] if len(names) == 1 else f"{names[0]} …")

    def files(group: list[_Slice]) -> str:  # the files in a message, relative to the series' folder
        shown = list(dict.fromkeys(_slice_label(s, common) for s in group))
        more = f" and {len(shown) - 2} more" if len(shown) > 2 else ""
        return ", ".join(shown[:2]) + more

    def refuse(reason: str) -> ScanError:
        return ScanError(title, f"series {series_uid} ({len(slices)} slices) {reason}")

    def mixed(what: str, key: Callable[[_Slice], object]) -> ScanError:
        groups: dict[object, list[_Slice]] = {}
        for s in slices:
            groups.setdefault(key(s), []).append(s)
        shown = "; ".join(f"{k} in {files(g)}" for k, g in list(groups.items())[:3])
        return refuse(f"mixes {what}: {shown}; a volume has one")

    if len({s.scan.shape for s in slices}) > 1:
        raise mixed("image sizes", lambda s: f"{s.scan.shape[1]}×{s.scan.shape[0]} px")
    spacings = [s.spacing for s in slices]
    if any(not _close(a, spacings[0], SPACING_TOLERANCE, relative=True) for a in spacings):
        raise mixed("pixel spacings", lambda s: _rounded(s.spacing))
    if len({s.frame_of_reference for s in slices}) > 1:
        raise mixed("frames of reference", lambda s: s.frame_of_reference or "none")
    orientations = [s.orientation for s in slices]
    if any(not _close(o, orientations[0], ORIENTATION_TOLERANCE) for o in orientations):
        raise mixed("orientations", lambda s: _rounded(s.orientation, 3))
    spacing, orientation = slices[0].spacing, orientations[0]
    base = slices[0].scan
    if len(slices) == 1 and (orientation is None or slices[0].position is None):  # one slice needs no placing
        return Volume(
            name=title,
            slices=(base,),
            spacing_mm=spacing,
            slice_spacing_mm=None,
            spacing_source=base.spacing_source,
            format="dicom",
            series_uid=series_uid,
            instance_uids=(slices[0].instance_uid,),
            slice_positions_mm=(0.0,),
        )
    unplaced = [s for s in slices if s.position is None or s.orientation is None]
    if unplaced or orientation is None:
        missing = "ImagePositionPatient" if unplaced[0].position is None else "ImageOrientationPatient"
        raise refuse(f"has slices without {missing} ({files(unplaced)}): they cannot be ordered")
    row_cosines, col_cosines = orientation[:3], orientation[3:]
    normal = np.cross(row_cosines, col_cosines)
    positions = np.array([s.position for s in slices], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices, along, positions = [slices[i] for i in order], along[order], positions[order]
    steps = np.diff(along)
    duplicates = np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM)
    if duplicates.size:
        i = int(duplicates[0])
        pair = f"{_slice_label(slices[i], common)} and {_slice_label(slices[i + 1], common)}"
        raise refuse(f"has two slices at the same position ({along[i]:.2f} mm along the normal): {pair}")
    step = float(np.sort(steps)[(len(steps) - 1) // 2]) if len(steps) else None  # the lower median
    gaps = () if step is None else tuple(int(i) for i in np.flatnonzero(np.abs(steps - step) > GAP_TOLERANCE * step))
    affine = None
    if spacing is not None:
        affine = np.eye(4)
        affine[:3, 0] = col_cosines * spacing[0]  # down a column: the row index grows, PixelSpacing[0] apart
        affine[:3, 1] = row_cosines * spacing[1]  # along a row: the column index grows, PixelSpacing[1] apart
        affine[:3, 2] = normal * (step if step is not None else 1.0)
        affine[:3, 3] = positions[0]
    return Volume(
        name=title,
        slices=tuple(s.scan for s in slices),
        spacing_mm=spacing,
        slice_spacing_mm=step,
        affine=affine,
        spacing_source=base.spacing_source,
        format="dicom",
        series_uid=series_uid,
        instance_uids=tuple(s.instance_uid for s in slices),
        gaps=gaps,
        slice_positions_mm=tuple(float(a - along[0]) for a in along),
    )


def _common(names: list[str]) -> str:
    """The folder all ``names`` lie in ("" when they share none)."""
    try:
        return os.path.commonpath(names)
    except ValueError:  # absolute and relative names mixed, or different drives
        return ""


def _close(a: object, b: object, tolerance: float, relative: bool = False) -> bool:
    if a is None or b is None:
        return a is None and b is None
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all(np.abs(x - y) <= tolerance * (np.abs(y) if relative else 1.0)))


def _rounded(value: Iterable[float] | None, digits: int = 4) -> str:
    if value is None:
        return "unknown"
    return "[" + ", ".join(f"{float(v):.{digits}g}" for v in value) + "]"


def _slice_label(s: _Slice, folder: str) -> str:
    name = os.path.relpath(s.scan.name, folder) if folder else s.scan.name
    return name if s.scan.n_slices == 1 else f"{name} frame {s.scan.slice_index}"
