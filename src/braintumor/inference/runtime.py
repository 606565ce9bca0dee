"""What every runnable model folder shares: its verified ONNX graphs in ONNX Runtime sessions (one, or one per
ensemble member), its classes and input size, and its calibration (temperature, out-of-distribution model and
threshold).  The Analyzer turns the graphs' outputs into the results of the card's task."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from braintumor.bundle import (
    ONNX,
    OOD,
    ModelCard,
    ModelFolderError,
    Task,
    Training,
    member_dirs,
    read_card,
    verified_file,
)
from braintumor.imageio import Scan, as_spacing
from braintumor.imageio.scan import area_cm2
from braintumor.inference.calibration import FeatureModel, apply_temperature

if TYPE_CHECKING:
    import onnxruntime as ort

#: a pixel spacing given by the caller: one number (mm) or (row, col)
SpacingArg = float | tuple[float, float] | list[float] | None
#: Below this top probability the type is reported as uncertain.
LOW_CONFIDENCE = 0.6


class OnnxModel:
    """Load once; ``session.run`` is safe to share between threads.

    An ensemble folder (its card lists members) loads every member's graph, or the first ``members`` of them; the
    Analyzer averages the members' outputs."""

    def __init__(
        self,
        model_dir: str | Path,
        threads: int | None = None,
        memory_arena: bool = False,
        members: int | None = None,
    ):
        self.model_dir = Path(model_dir)
        self.card = read_card(self.model_dir)
        #: what the graphs output, and so what the results hold
        self.task: Task = self.card.task
        folders, self.member_cards = self._members(members)
        #: the folder of each network run (this one, or the ensemble's members)
        self.member_dirs = folders
        cores = threads or min(4, os.cpu_count() or 1)
        # several networks: each runs on one core, side by side (one small graph scales poorly over two cores)
        self._cores = cores
        self._pool = ThreadPoolExecutor(cores, "member") if len(folders) > 1 and cores > 1 else None
        threads_each = 1 if self._pool else cores
        self.sessions = [
            onnx_session(verified_file(f, ONNX, c), threads_each, memory_arena)
            for f, c in zip(folders, self.member_cards, strict=True)
        ]
        #: the first (or only) network's session
        self.session = self.sessions[0]
        #: each graph's output names (members share a task; an old member may lack ``features``)
        self._outputs = [[o.name for o in session.get_outputs()] for session in self.sessions]
        self.size = self.card.input.size
        self.classes = list(self.card.classes)
        calibration = self.card.calibration
        self.temperature = calibration.temperature if calibration else 1.0
        #: one feature model and threshold per network (this folder's, or every member's), or None
        self.feature_models = self._feature_models(folders, self.member_cards)
        #: a single model's own threshold; an ensemble's score is in units of its members' thresholds, so 1
        self.ood_threshold: float | None = None
        if self.feature_models is not None:
            self.ood_threshold = 1.0 if self.is_ensemble else self.feature_models[0][1]

    @property
    def trainings(self) -> tuple[Training | None, ...]:
        """How each network behind this runner was trained (one here; an ensemble has one per member): whose
        patients evaluation must never score."""
        return tuple(card.training for card in self.member_cards)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.card.members)

    def _members(self, limit: int | None) -> tuple[list[Path], list[ModelCard]]:
        """The member folders to run and their cards: this folder alone, or an ensemble's first ``limit``."""
        if limit is not None and limit < 1:
            raise ModelFolderError(str(self.model_dir), f"--members must be at least 1, got {limit}")
        if not self.card.members:
            return [self.model_dir], [self.card]
        folders = member_dirs(self.model_dir, self.card)[:limit]
        cards = [read_card(f) for f in folders]
        for folder, card in zip(folders, cards, strict=True):
            if card.task is not self.card.task or card.classes != self.card.classes or card.input != self.card.input:
                raise ModelFolderError(
                    str(folder), "ensemble member differs from the ensemble in task, classes or input"
                )
        return folders, cards

    def run_members(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Every loaded network's raw outputs for one preprocessed batch, by output name (``mask_prob``,
        ``class_prob``, ``features``: those its graph has); an ensemble's networks on the pool's threads, each over
        a part of the batch, so that the cores stay busy whatever the count of members."""
        if self._pool is None:
            outputs = [s.run(None, {"image": batch}) for s in self.sessions]
        else:
            parts = np.array_split(batch, min(len(batch), self._cores))
            runs = [[self._pool.submit(s.run, None, {"image": part}) for part in parts] for s in self.sessions]
            outputs = [[np.concatenate(o) for o in zip(*(r.result() for r in m), strict=True)] for m in runs]
        return [dict(zip(names, out, strict=True)) for names, out in zip(self._outputs, outputs, strict=True)]

    def member_class_probabilities(self, outputs: list[np.ndarray]) -> np.ndarray:
        """``(members, N, classes)``: each ensemble member's class probabilities under that member's own temperature
        (the ensemble's temperature applies to their mean, in ``calibrated``); a single model's as they are."""
        if not self.is_ensemble:
            return np.stack(outputs)
        return np.stack(
            [
                apply_temperature(p, c.calibration.temperature) if c.calibration else p
                for p, c in zip(outputs, self.member_cards, strict=True)
            ]
        )

    @property
    def described(self) -> tuple[str, str | None]:
        """The model's name and the sentence saying which patients it trained on, for reports."""
        return self.card.name, self.card.training.split if self.card.training else None

    @staticmethod
    def _feature_models(folders: list[Path], cards: list[ModelCard]) -> list[tuple[FeatureModel, float]] | None:
        """Each network's out-of-distribution model and threshold, where every network has one (else None)."""
        models = []
        for folder, card in zip(folders, cards, strict=True):
            threshold = card.calibration.ood_threshold if card.calibration else None
            if threshold is None:
                return None
            models.append((FeatureModel.load(verified_file(folder, OOD, card)), threshold))
        return models

    def calibrated(
        self, class_prob: np.ndarray, features: list[np.ndarray] | None
    ) -> tuple[np.ndarray, list[float | None]]:
        """Temperature-scaled probabilities and the out-of-distribution score of each row (None without a model).

        ``features`` are each network's pooled features.  A single model's score is its own; an ensemble's is the
        mean of its members' scores, each divided by that member's threshold (fitted on the member's own unseen
        patients), so 1 is the ensemble's threshold: an input unlike the training images of most members."""
        if self.temperature != 1.0:
            class_prob = apply_temperature(class_prob, self.temperature)
        if self.feature_models is None or features is None:
            return class_prob, [None] * len(class_prob)
        scores = [model.score(f) for (model, _), f in zip(self.feature_models, features, strict=True)]
        if not self.is_ensemble:
            return class_prob, [float(s) for s in scores[0]]
        relative = np.mean([s / threshold for s, (_, threshold) in zip(scores, self.feature_models, strict=True)], 0)
        return class_prob, [float(s) for s in relative]

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


def onnx_session(path: Path, threads: int, memory_arena: bool = False) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU with every graph optimisation, ``threads`` intra-op threads and the memory
    arena off unless asked (a long-lived server would keep a batch's peak allocation for good; a batch run may trade
    that memory for speed)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = memory_arena
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def spacing_for(scan: Scan, spacing_mm: SpacingArg) -> tuple[tuple[float, float] | None, str]:
    """The scan's own pixel spacing, else the user's (source "user"), else unknown."""
    if scan.spacing_mm is None and spacing_mm is not None:
        return as_spacing(spacing_mm), "user"
    return scan.spacing_mm, scan.spacing_source


#: How every output (line, caption, page) says that an area was not computed.
NO_AREA = "area unknown (no pixel spacing)"


def measured_area(pixels: int, spacing: tuple[float, float] | None, warnings: list[str]) -> float | None:
    """The tumor area in cm² from a known spacing; without one, None and a warning (never a made-up number)."""
    if spacing is None:
        warnings.append("pixel spacing unknown: area not computed (give --spacing-mm)")
        return None
    return area_cm2(pixels, spacing)
