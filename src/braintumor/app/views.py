"""What the page shows for one upload or one whole scan, computed without Streamlit (so it is testable on its own).

Uploads are handled as bytes in memory only: nothing is written to disk or logged, and DICOM
patient fields never reach the page: the reader keeps only those a DICOM SEG must carry, in the scan's source,
and they leave only inside the SEG offered for download.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from braintumor.errors import ScanError
from braintumor.evaluation.metrics import area_cm2, dice
from braintumor.imageio import Scan, load_scan
from braintumor.imageio.archive import read_uploads
from braintumor.imageio.inputs import split_whole_scans
from braintumor.imageio.limits import MAX_UPLOAD_BYTES
from braintumor.imageio.registry import suffix_of
from braintumor.imageio.series import Volume
from braintumor.imageio.writers import MASK_WRITERS, MaskError, mask_description, mask_writer, volume_masks
from braintumor.inference import Analysis, Analyzer, Failure, Segmentation
from braintumor.inference.render import boundary, caption_of, display_gray, heatmap, montage, overlay
from braintumor.inference.results import COLUMNS
from braintumor.inference.table import VOLUME_COLUMNS, csv_row, volume_csv_row
from braintumor.inference.volume import VolumeResult, measure

if TYPE_CHECKING:  # torch is optional: Grad-CAM needs the 'train' extra
    from braintumor.inference.explain import Explainer

MAX_UPLOAD_MB = MAX_UPLOAD_BYTES >> 20
#: ``braintumor app --model DIR --members N`` reaches the page (another process) through these
MODEL_ENV, MEMBERS_ENV = "BRAINTUMOR_MODEL", "BRAINTUMOR_MEMBERS"
#: why the page refuses a model folder of one head
PAGE_NEEDS = "the page shows a type and an outline"
# Streamlit settings for a page that strangers use: no telemetry, no error details or developer menu in the
# browser, a small upload limit.  ``braintumor app`` passes them as flags and page.py sets them again at run
# time, so a page started with a plain ``streamlit run`` gets them too.
STREAMLIT_OPTIONS: dict[str, object] = {
    "server.maxUploadSize": MAX_UPLOAD_MB,
    "browser.gatherUsageStats": False,
    "client.showErrorDetails": "none",
    "client.toolbarMode": "viewer",
}
INTENDED_USE = (
    "**Research and education only — not a medical device.** Results are not a diagnosis; the model "
    "was trained on one public dataset of 8-bit T1 contrast-enhanced slices and can be wrong."
)
SPACING_HINT = (
    "PNG and JPEG files carry no pixel size. Figshare brain tumor slices: 0.49 mm at 512×512 "
    "(0.98 mm when downsampled to 256×256)."
)
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
# Okabe–Ito blue and orange: a pair that stays distinct with every common colour-vision deficiency
EXPERT_RGB, PREDICTED_RGB = (0, 114, 178), (230, 159, 0)
OUTLINES_CAPTION = "blue: expert outline · orange: the model's outline"
WEIGHTING_CAPTION = (
    "Type and confidence of the whole scan: the tumor slices' class probabilities, each slice weighted by its "
    "tumor area (with no tumor found, the mean over all slices)."
)


@dataclass(frozen=True)
class Example:
    """A shipped slice with its expert mask and the pixel size its dataset publishes."""

    label: str
    image: Path
    mask: Path
    spacing_mm: float
    source: str


def examples() -> dict[str, Example]:
    """The example slices by tumor type, as listed in ``assets/examples/examples.json``."""
    listed = json.loads((EXAMPLES_DIR / "examples.json").read_text())["examples"]
    return {
        e["label"]: Example(
            e["label"], EXAMPLES_DIR / e["file"], EXAMPLES_DIR / e["mask"], float(e["spacing_mm"]), e["source"]
        )
        for e in listed
    }


@dataclass(frozen=True)
class Comparison:
    """The predicted mask against an expert mask of the same slice."""

    dice: float
    expert: np.ndarray  # bool, the image's size
    expert_cm2: float | None  # None when the spacing is unknown
    difference_cm2: float | None  # predicted − expert

    def expert_text(self) -> str:
        return "needs pixel spacing" if self.expert_cm2 is None else f"{self.expert_cm2:.2f} cm²"

    def difference_text(self) -> str:
        return (
            f"{int(self.expert.sum())} px"
            if self.difference_cm2 is None
            else f"{self.difference_cm2:+.2f} cm² predicted − expert"
        )


def compare(result: Analysis, data: bytes, name: str) -> Comparison:
    """Score ``result`` against an expert mask file of the same size (read like any scan, a volume at the scan's
    slice; nonzero = tumor)."""
    index = result.scan.slice_index if result.scan.n_slices > 1 else None
    expert = load_scan(data, name=name, slice_index=index).pixels > 0
    if expert.shape != result.mask.shape:
        raise ScanError(
            name,
            f"mask is {expert.shape[1]}×{expert.shape[0]} px but the scan is "
            f"{result.mask.shape[1]}×{result.mask.shape[0]} px",
        )
    expert_cm2 = None if result.spacing_mm is None else area_cm2(int(expert.sum()), result.spacing_mm)
    return Comparison(
        dice=dice(result.mask, expert),
        expert=expert,
        expert_cm2=expert_cm2,
        # a known spacing gives both areas
        difference_cm2=None if expert_cm2 is None or result.area_cm2 is None else result.area_cm2 - expert_cm2,
    )


def outlines(pixels: np.ndarray, predicted: np.ndarray, expert: np.ndarray) -> Image.Image:
    """The slice with both outlines: expert in blue, prediction in orange (drawn last, on top)."""
    rgb = np.repeat(display_gray(pixels)[..., None], 3, axis=2)
    width = max(1, round(max(pixels.shape) / 256))
    rgb[boundary(expert, width)] = EXPERT_RGB
    rgb[boundary(predicted, width)] = PREDICTED_RGB
    return Image.fromarray(rgb)


@dataclass(frozen=True)
class Download:
    """A file the page offers, or why it cannot (``data`` None and ``reason`` set)."""

    label: str
    data: bytes | None
    file_name: str
    mime: str
    reason: str | None = None


@dataclass
class View:
    name: str
    error: str | None = None
    result: Analysis | None = None
    scan: Scan | None = None
    comparison: Comparison | None = None
    comparison_error: str | None = None  # an unusable expert mask; the scan's own result still stands

    # The pictures, mask and JSON exist only for a view without an error (the page draws no others).
    @property
    def analysed(self) -> tuple[Analysis, Scan, np.ndarray]:
        """The result, scan and mask of a view without an error."""
        assert self.result is not None and self.scan is not None, self.error
        return self.result, self.scan, self.result.mask

    def png(self, image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    @property
    def original(self) -> Image.Image:
        return Image.fromarray(display_gray(self.analysed[1].pixels))

    @cached_property  # shown and offered for download: drawn once per rerun
    def overlay(self) -> Image.Image:
        result, scan, mask = self.analysed
        return overlay(scan.pixels, mask, caption_of(result))

    @property
    def disagreement(self) -> Image.Image | None:
        """An ensemble's members' disagreement on the mask (pixel-wise std; 0.5, the most, in red); None for one
        network."""
        result, scan, _ = self.analysed
        if result.uncertainty_map is None:
            return None
        return heatmap(scan.pixels, result.uncertainty_map / 0.5)

    @cached_property
    def outlines(self) -> Image.Image:
        _, scan, mask = self.analysed
        assert self.comparison is not None, "outlines need an expert mask"
        return outlines(scan.pixels, mask, self.comparison.expert)

    @property
    def mask_png(self) -> bytes:
        return self.png(Image.fromarray(self.analysed[2] * 255))

    @property
    def json(self) -> str:
        return json.dumps(self.analysed[0].row(), indent=2)

    @property
    def stem(self) -> str:
        return stem_of(self.name)

    @cached_property  # made once per rerun: a SEG takes highdicom a moment
    def source_mask(self) -> Download | None:
        """The mask in the upload's own format (DICOM SEG, NIfTI), as ``analyze --out`` writes it; None for
        formats without one."""
        result, scan, mask = self.analysed
        writer = mask_writer(scan)
        if writer is None:
            return None
        name = f"{self.stem}_mask{writer.suffix}"  # beside {stem}_mask.png
        try:
            data = writer.to_bytes(scan, mask, mask_description(result.label, result.confidence))
        except MaskError as err:
            return Download(writer.title, None, name, writer.media_type, str(err))
        return Download(writer.title, data, name, writer.media_type)

    def area_text(self) -> str:
        r = self.analysed[0]
        return "needs pixel spacing" if r.area_cm2 is None else f"{r.area_cm2:.2f} cm²"


def stem_of(name: str) -> str:
    """A name without its folders and suffix ("exam.zip/t1" → "t1", "scan.nii.gz" → "scan"), for downloads."""
    name = name.rsplit("/", 1)[-1]
    suffix = suffix_of(name)
    return name[: -len(suffix)] if suffix else name


def analyze_upload(
    analyzer: Analyzer, data: bytes, name: str, spacing_mm: float | None, slice_index: int | None = None
) -> View:
    """Read and analyse one upload; any problem becomes ``View.error`` (the page keeps working)."""
    try:
        scan = load_scan(data, name=name, slice_index=slice_index)
        return View(name=name, result=analysis(analyzer, scan, spacing_mm), scan=scan)
    except ScanError as err:
        return View(name=name, error=err.reason)
    except Exception as err:  # the page must survive anything a file can do
        return View(name=name, error=f"could not analyse this file ({type(err).__name__})")


def analysis(analyzer: Analyzer, scan: Scan, spacing_mm: float | None = None) -> Analysis:
    """The page's answer for a scan: type and outline (``page.analyzer`` loads only models that give both)."""
    result = analyzer.analyze(scan, spacing_mm=spacing_mm)
    assert isinstance(result, Analysis), f"{PAGE_NEEDS}, not a {analyzer.task.value} model (page.analyzer checks)"
    return result


