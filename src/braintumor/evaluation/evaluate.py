"""Evaluate a model folder on a manifest at each image's native resolution, never augmenting.

Rows are chosen so no training patient is ever scored: the model card carries one-way keys of its
training patients (and of no-tumor images, which have no patient id); on the training dataset itself
the unseen rows are exactly the model's patient-level validation fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from braintumor import CLASSES, TUMOR_CLASSES
from braintumor.data import Record, load_record, read_manifest
from braintumor.data.patient_keys import trained_groups
from braintumor.data.splits import group_of
from braintumor.errors import DatasetError, ScanError
from braintumor.evaluation import metrics as M
from braintumor.inference.results import Answer, Classification, Segmentation

if TYPE_CHECKING:  # the Analyzer is passed in: evaluation never loads a model itself
    from braintumor.bundle import Training
    from braintumor.imageio import Scan
    from braintumor.inference import Analyzer


@dataclass
class SliceOutcome:
    record: Record
    true: int
    pred: int | None
    probs: np.ndarray | None
    dice: float | None = None
    iou: float | None = None
    hd95_mm: float | None = None
    area_true_cm2: float | None = None
    area_pred_cm2: float | None = None
    pred_pixels: int = 0  # predicted tumor pixels (an outline on a no-tumor image is a false finding)
    ood_warned: bool | None = False  # the out-of-distribution warning was raised (None: the model has no OOD model)
    error: str | None = None
    segmented: bool = True  # the model produced a mask (False: a classification-only model; no mask figures)
    classified: bool = True  # the model produced a class (False: a segmentation-only model; no class figures)

    @property
    def scored_pred(self) -> int:
        """``pred`` of a row that was read and classified (only such rows get classification figures)."""
        assert self.pred is not None, self.error or "not classified"
        return self.pred

    @property
    def scored_probs(self) -> np.ndarray:
        """``probs`` of a row that was read and classified (only such rows get classification figures)."""
        assert self.probs is not None, self.error or "not classified"
        return self.probs

    @property
    def area_abs_error_cm2(self) -> float | None:
        """|predicted − true| tumor area in cm²; None without a spacing."""
        if self.area_true_cm2 is None or self.area_pred_cm2 is None:
            return None
        return abs(self.area_pred_cm2 - self.area_true_cm2)

    @property
    def area_error(self) -> float | None:
        """|predicted − true| / true tumor area; None without a spacing or a true area."""
        if not self.area_true_cm2 or self.area_pred_cm2 is None:  # both are set together, from the spacing
            return None
        return abs(self.area_pred_cm2 - self.area_true_cm2) / self.area_true_cm2


def select_rows(records: list[Record], trainings: Sequence[Training | None], split: str) -> tuple[list[Record], str]:
    """The rows to score and a sentence saying which they are: never a training patient's (of any member of an
    ensemble)."""
    trained = trained_groups(records, trainings)  # refuses cards without salted keys (none, or old unsalted ones)
    unseen = [r for r in records if group_of(r) not in trained]
    n_seen = len(records) - len(unseen)
    if split == "all" and n_seen:
        raise DatasetError(
            "dataset",
            f"{n_seen} rows of this dataset belong to the model's training patients; evaluate with --split unseen",
        )
    if not unseen:
        estimate = (
            " (it was trained on all patients: its accuracy estimate is the cross-validation in its card)"
            if any(t is not None and t.all_patients for t in trainings)
            else ""
        )
        raise DatasetError(
            "dataset", f"every row belongs to a patient the model was trained on; nothing unseen to score{estimate}"
        )
    patients = len({group_of(r) for r in unseen if r.patient_id})
    if not n_seen:
        return unseen, f"all {len(unseen)} rows ({patients} patients), none used to train the model"
    return unseen, (
        f"the {len(unseen)} rows of patients never used in training ({patients} patients; for the training "
        f"dataset this is the model's patient-level validation fold); {n_seen} rows of training "
        "patients left out"
    )


def check_requirements() -> None:
    """Fail at once, before any prediction, when something the report needs is missing (the plots: matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # imported only to prove that it can be
    except Exception as err:  # ImportError, or a broken install
        raise ImportError(
            f"evaluate draws its plots with matplotlib, which cannot be imported ({err}); "
            "pip install 'braintumor[train]'",
            name="matplotlib",
        ) from None


def evaluate(
    data: str | Path, analyzer: Analyzer, split: str = "unseen", progress: bool = True
) -> tuple[list[SliceOutcome], str]:
    """One outcome per row of the split; a classification-only model (no mask) gets no segmentation figures, a
    segmentation-only model (no class) no classification figures."""
    records, described = select_rows(read_manifest(data), analyzer.trainings, split)
    outcomes = []
    for r in tqdm(records, desc="evaluating", disable=not progress, leave=False):
        true = CLASSES.index(r.label)
        try:
            scan, truth = load_record(r)
        except ScanError as err:
            outcomes.append(SliceOutcome(r, true, None, None, error=str(err)))
            continue
        result = analyzer.analyze_scans([scan])[0]
        assert isinstance(result, Answer), "analyze_scans raises on a file it cannot read"
        ood_warned = None if analyzer.ood_threshold is None else analyzer.is_unfamiliar(result.ood_score)
        typed = result if isinstance(result, Classification) else None
        label, probabilities = (typed.label, typed.probabilities) if typed else (None, {})
        mask = result.mask if isinstance(result, Segmentation) else None
        outcomes.append(outcome(r, truth, spacing_of(r, scan), label, probabilities, mask, ood_warned))
    return outcomes, described


def spacing_of(record: Record, scan: Scan) -> tuple[float, float] | None:
    """The pixel spacing areas and distances are measured in: the file's, else the manifest's."""
    return scan.spacing_mm or ((record.spacing_mm, record.spacing_mm) if record.spacing_mm else None)


def outcome(
    record: Record,
    truth: np.ndarray,
    spacing: tuple[float, float] | None,
    label: str | None,
    probabilities: dict[str, float],
    mask: np.ndarray | None,
    ood_warned: bool | None,
) -> SliceOutcome:
    """One row's figures from a model's answer: ``label`` None (the model does not classify), ``mask`` None (it
    does not segment)."""
    o = SliceOutcome(
        record,
        CLASSES.index(record.label),
        None if label is None else CLASSES.index(label),
        None if label is None else np.array([probabilities[c] for c in CLASSES]),  # the 4-class decision
        pred_pixels=0 if mask is None else int(mask.sum()),
        ood_warned=ood_warned,
        segmented=mask is not None,
        classified=label is not None,
    )
    if record.label != "notumor" and mask is not None:
        o.dice, o.iou = M.dice(mask, truth), M.iou(mask, truth)
        if spacing:
            o.hd95_mm = M.hausdorff95(mask, truth, spacing)
            o.area_true_cm2 = M.area_cm2(int(truth.sum()), spacing)
            o.area_pred_cm2 = M.area_cm2(int(mask.sum()), spacing)
    return o


def classification_figures(rows: list[SliceOutcome]) -> dict[str, Any]:
    """The classification figures over rows that were read and classified; without any (a segmentation-only
    model) the same keys, None, with empty per-class tables."""
    if not rows:
        return {
            **dict.fromkeys(
                (
                    "accuracy",
                    "tumor_type_accuracy",
                    "tumor_type_accuracy_4way",
                    "macro_f1",
                    "weighted_f1",
                    "tumor_type_macro_f1",
                    "ece",
                    "reliability",
                    "confusion_matrix",
                    "tumor_type_confusion_matrix",
                )
            ),
            "per_class": {},
            "tumor_type_per_class": {},
        }
    y = np.array([o.true for o in rows])
    p = np.array([o.scored_pred for o in rows])
    probs = np.stack([o.scored_probs for o in rows])
    cm = M.confusion_matrix(y, p, len(CLASSES))
    scores = M.per_class_scores(cm)
    tumor = y < len(TUMOR_CLASSES)
    type_pred = probs[tumor, :3].argmax(1)
    cm3 = M.confusion_matrix(y[tumor], type_pred, 3)
    scores3 = M.per_class_scores(cm3)
    return {
        "accuracy": float((y == p).mean()),
        "tumor_type_accuracy": float((type_pred == y[tumor]).mean()),
        "tumor_type_accuracy_4way": float((p[tumor] == y[tumor]).mean()),
        "macro_f1": float(scores["f1"].mean()),
        "weighted_f1": float((scores["f1"] * scores["support"]).sum() / scores["support"].sum()),
        "tumor_type_macro_f1": float(scores3["f1"].mean()),
        "ece": M.expected_calibration_error(probs, y),
        "reliability": [{"confidence": c, "accuracy": a, "n": n} for c, a, n in M.reliability(probs, y)],
        "per_class": {c: {k: float(v[i]) for k, v in scores.items()} for i, c in enumerate(CLASSES)},
        "tumor_type_per_class": {c: {k: float(v[i]) for k, v in scores3.items()} for i, c in enumerate(TUMOR_CLASSES)},
        "confusion_matrix": cm.tolist(),
        "tumor_type_confusion_matrix": cm3.tolist(),
    }


def summarise(outcomes: list[SliceOutcome], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """All figures of report.json: classification (4-class and 3 tumor types), segmentation, area, CIs.

    A classification-only model's rows have no mask: every segmentation figure is None and
    ``segmentation_produced`` is False; a segmentation-only model's rows have no class: every classification
    figure is None and ``classification_produced`` is False."""
    ok = [o for o in outcomes if o.error is None]
    segmented = any(o.segmented for o in ok)
    classified = [o for o in ok if o.classified]
    seg = [o for o in ok if o.dice is not None]
    area = [o for o in seg if o.area_true_cm2]
    rel = np.array([o.area_error for o in area])
    hd = np.array([o.hd95_mm for o in seg if o.hd95_mm is not None and np.isfinite(o.hd95_mm)])
    dices = np.array([o.dice for o in seg])
    report = {
        "n_images": len(ok),
        "n_unreadable": len(outcomes) - len(ok),
        "n_patients": len({group_of(o.record) for o in ok if o.record.patient_id}),
        "segmentation_produced": segmented,
        "classification_produced": bool(classified),
        **classification_figures(classified),
        "dice_mean": float(dices.mean()) if len(dices) else None,
        "dice_median": float(np.median(dices)) if len(dices) else None,
        "iou_mean": float(np.mean([o.iou for o in seg])) if seg else None,
        "hd95_mm_median": float(np.median(hd)) if len(hd) else None,
        "hd95_mm_mean": float(hd.mean()) if len(hd) else None,
        "area_error_median": float(np.median(rel)) if len(rel) else None,
        "area_abs_error_cm2_median": float(np.median([o.area_abs_error_cm2 for o in area])) if area else None,
        "missed_tumors": int(sum(o.dice == 0 for o in seg)) if segmented else None,
        "notumor_outlined": float(np.mean([o.pred_pixels > 0 for o in ok if o.true == CLASSES.index("notumor")]))
        if segmented and any(o.true == CLASSES.index("notumor") for o in ok)
        else None,
        "ood_warning_rate": None  # a model without an out-of-distribution model cannot warn: not a 0% rate
        if any(o.ood_warned is None for o in ok)
        else float(np.mean([o.ood_warned for o in ok])),
        "classes": list(CLASSES),
        "segmentation_per_class": {
            c: {
                "n": len(s),
                "dice_mean": float(np.mean([o.dice for o in s])),
                "dice_median": float(np.median([o.dice for o in s])),
            }
            for c in TUMOR_CLASSES
            if (s := [o for o in seg if o.record.label == c])
        },
    }
    report["per_patient"] = per_patient(ok)
    report["ci95"] = bootstrap(ok, n_boot, seed)
    return report


def per_patient(ok: list[SliceOutcome]) -> dict[str, int | float | None]:
    """Figures with each patient counted once (the mean over that patient's slices)."""
    groups: dict[str, list[SliceOutcome]] = {}
    for o in ok:
        if o.record.patient_id:
            groups.setdefault(o.record.patient_id, []).append(o)
    acc = [np.mean([o.true == o.pred for o in g]) for g in groups.values() if g[0].classified]
    dice = [np.mean([o.dice for o in g]) for g in groups.values() if g[0].dice is not None]
    return {
        "n_patients": len(groups),
        "accuracy_mean": float(np.mean(acc)) if acc else None,
        "dice_mean": float(np.mean(dice)) if dice else None,
    }


def bootstrap(ok: list[SliceOutcome], n_boot: int, seed: int) -> dict[str, list[float]]:
    """95% intervals resampling whole patients (images without a patient id count as their own patient)."""
    groups: dict[str, list[SliceOutcome]] = {}
    for o in ok:
        groups.setdefault(group_of(o.record), []).append(o)
    keys = list(groups)
    rng = np.random.default_rng(seed)
    stats: dict[str, list[float]] = {
        "accuracy": [],
        "tumor_type_accuracy": [],
        "dice_mean": [],
        "area_error_median": [],
    }
    for _ in range(n_boot):
        sample = [o for k in rng.choice(len(keys), len(keys)) for o in groups[keys[k]]]
        tumor = [o for o in sample if o.true < 3]
        classified = [o for o in sample if o.classified]  # all of them, for a model that classifies
        if classified:
            stats["accuracy"].append(float(np.mean([o.true == o.pred for o in classified])))
        if tumor:
            types = [o.scored_probs[:3].argmax() == o.true for o in tumor if o.classified]
            if types:
                stats["tumor_type_accuracy"].append(float(np.mean(types)))
            dices = [o.dice for o in tumor if o.dice is not None]  # all of them, for a model that segments
            if dices:
                stats["dice_mean"].append(float(np.mean(dices)))
            rel = [e for o in tumor if (e := o.area_error) is not None]  # the rows with a true area
            if rel:
                stats["area_error_median"].append(float(np.median(rel)))
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in stats.items() if v}
