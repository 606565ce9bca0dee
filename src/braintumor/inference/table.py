"""The results table: the columns of ``analyze``'s results.csv (and the page's CSV download) and how a
``Result.row()`` becomes one row of it."""

from __future__ import annotations

from typing import Any

from braintumor import CLASSES

COLUMNS = [
    "file",
    "label",
    "confidence",
    *[f"p_{c}" for c in CLASSES],
    "tumor_pixels",
    "area_cm2",
    "spacing_mm",
    "spacing_source",
    "ood_score",
    "uncertainty",
    "warnings",
    "error",
]


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """results.csv cells: spacing as one number or ROWxCOL, warnings joined with '; '."""
    spacing = row["spacing_mm"]
    if spacing is not None:
        spacing = f"{spacing[0]:g}" if spacing[0] == spacing[1] else f"{spacing[0]:g}x{spacing[1]:g}"
    out = {**row, "spacing_mm": spacing, "warnings": "; ".join(row["warnings"])}
    return {k: "" if out[k] is None else out[k] for k in COLUMNS}