def with_expert(view: View, data: bytes, name: str) -> View:
    """``view`` compared with an expert mask; a mask that cannot be used becomes ``comparison_error``."""
    try:
        view.comparison = compare(view.analysed[0], data, name)
    except ScanError as err:
        view.comparison_error = err.reason
    except Exception as err:  # as in analyze_upload: the page must survive anything a file can do
        view.comparison_error = f"could not read this mask ({type(err).__name__})"
    return view


def analyze_example(analyzer: Analyzer, example: Example) -> View:
    """A shipped example at its dataset's published pixel size, compared with its expert mask."""
    scan = load_scan(example.image).with_spacing(example.spacing_mm, "the dataset's published acquisition")
    view = View(name=example.image.name, result=analysis(analyzer, scan), scan=scan)
    return with_expert(view, example.mask.read_bytes(), example.mask.name)


def gradcam_image(explainer: Explainer, view: View) -> Image.Image:
    result, scan, _ = view.analysed
    # the reported type, explained by every network (an ensemble's mean map)
    return heatmap(scan.pixels, explainer.explain(scan, explainer.card.classes.index(result.label)))


def results_csv(views: list[View]) -> str:
    """The same columns as ``braintumor analyze``'s results.csv."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for v in views:
        writer.writerow(csv_row((v.result or Failure(file=v.name, error=v.error or "not analysed")).row()))
    return buffer.getvalue()


def probabilities_table(result: Analysis) -> dict[str, list[str] | list[float]]:
    return {"class": list(result.probabilities), "probability": [round(p, 4) for p in result.probabilities.values()]}


def file_key(name: str, data: bytes) -> str:
    """A widget key per upload that does not reveal the file's content."""
    return f"{name}-{hashlib.sha256(data).hexdigest()[:12]}"


