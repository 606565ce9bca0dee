"""Whole scans: DICOM series and NIfTI volumes assembled (``imageio.series``) and measured (``inference.volume``).

Geometry phantoms are built here: an ellipsoid of known semi-axes, with anisotropic voxels, an oblique
orientation, shuffled file names and reversed slice order.  The per-slice network is replaced by a threshold
(``ThresholdAnalyzer``), so the tests check the geometry, not a model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from braintumor.bundle import Task
from braintumor.errors import ScanError
from braintumor.imageio import load_scan, series
from braintumor.imageio.scan import Scan, area_cm2
from braintumor.imageio.series import Volume, read_series, read_volume
from braintumor.inference import Analysis, Result
from braintumor.inference.volume import VolumeResult, measure, rano_diameters
from conftest import png_bytes, write_dicom

SPACING = (0.8, 1.1)  # in-plane (row, col) mm
STEP = 3.0  # slice to slice, mm
THICKNESS = 2.0  # SliceThickness written to the DICOM files: never the spacing
AXES = (22.0, 15.0, 27.0)  # the ellipsoid's semi-axes in mm: along rows, columns, slices
SLICES, ROWS, COLS = 24, 72, 40
CENTRE = (12, 36, 20)  # (slice, row, col): on a voxel centre, so the largest section is the full ellipse
INSIDE, OUTSIDE, THRESHOLD = 1000, 100, 500
ELLIPSOID_CM3 = 4 / 3 * np.pi * AXES[0] * AXES[1] * AXES[2] / 1000
VOXEL = max(SPACING)  # "within one voxel" in plane


def ellipsoid() -> np.ndarray:
    """``(slices, rows, cols)`` uint16: INSIDE in the ellipsoid, OUTSIDE (plus noise below the threshold) around."""
    s, r, c = np.mgrid[:SLICES, :ROWS, :COLS]
    inside = (
        ((r - CENTRE[1]) * SPACING[0] / AXES[0]) ** 2
        + ((c - CENTRE[2]) * SPACING[1] / AXES[1]) ** 2
        + ((s - CENTRE[0]) * STEP / AXES[2]) ** 2
    ) <= 1
    noise = np.random.default_rng(0).integers(0, 50, inside.shape)
    return np.where(inside, INSIDE, OUTSIDE + noise).astype(np.uint16)


def rotation(about_x: float = 20, about_z: float = 15) -> np.ndarray:
    """An oblique orientation: columns are the row, column and normal directions (a proper rotation)."""
    a, b = np.deg2rad(about_x), np.deg2rad(about_z)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


class ThresholdAnalyzer:
    """Stands in for ``Analyzer``: the mask is ``pixels > t``; a slice with tumor says glioma, one without notumor.
    ``probabilities`` (a function of the scan) and ``warn`` (per-slice warnings) can be replaced."""

    task = Task.SEGMENT_AND_CLASSIFY
    model_dir = Path("threshold")

    def __init__(self, t: float = THRESHOLD, probabilities=None, warn=None):
        self.t, self.batches = t, []
        self.probabilities = probabilities or (
            lambda scan, n: (
                {"glioma": 0.7, "meningioma": 0.2, "pituitary": 0.05, "notumor": 0.05}
                if n
                else {"glioma": 0.05, "meningioma": 0.05, "pituitary": 0.05, "notumor": 0.85}
            )
        )
        self.warn = warn or (lambda scan, n: [])

    def analyze_scans(self, scans: list[Scan], spacing_mm=None) -> list[Result]:
        self.batches.append(len(scans))
        out = []
        for scan in scans:
            mask = (scan.pixels > self.t).astype(np.uint8)
            n = int(mask.sum())
            p = self.probabilities(scan, n)
            out.append(
                Analysis(
                    file=scan.name,
                    label=max(p, key=p.__getitem__),
                    probabilities=p,
                    mask=mask,
                    tumor_pixels=n,
                    area_cm2=None if scan.spacing_mm is None else area_cm2(n, scan.spacing_mm),
                    spacing_mm=scan.spacing_mm,
                    spacing_source=scan.spacing_source,
                    warnings=list(self.warn(scan, n)),
                    scan=scan,
                )
            )
        return out


# --- builders -------------------------------------------------------------------------------------------------


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    """``volume`` as ``(slices, rows, cols)`` stored with array axes (row, col, slice)."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.moveaxis(volume, 0, -1).astype(np.int16), affine), str(path))
    return path


