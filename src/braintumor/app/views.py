"""What the page shows for one upload, computed without Streamlit (so it is testable on its own).

Uploads are handled as bytes in memory only: nothing is written to disk or logged, and DICOM
patient fields never reach the page (the reader keeps no identifying metadata).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from functools import cached_property

from PIL import Image

from braintumor.commands.analyze import COLUMNS, csv_row
from braintumor.errors import ScanError
from braintumor.imageio import Scan, load_scan
from braintumor.inference import Analyzer, Result
from braintumor.inference.render import caption_of, display_gray, heatmap, overlay

MAX_UPLOAD_MB = 64
# Streamlit settings for a page that strangers use: no telemetry, no error details or developer menu in the
# browser, a small upload limit.  ``braintumor app`` passes them as flags and page.py sets them again at run
# time, so a page started with a plain ``streamlit run`` gets them too.
STREAMLIT_OPTIONS: dict[str, object] = {"server.maxUploadSize": MAX_UPLOAD_MB, "browser.gatherUsageStats": False,
                                        "client.showErrorDetails": "none", "client.toolbarMode": "viewer"}
INTENDED_USE = ("**Research and education only — not a medical device.** Results are not a diagnosis; the model "
                "was trained on one public dataset of 8-bit T1 contrast-enhanced slices and can be wrong.")
SPACING_HINT = ("PNG and JPEG files carry no pixel size. Figshare brain tumor slices: 0.49 mm at 512×512 "
                "(0.98 mm when downsampled to 256×256).")


@dataclass
class View:
    name: str
    error: str | None = None
    result: Result | None = None
    scan: Scan | None = None

    def png(self, image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    @property
    def original(self) -> Image.Image:
        return Image.fromarray(display_gray(self.scan.pixels))

    @cached_property  # shown and offered for download: drawn once per rerun
    def overlay(self) -> Image.Image:
        return overlay(self.scan.pixels, self.result.mask, caption_of(self.result))

    @property
    def mask_png(self) -> bytes:
        return self.png(Image.fromarray(self.result.mask * 255))

    @property
    def json(self) -> str:
        return json.dumps(self.result.row(), indent=2)

    def area_text(self) -> str:
        r = self.result
        return "needs pixel spacing" if r.area_cm2 is None else f"{r.area_cm2:.2f} cm²"


def analyze_upload(analyzer: Analyzer, data: bytes, name: str, spacing_mm: float | None,
                   slice_index: int | None = None) -> View:
    """Read and analyse one upload; any problem becomes ``View.error`` (the page keeps working)."""
    try:
        scan = load_scan(data, name=name, slice_index=slice_index)
        return View(name=name, result=analyzer.analyze(scan, spacing_mm=spacing_mm), scan=scan)
    except ScanError as err:
        return View(name=name, error=err.reason)
    except Exception as err:  # the page must survive anything a file can do
        return View(name=name, error=f"could not analyse this file ({type(err).__name__})")


def gradcam_image(explainer, view: View) -> Image.Image:
    return heatmap(view.scan.pixels, explainer.explain(view.scan))


def results_csv(views: list[View]) -> str:
    """The same columns as ``braintumor analyze``'s results.csv."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for v in views:
        row = v.result.row() if v.result else {**{k: None for k in COLUMNS}, "file": v.name, "warnings": [],
                                               "error": v.error}
        writer.writerow(csv_row(row))
    return buffer.getvalue()


def probabilities_table(result: Result) -> dict[str, list]:
    return {"class": list(result.probabilities), "probability": [round(p, 4) for p in result.probabilities.values()]}


def file_key(name: str, data: bytes) -> str:
    """A widget key per upload that does not reveal the file's content."""
    return f"{name}-{hashlib.sha256(data).hexdigest()[:12]}"
