"""OUT/gallery/: the slices that show what the model does and where it fails, one PNG each, and gallery.md.

Per tumor type the best, median and worst slice by Dice; the no-tumor images given an outline; the most
confident mistakes.  evaluate keeps figures, not masks, so only the chosen slices are analysed again, the
way evaluate analysed them: each picture shows the outline that was scored.  File names, captions and the
index carry no patient or slice id (a Figshare slice id leads back to its patient).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from braintumor import CLASSES, TUMOR_CLASSES
from braintumor.data import Record, load_record
from braintumor.errors import OutputError
from braintumor.evaluation.evaluate import SliceOutcome
from braintumor.inference.render import EXPERT_RGB, PREDICTED_RGB, display_gray
from braintumor.inference.render import font as caption_font
from braintumor.inference.results import Segmentation

if TYPE_CHECKING:
    from braintumor.inference import Analyzer

RGB = tuple[int, int, int]
WHITE = (255, 255, 255)
GRAYS = 254  # palette entries for the slice and text; the last two are the outline colours
PALETTE = [round(i * 255 / (GRAYS - 1)) for i in range(GRAYS) for _ in range(3)] + [*EXPERT_RGB, *PREDICTED_RGB]
FIGSHARE_CREDIT = "Images: Figshare brain tumor dataset (Cheng 2017, doi:10.6084/m9.figshare.1512427), CC BY 4.0"
LISTED = 6  # no-tumor outlines and mistakes shown, most telling first
SHORT_SIDE, LONG_SIDE = 384, 512  # readable pictures, small files
TILE, MONTAGE_BYTES = 256, 300_000
SLICE_HEIGHT = "Slice height"  # PNG text key: where the caption strip starts (montage crops it off)


@dataclass
class Item:
    name: str  # file stem: category and rank only
    title: str
    outcome: SliceOutcome


def write_gallery(outcomes: list[SliceOutcome], analyzer: Analyzer, out: Path) -> None:
    """Called after report.json is written: a drawing failure says so and never costs the figures."""
    try:
        _write(outcomes, analyzer, out)
    except Exception as err:
        raise OutputError(
            str(out),
            f"drawing the gallery failed ({type(err).__name__}: {err}); report.json, "
            "report.md and the CSVs are written",
        ) from err


def _write(outcomes: list[SliceOutcome], analyzer: Analyzer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # a rerun must not leave the last run's pictures beside this run's
        old.unlink()
    items = choose(outcomes)
    credit = FIGSHARE_CREDIT if is_figshare([o.record for o in outcomes]) else None
    for item in items:
        _save_item(item, analyzer, credit, out / f"{item.name}.png")
    ok = [o for o in outcomes if o.error is None]
    segmented, classified = any(o.segmented for o in ok), any(o.classified for o in ok)
    (out / "gallery.md").write_text(markdown(items, credit, segmented, classified))


def _save_item(item: Item, analyzer: Analyzer, credit: str | None, path: Path) -> None:
    """The picture, its caption also as PNG text (alt text; the montage re-sets it small)."""
    scan, truth = load_record(item.outcome.record)
    result = analyzer.analyze_scans([scan])[0]  # as evaluate called it: the outline that was scored
    # a classification-only model draws no outline
    predicted = result.mask if isinstance(result, Segmentation) else np.zeros(scan.shape, np.uint8)
    text = caption(item.outcome)
    info = PngInfo()
    info.add_text("Title", item.title)
    info.add_text("Description", text)
    info.add_text(SLICE_HEIGHT, str(_scaled(scan.shape)[1]))
    if credit:
        info.add_text("Copyright", credit)
    render(scan.pixels, truth, predicted, item.title, text).save(path, optimize=True, pnginfo=info)


def choose(outcomes: list[SliceOutcome]) -> list[Item]:
    """Best, median and worst per tumor type, then no-tumor outlines (largest first), then confident mistakes."""
    ok = [o for o in outcomes if o.error is None]
    items = [
        item
        for c in TUMOR_CLASSES
        for item in _extremes(c, [o for o in ok if o.record.label == c and o.dice is not None])
    ]
    outlined = sorted(
        (o for o in ok if o.record.label == "notumor" and o.pred_pixels > 0),
        key=lambda o: (-o.pred_pixels, o.record.id),
    )
    items += [Item(f"notumor_outlined_{k}", f"no tumor, outlined ({k})", o) for k, o in enumerate(outlined[:LISTED], 1)]
    wrong = sorted(
        (o for o in ok if o.classified and o.pred != o.true),
        key=lambda o: (-_rounded(o.scored_probs.max()), o.record.id),
    )
    items += [
        Item(f"misclassified_{k}", f"misclassified ({k}, most confident first)", o)
        for k, o in enumerate(wrong[:LISTED], 1)
    ]
    return items


def _extremes(label: str, seg: list[SliceOutcome]) -> list[Item]:
    """Best, median (the lower one for an even count) and worst by Dice, each slice once."""
    ranked = sorted(seg, key=lambda o: (_dice(o), o.record.id))
    roles: dict[int, str] = {}
    for role, k in (("best", len(ranked) - 1), ("worst", 0), ("median", (len(ranked) - 1) // 2)):
        roles.setdefault(k, role)
    return (
        [
            Item(f"{label}_{roles[k]}_dice{_dice(ranked[k]):.2f}", f"{label}, {roles[k]} Dice", ranked[k])
            for k in sorted(roles, reverse=True)
        ]
        if ranked
        else []
    )


def is_figshare(records: list[Record]) -> bool:
    """Figshare slices: the original .mat files, or converted copies keeping their fsNNNN ids."""
    return any(r.image.suffix.lower() == ".mat" or re.fullmatch(r"fs\d+", r.id) for r in records)


def _rounded(value: float) -> float:
    """As per_slice.csv writes it: the gallery shows, and ranks by, the same numbers (ties broken by id)."""
    return round(float(value), 4)


def _dice(o: SliceOutcome) -> float:
    assert o.dice is not None, "only rows with a Dice (tumor rows) are ranked by it"
    return _rounded(o.dice)


def _figure(value: float | None) -> str:
    return "n/a" if value is None else str(_rounded(value))


def caption(o: SliceOutcome) -> str:
    """Two lines: the decision and its confidence, then how well the outline matches."""
    decision = (
        f"true {o.record.label} / predicted {CLASSES[o.scored_pred]}, confidence {_figure(o.scored_probs.max())}"
        if o.classified
        else f"true {o.record.label}; tumor type: not produced by this model"
    )
    if not o.segmented:
        return f"{decision}\nsegmentation: not produced by this model"
    if o.dice is None:
        return f"{decision}\nno tumor in truth; " + (
            f"predicted outline {o.pred_pixels} px" if o.pred_pixels else "no outline predicted"
        )
    area = (
        "area n/a"
        if o.area_true_cm2 is None
        else f"area {_figure(o.area_true_cm2)} cm² true vs {_figure(o.area_pred_cm2)} cm² predicted"
    )
    return f"{decision}\nDice {_figure(o.dice)}, {area}"


def markdown(items: list[Item], credit: str | None, segmented: bool = True, classified: bool = True) -> str:
    lines = [
        "# Outcome gallery",
        "",
        "Unseen slices only, the same rows and numbers as per_slice.csv. Expert outline: blue, solid; "
        + (
            "predicted outline: orange, dashed."
            if segmented
            else "no predicted outline (segmentation: not produced by this model; only its mistakes are shown)."
        ),
        *([] if classified else ["No predicted tumor type (classification: not produced by this model)."]),
        "",
    ]
    lines += [credit, ""] if credit else []
    lines += [
        "| case | image | true | predicted | confidence | Dice | true area (cm²) | predicted area (cm²) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in items:
        o = item.outcome
        predicted, confidence = (
            (CLASSES[o.scored_pred], _figure(o.scored_probs.max())) if o.classified else ("n/a", "n/a")
        )
        lines.append(
            f"| {item.title} | ![{item.title}]({item.name}.png) | {o.record.label} | {predicted} | {confidence} | "
            f"{_figure(o.dice)} | {_figure(o.area_true_cm2)} | {_figure(o.area_pred_cm2)} |"
        )
    return "\n".join(lines) + "\n"


def _scaled(shape: tuple[int, int]) -> tuple[int, int]:
    """(width, height) with the short side at least SHORT_SIDE and the long side at most LONG_SIDE."""
    h, w = shape
    scale = min(LONG_SIDE / max(h, w), max(1.0, SHORT_SIDE / min(h, w)))
    return round(w * scale), round(h * scale)


def render(pixels: np.ndarray, truth: np.ndarray, predicted: np.ndarray, title: str, text: str) -> Image.Image:
    """The slice with the expert (solid blue) and predicted (dashed orange) outlines over a caption strip."""
    size = _scaled(pixels.shape)
    scale = size[0] / pixels.shape[1]
    font = _font(max(12, size[0] // 28))
    step = round(font.size * 1.4)
    lines = [line for raw in (title, *text.split("\n")) for line in _wrap(raw, font, size[0] - step)]
    image = Image.new("RGB", (size[0], size[1] + step * (len(lines) + 1) + step // 2))
    image.paste(Image.fromarray(display_gray(pixels)).resize(size, Image.Resampling.BICUBIC))
    draw = ImageDraw.Draw(image)
    width = max(2, round(size[0] / 170))
    for polyline in _contours(truth, scale):
        draw.line(polyline, fill=EXPERT_RGB, width=width, joint="curve")
    for polyline in _contours(predicted, scale):
        _dashed(draw, polyline, PREDICTED_RGB, width)
    for k, line in enumerate(lines):
        _text(draw, (step // 3, size[1] + step // 4 + k * step), line, font)
    _legend(draw, (step // 3, size[1] + step // 4 + len(lines) * step), font, width)
    return _indexed(image)


def _contours(mask: np.ndarray, scale: float) -> list[list[tuple[float, float]]]:
    """Outlines as (x, y) polylines in the upscaled picture (pixel centres map to pixel centres)."""
    if not mask.any():
        return []
    from skimage.measure import find_contours

    return [
        [((c - 0.5) * scale - 0.5, (r - 0.5) * scale - 0.5) for r, c in contour]
        for contour in find_contours(np.pad(mask, 1).astype(np.float32), 0.5)
    ]


def _dashed(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], fill: RGB, width: int) -> None:
    """A dashed polyline whose pattern runs on along the whole outline: a line style, not only a colour."""
    on, period = 4 * width, 7 * width
    travelled = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        length = float(np.hypot(x1 - x0, y1 - y0))
        t = 0.0
        while t < length:
            phase = (travelled + t) % period
            step = max(min(length - t, on - phase if phase < on else period - phase), 1e-3)
            if phase < on:
                a, b = t / length, min(t + step, length) / length
                draw.line(
                    [(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
                    fill=fill,
                    width=width,
                )
            t += step
        travelled += length


def _legend(draw: ImageDraw.ImageDraw, xy: tuple[float, float], font: ImageFont.FreeTypeFont, width: int) -> None:
    x, y = xy
    middle = y + font.size // 2 + 1
    sample = 3 * font.size
    draw.line([(x, middle), (x + sample, middle)], fill=EXPERT_RGB, width=width)
    x += sample + font.size // 2
    x += _text(draw, (x, y), "expert", font) + font.size
    _dashed(draw, [(x, middle), (x + sample, middle)], PREDICTED_RGB, width)
    _text(draw, (x + sample + font.size // 2, y), "predicted", font)


def _font(size: int) -> ImageFont.FreeTypeFont:
    font, _ = caption_font(size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # a Pillow built without FreeType has no font of a size
        raise OutputError("gallery", "Pillow was built without FreeType: no font to caption the pictures with")
    return font


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: ImageFont.FreeTypeFont) -> int:
    """Draw white text and return its width; Pillow's own font lacks '²'."""
    if not isinstance(getattr(font, "path", None), str):
        text = text.replace("²", "2")
    draw.text(xy, text, fill=WHITE, font=font)
    return round(draw.textlength(text, font=font))


