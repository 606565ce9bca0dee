"""``Analyzer``: scan → tumor type, probabilities, mask at the scan's size, area in cm², warnings.

Runs the shipped ONNX graph with ONNX Runtime (2–3× faster than eager PyTorch on a laptop CPU and
without torch's 2 s import); one session per process, safe to share between threads.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from braintumor import CLASSES
from braintumor.bundle import DEFAULT_MODEL_DIR, Postprocessing, Task
from braintumor.errors import ScanError
from braintumor.imageio import Scan, load_scan
from braintumor.imageio.registry import Source
from braintumor.inference.checks import consistency_warnings, decide, input_warnings
from braintumor.inference.postprocess import postprocess
from braintumor.inference.runtime import OnnxModel, SpacingArg, measured_area, spacing_for
from braintumor.preprocessing import Geometry, output_to_image, to_model_input

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outputs:
    """The networks' outputs for one batch: the means the result is made of, and every member's (leading axis)."""

    mask_prob: np.ndarray  # (N, 1, size, size)
    class_prob: np.ndarray  # (N, classes), before the ensemble's temperature
    features: list[np.ndarray] | None  # each network's pooled encoder features (None: graphs without them)
    member_masks: np.ndarray  # (members, N, 1, size, size)
    member_classes: np.ndarray  # (members, N, classes)


@dataclass
class Result:
    file: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None  # uint8 0/1 at the input image's size
    tumor_pixels: int = 0
    area_cm2: float | None = None  # None when the pixel spacing is unknown: never a made-up number
    spacing_mm: tuple[float, float] | None = None
    spacing_source: str = "unknown"
    ood_score: float | None = None  # how unlike the training images (None: the model has no feature model)
    # an ensemble's disagreement on the outline: the members' mean pixel-wise standard deviation of the mask
    # probability inside it (None: one network, or no outline)
    uncertainty: float | None = None
    uncertainty_map: np.ndarray | None = None  # that standard deviation per pixel, at the image's size (ensembles)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    scan: Scan | None = None

    @property
    def confidence(self) -> float | None:
        return self.probabilities.get(self.label) if self.label else None

    @property
    def contours(self) -> list[np.ndarray]:
        """Tumor outlines as ``(row, col)`` polygons at the image's pixel coordinates."""
        if self.mask is None or not self.mask.any():
            return []
        from skimage.measure import find_contours

        return [c - 1 for c in find_contours(np.pad(self.mask, 1).astype(np.float32), 0.5)]

    def row(self) -> dict[str, Any]:
        """The flat record written to results.csv and printed by ``--json`` (same fields)."""
        p = self.probabilities
        return {
            "file": self.file,
            "label": self.label,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            **{f"p_{c}": (round(p[c], 4) if c in p else None) for c in CLASSES},
            "tumor_pixels": None if self.error else self.tumor_pixels,
            "area_cm2": None if self.area_cm2 is None else round(self.area_cm2, 3),
            "spacing_mm": None if self.spacing_mm is None else [round(s, 4) for s in self.spacing_mm],
            "spacing_source": None if self.error else self.spacing_source,
            "ood_score": None if self.ood_score is None else round(self.ood_score, 3),
            "uncertainty": None if self.uncertainty is None else round(self.uncertainty, 4),
            "warnings": list(self.warnings),
            "error": self.error,
        }


