"""A whole scan measured: tumor volume in cm³, the two RANO-style diameters, the slices that hold tumor, one type.

``measure`` analyses every slice of a ``Volume`` (``imageio.series``) with the per-slice analyzer, in batches,
and combines the per-slice results; the per-slice ``Result``s are kept, each the same as analysing that slice on
its own.  Nothing is measured from a number that is not known: without the in-plane spacing there is no volume
and no diameter, without a slice spacing (one slice) no volume, and the warnings say so."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from braintumor import CLASSES
from braintumor.bundle import ModelFolderError, Task
from braintumor.imageio.scan import Scan, as_spacing
from braintumor.imageio.series import Volume
from braintumor.inference.results import Classification, Result, Segmentation
from braintumor.inference.runtime import SpacingArg

#: Slice spacing of the training data: the Figshare brain tumor set (Cheng et al. 2015, figshare
#: 10.6084/m9.figshare.1512427) has 6 mm slices with a 1 mm gap between them, i.e. 7 mm from slice to slice.
TRAINING_SLICE_SPACING_MM = 7.0
#: Slice spacings outside this range (mm) are far from the training data's 7 mm: thin 3-D acquisitions
#: (1–2 mm) show the tumor in many more, partial-volume-free slices the model never saw as a stack, and very
#: sparse stacks miss much of it; either way the per-slice results may differ from the training data's.
TYPICAL_SLICE_SPACING_MM = (3.0, 10.0)
#: A figure in a warning: warnings that differ only in these are one warning across slices.
_FIGURE = re.compile(r"\d+(?:\.\d+)?")
#: How many offsets along the longest diameter are searched at once for the perpendicular one (memory bound).
_CHUNK = 256


class SliceAnalyzer(Protocol):
    """What ``measure`` needs of an analyzer (the ``Analyzer`` has it): its task, and results for a batch."""

    model_dir: Path
    task: Task

    def analyze_scans(self, scans: list[Scan], spacing_mm: SpacingArg = None) -> list[Result]: ...


@dataclass
class VolumeResult:
    """The measurements of one volume, and the per-slice ``Result``s (in the volume's slice order) they come from.

    ``diameters_mm`` is (longest, longest perpendicular to it) on ``largest_slice``; ``slice_warnings`` each
    distinct per-slice warning once, with the number of slices that gave it; ``warnings`` the volume's own."""

    name: str
    results: list[Segmentation]
    spacing_mm: tuple[float, float] | None
    slice_spacing_mm: float | None
    tumor_voxels: int = 0
    volume_cm3: float | None = None
    diameters_mm: tuple[float, float] | None = None
    largest_slice: int | None = None
    tumor_slices: list[int] = field(default_factory=list)
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    slice_warnings: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    gaps: tuple[int, ...] = ()
    series_uid: str | None = None

    @property
    def n_slices(self) -> int:
        return len(self.results)

    @property
    def confidence(self) -> float | None:
        return self.probabilities.get(self.label) if self.label else None

    def all_warnings(self) -> list[str]:
        """The volume's warnings, then each per-slice warning once with its count of slices."""
        n = self.n_slices
        return [*self.warnings, *(f"{w} ({k} of {n} slices)" for w, k in self.slice_warnings.items())]

    def row(self) -> dict[str, Any]:
        """The flat record for ``--json``, volumes.csv and the API (as ``Result.row`` for a slice).  Slices are
        numbered from 1, as viewers number them: ``largest_slice``, ``tumor_slices``, and ``gaps`` (a gap after
        slice k, before k + 1)."""
        p = self.probabilities
        diameters = self.diameters_mm
        return {
            "name": self.name,
            "series_uid": self.series_uid,
            "slices": self.n_slices,
            "label": self.label,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            **{f"p_{c}": (round(p[c], 4) if c in p else None) for c in CLASSES},
            "tumor_voxels": self.tumor_voxels,
            "volume_cm3": None if self.volume_cm3 is None else round(self.volume_cm3, 3),
            "longest_diameter_mm": None if diameters is None else round(diameters[0], 1),
            "perpendicular_diameter_mm": None if diameters is None else round(diameters[1], 1),
            "largest_slice": None if self.largest_slice is None else self.largest_slice + 1,
            "tumor_slices": [k + 1 for k in self.tumor_slices],
            "spacing_mm": None if self.spacing_mm is None else [round(s, 4) for s in self.spacing_mm],
            "slice_spacing_mm": None if self.slice_spacing_mm is None else round(self.slice_spacing_mm, 4),
            "gaps": [k + 1 for k in self.gaps],
            "warnings": self.all_warnings(),
        }

    def masks(self) -> list[np.ndarray]:
        """Every slice's 0/1 mask, in the volume's order: what the 3-D mask files are made of."""
        return [r.mask for r in self.results]

    def slice_rows(self) -> list[dict[str, Any]]:
        """Each slice's ``Result.row()`` with its number in the volume (from 1)."""
        return [{"slice": i + 1, **r.row()} for i, r in enumerate(self.results)]


def measure(
    volume: Volume, analyzer: SliceAnalyzer, batch_size: int = 8, spacing_mm: SpacingArg = None
) -> VolumeResult:
    """Analyse every slice of ``volume`` (``batch_size`` at a time) and measure the tumor in 3-D.  ``spacing_mm``
    is the user's in-plane spacing, used only when the volume carries none (as for a single slice).

    - volume: tumor voxels × voxel volume (row × column × slice spacing, mm³) / 1000, in cm³;
    - diameters: on the slice with the largest tumor area, the longest diameter of the tumor and the longest
      diameter perpendicular to it, in mm (``rano_diameters``);
    - type: the slices' class probabilities combined, **weighted by each slice's tumor area**, over the slices that
      hold tumor (a slice through the tumor's centre says more than one through its edge, and slices without
      tumor say nothing about its type); the type is the likeliest *tumor* class of that combination, as a found
      region is never called "no tumor" (``checks.decide``).  When no slice holds tumor, the probabilities are
      the plain mean over all slices and the type their likeliest class.  A segmentation-only model gives no
      probabilities and no type."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not analyzer.task.outlines:
        raise ModelFolderError(
            str(analyzer.model_dir), f"a {analyzer.task.value} model does not outline: a volume needs its masks"
        )
    if volume.spacing_mm is None and spacing_mm is not None:
        volume = replace(volume, spacing_mm=as_spacing(spacing_mm), spacing_source="user")
    slices = list(volume.slices)
    results: list[Segmentation] = []
    for start in range(0, len(slices), batch_size):
        for r in analyzer.analyze_scans(slices[start : start + batch_size], spacing_mm):
            assert isinstance(r, Segmentation), "a model that outlines answers with its mask"
            results.append(r)
    pixels = [int(r.tumor_pixels) for r in results]
    tumor_slices = [i for i, n in enumerate(pixels) if n > 0]
    out = VolumeResult(
        name=volume.name,
        results=results,
        spacing_mm=volume.spacing_mm,
        slice_spacing_mm=volume.slice_spacing_mm,
        tumor_voxels=sum(pixels),
        tumor_slices=tumor_slices,
        gaps=volume.gaps,
        series_uid=volume.series_uid,
    )
    out.slice_warnings = _counted_warnings(results)
    _combine_type(out, results, pixels)
    _measure_size(out, volume, results, pixels)
    out.warnings += _geometry_warnings(volume)
    return out


def _counted_warnings(results: list[Segmentation]) -> dict[str, int]:
    """Each distinct per-slice warning once, with the number of slices that gave it.  Warnings that differ only in
    their figures (an out-of-distribution score, a confidence) are one warning, shown with the figures of the first
    slice that gave it and that slice's number."""
    first: dict[str, tuple[str, int]] = {}  # the warning with its figures masked → (first text, its slice)
    texts: dict[str, set[str]] = {}
    counts: Counter[str] = Counter()
    for k, r in enumerate(results):
        for w in dict.fromkeys(r.warnings):
            key = _FIGURE.sub("#", w)
            first.setdefault(key, (w, k))
            texts.setdefault(key, set()).add(w)
            counts[key] += 1
    return {
        (text if len(texts[key]) == 1 else f"{text}; figures of slice {k + 1}"): counts[key]
        for key, (text, k) in first.items()
    }


def _combine_type(out: VolumeResult, slices: list[Segmentation], pixels: list[int]) -> None:
    """``out.probabilities`` and ``out.label`` by the rule in ``measure``'s docstring."""
    results = [r for r in slices if isinstance(r, Classification)]
    if not results:  # a segmentation-only model
        return
    classes = list(dict.fromkeys(c for r in results for c in r.probabilities))
    probs = np.array([[r.probabilities.get(c, 0.0) for c in classes] for r in results], dtype=np.float64)
    weights = np.asarray(pixels, dtype=np.float64)
    tumor = weights.sum() > 0
    combined = (weights @ probs) / weights.sum() if tumor else probs.mean(axis=0)
    out.probabilities = {c: float(p) for c, p in zip(classes, combined, strict=True)}
    candidates = [c for c in classes if c != "notumor"] if tumor else classes
    out.label = max(candidates or classes, key=out.probabilities.__getitem__)
    said = Counter(r.label for r, n in zip(results, pixels, strict=True) if n)
    if len(said) > 1:
        votes = ", ".join(f"{label} {k}" for label, k in said.most_common())
        out.warnings.append(
            f"the tumor slices disagree on the type ({votes} slices); the volume's type is their area-weighted "
            f"combination: {out.label}"
        )
    if out.label != "notumor" and not tumor:
        out.warnings.append(f"the classifier says {out.label} but the segmenter found no region in any slice")


def _measure_size(out: VolumeResult, volume: Volume, results: list[Segmentation], pixels: list[int]) -> None:
    """Volume and diameters, where the spacings are known."""
    spacing = volume.spacing_mm
    if spacing is None:
        out.warnings.append("pixel spacing unknown: volume and diameters not computed (give --spacing-mm)")
    elif volume.slice_spacing_mm is None:
        out.warnings.append("one slice: no slice spacing, so no volume (the slice's area and diameters are given)")
    else:
        out.volume_cm3 = out.tumor_voxels * spacing[0] * spacing[1] * volume.slice_spacing_mm / 1000.0
    if out.tumor_slices:
        out.largest_slice = int(np.argmax(pixels))  # the first of any tied
        if spacing is not None:
            out.diameters_mm = rano_diameters(results[out.largest_slice].mask, spacing)


def _geometry_warnings(volume: Volume) -> list[str]:
    warnings = []
    step = volume.slice_spacing_mm
    low, high = TYPICAL_SLICE_SPACING_MM
    if step is not None and not low <= step <= high:
        warnings.append(
            f"slice spacing {step:.1f} mm is far from the training slices' {TRAINING_SLICE_SPACING_MM:g} mm "
            f"(6 mm slices, 1 mm gap; typical here: {low:g}–{high:g} mm): the per-slice results may be less reliable"
        )
    if volume.gaps:
        positions = volume.slice_positions_mm
        steps = ", ".join(
            f"{i}→{i + 1}: {positions[i + 1] - positions[i]:.1f} mm" for i in volume.gaps[:5] if i + 1 < len(positions)
        )
        more = f" and {len(volume.gaps) - 5} more" if len(volume.gaps) > 5 else ""
        warnings.append(
            f"uneven slice spacing ({steps}{more}; regular {step:.1f} mm): missing or overlapping slices; the "
            "volume counts each slice as one regular step thick"
        )
    return warnings


def rano_diameters(mask: np.ndarray, spacing_mm: tuple[float, float]) -> tuple[float, float]:
    """The longest diameter of a slice's tumor and the longest diameter perpendicular to it, in mm (RANO-style
    bidimensional measurement), ``(0, 0)`` for an empty mask.

    Measured on the largest 8-connected region (RANO measures each lesion on its own), holes filled (a necrotic
    or cystic centre is crossed); its outline is the marching-squares contour at 0.5 of the 0/1 mask, so a run of
    N pixels is N pixels long, and every point is placed in mm (``row × row spacing``, ``col × col spacing``)
    before any distance or angle is taken: anisotropic pixels are respected.  The longest diameter is the largest
    distance between two outline points; the perpendicular one is the longest segment, perpendicular to it, that
    lies inside the outline (searched at every outline point's offset along the longest diameter, where the
    longest such chord of a polygon lies)."""
    from scipy import ndimage
    from skimage.measure import find_contours

    region = np.asarray(mask, dtype=bool)
    if not region.any():
        return 0.0, 0.0
    labels, count = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        region = labels == int(sizes.argmax())
    region = ndimage.binary_fill_holes(region)
    scale = np.array([float(spacing_mm[0]), float(spacing_mm[1])])
    polygons = []
    for contour in find_contours(np.pad(region, 1).astype(np.float32), 0.5, fully_connected="high"):
        if not np.array_equal(contour[0], contour[-1]):
            contour = np.vstack([contour, contour[:1]])
        polygons.append(contour * scale)
    points = np.concatenate(polygons)
    a, b = _farthest_pair(points)
    longest = float(np.linalg.norm(b - a))
    if longest == 0:
        return 0.0, 0.0
    u = (b - a) / longest
    v = np.array([-u[1], u[0]])
    starts = np.concatenate([p[:-1] for p in polygons])
    ends = np.concatenate([p[1:] for p in polygons])
    return longest, _longest_chord(starts, ends, u, v, points @ u)


def _farthest_pair(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two points farthest apart (among the convex hull's vertices, where they always lie)."""
    from scipy.spatial import ConvexHull, QhullError

    unique = np.unique(points, axis=0)
    try:
        candidates = unique[ConvexHull(unique).vertices] if len(unique) > 2 else unique
    except QhullError:  # collinear points: all of them are candidates
        candidates = unique
    distances = np.linalg.norm(candidates[:, None] - candidates[None], axis=-1)
    i, j = np.unravel_index(int(distances.argmax()), distances.shape)
    return candidates[i], candidates[j]


def _longest_chord(starts: np.ndarray, ends: np.ndarray, u: np.ndarray, v: np.ndarray, offsets: np.ndarray) -> float:
    """The longest segment of a line perpendicular to ``u`` (running along ``v``) inside the polygons with edges
    ``starts → ends``, over lines at ``offsets`` along ``u`` (and just before each: the chord's length is
    piecewise linear between the outline's points, so its maximum lies at one of them, from one side).

    An edge crosses the line at offset t when t lies in [its start, its end) along ``u`` (half-open, so a line
    through a vertex counts it once); sorted crossings pair up as inside segments (even-odd)."""
    su, eu, sv, ev = starts @ u, ends @ u, starts @ v, ends @ v
    span = np.where(eu != su, eu - su, 1.0)
    lines = np.unique(np.concatenate([offsets, offsets - 1e-6 * max(1.0, float(np.ptp(offsets)))]))
    best = 0.0
    for first in range(0, len(lines), _CHUNK):
        t = lines[first : first + _CHUNK, None]
        crosses = ((su <= t) & (t < eu)) | ((eu <= t) & (t < su))
        if not crosses.any():
            continue
        at = np.where(crosses, sv + (t - su) / span * (ev - sv), np.nan)
        at.sort(axis=1)  # NaN (no crossing) last
        n = int(crosses.sum(axis=1).max())
        inside = at[:, 1:n:2] - at[:, 0 : n - 1 : 2]  # NaN past a line's own crossings
        inside = inside[np.isfinite(inside)]
        if inside.size:
            best = max(best, float(inside.max()))
    return best
