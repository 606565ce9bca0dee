"""Read a dataset folder into one table of ``Record`` rows, whatever its layout.

Layouts: the manifest layout (``index.csv`` beside ``images/`` and ``masks/``), a folder of original
Figshare ``.mat`` files, and Kaggle-style class folders (``<root>/<class>/*.jpg``) with masks in a
parallel tree when present.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from braintumor import CLASSES
from braintumor.errors import DatasetError

if TYPE_CHECKING:  # imported where used: the readers pull pydicom, nibabel and h5py
    from braintumor.imageio import Scan

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Record:
    id: str
    image: Path
    mask: Path | None  # None: no tumor (all-zero mask); a .mat path: the mask is inside the file
    label: str
    patient_id: str | None
    spacing_mm: float | None


_ALIASES = {
    "glioma": "glioma",
    "meningioma": "meningioma",
    "pituitary": "pituitary",
    "no": "notumor",
    "notumor": "notumor",
    "none": "notumor",
    "normal": "notumor",
    "healthy": "notumor",
}


def normalise_class(name: str) -> str:
    """``Glioma Tumor``, ``glioma_tumor``, ``no_tumor``, ``No`` … → one of ``CLASSES``."""
    words = [w for w in re.split(r"[\s_\-]+", name.strip().lower()) if w and w not in ("tumor", "tumour")]
    key = "".join(words) if words else ("notumor" if name.strip() else "")
    key = {"no": "notumor", "nt": "notumor"}.get(key, key)
    if key not in _ALIASES:
        raise ValueError(f"unknown class name {name!r}; expected one of {', '.join(CLASSES)} (or a common alias)")
    return _ALIASES[key]


def figshare_patient(pid: str | None) -> str | None:
    """Figshare PIDs with a letter suffix (MR040240B) are the same patient (MR040240)."""
    if not pid:
        return None
    return re.sub(r"(?<=\d)[A-Za-z]$", "", pid.strip())


def read_manifest(root: str | Path) -> list[Record]:
    """Detect the layout of ``root`` and read it; errors name the offending file."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(str(root), "dataset folder does not exist")
    if (root / "index.csv").is_file():
        records = _read_index(root)
    elif any(root.glob("*.mat")):
        records = _read_figshare_folder(root)
    else:
        records = _read_class_folders(root)
    if not records:
        raise DatasetError(str(root), "no images found (expected index.csv, *.mat files, or <class>/ folders)")
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise DatasetError(str(r.image), f"duplicate id {r.id!r}")
        seen.add(r.id)
    return records


def _read_index(root: Path) -> list[Record]:
    records = []
    with open(root / "index.csv", newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            where = f"{root / 'index.csv'}:{line}"
            try:
                label = normalise_class(row["label"])
            except ValueError as err:
                raise DatasetError(where, str(err)) from None
            image = root / row["image"]
            mask = root / row["mask"] if row.get("mask") else None
            for path in (image, mask):
                if path is not None and not path.is_file():
                    raise DatasetError(str(path), f"file listed in {where} is missing")
            spacing = row.get("spacing_mm") or ""
            records.append(
                Record(
                    row["id"],
                    image,
                    mask,
                    label,
                    figshare_patient(row.get("patient_id")) or None,
                    float(spacing) if spacing else None,
                )
            )
    return records


def _read_figshare_folder(root: Path) -> list[Record]:
    from braintumor.imageio import load_scan

    records = []
    for path in sorted(root.glob("*.mat"), key=lambda p: (len(p.stem), p.stem)):
        scan = load_scan(path)
        if scan.meta.get("label") is None:
            raise DatasetError(str(path), "Figshare file has no known 'label' (expected 1, 2 or 3)")
        spacing = scan.spacing_mm[0] if scan.spacing_mm else None
        records.append(
            Record(
                f"fs{path.stem}", path, path, scan.meta["label"], figshare_patient(scan.meta.get("patient_id")), spacing
            )
        )
    return records


def _read_class_folders(root: Path) -> list[Record]:
    mask_root = (
        next((d for d in sorted(root.parent.iterdir()) if d.is_dir() and d != root and "mask" in d.name.lower()), None)
        if root.parent != root
        else None
    )
    records = []
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir() and "mask" not in d.name.lower()):
        try:
            label = normalise_class(class_dir.name)
        except ValueError as err:
            raise DatasetError(str(class_dir), str(err)) from None
        for image in sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            mask = None
            if mask_root is not None and label != "notumor":
                mask = _find_mask(mask_root / class_dir.name / image.relative_to(class_dir).parent, image)
            records.append(
                Record(f"{label}/{image.relative_to(class_dir).with_suffix('')}", image, mask, label, None, None)
            )
    return records


def _find_mask(folder: Path, image: Path) -> Path:
    stem = image.stem
    for candidate in (f"{stem}", f"tumor mask {stem}", f"{stem}_mask", f"{stem}-mask", f"mask_{stem}"):
        for suffix in IMAGE_SUFFIXES:
            path = folder / f"{candidate}{suffix}"
            if path.is_file():
                return path
    raise DatasetError(str(image), f"no mask found for this image under {folder}")


def load_mask(record: Record, shape: tuple[int, int]) -> np.ndarray:
    """The expert mask as uint8 0/1 at the image's size (zeros for no-tumor rows)."""
    if record.mask is None:
        return np.zeros(shape, np.uint8)
    from braintumor.imageio import load_scan

    scan = load_scan(record.mask)
    mask = scan.mask if scan.mask is not None else (scan.pixels > scan.pixels.max() / 2).astype(np.uint8)
    if mask.shape != tuple(shape):
        raise DatasetError(
            str(record.mask), f"mask is {mask.shape[1]}×{mask.shape[0]} but its image is {shape[1]}×{shape[0]}"
        )
    return mask


def load_record(record: Record) -> tuple[Scan, np.ndarray]:
    """The row's ``Scan`` and its expert mask (from the file itself for Figshare .mat, else ``load_mask``)."""
    from braintumor.imageio import load_scan

    scan = load_scan(record.image)
    return scan, scan.mask if scan.mask is not None else load_mask(record, scan.shape)


def write_manifest(records: list[Record], path: str | Path, fold: dict[str, str] | None = None) -> None:
    """Write the table as CSV (optionally with a ``split`` column)."""
    with open(path, "w", newline="") as f:
        names = list(Record.__dataclass_fields__) + (["split"] if fold else [])
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for r in records:
            row = {k: ("" if v is None else v) for k, v in asdict(r).items()}
            if fold:
                row["split"] = fold[r.id]
            writer.writerow(row)