def oblique_affine(reverse: bool) -> np.ndarray:
    """Array index (i: row, j: col, k: slice) → RAS mm: rotated, anisotropic; ``reverse``: k runs the other way."""
    affine = np.eye(4)
    affine[:3, :3] = rotation() @ np.diag([SPACING[0], SPACING[1], -STEP if reverse else STEP])
    affine[:3, 3] = [-30.0, 12.5, 40.0]
    return affine


def dicom_slice(
    path: Path,
    pixels: np.ndarray,
    position,
    orientation=(1, 0, 0, 0, 1, 0),
    spacing=SPACING,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    instance: int = 1,
) -> Path:
    """A single-frame MR image with its series, frame of reference and plane geometry."""
    import pydicom

    write_dicom(path, pixels, spacing=spacing)
    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series_uid, "1.2.826.0.1.3680043.8.498.2"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.InstanceNumber, ds.SliceThickness = instance, THICKNESS
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_series(folder: Path, volume: np.ndarray, reverse: bool = True, seed: int = 0) -> list[Path]:
    """One file per slice, oblique; file names shuffled; ``reverse``: slice k lies *below* slice k-1 while
    InstanceNumber counts up, so neither names nor instance numbers give the order.  Returned in shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    rot = rotation()
    origin = np.array([-30.0, 12.5, 40.0])
    names = np.random.default_rng(seed).permutation(len(volume))
    paths = []
    for k, pixels in enumerate(volume):
        position = origin + (-1 if reverse else 1) * k * STEP * rot[:, 2]
        orientation = (*rot[:, 0], *rot[:, 1])
        paths.append(dicom_slice(folder / f"im{names[k]:04d}.dcm", pixels, position, orientation, instance=k + 1))
    return [paths[i] for i in np.random.default_rng(seed + 1).permutation(len(paths))]


def enhanced_dicom(path: Path, frames: np.ndarray, positions: list[list[float]]) -> Path:
    """An Enhanced MR Image: shared orientation and pixel measures, one plane position per frame."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.uid import EnhancedMRImageStorage

    write_dicom(path, frames, spacing=None, frames=len(frames))
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.9", "1.2.826.0.1.3680043.8.498.2"
    orientation, measures, shared = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = list(SPACING), THICKNESS
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = []
    for position in positions:
        plane, item = Dataset(), Dataset()
        plane.ImagePositionPatient = position
        item.PlanePositionSequence = [plane]
        ds.PerFrameFunctionalGroupsSequence.append(item)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return ellipsoid()


def assert_ellipsoid(result: VolumeResult) -> None:
    assert result.volume_cm3 == pytest.approx(ELLIPSOID_CM3, rel=0.02)
    longest, perpendicular = result.diameters_mm
    assert abs(longest - 2 * AXES[0]) <= VOXEL
    assert abs(perpendicular - 2 * AXES[1]) <= VOXEL


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text.count(": ") >= 1, text
    return text


# --- NIfTI ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["ascending", "reversed"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_ellipsoid_volume_and_diameters(tmp_path, phantom, reverse, suffix):
    path = write_nifti(tmp_path / f"phantom{suffix}", phantom, oblique_affine(reverse))
    volume = read_volume(path)
    assert volume.n_slices == SLICES and volume.format == "nifti"
    assert volume.slice_spacing_mm == pytest.approx(STEP) and volume.gaps == ()
    assert sorted(volume.spacing_mm) == pytest.approx(sorted(SPACING))  # the display may swap rows and columns
    analyzer = ThresholdAnalyzer()
    result = measure(volume, analyzer)
    assert_ellipsoid(result)
    assert result.largest_slice == CENTRE[0]
    assert result.tumor_slices == [k for k in range(SLICES) if (phantom[k] > THRESHOLD).any()]
    assert analyzer.batches == [8, 8, 8]
    assert result.label == "glioma" and result.probabilities["glioma"] == pytest.approx(0.7)
    assert not any("slice spacing" in w for w in result.warnings)  # 3 mm is within the typical range


