"""``braintumor analyze``: files/folders → one line (or JSON object) per image, results.csv, masks, overlays."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from tqdm import tqdm

from braintumor import CLASSES
from braintumor.imageio.registry import SUPPORTED_SUFFIXES, suffix_of

COLUMNS = ["file", "label", "confidence", *[f"p_{c}" for c in CLASSES], "tumor_pixels", "area_cm2",
           "spacing_mm", "spacing_source", "ood_score", "warnings", "error"]


def expand(inputs: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for supported scans (sorted)."""
    files = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and suffix_of(p.name) in SUPPORTED_SUFFIXES)
        else:
            files.append(path)
    return files


def csv_row(row: dict) -> dict:
    """results.csv cells: spacing as one number or ROWxCOL, warnings joined with '; '."""
    spacing = row["spacing_mm"]
    if spacing is not None:
        spacing = f"{spacing[0]:g}" if spacing[0] == spacing[1] else f"{spacing[0]:g}x{spacing[1]:g}"
    out = {**row, "spacing_mm": spacing, "warnings": "; ".join(row["warnings"])}
    return {k: "" if out[k] is None else out[k] for k in COLUMNS}


def text_line(result) -> str:
    if result.error:
        return f"{result.file}: ERROR {result.error}"
    area = "area unknown (no pixel spacing)" if result.area_cm2 is None else (
        f"area {result.area_cm2:.2f} cm² ({result.tumor_pixels} px at {result.spacing_mm[0]:g}×"
        f"{result.spacing_mm[1]:g} mm, {result.spacing_source})")
    warn = f"  [{'; '.join(result.warnings)}]" if result.warnings else ""
    return f"{result.file}: {result.label} ({result.confidence:.1%}), {area}{warn}"


def _unique_stem(path: str, used: set[str]) -> str:
    name = Path(path).name
    stem = name[: -len(suffix_of(name))] if suffix_of(name) else name
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate)
    return candidate


def run(args) -> int:
    from PIL import Image

    from braintumor.inference import Analyzer
    from braintumor.inference.render import caption_of, overlay

    if args.spacing_mm is not None and not args.spacing_mm > 0:
        raise ValueError(f"--spacing-mm must be a positive number of millimetres, got {args.spacing_mm}")
    files = expand(args.inputs)
    if not files:
        raise ValueError("no scans found in the given inputs")
    analyzer = Analyzer.load(args.model)
    writer, used = None, set()
    if args.out:
        (args.out / "masks").mkdir(parents=True, exist_ok=True)
        (args.out / "overlays").mkdir(parents=True, exist_ok=True)
        handle = open(args.out / "results.csv", "w", newline="")
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
    failed = 0
    bar = tqdm(total=len(files), unit="img", disable=len(files) < 2, file=sys.stderr)
    for result in analyzer.analyze_many(files, spacing_mm=args.spacing_mm, batch_size=args.batch_size):
        bar.update(1)
        failed += result.error is not None
        row = result.row()
        tqdm.write(json.dumps(row) if args.json else text_line(result), file=sys.stdout)
        if writer:
            writer.writerow(csv_row(row))
            if not result.error:
                stem = _unique_stem(result.file, used)
                Image.fromarray(result.mask * 255).save(args.out / "masks" / f"{stem}.png")
                overlay(result.scan.pixels, result.mask, caption_of(result)).save(args.out / "overlays" / f"{stem}.png")
    bar.close()
    if writer:
        handle.close()
    if failed == len(files):
        return 2
    return 1 if failed else 0
