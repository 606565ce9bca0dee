"""``braintumor analyze`` on whole scans: a NIfTI volume or a DICOM series in, the volume row, the per-slice rows, the
3-D NIfTI mask, the DICOM SEG and the montage out.  The geometry phantoms are ``test_volume``'s; the per-slice
network is replaced by its threshold, except where the real model is compared with its own 2-D path."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from braintumor.cli import main
from braintumor.imageio import load_scan
from braintumor.imageio.inputs import split_whole_scans
from braintumor.imageio.series import read_series
from braintumor.inference import Analyzer
from conftest import png_bytes
from test_volume import (
    AXES,
    ELLIPSOID_CM3,
    SLICES,
    THRESHOLD,
    VOXEL,
    ThresholdAnalyzer,
    dicom_series,
    dicom_slice,
    oblique_affine,
    write_nifti,
)


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    from test_volume import ellipsoid

    return ellipsoid()


@pytest.fixture
def threshold_network(monkeypatch):
    """Every slice the ``Analyzer`` sees is segmented by the phantom's threshold (``ThresholdAnalyzer``)."""
    stand_in = ThresholdAnalyzer()
    monkeypatch.setattr(Analyzer, "analyze_scans", lambda self, scans, spacing_mm=None: stand_in.analyze_scans(scans))
    return stand_in


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def assert_measured(row: dict) -> None:
    """A volume row (volumes.csv's strings or the JSON's numbers) that measured the phantom's ellipsoid."""
    assert float(row["volume_cm3"]) == pytest.approx(ELLIPSOID_CM3, rel=0.02)
    assert abs(float(row["longest_diameter_mm"]) - 2 * AXES[0]) <= VOXEL + 0.05  # the row rounds to 0.1 mm
    assert abs(float(row["perpendicular_diameter_mm"]) - 2 * AXES[1]) <= VOXEL + 0.05
    assert row["label"] == "glioma" and int(row["slices"]) == SLICES