def test_nifti_affine_places_every_voxel_and_slices_are_the_2d_path(tmp_path, phantom):
    data = phantom.copy()
    marker = (5, 3, 31)  # (slice, row, col) in the file's own array, outside the ellipsoid
    data[marker] = 4321
    affine = oblique_affine(reverse=True)
    path = write_nifti(tmp_path / "marked.nii.gz", data, affine)
    volume = read_volume(path)
    s, r, c = (int(v[0]) for v in np.nonzero(volume.array() == 4321))
    lps = np.diag([-1, -1, 1, 1]) @ affine @ [marker[1], marker[2], marker[0], 1]
    assert volume.affine @ [r, c, s, 1] == pytest.approx(lps)
    slice_axis = np.diag([-1, -1, 1]) @ affine[:3, 2] / STEP  # the file's k axis: down the oblique normal
    assert volume.orientation[:, 2] == pytest.approx(slice_axis)
    assert volume.voxel_mm3 == pytest.approx(SPACING[0] * SPACING[1] * STEP)
    for k, scan in enumerate(volume.slices):
        single = load_scan(path, slice_index=k)
        assert scan.slice_index == k and np.array_equal(scan.pixels, single.pixels)
        assert scan.spacing_mm == single.spacing_mm and scan.meta == single.meta and scan.format == single.format


def test_nifti_with_a_trailing_singleton_axis_and_2d_files(tmp_path, phantom):
    import nibabel as nib

    four = tmp_path / "four.nii"
    nib.save(nib.Nifti1Image(np.moveaxis(phantom, 0, -1)[..., None].astype(np.int16), np.eye(4)), str(four))
    assert read_volume(four).n_slices == SLICES
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(phantom[CENTRE[0]].astype(np.int16), np.eye(4)), str(flat))
    volume = read_volume(flat)
    assert volume.n_slices == 1 and volume.slice_spacing_mm is None
    result = measure(volume, ThresholdAnalyzer())
    assert result.volume_cm3 is None and any("one slice" in w for w in result.warnings)
    assert result.diameters_mm is not None  # a slice's diameters need only the in-plane spacing


def test_nifti_with_more_than_three_dimensions_is_refused(tmp_path):
    import nibabel as nib

    path = tmp_path / "bold.nii"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 4, 3), np.int16), np.eye(4)), str(path))
    with pytest.raises(ScanError) as err:
        read_volume(path)
    assert "expected a 2-D slice or a 3-D volume" in one_line(err)


# --- DICOM ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [True, False], ids=["reversed", "ascending"])
def test_dicom_series_ellipsoid(tmp_path, phantom, reverse):
    paths = dicom_series(tmp_path / "exam", phantom, reverse=reverse)
    [volume] = read_series(paths)
    assert volume.n_slices == SLICES and volume.format == "dicom" and volume.name == str(tmp_path / "exam")
    assert volume.spacing_mm == pytest.approx(SPACING)
    assert volume.slice_spacing_mm == pytest.approx(STEP, abs=1e-4)  # from the positions, not SliceThickness
    assert volume.gaps == ()
    ordered = phantom[::-1] if reverse else phantom  # ascending along the normal
    assert np.array_equal(volume.array(), ordered.astype(np.float32))
    import pydicom

    by_uid = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in paths}
    instances = [int(pydicom.dcmread(by_uid[uid]).InstanceNumber) for uid in volume.instance_uids]
    assert instances == (list(range(SLICES, 0, -1)) if reverse else list(range(1, SLICES + 1)))
    # the affine puts pixel (r, c) of slice s where the file's own geometry does
    s, r, c = 7, 10, 33
    ds = pydicom.dcmread(by_uid[volume.instance_uids[s]])
    cosines = np.array(ds.ImageOrientationPatient, dtype=float).reshape(2, 3)
    where = np.array(ds.ImagePositionPatient, float) + c * SPACING[1] * cosines[0] + r * SPACING[0] * cosines[1]
    assert volume.affine[:3] @ [r, c, s, 1] == pytest.approx(where, abs=1e-4)
    result = measure(volume, ThresholdAnalyzer(), batch_size=5)
    assert_ellipsoid(result)
    assert result.largest_slice == (SLICES - 1 - CENTRE[0] if reverse else CENTRE[0])


