"""``POST /analyze/volume``: a whole scan uploaded (a zipped series, a NIfTI volume) and measured in 3-D, its masks
returned, and every refusal one line.  The phantoms are ``test_volume``'s; the network is its threshold."""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from braintumor.imageio.limits import MAX_VOLUME_UPLOAD_BYTES
from braintumor.inference import Analyzer
from braintumor.serve import create_app
from braintumor.serve.api import ANALYSIS_PATHS, VOLUME_PATH
from test_analyze_volume import assert_measured, threshold_network  # noqa: F401 (a fixture)
from test_archive import zipped
from test_serve_token import TOKEN, bearer
from test_volume import (
    ELLIPSOID_CM3,
    SLICES,
    THRESHOLD,
    ThresholdAnalyzer,
    dicom_series,
    oblique_affine,
    write_nifti,
)

pytestmark = pytest.mark.usefixtures("threshold_network")  # every analysis here segments by the threshold


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    from test_volume import ellipsoid

    return ellipsoid()


@pytest.fixture(scope="module")
def series(tmp_path_factory, phantom) -> list[Path]:
    """The oblique, shuffled, reversed DICOM series of the ellipsoid."""
    return dicom_series(tmp_path_factory.mktemp("series"), phantom)


def zip_of(paths: list[Path], folder: str = "") -> bytes:
    return zipped({f"{folder}{p.name}": p.read_bytes() for p in paths})


def one_line_422(response) -> str:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    return detail


def test_a_zipped_series_is_measured_and_its_seg_references_every_instance(client, series):
    import pydicom

    response = client.post(f"{VOLUME_PATH}?mask=seg", files={"files": ("scan.zip", zip_of(series), "application/zip")})
    assert response.status_code == 200, response.text
    row = response.json()
    assert_measured(row)
    assert row["name"] == "scan.zip"
    slices = row["slice_results"]
    assert [s["slice"] for s in slices] == list(range(1, SLICES + 1))
    assert [k for k, s in enumerate(slices, 1) if s["tumor_pixels"]] == row["tumor_slices"]
    assert "mask_nifti" not in row
    seg = pydicom.dcmread(io.BytesIO(base64.b64decode(row["mask_seg"])))
    referenced = {
        item.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for item in s.ReferencedInstanceSequence
    }
    assert referenced == {pydicom.dcmread(p).SOPInstanceUID for p in series}
    assert int(seg.pixel_array.astype(bool).sum()) == row["tumor_voxels"]


def test_the_files_of_a_series_uploaded_one_by_one_are_the_same_volume(client, series):
    uploads = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in series]
    response = client.post(VOLUME_PATH, files=uploads)
    assert response.status_code == 200, response.text
    assert response.json()["volume_cm3"] == pytest.approx(ELLIPSOID_CM3, rel=0.02)


def test_a_nifti_upload_gets_a_mask_on_its_own_affine(client, phantom, tmp_path):
    import nibabel as nib

    source = write_nifti(tmp_path / "vol.nii.gz", phantom, oblique_affine(reverse=True))
    response = client.post(
        f"{VOLUME_PATH}?mask=nifti", files={"files": ("vol.nii.gz", source.read_bytes())}, data={"spacing_mm": "9"}
    )
    assert response.status_code == 200, response.text
    row = response.json()
    assert row["volume_cm3"] == pytest.approx(ELLIPSOID_CM3, rel=0.02)  # the file's spacing, not the form's
    (tmp_path / "mask.nii.gz").write_bytes(base64.b64decode(row["mask_nifti"]))
    mask, original = nib.load(tmp_path / "mask.nii.gz"), nib.load(source)
    assert np.array_equal(mask.affine, original.affine) and mask.shape == original.shape
    assert np.array_equal(np.asanyarray(mask.dataobj), np.asanyarray(original.dataobj) > THRESHOLD)
    seg = client.post(f"{VOLUME_PATH}?mask=seg", files={"files": ("vol.nii.gz", source.read_bytes())})
    assert one_line_422(seg) == "vol.nii.gz: mask=seg needs a DICOM series; this is a NIfTI"


