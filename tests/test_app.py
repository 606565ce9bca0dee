"""The web page: logic without a browser (views, AppTest), then a real upload in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from braintumor.app.views import (
    EXPERT_RGB,
    PREDICTED_RGB,
    analyze_example,
    analyze_upload,
    examples,
    results_csv,
    with_expert,
)
from braintumor.commands.analyze import COLUMNS
from braintumor.imageio import load_scan
from braintumor.inference import Analyzer
from conftest import png_bytes, write_dicom

PAGE = Path(__file__).resolve().parent.parent / "src" / "braintumor" / "app" / "page.py"


def test_views_good_and_bad_files(analyzer):
    image = np.zeros((128, 128), np.uint8)
    image[30:90, 30:90] = 120
    good = analyze_upload(analyzer, png_bytes(image), "a.png", spacing_mm=None)
    assert good.error is None and good.area_text() == "needs pixel spacing"
    with_spacing = analyze_upload(analyzer, png_bytes(image), "a.png", spacing_mm=0.5)
    assert with_spacing.result.spacing_source == "user" and with_spacing.area_text().endswith("cm²")
    bad = analyze_upload(analyzer, b"garbage" * 10, "broken.png", spacing_mm=None)
    assert bad.error and "broken.png" not in bad.error  # the page prefixes the name itself
    lines = results_csv([good, bad]).splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 3 and lines[2].startswith("broken.png,")
    assert good.overlay.size == (128, 128) and good.mask_png.startswith(b"\x89PNG")


def test_page_renders_without_upload():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    assert any("not a medical device" in i.value for i in at.info)
    assert at.number_input(key="spacing").value == 0.0


def test_page_enforces_its_settings_when_started_directly():
    """A plain ``streamlit run page.py`` (here: AppTest, no flags) gets the limits ``braintumor app`` passes."""
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    from braintumor.app.views import MAX_UPLOAD_MB, STREAMLIT_OPTIONS

    defaults = {
        "server.maxUploadSize": 200,
        "browser.gatherUsageStats": True,
        "client.showErrorDetails": "full",
        "client.toolbarMode": "auto",
    }  # Streamlit's, as a bare start has them
    for key, value in defaults.items():
        config.set_option(key, value)
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert {key: config.get_option(key) for key in STREAMLIT_OPTIONS} == STREAMLIT_OPTIONS
    assert at.file_uploader(key="uploads").proto.max_upload_size_mb == MAX_UPLOAD_MB
    image = np.zeros((64, 64), np.uint8)
    image[20:40, 20:40] = 120
    at.file_uploader(key="uploads").set_value(
        [("big.png", b"\0" * (MAX_UPLOAD_MB * 2**20 + 1), "image/png"), ("small.png", png_bytes(image), "image/png")]
    ).run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"big.png: larger than {MAX_UPLOAD_MB} MB: not read"]
    assert [m.label for m in at.metric][:2] == ["Tumor type", "Tumor area"]  # the small file is still analysed


def test_shipped_examples_are_credited_and_anonymous():
    shipped = examples()
    assert sorted(shipped) == ["glioma", "meningioma", "pituitary"]
    for label, example in shipped.items():
        assert example.image.name == f"{label}.png" and example.mask.name == f"{label}_mask.png"
        assert example.spacing_mm == 0.49 and "doi:10.6084/m9.figshare.1512427" in example.source
        assert "CC BY 4.0" in example.source and example.image.is_file() and example.mask.is_file()


def test_example_against_its_expert_mask(analyzer):
    """The Dice shown is the evaluation's Dice of the two masks; the area difference uses the known spacing."""
    from PIL import Image

    from braintumor.evaluation.metrics import dice

    example = examples()["meningioma"]
    view = analyze_example(analyzer, example)
    expert = np.asarray(Image.open(example.mask)) > 0
    assert view.error is None and view.comparison_error is None and view.result.spacing_mm == (0.49, 0.49)
    assert view.comparison.dice == dice(view.result.mask, expert) > 0.5
    expected_cm2 = (int(view.result.mask.sum()) - int(expert.sum())) * 0.49**2 / 100
    assert view.comparison.difference_cm2 == pytest.approx(expected_cm2)
    assert view.comparison.difference_text().endswith("cm² predicted − expert")
    colours = {tuple(c) for c in np.asarray(view.outlines).reshape(-1, 3)}
    assert EXPERT_RGB in colours and PREDICTED_RGB in colours


