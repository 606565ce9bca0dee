"""Results that imaging tools open: a DICOM SEG beside a DICOM input, a NIfTI mask beside a NIfTI input, each
equal to the PNG mask and lying exactly on its source."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braintumor.cli import main
from braintumor.commands.analyze import Outputs
from braintumor.imageio import load_scan
from braintumor.imageio.dicom_seg import PATIENT_STUDY
from braintumor.imageio.writers import MASK_WRITERS, MaskError, mask_description, mask_writer
from braintumor.inference import Analysis, Analyzer
from braintumor.inference.analyzer import Outputs as NetworkOutputs
from conftest import png_bytes, write_dicom

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _full_dicom(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    """``write_dicom`` plus what a SEG needs (study/series, frame of reference, geometry) and fields a SEG must
    not carry over (age, weight, institution, station)."""
    import pydicom
    from pydicom.uid import generate_uid

    write_dicom(path, pixels, **kwargs)
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.ImageOrientationPatient, ds.ImagePositionPatient, ds.SliceThickness = [1, 0, 0, 0, 1, 0], [-90, -110, 40], 5
    ds.PatientSex, ds.PatientAge, ds.PatientWeight = "F", "054Y", 70
    ds.InstitutionName, ds.StationName, ds.Manufacturer = "General Hospital", "MR-3", "ACME"
    ds.save_as(path, enforce_file_format=True)
    return path


def _rgb_dicom(path: Path, pixels: np.ndarray) -> Path:
    import pydicom

    _full_dicom(path, pixels)
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.repeat((pixels % 256).astype(np.uint8)[..., None], 3, axis=2).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _enhanced_dicom(path: Path, frames: np.ndarray) -> Path:
    """An Enhanced MR Image: shared orientation and pixel measures, one plane position per frame."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.uid import EnhancedMRImageStorage

    _full_dicom(path, frames[0])
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, keyword)
    orientation, measures, shared = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.7], 5
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = []
    for i in range(len(frames)):
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = [-90, -110, 40 + 5 * i]
        item.PlanePositionSequence = [position]
        ds.PerFrameFunctionalGroupsSequence.append(item)
    ds.NumberOfFrames, ds.PixelData = len(frames), frames.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 800, (40, 52)).astype(np.uint16)


@pytest.fixture
def mask() -> np.ndarray:
    """Asymmetric, so a flip or transpose anywhere shows."""
    mask = np.zeros((40, 52), np.uint8)
    mask[3:11, 4:9] = 1
    mask[25:33, 30:48] = 1
    return mask


