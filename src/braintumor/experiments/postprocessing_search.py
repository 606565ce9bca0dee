"""Choose the mask post-processing by cross-validation, nnU-Net style: every candidate is scored on the pooled
out-of-fold predictions of the fold models (each row by the model that did not train on it), one setting at a
time (threshold, then small components, then holes), and a change is kept only when it raises the pooled mean
Dice by at least ``MIN_GAIN``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from braintumor.bundle import Postprocessing
from braintumor.evaluation.evaluate import SliceOutcome, evaluate, summarise

if TYPE_CHECKING:
    from braintumor.inference import Analyzer

#: the candidates, setting by setting
THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
COMPONENT_FRACTIONS = (0.0, 0.1, 0.3, 1.0)
FILL_HOLES = (False, True)
#: a change must raise the pooled mean Dice by this much to be kept (else the simpler setting stays)
MIN_GAIN = 0.002


def _memoised(network: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
    """The network's outputs per input batch, computed once: only the post-processing changes between candidates."""
    seen: dict[bytes, Any] = {}

    def run(batch: np.ndarray) -> Any:
        key = hashlib.blake2b(batch.tobytes(), digest_size=16).digest()
        if key not in seen:
            seen[key] = network(batch)
        return seen[key]

    return run


def search(data: str | Path, folds: list[Analyzer], n_boot: int = 200) -> tuple[Postprocessing, list[dict[str, Any]]]:
    """The chosen post-processing and one row per candidate tried (pooled out-of-fold figures)."""
    for analyzer in folds:
        analyzer.network = _memoised(analyzer.network)  # type: ignore[method-assign,assignment]

    def pooled(candidate: Postprocessing) -> dict[str, Any]:
        outcomes: list[SliceOutcome] = []
        for analyzer in folds:
            analyzer.postprocessing = candidate
            outcomes += evaluate(data, analyzer, split="unseen", progress=False)[0]
        return summarise(outcomes, n_boot=n_boot)

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