def test_dicom_and_nifti_of_one_phantom_agree(tmp_path, phantom):
    [dicom] = read_series(dicom_series(tmp_path / "exam", phantom))
    nifti = read_volume(write_nifti(tmp_path / "phantom.nii.gz", phantom, oblique_affine(reverse=False)))
    a, b = measure(dicom, ThresholdAnalyzer()), measure(nifti, ThresholdAnalyzer())
    assert a.tumor_voxels == b.tumor_voxels and a.volume_cm3 == pytest.approx(b.volume_cm3, rel=1e-4)
    assert a.diameters_mm == pytest.approx(b.diameters_mm, abs=1e-6)


def test_multiframe_dicom_frames_are_placed_by_their_positions(tmp_path, phantom):
    frames = phantom[::3]  # 8 frames, 9 mm apart
    order = [3, 0, 7, 5, 1, 6, 2, 4]  # frame i lies at position order[i] along z
    stored = np.empty_like(frames)
    for i, place in enumerate(order):
        stored[i] = frames[place]
    positions = [[-20.0, -30.0, 10.0 + 9.0 * place] for place in order]
    path = enhanced_dicom(tmp_path / "enhanced.dcm", stored, positions)
    volume = read_volume(path)
    assert np.array_equal(volume.array(), frames.astype(np.float32))
    assert volume.slice_spacing_mm == pytest.approx(9.0) and volume.spacing_mm == pytest.approx(SPACING)
    assert [s.slice_index for s in volume.slices] == [order.index(p) for p in range(8)]
    for scan in volume.slices:  # each frame as the 2-D path reads it
        single = load_scan(path, slice_index=scan.slice_index)
        assert np.array_equal(scan.pixels, single.pixels) and scan.spacing_mm == single.spacing_mm
    assert measure(volume, ThresholdAnalyzer()).volume_cm3 > 0


def test_one_frame_enhanced_files_are_placed_by_their_functional_groups(tmp_path, phantom):
    paths = [enhanced_dicom(tmp_path / f"e{k}.dcm", phantom[k : k + 1], [[0.0, 0.0, 6.0 * (4 - k)]]) for k in range(5)]
    [volume] = read_series(paths)
    assert volume.slice_spacing_mm == pytest.approx(6.0)
    assert np.array_equal(volume.array(), phantom[4::-1].astype(np.float32))


def test_multiframe_without_per_frame_positions_is_refused(tmp_path, phantom):
    path = write_dicom(tmp_path / "legacy.dcm", phantom[:4], frames=4)
    with pytest.raises(ScanError) as err:
        read_volume(path)
    assert "frames cannot be placed" in one_line(err)


def test_series_are_grouped_apart(tmp_path, phantom):
    small = phantom[:, :32, :32]
    a = [dicom_slice(tmp_path / f"a{k}.dcm", small[k], (0, 0, 5.0 * k), series_uid="1.2.3.1") for k in range(6)]
    b = [dicom_slice(tmp_path / f"b{k}.dcm", small[k + 6], (0, 0, 4.0 * k), series_uid="1.2.3.2") for k in range(4)]
    interleaved = [a[0], b[3], a[5], b[0], a[2], a[1], b[2], a[4], b[1], a[3]]
    volumes = read_series(interleaved)
    assert [v.series_uid for v in volumes] == ["1.2.3.1", "1.2.3.2"]
    assert [v.n_slices for v in volumes] == [6, 4]
    assert [v.slice_spacing_mm for v in volumes] == pytest.approx([5.0, 4.0])
    assert np.array_equal(volumes[0].array(), small[:6].astype(np.float32))