def _indexed(image: Image.Image) -> Image.Image:
    """8-bit palette copy, a third of RGB's size: grays keep 254 levels, the outline colours stay exact."""
    rgb = np.asarray(image)
    index = np.rint(rgb[..., 0] * ((GRAYS - 1) / 255)).astype(np.uint8)  # all else is gray: r = g = b
    index[(rgb == EXPERT_RGB).all(-1)] = GRAYS
    index[(rgb == PREDICTED_RGB).all(-1)] = GRAYS + 1
    indexed = Image.fromarray(index).convert("P")
    indexed.putpalette(PALETTE)
    return indexed


def montage(gallery: Path, out: Path) -> Path:
    """One typical (median Dice) and one hard (worst Dice) slice per tumor type in one small PNG, for a README."""
    rows = [
        [p for p in (_find(gallery, c, ("median", "best")), _find(gallery, c, ("worst",))) if p] for c in TUMOR_CLASSES
    ]
    rows = [row for row in rows if row]
    if not rows:
        raise OutputError(
            str(gallery),
            "no tumor-type pictures here (expected <type>_median_dice*.png, … written "
            "by braintumor evaluate into OUT/gallery)",
        )
    font, gap = _font(11), 4
    step = round(font.size * 1.4)
    tiles = [[_tile(path, font) for path in row] for row in rows]
    height = TILE + step * max(len(lines) for row in tiles for _, lines, _ in row) + gap
    credit = next((credit for row in tiles for _, _, credit in row if credit), None)
    width = 2 * TILE + 3 * gap
    footer = _wrap(credit, font, width - 2 * gap) if credit else []
    sheet = Image.new("RGB", (width, gap + len(rows) * height + step * (len(footer) + 1) + gap))
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(tiles):
        for c, (picture, lines, _) in enumerate(row):
            x, y = gap + c * (TILE + gap), gap + r * height
            sheet.paste(picture, (x + (TILE - picture.width) // 2, y + (TILE - picture.height) // 2))
            for k, line in enumerate(lines):
                _text(draw, (x, y + TILE + 2 + k * step), line, font)
    y = gap + len(rows) * height
    _legend(draw, (gap, y), font, 2)
    for k, line in enumerate(footer, 1):
        _text(draw, (gap, y + k * step), line, font)
    return _save_within(sheet, out, credit)


def _find(gallery: Path, label: str, roles: tuple[str, ...]) -> Path | None:
    """The first role present: a type with one or two slices has no separate median."""
    for role in roles:
        hits = sorted(gallery.glob(f"{label}_{role}_dice*.png"))
        if hits:
            return hits[0]
    return None


def _tile(path: Path, font: ImageFont.FreeTypeFont) -> tuple[Image.Image, list[str], str | None]:
    """The slice part of a gallery picture shrunk to the tile, its caption re-set small, its credit."""
    with Image.open(path) as picture:
        picture.load()
        text = picture.text
        part = _zoom(picture, int(text[SLICE_HEIGHT])).convert("RGB")
    part.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
    lines = [line for raw in (text["Title"], *text["Description"].split("\n")) for line in _wrap(raw, font, TILE)]
    return part, lines, text.get("Copyright")


def _zoom(picture: Image.Image, height: int) -> Image.Image:
    """A square of the slice part around the outlines, half the slice at least: outlines stay visible in a tile."""
    rows, cols = np.nonzero(np.asarray(picture)[:height] >= GRAYS)  # palette entries of the outline colours
    if not len(rows):
        return picture.crop((0, 0, picture.width, height))
    side = min(
        max(min(picture.width, height) // 2, 2 * (np.ptp(rows) + 1), 2 * (np.ptp(cols) + 1)), picture.width, height
    )
    top = int(np.clip((rows.min() + rows.max() - side) // 2, 0, height - side))
    left = int(np.clip((cols.min() + cols.max() - side) // 2, 0, picture.width - side))
    return picture.crop((left, top, left + side, top + side))


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines = [""]
    for word in text.split():
        joined = f"{lines[-1]} {word}".strip()
        if lines[-1] and font.getlength(joined) > width:
            lines.append(word)
        else:
            lines[-1] = joined
    return lines


def _save_within(sheet: Image.Image, out: Path, credit: str | None) -> Path:
    """Fewer palette colours until the file fits MONTAGE_BYTES (six 256 px tiles fit well before 32)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    if credit:
        info.add_text("Copyright", credit)
    for colours in (256, 128, 64, 32):
        sheet.quantize(colours, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            out, optimize=True, pnginfo=info
        )
        if out.stat().st_size <= MONTAGE_BYTES:
            return out
    raise OutputError(str(out), f"the montage is larger than {MONTAGE_BYTES // 1000} KB even with 32 colours")
