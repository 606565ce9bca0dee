"""Fit what ``inference.calibration`` applies: a temperature for the class probabilities and a Gaussian model of
the training images' pooled features for the out-of-distribution score, with its threshold.

Honest by construction: the feature model is fitted on the model's training images; the unseen patients are
split in two halves by patient, one to fit the temperature and the threshold, the other to report the ECE and
the false-alarm rate that a user can expect.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from braintumor import CLASSES
from braintumor.bundle import ModelFolderError
from braintumor.data import Record, load_record, read_manifest
from braintumor.data.splits import group_of
from braintumor.errors import DatasetError, ScanError
from braintumor.evaluation import metrics as M
from braintumor.evaluation.evaluate import select_rows
from braintumor.inference.calibration import FeatureModel, apply_temperature
from braintumor.preprocessing import to_model_input

if TYPE_CHECKING:  # evaluation is upstream of inference: an Analyzer is only passed in
    from braintumor.inference import Analyzer

#: Principal components of the feature model; the threshold's quantile on the fitting half.
COMPONENTS, QUANTILE = 32, 0.985


def network_outputs(
    analyzer: Analyzer, records: list[Record], batch: int = 32, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Record]]:
    """Uncalibrated class probabilities, pooled features and labels of ``records`` (unreadable rows skipped)."""
    probs, features, labels, kept = [], [], [], []
    for start in tqdm(range(0, len(records), batch), desc="network", disable=not progress, leave=False):
        inputs = []
        for r in records[start : start + batch]:
            try:
                scan, _ = load_record(r)
            except ScanError:
                continue
            inputs.append(to_model_input(scan.pixels, analyzer.size)[0])
            labels.append(CLASSES.index(r.label))
            kept.append(r)
        if inputs:
            _, p, f = analyzer.network(np.stack(inputs)[:, None])
            if p is None:
                raise ModelFolderError(str(analyzer.model_dir), "a segmentation-only model has no type to calibrate")
            if f is None:
                raise ScanError(
                    str(analyzer.model_dir),
                    "the model's ONNX graph has no 'features' output; re-export it (braintumor calibrate --reexport)",
                )
            probs.append(p)
            features.append(f)
    return np.concatenate(probs), np.concatenate(features), np.array(labels), kept


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimises the NLL of softmax(log p / T) (a 1-D bounded search)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda t: M.nll(apply_temperature(probs, t), labels), bounds=(0.05, 20.0), method="bounded"
    )
    return float(result.x)


def fit_features(features: np.ndarray, labels: np.ndarray, components: int = COMPONENTS) -> FeatureModel:
    """Standardise, take the class means, keep the top principal components of the within-class residuals."""
    center = features.mean(0)
    scale = features.std(0) + 1e-6
    z = (features - center) / scale
    classes = np.unique(labels)
    means = np.stack([z[labels == c].mean(0) for c in classes])
    residuals = z - means[np.searchsorted(classes, labels)]
    _, singular, axes = np.linalg.svd(residuals, full_matrices=False)
    k = min(components, len(singular))
    variances = singular[:k] ** 2 / max(1, len(z) - len(classes)) + 1e-6
    return FeatureModel(means, center, scale, axes[:k], variances)


def halves(records: list[Record], seed: int = 0) -> np.ndarray:
    """True for rows of the first half of the patients (seeded), False for the second."""
    groups = sorted({group_of(r) for r in records})
    first = set(np.random.default_rng(seed).permutation(groups)[: len(groups) // 2])
    return np.array([group_of(r) in first for r in records])


def calibrate(
    data: str | Path, analyzer: Analyzer, progress: bool = True, temperature_scaling: bool = True
) -> tuple[dict[str, Any], FeatureModel]:
    """The card's ``calibration`` block and the feature model for ``analyzer``'s model on dataset ``data``.

    ``temperature_scaling=False`` keeps the temperature at 1 (an ensemble member: its raw probabilities are what
    its committed evaluation and the ensemble's own temperature were computed from) and fits the rest."""
    records = read_manifest(data)
    unseen, described = select_rows(records, analyzer.trainings, "unseen")
    ids = {r.id for r in unseen}
    trained = [r for r in records if r.id not in ids]
    if not trained:
        raise DatasetError(str(data), "no training images of this model in the dataset: the feature model needs them")
    _, train_features, train_labels, _ = network_outputs(analyzer, trained, progress=progress)
    feature_model = fit_features(train_features, train_labels)
    probs, features, labels, kept = network_outputs(analyzer, unseen, progress=progress)
    first = halves(kept)
    temperature = fit_temperature(probs[first], labels[first]) if temperature_scaling else 1.0
    scores = feature_model.score(features)
    threshold = float(np.quantile(scores[first], QUANTILE))
    second = ~first
    calibrated = apply_temperature(probs[second], temperature)
    block = {
        "temperature": round(temperature, 4),
        "ood_threshold": round(threshold, 4),
        "fitted_on": f"{'temperature and threshold' if temperature_scaling else 'threshold (temperature 1)'}: half of "
        f"the patients of {described}; feature model: the {len(trained)} training images",
        "heldout": {
            "images": int(second.sum()),
            "ece_before": round(M.expected_calibration_error(probs[second], labels[second]), 4),
            "ece_after": round(M.expected_calibration_error(calibrated, labels[second]), 4),
            "nll_before": round(M.nll(probs[second], labels[second]), 4),
            "nll_after": round(M.nll(calibrated, labels[second]), 4),
            "ood_false_alarm_rate": round(float((scores[second] > threshold).mean()), 4),
        },
        "ood": {
            "score": "class-conditional Mahalanobis distance (root mean square, nearest class) of the pooled "
            f"encoder features in the top {feature_model.components.shape[0]} principal components of "
            "the training images",
            "quantile": QUANTILE,
        },
    }
    return block, feature_model


def calibrate_from_folds(
    data: str | Path, folds: list[Analyzer], final: Analyzer, progress: bool = True
) -> tuple[dict[str, Any], FeatureModel]:
    """Calibrate a model trained on every patient (none is left to fit on) from the cross-validation of its recipe.

    The temperature is fitted on the fold models' pooled out-of-fold outputs; the threshold is carried over as a
    ratio: how far above its training images' ``QUANTILE`` score a fold model's held-out ``QUANTILE`` lies, times
    the final model's own training-image quantile. Each fold is also scored with both fitted on the *other*
    folds only, which gives the held-out ECE and false-alarm rate a user can expect."""
    records = read_manifest(data)
    probs, labels, fold_of, ratios, held_scores, train_quantiles = [], [], [], [], [], []
    for k, analyzer in enumerate(folds):
        unseen, _ = select_rows(records, analyzer.trainings, "unseen")
        ids = {r.id for r in unseen}
        _, train_features, train_labels, _ = network_outputs(
            analyzer, [r for r in records if r.id not in ids], progress=progress
        )
        feature_model = fit_features(train_features, train_labels)
        p, f, y, _ = network_outputs(analyzer, unseen, progress=progress)
        scores = feature_model.score(f)
        train_quantile = float(np.quantile(feature_model.score(train_features), QUANTILE))
        probs.append(p)
        labels.append(y)
        fold_of.append(np.full(len(y), k))
        held_scores.append(scores)
        train_quantiles.append(train_quantile)
        ratios.append(float(np.quantile(scores, QUANTILE)) / train_quantile)
    all_probs, all_labels, folds_idx = np.concatenate(probs), np.concatenate(labels), np.concatenate(fold_of)
    # each fold scored with the temperature and ratio fitted on the other folds
    calibrated, alarms = np.empty_like(all_probs), []
    for k in range(len(folds)):
        rest = folds_idx != k
        calibrated[~rest] = apply_temperature(all_probs[~rest], fit_temperature(all_probs[rest], all_labels[rest]))
        ratio = float(np.mean([r for j, r in enumerate(ratios) if j != k]))
        alarms.append(held_scores[k] > ratio * train_quantiles[k])
    _, final_features, final_labels, _ = network_outputs(final, records, progress=progress)
    feature_model = fit_features(final_features, final_labels)
    ratio = float(np.mean(ratios))
    threshold = ratio * float(np.quantile(feature_model.score(final_features), QUANTILE))
    temperature = fit_temperature(all_probs, all_labels)
    block = {
        "temperature": round(temperature, 4),
        "ood_threshold": round(threshold, 4),
        "fitted_on": f"cross-fitted from the {len(folds)}-fold cross-validation of this model's recipe: temperature "
        "on the fold models' pooled out-of-fold outputs; threshold = the final model's training-image "
        f"{QUANTILE:.1%} score × {ratio:.3f} (the mean ratio of a fold model's held-out to training "
        f"{QUANTILE:.1%} score); feature model: the {len(final_labels)} training images",
        "heldout": {
            "images": len(all_labels),
            "protocol": "each fold with the temperature and ratio fitted on the other folds",
            "ece_before": round(M.expected_calibration_error(all_probs, all_labels), 4),
            "ece_after": round(M.expected_calibration_error(calibrated, all_labels), 4),
            "nll_before": round(M.nll(all_probs, all_labels), 4),
            "nll_after": round(M.nll(calibrated, all_labels), 4),
            "ood_false_alarm_rate": round(float(np.concatenate(alarms).mean()), 4),
        },
        "ood": {
            "score": "class-conditional Mahalanobis distance (root mean square, nearest class) of the pooled "
            f"encoder features in the top {feature_model.components.shape[0]} principal components of "
            "the training images",
            "quantile": QUANTILE,
            "fold_ratios": [round(r, 4) for r in ratios],
        },
    }
    return block, feature_model


def store(model_dir: str | Path, block: dict[str, Any], feature_model: FeatureModel) -> None:
    """Write the feature model beside the weights and the block into the card, both checksummed."""
    from safetensors.numpy import save_file

    from braintumor.bundle import OOD, Calibration, read_card, write_card

    save_file({k: v.astype("float32") for k, v in feature_model.tensors().items()}, str(Path(model_dir) / OOD))
    write_card(model_dir, replace(read_card(model_dir), calibration=Calibration(**block)))
