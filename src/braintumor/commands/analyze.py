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

from braintumor.errors import OptionError, ScanError
from braintumor.imageio.registry import SUPPORTED_SUFFIXES, suffix_of
from braintumor.inference.results import COLUMNS, Classification, Failure, Result, Segmentation
from braintumor.inference.runtime import NO_AREA
from braintumor.inference.table import VOLUME_COLUMNS, csv_row, volume_csv_row

if TYPE_CHECKING:
    from concurrent.futures import Future

    from braintumor.imageio.series import Volume
    from braintumor.inference.analyzer import Analyzer
    from braintumor.inference.volume import VolumeResult


def expand(inputs: list[Path]) -> list[Path]:
    """Files as given (a ``.zip`` of a DICOM series too); folders searched recursively for supported scans
    (sorted)."""
    files = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and suffix_of(p.name) in SUPPORTED_SUFFIXES)
        else:
            files.append(path)
    return files


def text_line(result: Result) -> str:
    """One image in a line: type and confidence, area (what the model's task gives), warnings; or the error."""
    if isinstance(result, Failure):
        return f"{result.file}: ERROR {result.error}"
    said = []
    if isinstance(result, Classification):
        said.append(f"{result.label} ({result.confidence:.1%})")
    if isinstance(result, Segmentation):
        said.append(
            NO_AREA
            if result.area_cm2 is None or result.spacing_mm is None  # an area is computed only from a spacing
            else (
                f"area {result.area_cm2:.2f} cm² ({result.tumor_pixels} px at {result.spacing_mm[0]:g}×"
                f"{result.spacing_mm[1]:g} mm, {result.spacing_source})"
            )
        )
        if result.uncertainty is not None:
            said[-1] += f", outline uncertainty {result.uncertainty:.3f}"
    warn = f"  [{'; '.join(result.warnings)}]" if result.warnings else ""
    return f"{result.file}: {', '.join(said)}{warn}"


def _said_type(result: Result) -> tuple[str | None, float | None]:
    """The type and confidence a mask file describes itself by (none from a segmentation-only model)."""
    return (result.label, result.confidence) if isinstance(result, Classification) else (None, None)


def volume_line(result: VolumeResult) -> str:
    """One whole scan in a line: type, volume, diameters, where the tumor is, warnings."""
    size = (
        "volume unknown (no pixel or slice spacing)"
        if result.volume_cm3 is None
        else f"volume {result.volume_cm3:.2f} cm³ ({result.tumor_voxels} voxels)"
    )
    if result.diameters_mm is not None and result.largest_slice is not None:
        longest, perpendicular = result.diameters_mm
        size += f", diameters {longest:.1f} × {perpendicular:.1f} mm on slice {result.largest_slice + 1}"
    where = (
        f"tumor in {len(result.tumor_slices)} of {result.n_slices} slices"
        if result.tumor_slices
        else f"no tumor found in {result.n_slices} slices"
    )
    label = "no type (segmentation-only model)" if result.label is None else f"{result.label} ({result.confidence:.1%})"
    warnings = result.all_warnings()
    warn = f"  [{'; '.join(warnings)}]" if warnings else ""
    return f"{result.name}: whole scan, {label}, {size}, {where}{warn}"


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
        self.append = append
        self.volumes: csv.DictWriter[str] | None = None
        self.pending: deque[tuple[dict[str, Any], Future[list[str]] | None]] = deque()

    def add(self, result: Result, row: dict[str, Any], stem: str) -> None:
        job = self.pool.submit(self._write_files, result, stem) if isinstance(result, Segmentation) else None
        self.pending.append((row, job))
        self._flush(block=len(self.pending) > 4 * self.workers)  # bounded: results hold their images

    def _write_files(self, result: Segmentation, stem: str) -> list[str]:
        """The PNG mask and overlay, plus the mask in the source's own format (DICOM SEG, NIfTI) so imaging
        tools overlay it on the scan; returns warnings for the row (why no SEG could be written)."""
        from PIL import Image

        from braintumor.imageio.writers import MaskError, mask_description, mask_writer
        from braintumor.inference.render import caption_of, overlay

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
                mask_description(*_said_type(result)),
                self.out / writer.folder / f"{stem}{writer.suffix}",
            )
        except MaskError as err:  # the PNG mask stands; the row says why there is no SEG
            return [str(err)]
        return []

    def add_volume(self, result: VolumeResult, volume: Volume, stem: str) -> None:
        """A whole scan: its slices' rows in results.csv, its row in volumes.csv, and under volumes/STEM/ the 3-D
        mask (mask.nii.gz; seg.dcm for a DICOM series) and montage.png of its tumor slices.  The row's warnings
        say why a mask file could not be made."""
        from braintumor.imageio.writers import mask_description, volume_masks
        from braintumor.inference.render import montage

        folder = self.out / "volumes" / stem
        folder.mkdir(parents=True, exist_ok=True)
        files, warnings = volume_masks(volume, result.masks(), mask_description(result.label, result.confidence))
        names = {"nifti": "mask.nii.gz", "seg": "seg.dcm"}
        for kind, data in files.items():
            (folder / names[kind]).write_bytes(data)
        sheet = montage(result)
        if sheet is not None:
            sheet.save(folder / "montage.png", compress_level=1)
        if self.volumes is None:  # volumes.csv, opened at the first whole scan
            self.volumes_handle = open(self.out / "volumes.csv", "a" if self.append else "w", newline="")  # noqa: SIM115 (closed by close())
            self.volumes = csv.DictWriter(self.volumes_handle, fieldnames=VOLUME_COLUMNS)
            if not self.append or self.volumes_handle.tell() == 0:
                self.volumes.writeheader()
        self.volumes.writerow(volume_csv_row({**result.row(), "warnings": [*result.all_warnings(), *warnings]}))
        self.volumes_handle.flush()
        for row in result.slice_rows():
            self.pending.append(({**row, "file": f"{row['file']} [slice {row['slice']}/{result.n_slices}]"}, None))
        self._flush()

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
        if self.volumes is not None:
            self.volumes_handle.close()