def _small_series(folder: Path, phantom: np.ndarray, n: int = 5, **override) -> list[Path]:
    """``n`` axial 32×32 slices 4 mm apart; ``override`` maps a slice index to ``dicom_slice`` arguments."""
    folder.mkdir(exist_ok=True)
    paths = []
    for k in range(n):
        kwargs = {"pixels": phantom[k, :32, :32], "position": (0, 0, 4.0 * k), **override.get(f"s{k}", {})}
        paths.append(dicom_slice(folder / f"s{k}.dcm", **kwargs))
    return paths


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"s3": {"position": (0, 0, 8.0)}}, "two slices at the same position"),
        ({"s1": {"spacing": (0.9, 1.1)}}, "mixes pixel spacings"),
        ({"s2": {"pixels": np.zeros((32, 40), np.uint16)}}, "mixes image sizes"),
        ({"s4": {"orientation": (1, 0, 0, 0, 0, -1)}}, "mixes orientations"),
    ],
    ids=["duplicate-position", "mixed-spacing", "mixed-size", "mixed-orientation"],
)
def test_malformed_series_is_refused_in_one_line(tmp_path, phantom, override, words):
    paths = _small_series(tmp_path, phantom, **override)
    with pytest.raises(ScanError) as err:
        read_series(paths)
    text = one_line(err)
    assert words in text and "series 1.2.826.0.1.3680043.8.498.1" in text, text
    assert ".dcm" in text  # names the files


def test_an_uneven_gap_is_reported(tmp_path, phantom):
    paths = _small_series(tmp_path, phantom, n=7)
    del paths[4]  # the slice at 16 mm is missing
    [volume] = read_series(paths)
    assert volume.slice_spacing_mm == pytest.approx(4.0) and volume.gaps == (3,)
    assert volume.slice_positions_mm == pytest.approx((0, 4, 8, 12, 20, 24))
    result = measure(volume, ThresholdAnalyzer())
    assert result.gaps == (3,) and any("uneven slice spacing (3→4: 8.0 mm" in w for w in result.warnings)
    assert result.row()["gaps"] == [4]  # numbered from 1: after slice 4


def test_limits(tmp_path, phantom, monkeypatch):
    paths = _small_series(tmp_path, phantom, n=5)
    nifti = write_nifti(tmp_path / "v.nii", phantom[:6], np.eye(4))
    monkeypatch.setattr(series, "MAX_SLICES", 4)
    for source in (paths, [nifti], [paths[0], paths[1], nifti]):
        with pytest.raises(ScanError) as err:
            read_series(source)
        assert "at most 4" in one_line(err)
    enhanced = enhanced_dicom(tmp_path / "e.dcm", phantom[:5], [[0, 0, float(z)] for z in range(5)])
    with pytest.raises(ScanError, match="at most 4"):
        read_volume(enhanced)


def test_2d_formats_and_unreadable_files_are_refused(tmp_path, phantom):
    png = tmp_path / "slice.png"
    png.write_bytes(png_bytes(phantom[0, :32, :32].astype(np.uint8)))
    with pytest.raises(ScanError) as err:
        read_series([png])
    assert "2-D image format" in one_line(err)
    with pytest.raises(ScanError, match="no such file"):
        read_series([tmp_path / "missing.dcm"])
    with pytest.raises(ScanError, match="file is empty"):
        read_volume(b"", name="empty.nii")


def test_a_single_slice_without_geometry_is_a_volume_of_one(tmp_path, phantom):
    path = write_dicom(tmp_path / "plain.dcm", phantom[CENTRE[0]], spacing=SPACING)  # no series geometry at all
    import pydicom

    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.save_as(path, enforce_file_format=True)
    volume = read_volume(path)
    assert volume.n_slices == 1 and volume.affine is None and volume.slice_spacing_mm is None
    with pytest.raises(ScanError, match="without ImagePositionPatient"):  # but two such slices cannot be ordered
        other = tmp_path / "other.dcm"
        other.write_bytes(path.read_bytes())
        ds.SOPInstanceUID = "1.2.3.5"
        ds.save_as(other, enforce_file_format=True)
        read_series([path, other])


