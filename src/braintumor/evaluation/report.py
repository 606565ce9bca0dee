"""report.json, report.md, per-slice CSV, confusion matrices (CSV + PNG) and plots of an evaluation."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from braintumor import CLASSES, TUMOR_CLASSES
from braintumor.errors import OutputError

if TYPE_CHECKING:
    from braintumor.evaluation.evaluate import SliceOutcome

#: (report.json key, class names, file stem) of the confusion matrices
MATRICES = (
    ("confusion_matrix", CLASSES, "confusion_matrix"),
    ("tumor_type_confusion_matrix", TUMOR_CLASSES, "confusion_matrix_tumor_types"),
)


def write_report(
    report: dict[str, Any],
    outcomes: list[SliceOutcome],
    out: Path,
    described: str,
    model: str,
    model_training: str | None,
) -> None:
    """Figures first (report.json, report.md, CSVs), plots last: a plotting failure never loses the figures.
    ``model``: its name; ``model_training``: the sentence saying which patients it trained on."""
    out.mkdir(parents=True, exist_ok=True)
    report = {
        **report,
        "split": described,
        "model": model,
        "model_training": model_training,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    _per_slice_csv(outcomes, out / "per_slice.csv")
    for key, names, stem in MATRICES:
        if report[key] is not None:  # None: a segmentation-only model has no confusion matrix
            _matrix_csv(report[key], names, out / f"{stem}.csv")
    try:
        _plots(report, outcomes, out)
    except Exception as err:
        raise OutputError(
            str(out),
            f"drawing the plots failed ({type(err).__name__}: {err}); report.json, report.md and the CSVs are written",
        ) from err


def _per_slice_csv(outcomes: list[SliceOutcome], path: Path) -> None:
    fields = [
        "id",
        "patient_id",
        "label",
        "predicted",
        "confidence",
        "dice",
        "iou",
        "hd95_mm",
        "area_true_cm2",
        "area_pred_cm2",
        "error",
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for o in outcomes:
            writer.writerow(
                {
                    "id": o.record.id,
                    "patient_id": o.record.patient_id or "",
                    "label": o.record.label,
                    "predicted": "" if o.pred is None else CLASSES[o.pred],
                    "confidence": "" if o.probs is None else round(float(o.probs.max()), 4),
                    **{
                        k: "" if getattr(o, k) is None else round(float(getattr(o, k)), 4)
                        for k in ("dice", "iou", "hd95_mm", "area_true_cm2", "area_pred_cm2")
                    },
                    "error": o.error or "",
                }
            )


def _matrix_csv(matrix: np.ndarray, names: Sequence[str], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *names])
        for name, row in zip(names, matrix, strict=True):
            writer.writerow([name, *row])


def _plots(report: dict[str, Any], outcomes: list[SliceOutcome], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if report.get("classification_produced", True):
        _classification_plots(report, out, plt)
    seg = [o for o in outcomes if o.dice is not None]
    if seg:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        axes[0].hist([o.dice for o in seg], bins=20, range=(0, 1))
        axes[0].set_title("Dice per tumor slice")
        # (true, predicted) where a true area exists; both are computed from the same spacing
        area = [(o.area_true_cm2, o.area_pred_cm2) for o in seg if o.area_true_cm2 and o.area_pred_cm2 is not None]
        axes[1].scatter([t for t, _ in area], [p for _, p in area], s=8)
        top = max([t for t, _ in area] + [p for _, p in area] + [1])
        axes[1].plot([0, top], [0, top], "k--", lw=1)
        axes[1].set_xlabel("true area (cm²)")
        axes[1].set_ylabel("predicted area (cm²)")
        fig.tight_layout()
        fig.savefig(out / "segmentation.png", dpi=100)
        plt.close(fig)


def _classification_plots(report: dict[str, Any], out: Path, plt: Any) -> None:
    """The confusion matrices and the reliability diagram: only for a model that classifies."""
    for key, names, stem in MATRICES:
        cm = np.array(report[key])
        fig, ax = plt.subplots(figsize=(5, 4.5))
        ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="black")
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.tight_layout()
        fig.savefig(out / f"{stem}.png", dpi=100)
        plt.close(fig)
    _reliability_plot(report["reliability"], report["ece"], out / "reliability.png", plt)


def _reliability_plot(table: list[dict[str, Any]], ece: float, path: Path, plt: Any) -> None:
    """Accuracy against confidence per bin: on the diagonal, "90% confidence" means 90% right."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot([b["confidence"] for b in table], [b["accuracy"] for b in table], "o-", label=f"model (ECE {ece:.3f})")
    for b in table:
        ax.annotate(
            str(b["n"]), (b["confidence"], b["accuracy"]), fontsize=7, xytext=(3, -9), textcoords="offset points"
        )
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}"