def test_two_series_in_one_zip_are_refused_naming_them(client, phantom, tmp_path, series):
    import pydicom

    other = dicom_series(tmp_path / "other", phantom[:4])
    for p in other:  # the same geometry, another series
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77"
        ds.save_as(p)
    data = zipped(
        {**{f"t1/{p.name}": p.read_bytes() for p in series}, **{f"t2/{p.name}": p.read_bytes() for p in other}}
    )
    detail = one_line_422(client.post(VOLUME_PATH, files={"files": ("exam.zip", data)}))
    assert detail.startswith("exam.zip: upload one series at a time: found 2 series: ")
    assert f"exam.zip/t1 ({SLICES} slices" in detail
    assert "exam.zip/t2 (4 slices, series 1.2.826.0.1.3680043.8.498.77)" in detail


@pytest.mark.parametrize(
    ("upload", "words"),
    [
        (("evil.zip", {"../../etc/cron.d/x.dcm": b"x"}), "evil.zip/../../etc/cron.d/x.dcm: path leads out"),
        (("evil.zip", {"../x\nInjected: y.dcm": b"x"}), "evil.zip/../x?Injected: y.dcm: path leads out"),
        (("a.png", None), "a.png: PNG is a 2-D image format"),
        (("broken.zip", b"PK\x03\x04 not a zip"), "broken.zip: not a readable zip file"),
    ],
    ids=["path-traversal", "line-break", "2-D", "not-a-zip"],
)
def test_hostile_or_wrong_uploads_are_422_in_one_line(client, upload, words):
    from conftest import png_bytes

    name, content = upload
    data = zipped(content) if isinstance(content, dict) else content or png_bytes(np.zeros((32, 32), np.uint8))
    assert one_line_422(client.post(VOLUME_PATH, files={"files": (name, data)})).startswith(words)


def test_the_token_guards_the_volume_route(analyzer, series):
    with TestClient(create_app(analyzer, token=TOKEN)) as guarded:
        upload = {"files": ("scan.zip", zip_of(series[:3]))}
        missing = guarded.post(VOLUME_PATH, files=upload)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert guarded.post(VOLUME_PATH, files=upload, headers=bearer(TOKEN)).status_code == 200


def test_its_own_body_limit_and_the_gate(analyzer, monkeypatch):
    import nibabel as nib

    """The route takes bodies over the single-slice limit up to its own, and waits for an analysis slot like
    /analyze: with one slot and no queue, a second request is a 503 while the first runs."""
    assert VOLUME_PATH in ANALYSIS_PATHS and MAX_VOLUME_UPLOAD_BYTES == 256 * 2**20
    started, release = threading.Event(), threading.Event()

    def blocking(self, scans, spacing_mm=None):
        started.set()
        assert release.wait(30)
        return ThresholdAnalyzer().analyze_scans(scans)

    limits = {"max_upload_bytes": 4096, "max_volume_upload_bytes": 64 * 2**10}
    with TestClient(create_app(analyzer, max_concurrent=1, queue=0, **limits)) as small:
        assert small.post("/analyze", files={"file": ("a.dcm", b"\0" * 8192)}).status_code == 413
        over = small.post(VOLUME_PATH, files={"files": ("a.zip", b"\0" * 2**17)})
        assert over.status_code == 413 and over.json()["detail"].endswith("the 0.0625 MB upload limit")
        assert one_line_422(small.post(VOLUME_PATH, files={"files": ("a.zip", b"\0" * 8192)}))  # read, not 413

        monkeypatch.setattr(Analyzer, "analyze_scans", blocking)
        upload = {"files": ("v.nii", nib.Nifti1Image(np.zeros((32, 32, 2), np.int16), np.eye(4)).to_bytes())}
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(small.post, VOLUME_PATH, files=upload)
            assert started.wait(30)
            busy = small.post(VOLUME_PATH, files=upload)
            release.set()
            assert first.result(timeout=30).status_code == 200
    assert busy.status_code == 503 and busy.json()["detail"].startswith("busy: all 1 analysis slots are taken")


def test_the_route_is_documented(client):
    post = client.get("/openapi.json").json()["paths"][VOLUME_PATH]["post"]
    assert post["summary"].startswith("Measure a whole scan") and "slice_results" in post["description"]
    assert {"401", "413", "422", "503"} <= set(post["responses"])
    mask = next(p for p in post["parameters"] if p["name"] == "mask")
    assert set(mask["schema"]["anyOf"][0]["enum"]) == {"seg", "nifti"}
    assert "`mask_nifti`" in mask["description"] and "`mask_seg`" in mask["description"]