def test_a_nifti_volume_gives_the_volume_row_3d_mask_and_montage(tmp_path, phantom, threshold_network, capsys):
    import nibabel as nib

    source = write_nifti(tmp_path / "vol.nii.gz", phantom, oblique_affine(reverse=True))
    out = tmp_path / "out"
    assert main(["analyze", str(source), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{source}: whole scan, glioma") and "cm³" in line and "diameters" in line

    [row] = _rows(out / "volumes.csv")
    assert_measured(row)
    slices = _rows(out / "results.csv")
    assert len(slices) == SLICES and slices[0]["file"] == f"{source} [slice 1/{SLICES}]"
    assert [int(r["tumor_pixels"]) > 0 for r in slices] == [str(k) in row["tumor_slices"].split() for k in range(1, 25)]

    written, original = nib.load(out / "volumes" / "vol" / "mask.nii.gz"), nib.load(source)
    assert np.array_equal(written.affine, original.affine) and written.shape == original.shape
    assert np.array_equal(np.asanyarray(written.dataobj), np.asanyarray(original.dataobj) > THRESHOLD)
    montage = load_scan(out / "volumes" / "vol" / "montage.png")
    assert montage.shape[1] == 4 * 256 and not (out / "volumes" / "vol" / "seg.dcm").exists()
    assert list((out / "masks").iterdir()) == []  # no per-slice PNG masks: the 3-D mask holds them


def test_a_dicom_series_among_other_files(tmp_path, phantom, threshold_network, monkeypatch):
    """A shuffled, reversed, oblique series in a folder beside a PNG: the series is one volume with a SEG that
    references every slice and a NIfTI mask on the series' own geometry; the PNG is a slice as before."""
    import nibabel as nib
    import pydicom

    paths = dicom_series(tmp_path / "in" / "series", phantom)
    (tmp_path / "in" / "photo.png").write_bytes(png_bytes(np.full((40, 40), 200, np.uint8)))
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "in"), "--out", str(out)]) == 0

    [row] = _rows(out / "volumes.csv")
    assert_measured(row)
    assert row["name"].endswith("series") and row["series_uid"] == "1.2.826.0.1.3680043.8.498.1"
    files = [r["file"] for r in _rows(out / "results.csv")]
    assert len(files) == SLICES + 1 and str(tmp_path / "in" / "photo.png") in files

    seg = pydicom.dcmread(out / "volumes" / "series" / "seg.dcm")
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {pydicom.dcmread(p).SOPInstanceUID for p in paths}
    [volume] = read_series(paths)
    # each frame is the mask of the instance it references (highdicom orders the frames by position)
    slice_of = {uid: k for k, uid in enumerate(volume.instance_uids)}
    order = [
        slice_of[frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        for frame in seg.PerFrameFunctionalGroupsSequence
    ]
    assert sorted(order) == list(range(SLICES))
    assert np.array_equal(seg.pixel_array.astype(bool), (volume.array() > THRESHOLD)[order])
    mask = nib.load(out / "volumes" / "series" / "mask.nii.gz")
    assert np.allclose(mask.affine, np.diag([-1, -1, 1, 1]) @ volume.affine)
    data = np.asanyarray(mask.dataobj)
    assert np.array_equal(np.moveaxis(data, -1, 0), volume.array() > THRESHOLD)


def test_a_series_that_is_not_one_volume_is_analysed_slice_by_slice(tmp_path, phantom, threshold_network, capsys):
    first = dicom_slice(tmp_path / "a.dcm", phantom[10], (0, 0, 0))
    second = dicom_slice(tmp_path / "b.dcm", phantom[11], (0, 0, 3), orientation=(0, 1, 0, 0, 0, -1))
    assert main(["analyze", str(first), str(second), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "orientation" in err and "its 2 files are analysed one by one" in err
    assert [r["file"] for r in _rows(tmp_path / "out" / "results.csv")] == [str(first), str(second)]
    assert not (tmp_path / "out" / "volumes.csv").exists()


def test_json_gives_the_volume_with_its_slices(tmp_path, phantom, threshold_network, capsys):
    source = write_nifti(tmp_path / "vol.nii", phantom, oblique_affine(reverse=False))
    assert main(["analyze", str(source), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["volume_cm3"] == pytest.approx(ELLIPSOID_CM3, rel=0.02)
    assert len(record["slice_results"]) == SLICES and record["slice_results"][0]["slice"] == 1


def test_an_unreadable_volume_is_one_line_and_the_batch_goes_on(tmp_path, phantom, threshold_network, capsys):
    """A file that cannot be read as a volume goes to the single-slice path, which gives its error row."""
    import nibabel as nib

    broken = tmp_path / "broken.nii"
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 3, 2), np.int16), np.eye(4)), broken)
    good = write_nifti(tmp_path / "good.nii", phantom, oblique_affine(reverse=False))
    assert main(["analyze", str(broken), str(good), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert f"not measured as a whole scan: {broken}: " in captured.err and "analysed as one slice" in captured.err
    [error] = [line for line in captured.out.splitlines() if line.startswith(f"{broken}: ERROR")]
    assert "4 dimensions" in error
    [row] = _rows(tmp_path / "out" / "volumes.csv")
    assert float(row["volume_cm3"]) == pytest.approx(ELLIPSOID_CM3, rel=0.02)
    [failed] = [r for r in _rows(tmp_path / "out" / "results.csv") if r["file"] == str(broken)]
    assert "4 dimensions" in failed["error"]


def test_which_inputs_are_whole_scans(tmp_path, phantom):
    import nibabel as nib

    series = dicom_series(tmp_path / "s", phantom[:3])
    lone = dicom_slice(tmp_path / "lone.dcm", phantom[5], (0, 0, 0), series_uid="1.2.3.4")
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.zeros((40, 40), np.int16), np.eye(4)), flat)
    volume = write_nifti(tmp_path / "v.nii.gz", phantom[:4], np.eye(4))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    items = [lone, series[0], flat, volume, junk, *series[1:]]
    assert split_whole_scans(items) == ([0, 2, 4], [[1, 5, 6], [3]])
    uploads = [(p.name, p.read_bytes()) for p in items] + [("exam.zip", b"PK")]  # an upload's bytes: the same rule
    assert split_whole_scans(uploads) == ([0, 2, 4], [[1, 5, 6], [3], [7]])


def test_the_real_model_gives_each_slice_what_the_2d_path_gives(tmp_path, phantom, capsys):
    """Consistency with the 2-D path, with the shipped network: the volume's per-slice rows are the results of
    analysing each slice on its own."""
    source = write_nifti(tmp_path / "vol.nii.gz", phantom[8:16], oblique_affine(reverse=False))
    out = tmp_path / "out"
    assert main(["analyze", str(source), "--out", str(out)]) == 0
    rows = _rows(out / "results.csv")
    analyzer = Analyzer.default()
    for k, row in enumerate(rows):
        alone = analyzer.analyze(source, slice_index=k)
        assert int(row["tumor_pixels"]) == alone.tumor_pixels and row["label"] == alone.label
