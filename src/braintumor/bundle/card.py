"""The model card as typed, frozen values: what a model folder promises (task, classes, input, post-processing,
calibration, how it was trained, its ensemble members, its files' checksums).

Only ``braintumor.bundle`` turns these into JSON and back; everything else reads fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from braintumor.preprocessing import PREPROCESSING

#: the card format this code writes; older cards are converted on reading (``bundle.migrate``)
SCHEMA_VERSION = 3
#: ``architecture`` of a folder whose members are whole model folders (``members``)
ENSEMBLE = "ensemble"


class Task(str, Enum):
    """What a model's graph outputs: a mask, class probabilities, or both."""

    SEGMENT_AND_CLASSIFY = "segmentation+classification"
    CLASSIFY = "classification"
    SEGMENT = "segmentation"

    @property
    def outlines(self) -> bool:
        return self is not Task.CLASSIFY

    @property
    def classifies(self) -> bool:
        return self is not Task.SEGMENT


@dataclass(frozen=True)
class InputSpec:
    size: int
    channels: int = 1
    preprocessing: str = PREPROCESSING


@dataclass(frozen=True)
class Postprocessing:
    """Threshold (``>=``), then keep the regions of at least ``min_component_fraction`` of the largest one, then
    fill holes; chosen by cross-validation (``braintumor.inference.postprocess`` applies it)."""

    threshold: float = 0.5
    min_component_fraction: float = 0.0
    fill_holes: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"postprocessing threshold must be in (0, 1), got {self.threshold!r}")
        if not 0.0 <= self.min_component_fraction <= 1.0:
            raise ValueError(
                f"postprocessing min_component_fraction must be in [0, 1], got {self.min_component_fraction!r}"
            )


@dataclass(frozen=True)
class Calibration:
    """A temperature for the class probabilities and an out-of-distribution threshold (its feature model is the
    folder's ``ood.safetensors``); the rest says how they were fitted and how well they hold."""

    temperature: float = 1.0
    ood_threshold: float | None = None
    fitted_on: str = ""
    heldout: dict[str, Any] = field(default_factory=dict)
    ood: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitRecipe:
    """How the training patients were chosen: fold ``val_fold`` of a ``folds``-fold split (seed), or all."""

    folds: int | None = None
    seed: int | None = None
    val_fold: int | None = None
    all_patients: bool = False


@dataclass(frozen=True)
class Training:
    data: str
    split: str  # one sentence for reports
    split_recipe: SplitRecipe
    # salted one-way keys of the training patients (``data.patient_keys``), never raw ids; None only in old cards
    # whose keys were unsalted (``unsalted_keys``), which evaluation refuses
    patient_keys: dict[str, Any] | None
    start_patient_keys: tuple[dict[str, Any], ...] = ()
    unsalted_keys: bool = False
    images: dict[str, dict[str, int]] = field(default_factory=dict)
    patients: dict[str, int] = field(default_factory=dict)
    initialised_from: dict[str, Any] | None = None
    epochs_run: int | None = None
    kept_epoch: int | None = None
    kept: str = ""
    max_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int | None = None
    seconds: float | None = None
    precision: str = ""
    command: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def all_patients(self) -> bool:
        return self.split_recipe.all_patients


@dataclass(frozen=True)
class Member:
    """One model folder of an ensemble (a sub-folder), pinned by its card's SHA-256."""

    name: str
    card_sha256: str


@dataclass(frozen=True)
class Quantization:
    """How the ONNX graph was made integer (a card without it: float32 arithmetic)."""

    activations: str
    weights: str
    calibration: str
    kept_float: tuple[str, ...] = ()
    tool: str = ""


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelCard:
    name: str
    architecture: str
    task: Task
    classes: tuple[str, ...]
    input: InputSpec
    description: str = ""
    postprocessing: Postprocessing | None = None  # None: the model outlines nothing
    calibration: Calibration | None = None
    training: Training | None = None  # None for an ensemble: its members say how each was trained
    validation: dict[str, Any] = field(default_factory=dict)
    cross_validation: dict[str, Any] | None = None
    members: tuple[Member, ...] = ()
    software: dict[str, str] = field(default_factory=dict)
    intended_use: str = ""
    quantization: Quantization | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.task.outlines != (self.postprocessing is not None):
            raise ValueError(f"a {self.task.value} model {'needs' if self.task.outlines else 'has no'} postprocessing")
        if (self.architecture == ENSEMBLE) != bool(self.members):
            raise ValueError("an ensemble card lists its members, and only an ensemble card does")
        if self.input.preprocessing != PREPROCESSING:
            raise ValueError(
                f"unknown preprocessing {self.input.preprocessing!r}: this version runs only {PREPROCESSING!r}"
            )