def blob_forward(self: Analyzer, batch: np.ndarray) -> NetworkOutputs:
    """``Analyzer.forward`` replaced by a fixed blob (glioma 80%), so every mask is non-empty and known."""
    prob = np.zeros(batch.shape, np.float32)
    prob[:, :, self.size // 4 : self.size // 2, self.size // 5 : self.size // 2] = 1
    classes = np.tile(np.array([[0.8, 0.1, 0.05, 0.05]], np.float32), (len(batch), 1))
    return NetworkOutputs(prob, classes, None, prob[None], classes[None])


def _write(out: Path, path: Path, mask: np.ndarray, slice_index: int | None = None) -> dict:
    """Outputs of one result with ``mask`` (as the analyzer would give it); returns its results.csv row."""
    scan = load_scan(path, slice_index=slice_index)
    result = Analysis(
        file=scan.name,
        label="glioma",
        probabilities={"glioma": 0.9, "meningioma": 0.05, "pituitary": 0.03, "notumor": 0.02},
        mask=mask,
        tumor_pixels=int(mask.sum()),
        area_cm2=None,
        spacing_mm=None,
        spacing_source="unknown",
        scan=scan,
    )
    outputs = Outputs(out, "none", append=False, workers=1)
    outputs.add(result, result.row(), path.name.split(".")[0])
    outputs.close()
    return next(csv.DictReader(io.StringIO((out / "results.csv").read_text())))


def _png(out: Path, stem: str) -> np.ndarray:
    return np.asarray(Image.open(out / "masks" / f"{stem}.png")) // 255


def _source_of(seg) -> tuple[str, int | None]:
    item = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    return item.ReferencedSOPInstanceUID, item.get("ReferencedFrameNumber")


@pytest.mark.parametrize("kind", ["monochrome2", "monochrome1-rescaled", "rgb"])
def test_dicom_seg_lies_on_its_source_and_equals_the_png_mask(tmp_path, pixels, mask, kind):
    import pydicom

    if kind == "rgb":
        source = _rgb_dicom(tmp_path / "scan.dcm", pixels)
    elif kind == "monochrome1-rescaled":
        source = _full_dicom(tmp_path / "scan.dcm", pixels, slope=2.0, intercept=-100.0, photometric="MONOCHROME1")
    else:
        source = _full_dicom(tmp_path / "scan.dcm", pixels)
    row = _write(tmp_path / "out", source, mask)
    assert "SEG" not in row["warnings"]
    src, seg = pydicom.dcmread(source), pydicom.dcmread(tmp_path / "out" / "seg" / "scan.dcm")
    assert seg.SOPClassUID == SEG_STORAGE and seg.SegmentationType == "BINARY" and seg.NumberOfFrames == 1
    assert _source_of(seg) == (src.SOPInstanceUID, None)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID and seg.StudyInstanceUID == src.StudyInstanceUID
    geometry = seg.SharedFunctionalGroupsSequence[0]
    assert geometry.PlaneOrientationSequence[0].ImageOrientationPatient == src.ImageOrientationPatient
    assert geometry.PixelMeasuresSequence[0].PixelSpacing == src.PixelSpacing
    assert np.array_equal(seg.pixel_array, mask) and np.array_equal(seg.pixel_array, _png(tmp_path / "out", "scan"))


def test_dicom_seg_describes_the_prediction_and_copies_only_required_patient_fields(tmp_path, pixels, mask):
    import highdicom as hd
    import pydicom

    import braintumor

    source = _full_dicom(tmp_path / "scan.dcm", pixels)
    _write(tmp_path / "out", source, mask)
    seg = hd.seg.segread(tmp_path / "out" / "seg" / "scan.dcm")
    segment = seg.get_segment_description(1)
    assert segment.segment_label == "Tumor" and "glioma" in segment.SegmentDescription
    assert "90.0%" in segment.SegmentDescription
    assert segment.segmented_property_category.value == "49755003"  # SCT morphologically abnormal structure
    assert segment.segmented_property_type.value == "108369006"  # SCT neoplasm
    assert segment.algorithm_type.value == "AUTOMATIC"
    algorithm = segment.algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("braintumor", braintumor.__version__)
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    src = pydicom.dcmread(source)
    assert all(k in seg for k in PATIENT_STUDY)
    assert {e.keyword for e in seg if e.tag.group == 0x0010} == {k for k in PATIENT_STUDY if k.startswith("Patient")}
    assert all(seg.get(k) == src.get(k) for k in ("PatientName", "PatientID", "PatientSex", "StudyInstanceUID"))
    assert not seg.PatientBirthDate and not seg.AccessionNumber  # the source has none: left empty, not invented
    dump = str(seg)
    assert "General Hospital" not in dump and "MR-3" not in dump and "ACME" not in dump


def test_multiframe_dicom_seg_segments_only_the_analysed_frame(tmp_path, mask):
    import highdicom as hd
    import pydicom

    frames = np.random.default_rng(1).integers(0, 800, (3, 40, 52)).astype(np.uint16)
    source = _enhanced_dicom(tmp_path / "multi.dcm", frames)
    assert load_scan(source).slice_index == 1
    row = _write(tmp_path / "out", source, mask)
    assert "SEG" not in row["warnings"]
    src, seg = pydicom.dcmread(source), pydicom.dcmread(tmp_path / "out" / "seg" / "multi.dcm")
    assert seg.NumberOfFrames == 1 and _source_of(seg) == (src.SOPInstanceUID, 2)
    position = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
    assert position == src.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0].ImagePositionPatient
    assert np.array_equal(seg.pixel_array, _png(tmp_path / "out", "multi"))
    by_frame = hd.seg.segread(tmp_path / "out" / "seg" / "multi.dcm").get_pixels_by_source_frame(
        src.SOPInstanceUID, source_frame_numbers=[2]
    )
    assert np.array_equal(by_frame[0, :, :, 0], mask)


def test_an_empty_mask_gives_a_valid_empty_seg(tmp_path, pixels):
    import highdicom as hd

    source = _full_dicom(tmp_path / "scan.dcm", pixels)
    row = _write(tmp_path / "out", source, np.zeros_like(pixels, dtype=np.uint8))
    assert "SEG" not in row["warnings"]
    seg = hd.seg.segread(tmp_path / "out" / "seg" / "scan.dcm")
    assert seg.NumberOfFrames == 1 and not seg.pixel_array.any()