def test_uploaded_expert_masks(analyzer):
    image = np.zeros((128, 128), np.uint8)
    image[30:90, 30:90] = 120
    truth = np.zeros((128, 128), np.uint8)
    truth[40:80, 40:80] = 1  # 0/1 masks count as well as 0/255
    view = with_expert(analyze_upload(analyzer, png_bytes(image), "a.png", spacing_mm=None), png_bytes(truth), "t.png")
    assert view.comparison.expert.sum() == 1600 and view.comparison.expert_cm2 is None
    assert view.comparison.expert_text() == "needs pixel spacing" and view.comparison.difference_text() == "1600 px"
    wrong_size = with_expert(analyze_upload(analyzer, png_bytes(image), "a.png", None), png_bytes(truth[:64]), "t.png")
    assert wrong_size.comparison is None
    assert wrong_size.comparison_error == "mask is 128×64 px but the scan is 128×128 px"
    broken = with_expert(analyze_upload(analyzer, png_bytes(image), "a.png", None), b"garbage", "t.png")
    assert broken.comparison is None and broken.comparison_error and broken.result.label  # the scan's result stays


def test_page_analyses_an_example_without_upload():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert at.selectbox(key="example").value is None and not at.metric  # nothing is analysed until asked
    assert any("CC BY 4.0" in c.value and "Cheng 2017" in c.value for c in at.caption)
    at.selectbox(key="example").select("pituitary").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tumor type"] == "pituitary" and metrics["Tumor area"].endswith("cm²")
    assert 0.5 < float(metrics["Dice with the expert mask"]) <= 1 and metrics["Expert area"].endswith("cm²")
    captions = [i.proto.imgs[0].caption for i in at.get("image")]
    assert captions == [
        "original",
        "blue: expert outline · orange: the model's outline",
        "where the ensemble's members disagree on the outline",
    ]


def test_page_compares_an_upload_with_its_expert_mask(analyzer):
    from streamlit.testing.v1 import AppTest

    example = examples()["glioma"]
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    at.number_input(key="spacing").set_value(0.49)
    at.file_uploader(key="uploads").set_value([("scan.png", example.image.read_bytes(), "image/png")]).run()
    assert "Dice with the expert mask" not in [m.label for m in at.metric]
    truth = next(u for u in at.file_uploader if u.key.startswith("truth-"))
    truth.set_value(("scan_mask.png", example.mask.read_bytes(), "image/png")).run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    expected = analyze_example(analyzer, example).comparison  # the same pixels and spacing as the upload
    assert metrics["Dice with the expert mask"] == f"{expected.dice:.3f}"
    assert metrics["Expert area"] == expected.expert_text()


def test_views_offer_the_mask_in_the_uploads_own_format(analyzer, tmp_path, monkeypatch):
    """A DICOM upload gets its SEG, a NIfTI upload its NIfTI mask, both made from the upload's bytes."""
    import io

    import nibabel as nib
    import pydicom

    from test_outputs import NIFTI_AFFINES, SEG_STORAGE, _full_dicom, _marks, blob_forward

    monkeypatch.setattr(Analyzer, "forward", blob_forward)
    pixels = np.zeros((96, 80), np.uint16)
    pixels[20:60, 20:60] = 2000
    dicom = _full_dicom(tmp_path / "scan.dcm", pixels).read_bytes()
    view = analyze_upload(analyzer, dicom, "scan.dcm", spacing_mm=None)
    seg = view.source_mask
    assert (seg.label, seg.file_name, seg.mime, seg.reason) == ("DICOM SEG", "scan_mask.dcm", "application/dicom", None)
    written = pydicom.dcmread(io.BytesIO(seg.data))
    assert written.SOPClassUID == SEG_STORAGE and np.array_equal(written.pixel_array, view.result.mask)
    assert view.result.mask.any()

    nib.save(nib.Nifti1Image(_marks((44, 36, 5)) * 300, NIFTI_AFFINES["ras"]), tmp_path / "vol.nii.gz")
    view = analyze_upload(analyzer, (tmp_path / "vol.nii.gz").read_bytes(), "vol.nii.gz", spacing_mm=None)
    mask = view.source_mask
    assert (mask.label, mask.file_name, mask.mime) == ("NIfTI mask", "vol_mask.nii.gz", "application/gzip")
    (tmp_path / "mask.nii.gz").write_bytes(mask.data)
    assert nib.load(tmp_path / "mask.nii.gz").shape == (44, 36, 5)
    assert np.array_equal(load_scan(tmp_path / "mask.nii.gz").pixels, view.result.mask)

    bare = analyze_upload(analyzer, write_dicom(tmp_path / "bare.dcm", pixels).read_bytes(), "bare.dcm", None)
    assert bare.source_mask.data is None and bare.source_mask.reason.startswith("no DICOM SEG written: the source")
    assert analyze_upload(analyzer, png_bytes(pixels.astype(np.uint8)), "a.png", None).source_mask is None