def run(args: argparse.Namespace) -> int:
    import math
    import os

    from braintumor.imageio.inputs import split_whole_scans
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
    singles, groups = split_whole_scans(list(todo))
    slices, scans = [todo[i] for i in singles], [[todo[i] for i in g] for g in groups]
    analyzer = Analyzer.load(
        args.model, memory_arena=len(slices) + len(scans) > 1, members=args.members
    )  # a batch: speed over resident memory
    workers = min(4, os.cpu_count() or 1)
    outputs = Outputs(args.out, args.overlay_format, append=bool(done), workers=workers) if args.out else None
    failed = analysed = 0
    used: set[str] = set()  # names under volumes/
    try:
        for group in scans:
            fallback = _analyze_whole_scan(analyzer, group, args, outputs, used)
            analysed += not fallback
            slices += fallback
        interactive = sys.stderr.isatty() and (sys.stdout.isatty() or not args.json)
        bar = tqdm(total=len(slices), unit="img", disable=len(slices) < 2 or not interactive, file=sys.stderr)
        try:
            for result in analyzer.analyze_many(slices, spacing_mm=args.spacing_mm, batch_size=args.batch_size):
                bar.update(1)
                analysed += 1
                failed += isinstance(result, Failure)
                row = result.row()
                tqdm.write(json.dumps(row) if args.json else text_line(result), file=sys.stdout)
                if outputs:
                    outputs.add(result, row, stems[result.file])
        finally:
            bar.close()
    finally:
        if outputs:
            outputs.close()
    if done:
        print(
            f"resumed: {len(done & set(stems))} files already in {args.out / 'results.csv'} were skipped",
            file=sys.stderr,
        )
    if analysed and failed == analysed:
        return 2
    return 1 if failed else 0


def _analyze_whole_scan(
    analyzer: Analyzer, group: list[Path], args: argparse.Namespace, outputs: Outputs | None, used: set[str]
) -> list[Path]:
    """Read, measure and report one whole scan; returns whether it was measured, and the files to analyse one by
    one instead when they are not one volume (a mixed series, duplicate positions, a file that cannot be read as a
    volume: said once, on stderr; the single-slice path then gives each file its row, or its error)."""
    from braintumor.imageio.archive import read_uploads
    from braintumor.inference.volume import measure

    try:
        volumes = read_uploads(list(group))
    except ScanError as err:
        files = "it is analysed as one slice" if len(group) == 1 else f"its {len(group)} files are analysed one by one"
        print(f"not measured as a whole scan: {err}; {files}", file=sys.stderr)
        return list(group)
    for volume in volumes:  # one: a group is one series or one file
        result = measure(volume, analyzer, batch_size=args.batch_size, spacing_mm=args.spacing_mm)
        if args.json:
            print(json.dumps({**result.row(), "slice_results": result.slice_rows()}))
        else:
            print(volume_line(result))
        if outputs:
            outputs.add_volume(result, volume, _unique_stem(volume.name, used))
    return []
