"""What the runner answers about one image, typed by the model's task, each with its fields by construction:

- ``Analysis``: tumor type and outline (the shipped model);
- ``Classification``: tumor type only (the reference classifiers);
- ``Segmentation``: outline and area only (the reference segmenter);
- ``Failure``: the file could not be read (a batch goes on without it).

Code that needs a mask asks ``isinstance(result, Segmentation)`` (an ``Analysis`` is one), never whether a field
is None.  Every result gives the same flat ``row()``, the columns of results.csv and ``--json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from braintumor import CLASSES
from braintumor.imageio import Scan

#: what a classification-only model says about the mask, in results and reports
NO_SEGMENTATION = "segmentation: not produced by this model"
#: what a segmentation-only model says about the tumor type, in results and reports
NO_CLASSIFICATION = "tumor type: not produced by this model"

#: The fields of ``row()``, in order: the columns of results.csv (a result leaves out what its task lacks: None).
COLUMNS = [
    "file",
    "label",
    "confidence",
    *(f"p_{c}" for c in CLASSES),
    "tumor_pixels",
    "area_cm2",
    "spacing_mm",
    "spacing_source",
    "ood_score",
    "uncertainty",
    "warnings",
    "error",
]


@dataclass(kw_only=True)
class Result:
    """What every result has: the file it is about and its warnings."""

    file: str
    warnings: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The flat record written to results.csv and printed by ``--json``: every column, None where this result's
        task produces nothing."""
        fields = self._fields()
        unknown = fields.keys() - set(COLUMNS)
        assert not unknown, f"not a column of results.csv: {unknown}"
        return {c: fields.get(c) for c in COLUMNS}

    def _fields(self) -> dict[str, Any]:
        return {"file": self.file, "warnings": list(self.warnings)}


@dataclass(kw_only=True)
class Failure(Result):
    """A file that could not be read or decoded: the reason, in one line."""

    error: str

    def _fields(self) -> dict[str, Any]:
        return super()._fields() | {"error": self.error}


@dataclass(kw_only=True)
class Answer(Result):
    """A model's answer about an image it read: the scan, the pixel spacing areas are measured in, and how unlike
    the training images the input is."""

    scan: Scan
    spacing_mm: tuple[float, float] | None  # None when unknown: areas are then never computed
    spacing_source: str
    ood_score: float | None = None  # None: the model has no out-of-distribution model

    def _fields(self) -> dict[str, Any]:
        spacing = self.spacing_mm
        return super()._fields() | {
            "spacing_mm": None if spacing is None else [round(s, 4) for s in spacing],
            "spacing_source": self.spacing_source,
            "ood_score": None if self.ood_score is None else round(self.ood_score, 3),
        }


@dataclass(kw_only=True)
class Classification(Answer):
    """The tumor type and the calibrated probability of every class."""

    label: str
    probabilities: dict[str, float]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    def _fields(self) -> dict[str, Any]:
        p = self.probabilities
        return super()._fields() | {
            "label": self.label,
            "confidence": round(self.confidence, 4),
            **{f"p_{c}": (round(p[c], 4) if c in p else None) for c in CLASSES},
        }


@dataclass(kw_only=True)
class Segmentation(Answer):
    """The tumor mask at the image's size and its area (None without a known spacing: never a made-up number)."""

    mask: np.ndarray  # uint8 0/1
    tumor_pixels: int
    area_cm2: float | None
    # an ensemble's disagreement on the outline: the members' mean pixel-wise standard deviation of the mask
    # probability inside it (None: one network, or no outline), and that deviation per pixel at the image's size
    uncertainty: float | None = None
    uncertainty_map: np.ndarray | None = None

    @property
    def contours(self) -> list[np.ndarray]:
        """Tumor outlines as ``(row, col)`` polygons at the image's pixel coordinates."""
        if not self.mask.any():
            return []
        from skimage.measure import find_contours

        return [c - 1 for c in find_contours(np.pad(self.mask, 1).astype(np.float32), 0.5)]

    def _fields(self) -> dict[str, Any]:
        return super()._fields() | {
            "tumor_pixels": self.tumor_pixels,
            "area_cm2": None if self.area_cm2 is None else round(self.area_cm2, 3),
            "uncertainty": None if self.uncertainty is None else round(self.uncertainty, 4),
        }


@dataclass(kw_only=True)
class Analysis(Classification, Segmentation):
    """Tumor type and outline together: a "no tumor" answer has an empty mask and no area, never a contradiction."""
