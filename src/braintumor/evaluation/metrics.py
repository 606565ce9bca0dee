"""One metric per function, numpy only, each checked against hand-computed values in the tests."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from braintumor.imageio.scan import area_cm2 as area_cm2  # defined low: the analyzer needs it too


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> np.ndarray:
    """``cm[t, p]`` counts items of true class t predicted as p."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(tp / cm.sum(0))
        recall = np.nan_to_num(tp / cm.sum(1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return {"precision": precision, "recall": recall, "f1": f1, "support": cm.sum(1)}


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    total = pred.sum() + true.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(pred, true).sum() / total)


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union; 1.0 when both are empty."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    union = np.logical_or(pred, true).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, true).sum() / union)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(pred: np.ndarray, true: np.ndarray, spacing_mm: tuple[float, float] = (1.0, 1.0)) -> float:
    """95th percentile symmetric surface distance in mm (anisotropic spacing respected); NaN if a mask is empty."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    if not pred.any() or not true.any():
        return float("nan")
    from scipy import ndimage  # imported here: the analysis path needs only area_cm2, and scipy costs 0.4 s

    sp, st = _surface(pred), _surface(true)
    to_true = ndimage.distance_transform_edt(~st, sampling=spacing_mm)[sp]
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing_mm)[st]
    return float(np.percentile(np.concatenate([to_true, to_pred]), 95))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) per equal-width confidence bin of the top class."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return [
        (float(confidence[index == b].mean()), float(correct[index == b].mean()), int((index == b).sum()))
        for b in range(bins)
        if (index == b).any()
    ]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy − confidence| over confidence bins (0 = perfectly calibrated)."""
    table = reliability(probs, labels, bins)
    return float(sum(n * abs(acc - conf) for conf, acc, n in table) / max(1, len(labels)))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())