# --- measuring ------------------------------------------------------------------------------------------------


def _volume(areas: list[int], step: float = 7.0) -> Volume:
    """Slices whose pixels above the threshold number ``areas[k]`` (a bright square, then a partial row)."""
    scans = []
    for k, n in enumerate(areas):
        pixels = np.zeros((40, 40), np.float32)
        pixels.ravel()[:n] = INSIDE
        scans.append(Scan(pixels=pixels, name=f"s{k}", spacing_mm=(0.5, 0.5), slice_index=k))
    return Volume(name="v", slices=tuple(scans), spacing_mm=(0.5, 0.5), slice_spacing_mm=step)


def test_type_is_the_area_weighted_combination_over_tumor_slices():
    def probabilities(scan: Scan, n: int) -> dict[str, float]:
        return {
            "s0": {"glioma": 0.6, "meningioma": 0.4, "pituitary": 0.0, "notumor": 0.0},  # 100 px
            "s1": {"glioma": 0.0, "meningioma": 1.0, "pituitary": 0.0, "notumor": 0.0},  # 10 px
            "s2": {"glioma": 0.0, "meningioma": 0.0, "pituitary": 0.0, "notumor": 1.0},  # no tumor: no say
        }[scan.name]

    result = measure(_volume([100, 10, 0]), ThresholdAnalyzer(probabilities=probabilities))
    # a plain mean over the tumor slices would say meningioma (0.3 vs 0.7)
    assert result.probabilities["glioma"] == pytest.approx(60 / 110)
    assert result.probabilities["notumor"] == pytest.approx(0.0)
    assert result.label == "glioma" and result.tumor_slices == [0, 1] and result.largest_slice == 0
    assert any("disagree on the type (glioma 1, meningioma 1 slices)" in w for w in result.warnings)


def test_a_found_region_is_never_called_no_tumor():
    def probabilities(scan: Scan, n: int) -> dict[str, float]:
        return {"glioma": 0.1, "meningioma": 0.35, "pituitary": 0.05, "notumor": 0.5}

    result = measure(_volume([30, 0]), ThresholdAnalyzer(probabilities=probabilities))
    assert result.label == "meningioma" and result.confidence == pytest.approx(0.35)


def test_without_tumor_the_type_is_the_mean_over_all_slices():
    def probabilities(scan: Scan, n: int) -> dict[str, float]:
        notumor = {"s0": 0.9, "s1": 0.7, "s2": 0.5}[scan.name]
        return {"glioma": 1 - notumor, "meningioma": 0.0, "pituitary": 0.0, "notumor": notumor}

    result = measure(_volume([0, 0, 0]), ThresholdAnalyzer(probabilities=probabilities))
    assert result.label == "notumor" and result.probabilities["notumor"] == pytest.approx(0.7)
    assert result.volume_cm3 == 0 and result.diameters_mm is None and result.largest_slice is None


def test_warnings_differing_only_in_figures_are_one():
    def warn(scan: Scan, n: int) -> list[str]:
        return [f"out-of-distribution score {2 + int(scan.name[1]) / 10:.2f} > 1.38"] if n else ["same"]

    result = measure(_volume([0, 5, 0, 9]), ThresholdAnalyzer(warn=warn))
    assert result.slice_warnings == {"out-of-distribution score 2.10 > 1.38; figures of slice 2": 2, "same": 2}


def test_warnings_are_aggregated_and_far_slice_spacings_warned():
    def warn(scan: Scan, n: int) -> list[str]:
        return ["almost uniform image"] if not n else ["low confidence", "low confidence"]

    result = measure(_volume([0, 5, 0, 9, 0], step=1.0), ThresholdAnalyzer(warn=warn), batch_size=2)
    assert result.slice_warnings == {"almost uniform image": 3, "low confidence": 2}
    assert "almost uniform image (3 of 5 slices)" in result.row()["warnings"]
    assert any("slice spacing 1.0 mm is far from the training slices' 7 mm" in w for w in result.warnings)
    assert not any("far from" in w for w in measure(_volume([5, 5], step=7.0), ThresholdAnalyzer()).warnings)
    unknown = replace(_volume([5, 5]), spacing_mm=None)
    unknown_result = measure(unknown, ThresholdAnalyzer())
    assert unknown_result.volume_cm3 is None and unknown_result.diameters_mm is None
    assert any("pixel spacing unknown" in w for w in unknown_result.warnings)