@pytest.mark.parametrize(
    "build, lacks",
    [
        (
            lambda path, pixels: write_dicom(path, pixels),
            "StudyInstanceUID, SeriesInstanceUID, FrameOfReferenceUID, ImagePositionPatient, ImageOrientationPatient",
        ),
        (
            lambda path, pixels: _full_dicom(path, np.stack([pixels] * 3), frames=3),
            "per-frame positions (PerFrameFunctionalGroupsSequence) for its frames",
        ),
    ],
)
def test_a_source_without_geometry_gets_a_warning_and_still_a_png_mask(tmp_path, pixels, mask, build, lacks):
    source = build(tmp_path / "bare.dcm", pixels)
    row = _write(tmp_path / "out", source, mask)
    assert [w for w in row["warnings"].split("; ") if "SEG" in w] == [f"no DICOM SEG written: the source lacks {lacks}"]
    assert not (tmp_path / "out" / "seg" / "bare.dcm").exists()
    assert np.array_equal(_png(tmp_path / "out", "bare"), mask)


def _marks(shape: tuple[int, ...]) -> np.ndarray:
    """A volume of 0/1 marks, different in every slice and asymmetric in each."""
    rng = np.random.default_rng(2)
    return (rng.random(shape) > 0.8).astype(np.float32)


# array (x, y, z) → RAS as in tests/test_hostile_input.py: axial RAS, axial LAS, axial stored (y, x, z), sagittal
NIFTI_AFFINES = {
    "ras": np.diag([0.7, 0.5, 5.0, 1.0]),
    "las": np.diag([-0.7, 0.5, 5.0, 1.0]),
    "transposed": np.array([[0, 0.7, 0, 0], [0.5, 0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]]),
    "sagittal": np.array([[0, 0, 2.0, 0], [0.8, 0, 0, 0], [0, 0.6, 0, 0], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("orientation", list(NIFTI_AFFINES))
def test_nifti_mask_overlays_its_source_voxel_for_voxel(tmp_path, orientation):
    import nibabel as nib

    marks = _marks((36, 44, 5))
    source = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(marks * 300 + 20, NIFTI_AFFINES[orientation]), source)
    displayed = load_scan(source, slice_index=3).pixels
    _write(tmp_path / "out", source, (displayed > 100).astype(np.uint8), slice_index=3)
    written = nib.load(tmp_path / "out" / "masks" / "vol.nii.gz")
    data = np.asanyarray(written.dataobj)
    assert data.dtype == np.uint8 and data.shape == marks.shape
    assert np.array_equal(written.affine, nib.load(source).affine)
    assert np.array_equal(data[..., 3], marks[..., 3])  # the very voxels the model saw as tumor
    assert not np.delete(data, 3, axis=2).any()
    assert np.array_equal(load_scan(written.get_filename(), slice_index=3).pixels, _png(tmp_path / "out", "vol"))


def test_nifti_mask_keeps_the_source_geometry_but_not_its_scaling_or_extensions(tmp_path):
    import gzip

    import nibabel as nib

    affine = np.array([[0.1, -0.9, 0.2, 10], [-0.8, -0.05, 0.1, 3], [0.02, 0.1, -4.8, 7], [0, 0, 0, 1]])
    image = nib.Nifti1Image(np.ones((52, 40, 3), np.int16), affine)
    image.header.set_qform(np.diag([0.9, 0.8, 4.8, 1.0]), code=1)
    image.header.set_sform(affine, code=2)
    image.header.set_xyzt_units("mm", "sec")
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"PatientName=Doe^Jane"))
    nib.save(image, tmp_path / "slice.nii")
    raw = bytearray((tmp_path / "slice.nii").read_bytes())
    raw[112:120] = np.array([2.0, 5.0], np.float32).tobytes()  # scl_slope, scl_inter of the source's values
    (tmp_path / "slice.nii").write_bytes(bytes(raw))
    mask = np.zeros(load_scan(tmp_path / "slice.nii", slice_index=2).shape, np.uint8)
    mask[2:9, 3:7] = 1
    _write(tmp_path / "out", tmp_path / "slice.nii", mask, slice_index=2)
    source, written = nib.load(tmp_path / "slice.nii").header, nib.load(tmp_path / "out" / "masks" / "slice.nii.gz")
    header = written.header
    assert np.array_equal(header.get_qform(), source.get_qform()) and header["qform_code"] == 1
    assert np.array_equal(header.get_sform(), source.get_sform()) and header["sform_code"] == 2
    assert header.get_zooms() == source.get_zooms() and header.get_xyzt_units() == ("mm", "sec")
    assert header.get_slope_inter() == (None, None) and written.get_fdata().max() == 1
    assert not header.extensions and b"Doe" not in gzip.decompress(Path(written.get_filename()).read_bytes())


