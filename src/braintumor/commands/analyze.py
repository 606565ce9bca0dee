"""``braintumor analyze``: files/folders → one line (or JSON object) per image, results.csv, masks, overlays."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from braintumor.errors import OptionError
from braintumor.imageio.registry import SUPPORTED_SUFFIXES, suffix_of
from braintumor.inference.table import COLUMNS, csv_row

if TYPE_CHECKING:
    from concurrent.futures import Future

    from braintumor.inference.analyzer import Result


def expand(inputs: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for supported scans (sorted)."""
    files = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and suffix_of(p.name) in SUPPORTED_SUFFIXES)
        else:
            files.append(path)
    return files


def text_line(result: Result) -> str:
    if result.error:
        return f"{result.file}: ERROR {result.error}"
    area = (
        "area unknown (no pixel spacing)"
        if result.area_cm2 is None or result.spacing_mm is None  # an area is computed only from a spacing
        else (
            f"area {result.area_cm2:.2f} cm² ({result.tumor_pixels} px at {result.spacing_mm[0]:g}×"
            f"{result.spacing_mm[1]:g} mm, {result.spacing_source})"
        )
    )
    spread = "" if result.uncertainty is None else f", outline uncertainty {result.uncertainty:.3f}"
    warn = f"  [{'; '.join(result.warnings)}]" if result.warnings else ""
    return f"{result.file}: {result.label} ({result.confidence:.1%}), {area}{spread}{warn}"


def _unique_stem(path: str, used: set[str]) -> str:
    name = Path(path).name
    stem = name[: -len(suffix_of(name))] if suffix_of(name) else name
    candidate, n = stem, 1
    while candidate in used:
        n += 1
        candidate = f"{stem}-{n}"
    used.add(candidate)
    return candidate


#: Overlay image formats: PNG is lossless; JPEG is ~15× cheaper to encode (quality 90) for large batches.
OVERLAY_SUFFIX = {"png": ".png", "jpeg": ".jpg"}


def _stems(files: list[Path]) -> list[str]:
    """Output names for every input, unique and stable across runs (so --resume writes the same files)."""
    used: set[str] = set()
    return [_unique_stem(str(f), used) for f in files]


def _done(results_csv: Path) -> set[str]:
    """Files already in a results.csv (their rows were flushed after their outputs were written)."""
    if not results_csv.is_file():
        return set()
    with open(results_csv, newline="") as f:
        return {row["file"] for row in csv.DictReader(f) if row.get("file")}


class Outputs:
    """masks/, overlays/, seg/ and results.csv under ``out``: files written by a small thread pool, CSV rows in
    input order and flushed as soon as a file's outputs are on disk, so an interrupted run keeps every finished
    row (with the warnings its writing added)."""

    def __init__(self, out: Path, overlay_format: str, append: bool, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.out, self.overlay_format = out, overlay_format
        (out / "masks").mkdir(parents=True, exist_ok=True)
        if overlay_format != "none":
            (out / "overlays").mkdir(parents=True, exist_ok=True)
        mode = "a" if append else "w"
        self.handle = open(out / "results.csv", mode, newline="")  # noqa: SIM115 (open all batch long; close() closes it)
        self.writer = csv.DictWriter(self.handle, fieldnames=COLUMNS)
        if not append:
            self.writer.writeheader()
        self.pool = ThreadPoolExecutor(workers)
        self.workers = workers
        self.pending: deque[tuple[dict[str, Any], Future[list[str]] | None]] = deque()

    def add(self, result: Result, row: dict[str, Any], stem: str) -> None:
        job = self.pool.submit(self._write_files, result, stem) if not result.error else None
        self.pending.append((row, job))
        self._flush(block=len(self.pending) > 4 * self.workers)  # bounded: results hold their images

    def _write_files(self, result: Result, stem: str) -> list[str]:
        """The PNG mask and overlay, plus the mask in the source's own format (DICOM SEG, NIfTI) so imaging
        tools overlay it on the scan; returns warnings for the row (why no SEG could be written)."""
        from PIL import Image

        from braintumor.imageio.writers import MaskError, mask_description, mask_writer
        from braintumor.inference.render import caption_of, overlay

        assert result.mask is not None and result.scan is not None, "add() writes files only for analysed results"
        Image.fromarray(result.mask * 255).save(self.out / "masks" / f"{stem}.png", compress_level=1)
        if self.overlay_format != "none":
            image = overlay(result.scan.pixels, result.mask, caption_of(result))
            path = self.out / "overlays" / f"{stem}{OVERLAY_SUFFIX[self.overlay_format]}"
            if self.overlay_format == "jpeg":
                image.convert("RGB").save(path, quality=90)
            else:
                image.save(path, compress_level=1)
        writer = mask_writer(result.scan)
        if writer is None:
            return []
        try:
            writer.write(
                result.scan,
                result.mask,
                mask_description(result.label, result.confidence),
                self.out / writer.folder / f"{stem}{writer.suffix}",
            )
        except MaskError as err:  # the PNG mask stands; the row says why there is no SEG
            return [str(err)]
        return []

    def _flush(self, block: bool = False) -> None:
        while self.pending and (block or self.pending[0][1] is None or self.pending[0][1].done()):
            row, job = self.pending.popleft()
            if job is not None:
                row = {**row, "warnings": [*row["warnings"], *job.result()]}
            self.writer.writerow(csv_row(row))
            self.handle.flush()
            block = False

    def close(self) -> None:
        while self.pending:
            self._flush(block=True)
        self.pool.shutdown()
        self.handle.close()


def run(args: argparse.Namespace) -> int:
    import math
    import os

    from braintumor.inference import Analyzer

    if args.spacing_mm is not None and not (math.isfinite(args.spacing_mm) and args.spacing_mm > 0):
        raise OptionError("--spacing-mm", f"must be a positive number of millimetres, got {args.spacing_mm}")
    if args.resume and not args.out:
        raise OptionError("--resume", "needs --out (it skips the files already in OUT/results.csv)")
    files = expand(args.inputs)
    if not files:
        raise OptionError("inputs", "no scans found in the given files and folders")
    stems = dict(zip(map(str, files), _stems(files), strict=True))
    done = _done(args.out / "results.csv") if args.resume else set()
    todo = [f for f in files if str(f) not in done]
    analyzer = Analyzer.load(
        args.model, memory_arena=len(todo) > 1, members=args.members
    )  # a batch: speed over resident memory
    workers = min(4, os.cpu_count() or 1)
    outputs = Outputs(args.out, args.overlay_format, append=bool(done), workers=workers) if args.out else None
    failed = 0
    interactive = sys.stderr.isatty() and (sys.stdout.isatty() or not args.json)
    bar = tqdm(total=len(todo), unit="img", disable=len(todo) < 2 or not interactive, file=sys.stderr)
    try:
        for result in analyzer.analyze_many(todo, spacing_mm=args.spacing_mm, batch_size=args.batch_size):
            bar.update(1)
            failed += result.error is not None
            row = result.row()
            tqdm.write(json.dumps(row) if args.json else text_line(result), file=sys.stdout)
            if outputs:
                outputs.add(result, row, stems[result.file])
    finally:
        bar.close()
        if outputs:
            outputs.close()
    if done:
        print(
            f"resumed: {len(done & set(stems))} files already in {args.out / 'results.csv'} were skipped",
            file=sys.stderr,
        )
    if todo and failed == len(todo):
        return 2
    return 1 if failed else 0
