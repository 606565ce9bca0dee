"""``Analyzer``: the one runner. A model folder in, and for each scan what the card's task gives: an
``Analysis`` (tumor type, mask at the scan's size, area in cm²), a ``Classification`` or a ``Segmentation``
(``braintumor.inference.results``), with warnings.

Runs the ONNX graphs with ONNX Runtime (2–3× faster than eager PyTorch on a laptop CPU and without torch's 2 s
import); one session per network per process, safe to share between threads.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, TypeVar

import numpy as np

from braintumor.bundle import DEFAULT_MODEL_DIR, ModelFolderError, Postprocessing
from braintumor.errors import ScanError
from braintumor.imageio import Scan, load_scan
from braintumor.imageio.registry import Source
from braintumor.inference.checks import consistency_warnings, decide, input_warnings
from braintumor.inference.postprocess import postprocess
from braintumor.inference.results import (
    NO_CLASSIFICATION,
    NO_SEGMENTATION,
    Analysis,
    Classification,
    Failure,
    Result,
    Segmentation,
)
from braintumor.inference.runtime import OnnxModel, SpacingArg, measured_area, spacing_for
from braintumor.preprocessing import Geometry, output_to_image, to_model_input

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outputs:
    """The networks' outputs for one batch: the means the result is made of, and every member's (leading axis).
    A graph without a head has None for it (the task says which)."""

    mask_prob: np.ndarray | None  # (N, 1, size, size)
    class_prob: np.ndarray | None  # (N, classes), before the ensemble's temperature
    features: list[np.ndarray] | None  # each network's pooled encoder features (None: graphs without them)
    member_masks: np.ndarray | None  # (members, N, 1, size, size)
    member_classes: np.ndarray | None  # (members, N, classes)


class _Seen(TypedDict):
    """What every answer about a read scan has (``results.Answer``'s fields)."""

    file: str
    scan: Scan
    spacing_mm: tuple[float, float] | None
    spacing_source: str
    ood_score: float | None
    warnings: list[str]


class Analyzer(OnnxModel):
    """Load once, call ``analyze`` from any thread. An ensemble folder runs its members and averages them."""

    def __init__(
        self, model_dir: str | Path, threads: int | None = None, memory_arena: bool = False, members: int | None = None
    ):
        super().__init__(model_dir, threads, memory_arena, members)
        #: threshold and mask clean-up of a model that outlines (None: it does not); reassignable (a cross-validation
        #: sets the one it chose out of fold), ``threshold`` follows it
        self.postprocessing: Postprocessing | None = self.card.postprocessing

    @property
    def threshold(self) -> float:
        """The mask probability threshold, also used by ``decide`` on the network-resolution map."""
        if self.postprocessing is None:
            raise ModelFolderError(str(self.model_dir), f"a {self.task.value} model has no mask threshold")
        return self.postprocessing.threshold

    @classmethod
    def default(cls) -> Analyzer:
        """The model shipped inside the package (no training, no download)."""
        return cls(DEFAULT_MODEL_DIR)

    @classmethod
    def load(
        cls,
        model_dir: str | Path | None = None,
        memory_arena: bool = False,
        members: int | None = None,
    ) -> Analyzer:
        """The model folder (the shipped one when None; an ensemble's first ``members``)."""
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
        class_prob: np.ndarray | None = None
        scores: list[float | None] = [None] * len(scans)
        if out.class_prob is not None:
            class_prob, scores = self.calibrated(out.class_prob, out.features)
        results: list[Result] = []
        for i, (scan, x, g) in enumerate(zip(scans, inputs, geometries, strict=True)):
            spacing, source = spacing_for(scan, spacing_mm)
            seen = _Seen(
                file=scan.name,
                scan=scan,
                spacing_mm=spacing,
                spacing_source=source,
                ood_score=scores[i],
                warnings=input_warnings(scan, x),
            )
            mask_prob = None if out.mask_prob is None else out.mask_prob[i, 0]
            probs = (
                None if class_prob is None else {c: float(p) for c, p in zip(self.classes, class_prob[i], strict=True)}
            )
            result = self._answer(seen, g, mask_prob, probs)
            if len(self.sessions) > 1:
                self._add_disagreement(result, out, i, g)
            results.append(result)
        return results

    def _answer(
        self, seen: _Seen, geometry: Geometry, mask_prob: np.ndarray | None, probabilities: dict[str, float] | None
    ) -> Classification | Segmentation:
        """The task's result from one image's outputs (means over an ensemble's members)."""
        # one read of the post-processing: a concurrent switch never mixes two settings in one result
        warnings, score, post = seen["warnings"], seen["ood_score"], self.postprocessing
        if mask_prob is None or post is None:
            assert probabilities is not None, "every graph has a mask head, a class head or both (the card's task)"
            label = max(probabilities, key=probabilities.__getitem__)
            warnings += self.trust_warnings(probabilities, label, score, "the type is")
            warnings.append(f"{NO_SEGMENTATION}: no outline, no area")
            return Classification(**seen, label=label, probabilities=probabilities)
        if probabilities is None:
            mask = postprocess(output_to_image(mask_prob, geometry), post)
            warnings.append(f"{NO_CLASSIFICATION}: a segmentation-only model outlines, it does not classify")
            pixels = int(mask.sum())
            area = measured_area(pixels, seen["spacing_mm"], warnings)
            return Segmentation(**seen, mask=mask, tumor_pixels=pixels, area_cm2=area)
        label, mask, decision_warnings = decision(probabilities, mask_prob, geometry, post)
        warnings += decision_warnings
        warnings += self.trust_warnings(probabilities, label, score, "the type, outline and area are")
        pixels = int(mask.sum())
        area = measured_area(pixels, seen["spacing_mm"], warnings)
        return Analysis(**seen, label=label, probabilities=probabilities, mask=mask, tumor_pixels=pixels, area_cm2=area)

    def forward(self, batch: np.ndarray) -> Outputs:
        """Every member's outputs for a ``(N, 1, size, size)`` batch and their means."""
        runs = self.run_members(batch)
        masks = np.stack([r["mask_prob"] for r in runs]) if "mask_prob" in runs[0] else None
        classes = self.member_class_probabilities([r["class_prob"] for r in runs]) if "class_prob" in runs[0] else None
        # each member has a feature space (and an out-of-distribution model) of its own
        features = [r["features"] for r in runs] if all("features" in r for r in runs) else None
        return Outputs(_mean(masks), _mean(classes), features, masks, classes)

    def network(self, batch: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """The outputs for a ``(N, 1, size, size)`` batch: mask and class probabilities (before calibration; an
        ensemble's member means; None for a head the graph lacks) and the first network's pooled features (None
        for graphs exported without them)."""
        out = self.forward(batch)
        return out.mask_prob, out.class_prob, None if out.features is None else out.features[0]

    def _add_disagreement(self, result: Result, out: Outputs, i: int, geometry: Geometry) -> None:
        """An ensemble's uncertainty on the outline (and its map), and a warning when its members name different
        types."""
        if isinstance(result, Segmentation) and out.member_masks is not None:
            member_masks = out.member_masks[:, i, 0]
            spread = member_masks.std(axis=0)
            result.uncertainty_map = output_to_image(spread, geometry)
            inside = member_masks.mean(axis=0) >= self.threshold
            if inside.any():
                result.uncertainty = float(spread[inside].mean())
        if isinstance(result, Classification) and out.member_classes is not None:
            member_classes = out.member_classes[:, i]
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
                yield Failure(file=item.name, error=item.reason)
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


def _mean(member_outputs: np.ndarray | None) -> np.ndarray | None:
    """The members' mean of one output (leading axis); one network's output as it is (no copy on the hot path)."""
    if member_outputs is None:
        return None
    mean: np.ndarray = member_outputs[0] if len(member_outputs) == 1 else member_outputs.mean(axis=0)
    return mean


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