def test_page_offers_the_seg_beside_the_other_downloads(tmp_path):
    from streamlit.testing.v1 import AppTest

    from test_outputs import _full_dicom

    pixels = np.zeros((96, 80), np.uint16)
    pixels[20:60, 20:60] = 2000
    full = _full_dicom(tmp_path / "scan.dcm", pixels).read_bytes()
    bare = write_dicom(tmp_path / "bare.dcm", pixels).read_bytes()
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    uploads = [("scan.dcm", full, "application/dicom"), ("bare.dcm", bare, "application/dicom")]
    at.file_uploader(key="uploads").set_value([*uploads, ("a.png", png_bytes(pixels.astype(np.uint8)), "image/png")])
    at.run()
    assert not at.exception and not at.error
    buttons = [(b.proto.label, b.proto.disabled) for b in at.get("download_button")]
    per_file = ["Overlay PNG", "Mask PNG", "Result JSON"]
    assert [label for label, _ in buttons] == [
        *per_file,
        "DICOM SEG",
        *per_file,
        "DICOM SEG",
        *per_file,
        "All results (CSV)",
    ]
    assert [disabled for label, disabled in buttons if label == "DICOM SEG"] == [False, True]  # bare: no geometry
    reason = next(b.proto.help for b in at.get("download_button") if b.proto.disabled)
    assert reason.startswith("no DICOM SEG written: the source lacks StudyInstanceUID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(argv: list[str], port: int, log: Path) -> tuple[subprocess.Popen, str]:
    """Start a page server and wait until /_stcore/health answers.  Output goes to ``log``: a full pipe would
    stall the server."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"app did not answer /_stcore/health: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from braintumor.commands.app import command

    port = free_port()
    proc, url = start_server(command("127.0.0.1", port), port, tmp_path_factory.mktemp("app") / "server.log")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_health_answers_ok(server):
    assert urllib.request.urlopen(f"{server}/_stcore/health", timeout=5).read() == b"ok"


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
INTRO = "not a medical device"  # on the page once its script has run
METRICS = "[data-testid=stMetricValue]"
LABEL = re.compile(r"^(glioma|meningioma|pituitary|notumor)$")  # the "Tumor type" metric's value


def require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is required for the browser tests: apt-get install chromium (.ci/run does)")


@pytest.mark.browser
def test_real_upload_in_chromium(server, dev512, tmp_path):
    require_chromium()
    from PIL import Image
    from playwright.sync_api import expect, sync_playwright

    slice_png = sorted((dev512 / "images").glob("*.png"))[0]
    dicom = write_dicom(
        tmp_path / "scan.dcm", np.asarray(Image.open(slice_png)).astype(np.uint16) * 16, spacing=(0.49, 0.49)
    )
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            viewport={"width": 1400, "height": 3400},
            args=BROWSER_ARGS,
        )
        page = context.new_page()
        page.goto(server)
        expect(page.get_by_text(INTRO)).to_be_visible(timeout=60_000)
        page.locator("input[type=file]").set_input_files([str(slice_png), str(dicom), str(broken)])
        expect(page.get_by_text("Tumor type").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Tumor type")).to_have_count(2, timeout=60_000)
        # the DICOM carries its spacing: an area in cm²; the PNG has none yet
        expect(page.get_by_text("needs pixel spacing")).to_have_count(1, timeout=30_000)
        expect(page.get_by_text("DICOM PixelSpacing", exact=False)).to_be_visible()
        error = page.locator("[data-testid=stAlertContentError]")
        expect(error).to_contain_text("broken.png", timeout=30_000)
        spacing = page.get_by_label("Spacing for files without one", exact=False)
        spacing.fill("0.49")
        spacing.press("Enter")
        expect(page.get_by_text("needs pixel spacing")).to_have_count(0, timeout=60_000)
        areas = page.get_by_text("cm²", exact=False)
        expect(areas.first).to_be_visible()
        outlines = page.locator("img")
        assert outlines.count() >= 4  # original + overlay for each readable file
        metrics = page.locator(METRICS)
        # type, area and the ensemble's outline uncertainty for each readable file, once the rerun is done
        expect(metrics).to_have_count(6, timeout=60_000)
        # retrying assertions: stale elements of the previous run can linger for a moment during a rerun
        labels = metrics.filter(has_text=LABEL)
        expect(labels).to_have_count(2, timeout=30_000)
        expect(metrics.filter(has_text="cm²")).to_have_count(2, timeout=30_000)
        page.screenshot(path=str(tmp_path / "result.png"), full_page=True)
        context.close()
    assert (tmp_path / "result.png").stat().st_size > 10_000
    assert urllib.request.urlopen(f"{server}/_stcore/health", timeout=5).read() == b"ok"
