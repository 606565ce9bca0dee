"""``Classifier``: a classification-only model folder (inception_v3, alexnet, mlp) → tumor type and probabilities.

The Analyzer's counterpart for the reference classifiers: it runs their ONNX graph (``image`` → ``class_prob``,
``features``) with ONNX Runtime and returns the same ``Result``, without a mask, an outline or an area: these
models do not produce a segmentation, and nothing here pretends they do. ``load_model`` picks the Analyzer,
the Classifier or the Segmenter from a model folder's card, so ``evaluate`` scores every architecture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from braintumor.bundle import Task, read_card
from braintumor.imageio import Scan
from braintumor.inference.analyzer import Analyzer, Result
from braintumor.inference.checks import input_warnings
from braintumor.inference.runtime import OnnxModel, SpacingArg, spacing_for
from braintumor.inference.segmenter import Segmenter
from braintumor.preprocessing import to_model_input

#: what a classification-only model says about the mask, in results and reports
NO_SEGMENTATION = "segmentation: not produced by this model"


class Classifier(OnnxModel):
    """Load once, call ``analyze_scans``; results carry ``mask=None`` and no area."""

    task = Task.CLASSIFY

    def network(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The graph's raw outputs for a ``(N, 1, size, size)`` batch: class probabilities (before calibration) and
        the features the last layer reads (None for a graph exported without them)."""
        outputs = self.session.run(None, {"image": batch})
        return outputs[0], outputs[1] if len(outputs) > 1 else None

    def analyze_scans(self, scans: list[Scan], spacing_mm: SpacingArg = None) -> list[Result]:
        """One network run for a batch of scans."""
        inputs = [to_model_input(s.pixels, self.size)[0] for s in scans]
        class_prob, features = self.network(np.stack(inputs)[:, None])
        class_prob, scores = self.calibrated(class_prob, None if features is None else [features])
        return [
            self._result(s, x, p, spacing_mm, o) for s, x, p, o in zip(scans, inputs, class_prob, scores, strict=True)
        ]

    def _result(
        self, scan: Scan, model_input: np.ndarray, probs: np.ndarray, spacing_mm: SpacingArg, ood_score: float | None
    ) -> Result:
        spacing, source = spacing_for(scan, spacing_mm)
        probabilities = {c: float(p) for c, p in zip(self.classes, probs, strict=True)}
        label = max(probabilities, key=probabilities.__getitem__)
        warnings = input_warnings(scan, model_input)
        warnings += self.trust_warnings(probabilities, label, ood_score, "the type is")
        warnings.append(f"{NO_SEGMENTATION}: no outline, no area")
        return Result(
            file=scan.name,
            label=label,
            probabilities=probabilities,
            mask=None,
            spacing_mm=spacing,
            spacing_source=source,
            ood_score=None if ood_score is None else float(ood_score),
            warnings=warnings,
            scan=scan,
        )


def load_model(model_dir: str | Path | None = None, members: int | None = None) -> Analyzer | Classifier | Segmenter:
    """The runner a model folder's task needs: the Analyzer (mask and type; the shipped model when None; an
    ensemble's first ``members``), the Classifier (type only) or the Segmenter (mask only)."""
    if model_dir is None:
        return Analyzer.load(members=members)
    task = read_card(model_dir).task
    if task is Task.CLASSIFY:
        return Classifier(model_dir)
    if task is Task.SEGMENT:
        return Segmenter(model_dir)
    return Analyzer(model_dir, members=members)
