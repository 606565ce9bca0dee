"""How the model holds when scans come from elsewhere: the unseen tumor slices of a dataset under each
acquisition shift (``preprocessing.shifts``), scored like ``evaluate`` scores the originals.

The figure that matters most is how often a tumor slice becomes a *silent* "no tumor": called no tumor with
no warning at all, the worst answer the product can give.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from braintumor import TUMOR_CLASSES
from braintumor.data import load_record, read_manifest
from braintumor.errors import ScanError
from braintumor.evaluation import metrics as M
from braintumor.evaluation.evaluate import select_rows
from braintumor.inference.results import Analysis
from braintumor.preprocessing.shifts import SHIFTS

if TYPE_CHECKING:  # an Analyzer is only passed in
    from braintumor.inference import Analyzer

COLUMNS = (
    "shift",
    "n",
    "notumor_silent",
    "notumor_warned",
    "tumor_type_accuracy",
    "dice_mean",
    "dice_glioma",
    "warned",
)


def shift_table(
    data: str | Path,
    analyzer: Analyzer,
    names: list[str] | None = None,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], str]:
    """One row per shift (``none`` first) over the unseen tumor slices of ``data``."""
    records, described = select_rows(read_manifest(data), analyzer.trainings, "unseen")
    records = [r for r in records if r.label in TUMOR_CLASSES]
    if limit and len(records) > limit:
        records = [records[i] for i in sorted(np.random.default_rng(seed).permutation(len(records))[:limit])]
    slices = []
    for r in records:
        try:
            slices.append((r, *load_record(r)))
        except ScanError:
            continue
    chosen = {"none": None} | {n: SHIFTS[n] for n in (names or SHIFTS)}
    rows = []
    for name, shift in tqdm(chosen.items(), desc="shifts", disable=not progress, leave=False):
        rng = np.random.default_rng(seed)
        outcomes: list[tuple[str, Analysis, float]] = []
        for r, scan, truth in slices:
            pixels, mask = (scan.pixels, truth) if shift is None else shift(scan.pixels, truth, rng)
            # a spacing, so that "warned" counts only warnings about the result (1 mm where the row has none)
            result = analyzer.analyze_scans([replace(scan, pixels=pixels, mask=None)], r.spacing_mm or 1.0)[0]
            assert isinstance(result, Analysis), "the shift table needs a model that outlines and classifies"
            outcomes.append((r.label, result, M.dice(result.mask, mask > 0)))
        rows.append(_row(name, outcomes))
    return rows, f"{len(slices)} tumor slices of {described}"


def _row(name: str, outcomes: list[tuple[str, Analysis, float]]) -> dict[str, Any]:
    labels = np.array([label for label, _, _ in outcomes])
    called_none = np.array([r.label == "notumor" for _, r, _ in outcomes])
    warned = np.array([bool(r.warnings) for _, r, _ in outcomes])
    types = np.array(
        [TUMOR_CLASSES[int(np.argmax([r.probabilities[c] for c in TUMOR_CLASSES]))] for _, r, _ in outcomes]
    )
    dices = np.array([d for _, _, d in outcomes])
    glioma = labels == "glioma"
    return {
        "shift": name,
        "n": len(outcomes),
        "notumor_silent": float((called_none & ~warned).mean()),
        "notumor_warned": float((called_none & warned).mean()),
        "tumor_type_accuracy": float((types == labels).mean()),
        "dice_mean": float(dices.mean()),
        "dice_glioma": float(dices[glioma].mean()) if glioma.any() else float("nan"),
        "warned": float(warned.mean()),
    }


def markdown(rows: list[dict[str, Any]], described: str, model_name: str) -> str:
    """The table for README / docs/experiments.md."""
    head = (
        "| shift | slices | silent 'no tumor' | 'no tumor' with warning | tumor-type acc. (3 classes) | "
        "Dice mean | Dice glioma | any warning |\n|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['shift']} | {r['n']} | {r['notumor_silent']:.1%} | {r['notumor_warned']:.1%} | "
        f"{r['tumor_type_accuracy']:.1%} | {r['dice_mean']:.3f} | {r['dice_glioma']:.3f} | "
        f"{r['warned']:.1%} |\n"
        for r in rows
    )
    return f"Model `{model_name}`; {described}.\n\n{head}{body}"