def test_row_is_json(tmp_path, phantom):
    result = measure(_volume([100, 10, 0]), ThresholdAnalyzer())
    row = json.loads(json.dumps(result.row()))
    assert row["slices"] == 3 and row["label"] == "glioma" and row["tumor_voxels"] == 110
    assert row["tumor_slices"] == [1, 2] and row["largest_slice"] == 1
    assert row["volume_cm3"] == pytest.approx(round(110 * 0.25 * 7 / 1000, 3))
    assert set(row) >= {"p_glioma", "p_notumor", "longest_diameter_mm", "perpendicular_diameter_mm", "gaps"}
    slices = json.loads(json.dumps(result.slice_rows()))
    assert [s["slice"] for s in slices] == [1, 2, 3] and slices[0]["tumor_pixels"] == 100


@pytest.mark.parametrize("degrees", [0, 30, 72, 90])
def test_rano_diameters_respect_anisotropic_pixels(degrees):
    spacing, (a, b) = (0.6, 1.1), (30.0, 12.0)
    r, c = np.mgrid[:200, :120]
    y, x = (r - 100) * spacing[0], (c - 60) * spacing[1]
    t = np.deg2rad(degrees)
    u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    mask = ((u / a) ** 2 + (v / b) ** 2 <= 1).astype(np.uint8)
    longest, perpendicular = rano_diameters(mask, spacing)
    assert abs(longest - 2 * a) <= max(spacing) and abs(perpendicular - 2 * b) <= max(spacing)
    speck = mask.copy()
    speck[5, 5] = 1  # a speck far away is another lesion, not a longer diameter
    assert rano_diameters(speck, spacing) == (longest, perpendicular)
    assert rano_diameters(np.zeros((20, 20), np.uint8), spacing) == (0.0, 0.0)


# --- the 2-D path ---------------------------------------------------------------------------------------------


def test_slices_of_a_volume_measure_as_analysing_them_one_by_one(tmp_path, phantom):
    paths = dicom_series(tmp_path / "exam", phantom)
    [volume] = read_series(paths)
    analyzer = ThresholdAnalyzer()
    result = measure(volume, analyzer)
    for scan, sliced in zip(volume.slices, result.results, strict=True):
        [alone] = analyzer.analyze_scans([load_scan(scan.name)])
        assert sliced.file == alone.file and sliced.area_cm2 == alone.area_cm2
        assert np.array_equal(sliced.mask, alone.mask)


def test_real_analyzer_areas_equal_the_2d_path(tmp_path):
    """The shipped model: each slice of a NIfTI volume (three example slices stacked) measures, in a batch, as
    ``Analyzer.analyze`` of that slice alone."""
    from PIL import Image

    from braintumor.inference import Analyzer

    examples = Path(__file__).resolve().parent.parent / "src" / "braintumor" / "assets" / "examples"
    stack = np.stack([np.asarray(Image.open(examples / f"{c}.png")) for c in ("glioma", "meningioma", "pituitary")])
    affine = np.diag([0.49, 0.49, 7.0, 1.0])
    path = write_nifti(tmp_path / "examples.nii.gz", stack, affine)
    volume = read_volume(path)
    analyzer = Analyzer.default()
    result = measure(volume, analyzer, batch_size=3)
    for k, sliced in enumerate(result.results):
        alone = analyzer.analyze(path, slice_index=k)
        assert abs(sliced.tumor_pixels - alone.tumor_pixels) <= max(2, alone.tumor_pixels // 500)
        assert sliced.label == alone.label
        assert sliced.probabilities == pytest.approx(alone.probabilities, abs=1e-4)
    assert result.tumor_slices and result.volume_cm3 == pytest.approx(
        result.tumor_voxels * 0.49 * 0.49 * 7.0 / 1000, rel=1e-6
    )