class Analyzer(OnnxModel):
    """Load once, call ``analyze`` from any thread."""

    task = Task.SEGMENT_AND_CLASSIFY
    averages_members = True

    def __init__(
        self, model_dir: str | Path, threads: int | None = None, memory_arena: bool = False, members: int | None = None
    ):
        super().__init__(model_dir, threads, memory_arena, members)
        assert self.card.postprocessing is not None, "a card that outlines has postprocessing (ModelCard checks)"
        #: reassignable (a cross-validation search sets it); ``threshold`` follows it
        self.postprocessing: Postprocessing = self.card.postprocessing

    @property
    def threshold(self) -> float:
        """The mask probability threshold, also used by ``decide`` on the network-resolution map."""
        return self.postprocessing.threshold

    @classmethod
    def default(cls) -> Analyzer:
        """The model shipped inside the package (no training, no download)."""
        return cls(DEFAULT_MODEL_DIR)

    @classmethod
    def load(
        cls, model_dir: str | Path | None = None, memory_arena: bool = False, members: int | None = None
    ) -> Analyzer:
        return cls(model_dir or DEFAULT_MODEL_DIR, memory_arena=memory_arena, members=members)

    def analyze(
        self,
        source: Source | Scan,
        spacing_mm: SpacingArg = None,
        name: str | None = None,
        slice_index: int | None = None,
    ) -> Result:
        """Analyse one scan (path, bytes + ``name``, or a ``Scan``); read errors raise ``ScanError``."""
        scan = source if isinstance(source, Scan) else load_scan(source, name=name, slice_index=slice_index)
        return self.analyze_scans([scan], spacing_mm)[0]

    def analyze_scans(self, scans: list[Scan], spacing_mm: SpacingArg = None) -> list[Result]:
        """One network run for a batch of scans."""
        return self._run([self._prepare(s) for s in scans], spacing_mm)

    def _prepare(self, scan: Scan) -> tuple[Scan, np.ndarray, Geometry]:
        return (scan, *to_model_input(scan.pixels, self.size))

    def _run(self, prepared: list[tuple[Scan, np.ndarray, Geometry]], spacing_mm: SpacingArg) -> list[Result]:
        scans, inputs, geometries = zip(*prepared, strict=True)
        out = self.forward(np.stack(inputs)[:, None])
        class_prob, scores = self.calibrated(out.class_prob, out.features)
        results = []
        for i, (s, x, g) in enumerate(zip(scans, inputs, geometries, strict=True)):
            result = self._result(s, x, g, out.mask_prob[i, 0], class_prob[i], spacing_mm, scores[i])
            if len(out.member_masks) > 1:
                self._add_disagreement(result, out.member_masks[:, i, 0], out.member_classes[:, i], g)
            results.append(result)
        return results

    def forward(self, batch: np.ndarray) -> Outputs:
        """Every member's outputs for a ``(N, 1, size, size)`` batch and their means."""
        runs = self.run_members(batch)
        masks = np.stack([r[0] for r in runs])
        classes = self.member_class_probabilities([r[1] for r in runs])
        # each member has a feature space (and an out-of-distribution model) of its own
        features = [r[2] for r in runs] if all(len(r) > 2 for r in runs) else None
        if len(runs) == 1:  # one network: its outputs are the means (no copy on the single-model hot path)
            return Outputs(masks[0], classes[0], features, masks, classes)
        return Outputs(masks.mean(axis=0), classes.mean(axis=0), features, masks, classes)

    def network(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The outputs for a ``(N, 1, size, size)`` batch: mask and class probabilities (before calibration; an
        ensemble's member means) and the first network's pooled features (None for graphs exported without them)."""
        out = self.forward(batch)
        return out.mask_prob, out.class_prob, None if out.features is None else out.features[0]

    def _add_disagreement(
        self, result: Result, member_masks: np.ndarray, member_classes: np.ndarray, geometry: Geometry
    ) -> None:
        """An ensemble's uncertainty on the outline (and its map), and a warning when its members name different
        types."""
        spread = member_masks.std(axis=0)
        result.uncertainty_map = output_to_image(spread, geometry)
        inside = member_masks.mean(axis=0) >= self.threshold
        if inside.any():
            result.uncertainty = float(spread[inside].mean())
        votes = Counter(self.classes[k] for k in member_classes.argmax(axis=1))
        if len(votes) > 1:
            said = ", ".join(f"{label} {n}" for label, n in votes.most_common())
            result.warnings.append(
                f"the ensemble's {len(member_classes)} members disagree on the type ({said}): treat it as uncertain"
            )

    def analyze_many(
        self,
        sources: Iterable[Source | Scan],
        spacing_mm: SpacingArg = None,
        batch_size: int = 8,
        readers: int | None = None,
    ) -> Iterator[Result]:
        """Results in input order; an unreadable file yields a Result with ``error`` set, the rest go on.

        ``readers`` threads read, decode and preprocess the next files while the network runs (decoders and
        numpy release the GIL); at most a few batches are held in memory."""
        pending: list[tuple[Scan, np.ndarray, Geometry]] = []
        for item in prefetched(
            self._read_prepared, sources, window=2 * batch_size, workers=readers or min(4, os.cpu_count() or 1)
        ):
            if isinstance(item, ScanError):
                yield from self._run(pending, spacing_mm) if pending else ()
                pending = []
                yield Result(file=item.name, error=item.reason)
                continue
            pending.append(item)
            if len(pending) == batch_size:
                yield from self._run(pending, spacing_mm)
                pending = []
        if pending:
            yield from self._run(pending, spacing_mm)

    def _read_prepared(self, source: Source | Scan) -> tuple[Scan, np.ndarray, Geometry] | ScanError:
        try:
            return self._prepare(source if isinstance(source, Scan) else load_scan(source))
        except ScanError as err:
            return err

    def _result(
        self,
        scan: Scan,
        model_input: np.ndarray,
        geometry: Geometry,
        mask_prob: np.ndarray,
        probs: np.ndarray,
        spacing_mm: SpacingArg,
        ood_score: float | None = None,
    ) -> Result:
        spacing, source = spacing_for(scan, spacing_mm)
        probabilities = {c: float(p) for c, p in zip(self.classes, probs, strict=True)}
        # one read of the post-processing: a concurrent switch never mixes two settings in one result
        label, mask, decision_warnings = decision(probabilities, mask_prob, geometry, self.postprocessing)
        pixels = int(mask.sum())
        warnings = input_warnings(scan, model_input) + decision_warnings
        warnings += self.trust_warnings(probabilities, label, ood_score, "the type, outline and area are")
        area = measured_area(pixels, spacing, warnings)
        return Result(
            file=scan.name,
            label=label,
            probabilities=probabilities,
            mask=mask,
            tumor_pixels=pixels,
            area_cm2=area,
            spacing_mm=spacing,
            spacing_source=source,
            ood_score=None if ood_score is None else float(ood_score),
            warnings=warnings,
            scan=scan,
        )


def decision(
    probabilities: dict[str, float], mask_prob: np.ndarray, geometry: Geometry, post: Postprocessing
) -> tuple[str, np.ndarray, list[str]]:
    """The answer the networks' outputs give under ``post``: the label, the mask at the image's size and the warnings
    of the decision. A "no tumor" answer has no outline and no area, never a contradiction. (The post-processing
    search scores candidates through this on saved outputs.)"""
    mask = postprocess(output_to_image(mask_prob, geometry), post)
    label, warnings = decide(probabilities, mask_prob, post.threshold)
    pixels = int(mask.sum())
    warnings += consistency_warnings(label, pixels, mask.size)
    if label == "notumor" and pixels:
        mask = np.zeros_like(mask)
    return label, mask, warnings


def prefetched(fn: Callable[[T], R], items: Iterable[T], window: int, workers: int) -> Iterator[R]:
    """``fn`` over ``items`` in ``workers`` threads, yielded in input order, at most ``window`` ahead."""
    with ThreadPoolExecutor(workers) as pool:
        queue: deque[Future[R]] = deque()
        for item in items:
            queue.append(pool.submit(fn, item))
            if len(queue) > window:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
