"""``Segmenter``: a segmentation-only model folder (seed_unet) → tumor mask and area, no tumor type.

The Classifier's counterpart for the reference segmenter: it runs its ONNX graph (``image`` → ``mask_prob``) with
ONNX Runtime and returns the same ``Result`` with ``label=None`` and no probabilities: the model predicts no class,
and nothing here invents one. ``evaluate`` scores its masks without classification figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from braintumor.bundle import Postprocessing, Task
from braintumor.imageio import Scan
from braintumor.inference.analyzer import Result
from braintumor.inference.checks import input_warnings
from braintumor.inference.postprocess import postprocess
from braintumor.inference.runtime import OnnxModel, SpacingArg, measured_area, spacing_for
from braintumor.preprocessing import Geometry, output_to_image, to_model_input

#: what a segmentation-only model says about the tumor type, in results and reports
NO_CLASSIFICATION = "tumor type: not produced by this model"


class Segmenter(OnnxModel):
    """Load once, call ``analyze_scans``; results carry ``label=None`` and no probabilities."""

    task = Task.SEGMENT

    def __init__(self, model_dir: str | Path, threads: int | None = None, memory_arena: bool = False):
        super().__init__(model_dir, threads, memory_arena)
        assert self.card.postprocessing is not None, "a card that outlines has postprocessing (ModelCard checks)"
        #: threshold and mask clean-up, as the model card gives them (the Analyzer's rules)
        self.postprocessing: Postprocessing = self.card.postprocessing

    def network(self, batch: np.ndarray) -> np.ndarray:
        """The graph's mask probabilities for a ``(N, 1, size, size)`` batch."""
        mask_prob: np.ndarray = self.session.run(None, {"image": batch})[0]
        return mask_prob

    def analyze_scans(self, scans: list[Scan], spacing_mm: SpacingArg = None) -> list[Result]:
        """One network run for a batch of scans."""
        prepared = [to_model_input(s.pixels, self.size) for s in scans]
        mask_prob = self.network(np.stack([x for x, _ in prepared])[:, None])
        return [
            self._result(s, x, g, m[0], spacing_mm) for s, (x, g), m in zip(scans, prepared, mask_prob, strict=True)
        ]

    def _result(
        self, scan: Scan, model_input: np.ndarray, geometry: Geometry, mask_prob: np.ndarray, spacing_mm: SpacingArg
    ) -> Result:
        mask = postprocess(output_to_image(mask_prob, geometry), self.postprocessing)
        spacing, source = spacing_for(scan, spacing_mm)
        pixels = int(mask.sum())
        warnings = input_warnings(scan, model_input)
        warnings.append(f"{NO_CLASSIFICATION}: a segmentation-only model outlines, it does not classify")
        area = measured_area(pixels, spacing, warnings)
        return Result(
            file=scan.name,
            mask=mask,
            tumor_pixels=pixels,
            area_cm2=area,
            spacing_mm=spacing,
            spacing_source=source,
            warnings=warnings,
            scan=scan,
        )