def test_a_gzipped_nifti_named_nii_gets_its_mask(tmp_path, mask):
    """The reader recognises gzip by content, not suffix; so must the writer."""
    import gzip

    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((52, 40, 3), np.float32), NIFTI_AFFINES["ras"]), tmp_path / "z.nii")
    (tmp_path / "z.nii").write_bytes(gzip.compress((tmp_path / "z.nii").read_bytes()))
    _write(tmp_path / "out", tmp_path / "z.nii", mask)
    assert np.array_equal(load_scan(tmp_path / "out" / "masks" / "z.nii.gz").pixels, mask)


def test_analyze_writes_seg_nifti_and_warnings_end_to_end(tmp_path, pixels, monkeypatch):
    """The whole command, with the network's output replaced by a fixed blob so every mask is non-empty."""
    import nibabel as nib
    import pydicom

    monkeypatch.setattr(Analyzer, "forward", blob_forward)
    inputs = tmp_path / "in"
    inputs.mkdir()
    _full_dicom(inputs / "a.dcm", pixels)
    write_dicom(inputs / "b.dcm", pixels)
    # one slice: a NIfTI of several slices is a whole scan (tests/test_analyze_volume.py)
    nib.save(nib.Nifti1Image(_marks((36, 44, 1)) * 300, NIFTI_AFFINES["las"]), inputs / "c.nii.gz")
    out = tmp_path / "out"
    assert main(["analyze", str(inputs), "--out", str(out)]) == 0
    rows = {Path(r["file"]).name: r for r in csv.DictReader(io.StringIO((out / "results.csv").read_text()))}
    assert "SEG" not in rows["a.dcm"]["warnings"] and "SEG" not in rows["c.nii.gz"]["warnings"]
    assert "no DICOM SEG written: the source lacks StudyInstanceUID" in rows["b.dcm"]["warnings"]
    seg = pydicom.dcmread(out / "seg" / "a.dcm")
    assert _png(out, "a").any() and np.array_equal(seg.pixel_array, _png(out, "a"))
    assert sorted(p.name for p in (out / "seg").iterdir()) == ["a.dcm"]
    assert _png(out, "b").any()
    written = out / "masks" / "c.nii.gz"
    assert _png(out, "c").any() and np.array_equal(load_scan(written).pixels, _png(out, "c"))


def test_masks_are_made_from_the_scan_of_an_upload_without_its_file(tmp_path, pixels, mask):
    """The writers need the ``Scan`` only: bytes read without a path give the files ``analyze --out`` writes."""
    import nibabel as nib
    import pydicom

    nib.save(nib.Nifti1Image(_marks((52, 40, 3)) * 300, NIFTI_AFFINES["las"]), tmp_path / "v.nii.gz")
    _write(tmp_path / "out", tmp_path / "v.nii.gz", mask)
    upload = load_scan((tmp_path / "v.nii.gz").read_bytes(), name="v.nii.gz")
    writer = MASK_WRITERS[upload.format]
    nifti = writer.to_bytes(upload, mask, mask_description("glioma", 0.9))
    assert nifti == (tmp_path / "out" / "masks" / "v.nii.gz").read_bytes()  # byte for byte

    source = _full_dicom(tmp_path / "scan.dcm", pixels)
    scan = load_scan(source.read_bytes(), name="scan.dcm")
    assert (scan.format, scan.meta["format"], MASK_WRITERS[scan.format].kind) == ("dicom", "DICOM", "seg")
    assert "PixelData" not in scan.source.dataset and "InstitutionName" not in scan.source.dataset
    seg = pydicom.dcmread(io.BytesIO(MASK_WRITERS["dicom"].to_bytes(scan, mask, "predicted glioma")))
    assert seg.SOPClassUID == SEG_STORAGE and _source_of(seg) == (pydicom.dcmread(source).SOPInstanceUID, None)
    assert np.array_equal(seg.pixel_array, mask)


def test_mask_writers_refuse_what_does_not_lie_on_the_source(tmp_path, pixels, mask):
    source = _full_dicom(tmp_path / "scan.dcm", pixels)
    scan = load_scan(source)
    with pytest.raises(MaskError, match=r"^no DICOM SEG written: the mask is \(20, 26\) but the scan is \(40, 52\)$"):
        MASK_WRITERS["dicom"].to_bytes(scan, mask[::2, ::2], "x")
    with pytest.raises(MaskError, match=r"^no DICOM SEG written: the scan keeps nothing of its source file"):
        MASK_WRITERS["dicom"].to_bytes(scan.resized(20, 26), mask[::2, ::2], "x")
    bare = load_scan(write_dicom(tmp_path / "bare.dcm", pixels))
    with pytest.raises(MaskError, match=r"^no DICOM SEG written: the source lacks StudyInstanceUID, "):
        MASK_WRITERS["dicom"].to_bytes(bare, mask, "x")
    assert mask_writer(load_scan(png_bytes(pixels.astype(np.uint8)), name="a.png")) is None