@dataclass
class VolumeView:
    """A whole scan measured in 3-D (``inference.volume``), or why it could not be: ``error`` is one line naming
    the file.  Its mask files and montage are made once (the page keeps the view between reruns)."""

    name: str
    key: str  # the widget key, from its files' names and contents
    error: str | None = None
    volume: Volume | None = None
    result: VolumeResult | None = None

    @property
    def measured(self) -> tuple[Volume, VolumeResult]:
        assert self.volume is not None and self.result is not None, self.error
        return self.volume, self.result

    @property
    def stem(self) -> str:
        return stem_of(self.name)

    def geometry_text(self) -> str:
        volume, r = self.measured
        slices, rows, cols = volume.shape
        text = f"whole scan: {slices} slices of {cols}×{rows} px"
        if r.spacing_mm is not None:
            text += f" · spacing {r.spacing_mm[0]:g} × {r.spacing_mm[1]:g} mm ({volume.spacing_source})"
        if r.slice_spacing_mm is not None:
            text += f", slices {r.slice_spacing_mm:g} mm apart"
        return text

    def type_text(self) -> tuple[str, str]:
        """The type and its confidence, as the page's metric shows them."""
        r = self.measured[1]
        if r.label is None or r.confidence is None:
            return "no type", "segmentation-only model"
        return r.label, f"{r.confidence:.1%} confidence"

    def volume_text(self) -> str:
        r = self.measured[1]
        if r.volume_cm3 is not None:
            return f"{r.volume_cm3:.2f} cm³"
        return "needs pixel spacing" if r.spacing_mm is None else "one slice: no volume"

    def diameters_text(self) -> tuple[str, str]:
        """The two diameters and the slice they are on (numbered from 1, as viewers number slices)."""
        r = self.measured[1]
        if r.diameters_mm is None or r.largest_slice is None:
            return ("no tumor found", "") if r.spacing_mm is not None else ("needs pixel spacing", "")
        longest, perpendicular = r.diameters_mm
        return f"{longest:.1f} × {perpendicular:.1f} mm", f"on slice {r.largest_slice + 1}"

    def extent_text(self) -> str:
        r = self.measured[1]
        if not r.tumor_slices:
            return f"no tumor found in {r.n_slices} slices"
        return f"tumor in {len(r.tumor_slices)} of {r.n_slices} slices"

    @property
    def first_slice(self) -> int:
        """Where the slice slider starts (from 1): the largest tumor slice, else the middle one."""
        r = self.measured[1]
        return (r.largest_slice if r.largest_slice is not None else r.n_slices // 2) + 1

    def slice_result(self, number: int) -> Segmentation:
        return self.measured[1].results[number - 1]

    def slice_image(self, number: int) -> Image.Image:
        """Slice ``number`` (from 1) with its red outline."""
        r = self.slice_result(number)
        return overlay(r.scan.pixels, r.mask)

    def slice_area_text(self, number: int) -> str:
        r = self.slice_result(number)
        return "needs pixel spacing" if r.area_cm2 is None else f"{r.area_cm2:.2f} cm²"

    @cached_property  # the SEG takes highdicom a moment: made once per upload
    def mask_files(self) -> tuple[dict[str, bytes], list[str]]:
        """The 3-D masks by kind (``volume_masks``) and why any could not be made."""
        volume, r = self.measured
        return volume_masks(volume, r.masks(), mask_description(r.label, r.confidence))

    def warnings(self) -> list[str]:
        return [*self.measured[1].all_warnings(), *self.mask_files[1]]

    @property
    def json(self) -> str:
        """The object ``analyze --json`` prints and ``POST /analyze/volume`` answers for the scan."""
        r = self.measured[1]
        return json.dumps({**r.row(), "warnings": self.warnings(), "slice_results": r.slice_rows()}, indent=2)

    @property
    def csv(self) -> str:
        """The scan's row of ``analyze``'s volumes.csv."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=VOLUME_COLUMNS)
        writer.writeheader()
        writer.writerow(volume_csv_row({**self.measured[1].row(), "warnings": self.warnings()}))
        return buffer.getvalue()

    @cached_property
    def montage_png(self) -> bytes | None:
        sheet = montage(self.measured[1])
        if sheet is None:
            return None
        buffer = io.BytesIO()
        sheet.save(buffer, "PNG")
        return buffer.getvalue()

    def downloads(self) -> list[Download]:
        """The 3-D masks (NIfTI; a DICOM series' SEG too), the montage, the JSON and the CSV; a file that cannot be
        made is offered disabled with the reason."""
        volume, _ = self.measured
        made, why_not = self.mask_files
        files = []
        for fmt in ("nifti", "dicom") if volume.format == "dicom" else ("nifti",):
            writer = MASK_WRITERS[fmt]
            name = f"{self.stem}_mask{writer.suffix}"
            reason = None if writer.kind in made else "; ".join(why_not)
            files.append(Download(f"3-D {writer.title}", made.get(writer.kind), name, writer.media_type, reason))
        montage_reason = None if self.montage_png else "no slice holds tumor"
        files.append(Download("Montage PNG", self.montage_png, f"{self.stem}_montage.png", "image/png", montage_reason))
        files.append(Download("Result JSON", self.json.encode(), f"{self.stem}.json", "application/json"))
        files.append(Download("Volume CSV", self.csv.encode(), f"{self.stem}.csv", "text/csv"))
        return files


@dataclass
class Uploads:
    """How the page shows a set of uploads: ``shown_at[i]`` is None for an upload shown on its own (as a single
    image is), else the whole scans shown at its place (``[]`` for a file of a scan shown at an earlier file).
    ``notices`` say which files looked like a series but are not one volume (they are shown one by one)."""

    shown_at: list[list[VolumeView] | None]
    notices: list[str]


def analyze_uploads(analyzer: Analyzer, files: list[tuple[str, bytes] | None], spacing_mm: float | None) -> Uploads:
    """Find and measure the whole scans among ``files`` (None: an upload not read, e.g. too large).

    A whole scan is a ``.zip`` (a DICOM series), two or more DICOM files sharing a SeriesInstanceUID, a
    multi-frame DICOM or a NIfTI of two or more slices: the same rule as ``analyze`` (``imageio.inputs``).  Any
    other file keeps the single-image view; so does a file whose header cannot be read, whose view says why.  A zip
    that cannot be read is a whole scan with its ``error``."""
    readable = {i: f for i, f in enumerate(files) if f is not None}
    scans: dict[int, list[VolumeView]] = {}
    covered: set[int] = set()
    notices: list[str] = []
    indices = list(readable)
    _, groups = split_whole_scans([readable[i] for i in indices])
    for group in ([indices[k] for k in g] for g in groups):
        chosen = [readable[i] for i in group]
        zipped = suffix_of(chosen[0][0]) == ".zip"
        try:
            volumes = read_uploads(chosen)
        except Exception as err:  # the page must survive anything a file can do
            line = one_line(err, chosen[0][0])
            if zipped:
                scans[group[0]] = [VolumeView(chosen[0][0], file_key(*chosen[0]), error=line)]
                covered.add(group[0])
            elif len(group) > 1:
                notices.append(f"{line}; its {len(group)} files are shown one by one")
            continue
        key = "".join(file_key(*f) for f in chosen).encode()
        for volume in volumes:
            names = {s.name for s in volume.slices}
            members = group if zipped else [i for i in group if readable[i][0] in names]
            view = measure_view(analyzer, volume, file_key(volume.name, key), spacing_mm)
            scans.setdefault(members[0], []).append(view)
            covered.update(members)
    return Uploads([scans.get(i, []) if i in covered else None for i in range(len(files))], notices)


def measure_view(analyzer: Analyzer, volume: Volume, key: str, spacing_mm: float | None) -> VolumeView:
    """One whole scan measured; any problem becomes ``VolumeView.error`` (the page keeps working)."""
    try:
        return VolumeView(volume.name, key, volume=volume, result=measure(volume, analyzer, spacing_mm=spacing_mm))
    except Exception as err:  # as in analyze_upload: the page must survive anything a file can do
        return VolumeView(volume.name, key, error=one_line(err, volume.name))


def one_line(err: Exception, name: str) -> str:
    """A whole scan's error as the page shows it: a ``ScanError``'s own line, anything else named but not
    detailed."""
    if isinstance(err, ScanError):
        return str(err)
    return f"{name}: could not analyse this scan ({type(err).__name__})"