def segmentation_summary(report: dict[str, Any]) -> str:
    """The segmentation figures of a one-line summary, or that the model produces none."""
    if not report.get("segmentation_produced", True):
        return "segmentation: not produced by this model"
    dice, median, area = report["dice_mean"], report["dice_median"], report["area_error_median"]
    return ("Dice n/a" if dice is None else f"Dice mean {dice:.3f} (median {median:.3f})") + (
        ", area error median " + ("n/a" if area is None else f"{area:.1%}")
    )


def classification_summary(report: dict[str, Any]) -> str:
    """The classification figures of a one-line summary, or that the model produces none."""
    if not report.get("classification_produced", True):
        return "classification: not produced by this model"
    return f"tumor-type accuracy {report['tumor_type_accuracy']:.1%}, 4-class accuracy {report['accuracy']:.1%}"


def markdown(r: dict[str, Any]) -> str:
    ci = r.get("ci95", {})
    segmented = r.get("segmentation_produced", True)  # reports written before the key existed all segmented
    classified = r.get("classification_produced", True)  # and all classified

    def interval(k: str, pct: bool) -> str:
        return f" (95% CI {_fmt(ci[k][0], pct)}–{_fmt(ci[k][1], pct)})" if k in ci else ""

    classification_rows = [
        f"| tumor-type accuracy (3 classes, tumor slices) | {_fmt(r['tumor_type_accuracy'], True)}"
        f"{interval('tumor_type_accuracy', True)} |",
        f"| tumor-type accuracy with the 4-class decision | {_fmt(r['tumor_type_accuracy_4way'], True)} |",
        f"| accuracy (4 classes) | {_fmt(r['accuracy'], True)}{interval('accuracy', True)} |",
        f"| macro F1 (4 classes) / (3 tumor types) | {_fmt(r['macro_f1'])} / {_fmt(r['tumor_type_macro_f1'])} |",
    ]
    segmentation_rows = [
        f"| Dice mean / median (tumor slices) | {_fmt(r['dice_mean'])}{interval('dice_mean', False)} / "
        f"{_fmt(r['dice_median'])} |",
        f"| IoU mean | {_fmt(r['iou_mean'])} |",
        f"| HD95 median / mean (mm) | {_fmt(r['hd95_mm_median'])} / {_fmt(r['hd95_mm_mean'])} |",
        f"| area relative error, median | {_fmt(r['area_error_median'], True)}{interval('area_error_median', True)} |",
        f"| tumors missed entirely (Dice 0) | {r['missed_tumors']} |",
        f"| no-tumor images given an outline | {_fmt(r['notumor_outlined'], True)} |",
    ]
    classification_section = [
        "## Per class (4-class decision)",
        "",
        "| class | precision | recall | F1 | n |",
        "|---|---|---|---|---|",
        *[
            f"| {c} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {_fmt(v['f1'])} | {int(v['support'])} |"
            for c, v in r["per_class"].items()
        ],
        "",
    ]
    segmentation_section = [
        "## Segmentation per tumor type",
        "",
        "| class | n | Dice mean | Dice median |",
        "|---|---|---|---|",
        *[
            f"| {c} | {v['n']} | {_fmt(v['dice_mean'])} | {_fmt(v['dice_median'])} |"
            for c, v in r["segmentation_per_class"].items()
        ],
        "",
    ]
    absent = [
        *(
            []
            if segmented
            else [
                "Segmentation: not produced by this model (it classifies only): no Dice, IoU, HD95, area or "
                "outline figures.",
                "",
            ]
        ),
        *(
            []
            if classified
            else [
                "Classification: not produced by this model (a segmentation-only model): no tumor type, accuracy, "
                "F1, calibration or confusion-matrix figures.",
                "",
            ]
        ),
    ]
    per_patient = [f"accuracy {_fmt(r['per_patient']['accuracy_mean'], True)}"] if classified else []
    per_patient += [f"Dice {_fmt(r['per_patient']['dice_mean'])}"] if segmented else []
    lines = [
        f"# Evaluation of {r.get('model')}",
        "",
        f"Split: {r['split']}.",
        f"Images: {r['n_images']} ({r['n_unreadable']} unreadable), patients: {r['n_patients']}. No augmentation; "
        + ("masks compared at each image's native resolution." if segmented else "classification only."),
        "",
        *absent,
        "| metric | value |",
        "|---|---|",
        *(classification_rows if classified else []),
        *(segmentation_rows if segmented else []),
        *([f"| expected calibration error (4 classes, 15 bins) | {_fmt(r['ece'])} |"] if classified else []),
        f"| out-of-distribution warnings | {_fmt(r['ood_warning_rate'], True)} |",
        "",
        *(classification_section if classified else []),
        *(segmentation_section if segmented else []),
        f"Per patient (each patient once): {', '.join(per_patient)} over {r['per_patient']['n_patients']} patients.",
        "",
        *(
            [
                "The no-tumor images come from another source and MRI sequence than the tumor slices: 4-class "
                "figures overstate skill; the 3-class tumor-type figures are the honest measure.",
                "",
            ]
            if classified
            else []
        ),
    ]
    return "\n".join(lines)
