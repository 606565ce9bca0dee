"""What every runnable model folder shares: its verified ONNX graph in an ONNX Runtime session, its classes and
input size, and its calibration (temperature, out-of-distribution model and threshold).  The Analyzer (mask and
type), the Classifier (type only) and the Segmenter (mask only) turn the graph's outputs into results."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from braintumor.errors import ScanError
from braintumor.imageio import Scan, as_spacing
from braintumor.imageio.scan import area_cm2
from braintumor.inference.bundle import ONNX, OOD, read_card, verified_file
from braintumor.inference.calibration import FeatureModel, apply_temperature

#: a pixel spacing given by the caller: one number (mm) or (row, col)
SpacingArg = float | tuple[float, float] | list[float] | None
#: Below this top probability the type is reported as uncertain.
LOW_CONFIDENCE = 0.6


class OnnxModel:
    """Load once; ``session.run`` is safe to share between threads."""

    #: the card's ``task`` this runner accepts
    task = ""

    def __init__(self, model_dir: str | Path, threads: int | None = None, memory_arena: bool = False):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        self.card = read_card(self.model_dir)
        if self.card.get("task") != self.task:
            raise ScanError(str(model_dir), f"the {type(self).__name__.lower()} needs a {self.task} model folder")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # off by default: a long-lived server would keep a batch's peak allocation for good; a batch run may trade
        # that memory for speed
        options.enable_cpu_mem_arena = memory_arena
        onnx_path = verified_file(self.model_dir, ONNX, self.card)
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.size = int(self.card["input"]["size"])
        self.classes = list(self.card["classes"])
        calibration = self.card.get("calibration", {})
        self.temperature = float(calibration.get("temperature", 1.0))
        self.ood_threshold: float | None = calibration.get("ood_threshold")
        self.features = (
            FeatureModel.load(verified_file(self.model_dir, OOD, self.card)) if self.ood_threshold is not None else None
        )

    def calibrated(self, class_prob: np.ndarray, features: np.ndarray | None) -> tuple[np.ndarray, list[float | None]]:
        """Temperature-scaled probabilities and the out-of-distribution score of each row (None without a model)."""
        if self.temperature != 1.0:
            class_prob = apply_temperature(class_prob, self.temperature)
        if self.features is None or features is None:
            return class_prob, [None] * len(class_prob)
        return class_prob, [float(s) for s in self.features.score(features)]

    def is_unfamiliar(self, score: float | None) -> bool:
        """True when an input's out-of-distribution score is over the model's calibrated threshold."""
        return score is not None and self.ood_threshold is not None and score > self.ood_threshold

    def trust_warnings(self, probabilities: dict[str, float], label: str, score: float | None, what: str) -> list[str]:
        """Warnings on how far to trust an answer: an input unlike the training images (``what``: the parts of the
        result that concerns), a low confidence in the reported type."""
        out = []
        if self.is_unfamiliar(score):
            out.append(
                f"unlike the images the model was trained on (out-of-distribution score {score:.2f} > "
                f"{self.ood_threshold:.2f}): {what} unreliable for this input"
            )
        if probabilities[label] < LOW_CONFIDENCE:
            out.append(f"low confidence ({probabilities[label]:.2f}): treat the tumor type as uncertain")
        return out


def spacing_for(scan: Scan, spacing_mm: SpacingArg) -> tuple[tuple[float, float] | None, str]:
    """The scan's own pixel spacing, else the user's (source "user"), else unknown."""
    if scan.spacing_mm is None and spacing_mm is not None:
        return as_spacing(spacing_mm), "user"
    return scan.spacing_mm, scan.spacing_source


def measured_area(pixels: int, spacing: tuple[float, float] | None, warnings: list[str]) -> float | None:
    """The tumor area in cm² from a known spacing; without one, None and a warning (never a made-up number)."""
    if spacing is None:
        warnings.append("pixel spacing unknown: area not computed (give --spacing-mm)")
        return None
    return area_cm2(pixels, spacing)
