"""The results table: the columns of ``analyze``'s results.csv (and the page's CSV download) and how a
``Result.row()`` becomes one row of it (the columns themselves: ``results.COLUMNS``)."""

from __future__ import annotations

from typing import Any

from braintumor.inference.results import COLUMNS
from braintumor.inference.volume import VolumeResult


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """results.csv cells: spacing as one number or ROWxCOL, warnings joined with '; '."""
    spacing = row["spacing_mm"]
    if spacing is not None:
        spacing = f"{spacing[0]:g}" if spacing[0] == spacing[1] else f"{spacing[0]:g}x{spacing[1]:g}"
    out = {**row, "spacing_mm": spacing, "warnings": "; ".join(row["warnings"])}
    return {k: "" if out[k] is None else out[k] for k in COLUMNS}


#: The columns of ``analyze``'s volumes.csv, one row per whole scan (its slices' rows are in results.csv): the
#: fields of ``VolumeResult.row()`` (a file that cannot be read as a volume gets its error row in results.csv).
VOLUME_COLUMNS = list(VolumeResult(name="", results=[], spacing_mm=None, slice_spacing_mm=None).row())


def volume_csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """volumes.csv cells: slice numbers space-separated, spacing as ROWxCOL, warnings joined with '; '."""
    spacing = row.get("spacing_mm")
    out = {
        **row,
        "tumor_slices": " ".join(map(str, row.get("tumor_slices", []))),
        "gaps": " ".join(map(str, row.get("gaps", []))),
        "spacing_mm": None if spacing is None else "x".join(f"{s:g}" for s in spacing),
        "warnings": "; ".join(row.get("warnings", [])),
    }
    return {k: "" if out.get(k) is None else out[k] for k in VOLUME_COLUMNS}
