"""Choose the mask post-processing by cross-validation, nnU-Net style: every candidate is scored on the pooled
out-of-fold predictions of the fold models (each row by the model that did not train on it), one setting at a
time (threshold, then small components, then holes), and a change is kept only when it raises the pooled mean
Dice by at least ``MIN_GAIN``.

The networks run once per row (``saved_rows``); each candidate is then decided and scored from those saved
outputs (``outcomes_under``), through the same ``decision`` the Analyzer makes its results with."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from braintumor import CLASSES
from braintumor.bundle import ModelFolderError, Postprocessing
from braintumor.data import Record, load_record, read_manifest
from braintumor.errors import ScanError
from braintumor.evaluation.evaluate import SliceOutcome, outcome, select_rows, spacing_of, summarise
from braintumor.preprocessing import Geometry, to_model_input

if TYPE_CHECKING:
    from braintumor.inference import Analyzer

#: the candidates, setting by setting
THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
COMPONENT_FRACTIONS = (0.0, 0.1, 0.3, 1.0)
FILL_HOLES = (False, True)
#: a change must raise the pooled mean Dice by this much to be kept (else the simpler setting stays)
MIN_GAIN = 0.002


@dataclass(frozen=True)
class SavedRow:
    """One out-of-fold row as its fold model's networks left it: what every candidate post-processing acts on."""

    record: Record
    truth: np.ndarray  # the expert mask at the image's size
    spacing: tuple[float, float] | None
    mask_prob: np.ndarray  # (size, size), network resolution
    geometry: Geometry
    probabilities: dict[str, float]  # calibrated
    ood_warned: bool | None


def saved_rows(data: str | Path, analyzer: Analyzer, progress: bool = False) -> list[SavedRow | SliceOutcome]:
    """The model's unseen rows of ``data`` (``evaluate``'s rows, in its order), each run through the networks once;
    an unreadable row is its outcome already (its error)."""
    records, _ = select_rows(read_manifest(data), analyzer.trainings, "unseen")
    rows: list[SavedRow | SliceOutcome] = []
    for r in tqdm(records, desc="networks", disable=not progress, leave=False):
        try:
            scan, truth = load_record(r)
        except ScanError as err:
            rows.append(SliceOutcome(r, CLASSES.index(r.label), None, None, error=str(err)))
            continue
        x, geometry = to_model_input(scan.pixels, analyzer.size)
        out = analyzer.forward(x[None, None])
        if out.mask_prob is None or out.class_prob is None:
            raise ModelFolderError(str(analyzer.model_dir), "the search needs a model that outlines and classifies")
        class_prob, scores = analyzer.calibrated(out.class_prob, out.features)
        ood = None if analyzer.ood_threshold is None else analyzer.is_unfamiliar(scores[0])
        probabilities = {c: float(p) for c, p in zip(analyzer.classes, class_prob[0], strict=True)}
        rows.append(SavedRow(r, truth, spacing_of(r, scan), out.mask_prob[0, 0], geometry, probabilities, ood))
    return rows


def outcomes_under(rows: list[SavedRow | SliceOutcome], post: Postprocessing) -> list[SliceOutcome]:
    """The rows' outcomes had the model used ``post``: what ``evaluate`` gives with that post-processing."""
    from braintumor.inference.analyzer import decision

    out = []
    for row in rows:
        if isinstance(row, SliceOutcome):
            out.append(row)
            continue
        label, mask, _ = decision(row.probabilities, row.mask_prob, row.geometry, post)
        out.append(outcome(row.record, row.truth, row.spacing, label, row.probabilities, mask, row.ood_warned))
    return out


def search(data: str | Path, folds: list[Analyzer], n_boot: int = 200) -> tuple[Postprocessing, list[dict[str, Any]]]:
    """The chosen post-processing and one row per candidate tried (pooled out-of-fold figures)."""
    saved = [saved_rows(data, analyzer) for analyzer in folds]

    def pooled(candidate: Postprocessing) -> dict[str, Any]:
        return summarise([o for rows in saved for o in outcomes_under(rows, candidate)], n_boot=n_boot)

    rows: list[dict[str, Any]] = []

    def score(candidate: Postprocessing, step: str) -> float:
        report = pooled(candidate)
        rows.append({"step": step, **asdict(candidate), **_figures(report)})
        return float(report["dice_mean"])

    best = Postprocessing()
    best_dice = score(best, "baseline")
    steps: list[tuple[str, str, tuple[Any, ...]]] = [  # each step's values are of its own field's type
        ("threshold", "threshold", THRESHOLDS),
        ("components", "min_component_fraction", COMPONENT_FRACTIONS),
        ("holes", "fill_holes", FILL_HOLES),
    ]
    for step, field, values in steps:
        start = best
        for value in values:
            candidate = replace(start, **{field: value})
            if candidate == start:
                continue
            dice = score(candidate, step)
            if dice >= best_dice + MIN_GAIN:
                best, best_dice = candidate, dice
    for row in rows:  # every candidate was tried once
        row["chosen"] = all(row[k] == v for k, v in asdict(best).items())
    return best, rows


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "dice_mean": report["dice_mean"],
        "dice_glioma": report["segmentation_per_class"].get("glioma", {}).get("dice_mean"),
        "area_error_median": report["area_error_median"],
        "notumor_outlined": report["notumor_outlined"],
        "missed_tumors": report["missed_tumors"],
        "tumor_type_accuracy": report["tumor_type_accuracy"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The candidates as a Markdown table."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(lines) + "\n"
