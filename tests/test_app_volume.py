"""The web page on whole scans: which uploads are one (views, no browser), the volume view with its slice slider
(AppTest, the network replaced by ``test_volume``'s threshold), then a zipped series uploaded in headless Chromium
to the real model."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from braintumor.app.views import analyze_uploads
from braintumor.imageio import load_scan
from conftest import png_bytes
from test_analyze_volume import threshold_network  # noqa: F401 (a fixture)
from test_app import BROWSER_ARGS, CHROMIUM, INTRO, PAGE, free_port, require_chromium, start_server
from test_archive import zipped
from test_volume import (
    AXES,
    ELLIPSOID_CM3,
    SLICES,
    VOXEL,
    dicom_series,
    dicom_slice,
    ellipsoid,
    oblique_affine,
    write_nifti,
)


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> list[Path]:
    return dicom_series(tmp_path_factory.mktemp("series"), ellipsoid())


def zip_of(paths: list[Path]) -> bytes:
    return zipped({f"exam/{p.name}": p.read_bytes() for p in paths})


@pytest.mark.usefixtures("threshold_network")
def test_a_zipped_series_gives_the_volume_view(analyzer, series):
    photo = ("photo.png", png_bytes(np.full((40, 40), 200, np.uint8)))
    uploads = analyze_uploads(analyzer, [photo, ("scan.zip", zip_of(series)), None], spacing_mm=None)
    assert uploads.notices == [] and uploads.shown_at[0] is None and uploads.shown_at[2] is None
    [view] = uploads.shown_at[1]
    assert view.error is None and view.name == "scan.zip/exam"
    volume, result = view.measured
    assert result.volume_cm3 == pytest.approx(ELLIPSOID_CM3, rel=0.02)
    assert view.volume_text() == f"{result.volume_cm3:.2f} cm³"
    diameters, where = view.diameters_text()
    longest, perpendicular = (float(d) for d in diameters.removesuffix(" mm").split(" × "))
    assert abs(longest - 2 * AXES[0]) <= VOXEL + 0.05 and abs(perpendicular - 2 * AXES[1]) <= VOXEL + 0.05
    assert where == f"on slice {result.largest_slice + 1}" == f"on slice {view.first_slice}"
    assert view.extent_text() == f"tumor in {len(result.tumor_slices)} of {SLICES} slices"
    assert view.type_text() == ("glioma", f"{result.confidence:.1%} confidence")
    assert view.slice_image(view.first_slice).size == volume.shape[:0:-1]
    assert view.slice_area_text(1) == "0.00 cm²" and view.slice_area_text(view.first_slice).endswith(" cm²")

    files = {d.label: d for d in view.downloads()}
    assert list(files) == ["3-D NIfTI mask", "3-D DICOM SEG", "Montage PNG", "Result JSON", "Volume CSV"]
    assert all(d.data and d.reason is None for d in files.values())
    assert files["3-D DICOM SEG"].file_name == "exam_mask.dcm" and files["Montage PNG"].data.startswith(b"\x89PNG")
    record = json.loads(files["Result JSON"].data)
    assert record["volume_cm3"] == round(result.volume_cm3, 3) and len(record["slice_results"]) == SLICES
    [row] = csv.DictReader(io.StringIO(files["Volume CSV"].data.decode()))
    assert float(row["volume_cm3"]) == record["volume_cm3"] and row["name"] == "scan.zip/exam"


@pytest.mark.usefixtures("threshold_network")
def test_which_uploads_are_whole_scans(analyzer, series, tmp_path):
    """Files of one series, a NIfTI volume: whole scans.  A lone DICOM slice, a 2-D NIfTI: single images.  Files
    sharing a series that is not one volume: one notice, each file on its own.  A bad zip: one line."""
    import nibabel as nib

    phantom = ellipsoid()
    nifti = write_nifti(tmp_path / "vol.nii.gz", phantom[8:12], oblique_affine(reverse=False))
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(phantom[12].astype(np.int16), np.eye(4)), flat)
    lone = dicom_slice(tmp_path / "lone.dcm", phantom[12], (0, 0, 0), series_uid="1.2.3.4")
    tilted = [
        dicom_slice(tmp_path / "a.dcm", phantom[10], (0, 0, 0), series_uid="1.2.3.5"),
        dicom_slice(tmp_path / "b.dcm", phantom[11], (0, 0, 3), orientation=(0, 1, 0, 0, 0, -1), series_uid="1.2.3.5"),
    ]
    files = [
        *((p.name, p.read_bytes()) for p in series[:3]),
        ("lone.dcm", lone.read_bytes()),
        *((p.name, p.read_bytes()) for p in [nifti, flat, *tilted]),
        ("bad.zip", zipped({"../up\n.dcm": series[0].read_bytes()})),
    ]
    uploads = analyze_uploads(analyzer, files, spacing_mm=None)
    [scan], rest = uploads.shown_at[0], uploads.shown_at[1:3]
    assert scan.measured[0].n_slices == 3 and rest == [[], []]  # shown once, at the series' first file
    assert uploads.shown_at[3] is None and uploads.shown_at[5] is None and uploads.shown_at[6:8] == [None, None]
    assert uploads.shown_at[4][0].measured[0].n_slices == 4
    [bad] = uploads.shown_at[8]
    assert bad.error.startswith("bad.zip/../up?.dcm: path leads out of the archive") and "\n" not in bad.error
    [notice] = uploads.notices
    assert "mixes orientations" in notice and notice.endswith("its 2 files are shown one by one")


def test_the_page_shows_a_whole_scan_and_its_slider_does_not_rerun_the_network(series, request):
    from streamlit.testing.v1 import AppTest

    network = request.getfixturevalue("threshold_network")
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    at.file_uploader(key="uploads").set_value([("scan.zip", zip_of(series), "application/zip")]).run()
    assert not at.exception and not at.error
    analysed = len(network.batches)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Tumor volume"].removesuffix(" cm³")) == pytest.approx(ELLIPSOID_CM3, rel=0.02)
    assert metrics["Tumor type"] == "glioma" and metrics["Diameters"].endswith(" mm")
    assert any("weighted by its tumor area" in c.value for c in at.caption)
    [slider] = at.slider
    largest = slider.value
    assert (slider.min, slider.max) == (1, SLICES) and 1 < largest < SLICES
    slider.set_value(1).run()
    assert not at.exception and len(network.batches) == analysed  # the network did not run again
    assert {m.label: m.value for m in at.metric}["Tumor area on this slice"] == "0.00 cm²"
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["3-D NIfTI mask", "3-D DICOM SEG", "Montage PNG", "Result JSON", "Volume CSV"]


@pytest.mark.browser
def test_a_zipped_series_in_chromium(tmp_path):
    """The real model on a zipped phantom series, through the browser: the volume in cm³ and a slice slider."""
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    from braintumor.commands.app import command

    upload = tmp_path / "scan.zip"
    upload.write_bytes(zip_of(dicom_series(tmp_path / "series", ellipsoid()[8:16])))
    port = free_port()
    proc, url = start_server(command("127.0.0.1", port), port, tmp_path / "server.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(url)
            expect(page.get_by_text(INTRO)).to_be_visible(timeout=60_000)
            page.locator("input[type=file]").set_input_files(str(upload))
            expect(page.get_by_text("Tumor volume")).to_be_visible(timeout=120_000)
            expect(page.locator("[data-testid=stMetricValue]").filter(has_text="cm³").first).to_be_visible()
            expect(page.locator("[data-testid=stSlider]")).to_have_count(1, timeout=30_000)
            expect(page.get_by_text(re.compile(r"^(tumor in \d of|no tumor found in) 8 slices$"))).to_be_visible()
            page.screenshot(path=str(tmp_path / "volume.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert load_scan(tmp_path / "volume.png").shape[1] > 1000
