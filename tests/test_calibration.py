"""Calibrated confidence and the out-of-distribution score: the maths on synthetic data, then the shipped model
on real and shifted slices, and the warning in every interface."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from braintumor.bundle import DEFAULT_MODEL_DIR, OOD, member_dirs, read_card, verified_file
from braintumor.evaluation import metrics as M
from braintumor.experiments.calibration_fit import fit_features, fit_temperature, halves
from braintumor.inference.calibration import apply_temperature
from conftest import png_bytes


def _overconfident(n: int = 2000, seed: int = 0):
    """Labels right 70% of the time, predicted with ~99% confidence."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    predicted = np.where(rng.random(n) < 0.7, labels, (labels + rng.integers(1, 4, n)) % 4)
    logits = rng.normal(0, 0.3, (n, 4))
    logits[np.arange(n), predicted] += 5.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, labels


def test_temperature_scaling_lowers_nll_and_ece_on_overconfident_predictions():
    probs, labels = _overconfident()
    t = fit_temperature(probs[:1000], labels[:1000])
    after = apply_temperature(probs[1000:], t)
    assert t > 1.5  # softened
    assert M.nll(after, labels[1000:]) < M.nll(probs[1000:], labels[1000:]) - 0.3
    assert (
        M.expected_calibration_error(after, labels[1000:])
        < 0.05
        < M.expected_calibration_error(probs[1000:], labels[1000:])
    )
    assert np.array_equal(after.argmax(1), probs[1000:].argmax(1))  # the decision never changes


def test_ece_and_reliability_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    table = M.reliability(probs, labels, bins=10)
    assert [(round(c, 2), a, n) for c, a, n in table] == [(0.6, 1.0, 2), (0.9, 0.5, 2)]
    assert M.expected_calibration_error(probs, labels, bins=10) == pytest.approx((2 * 0.4 + 2 * 0.4) / 4)


def test_feature_model_scores_far_points_higher():
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (500, 40)) @ rng.normal(0, 1, (40, 40))
    model = fit_features(train, np.arange(500) % 2, components=8)
    near = model.score(train[:50])
    far = model.score(train[:50] + 8 * train.std(0))
    assert np.median(near) < 1.5 and (far > near).all()


def test_halves_split_by_patient(tiny_data):
    from braintumor.data import read_manifest
    from braintumor.data.splits import group_of

    records = read_manifest(tiny_data)
    first = halves(records)
    groups = {}
    for r, f in zip(records, first, strict=True):
        groups.setdefault(group_of(r), set()).add(bool(f))
    assert all(len(v) == 1 for v in groups.values()) and 0 < first.mean() < 1


def test_shipped_model_carries_its_calibration():
    """A temperature whose held-out ECE is no worse, and an out-of-distribution model and threshold for every
    network (an ensemble's members each have their own)."""
    card = read_card(DEFAULT_MODEL_DIR)
    block = card.calibration
    assert block is not None and block.temperature > 0
    assert block.heldout["ece_after"] <= min(block.heldout["ece_before"], 0.05)  # the ensemble issue's target
    for folder in member_dirs(DEFAULT_MODEL_DIR, card) if card.members else [DEFAULT_MODEL_DIR]:
        network = read_card(folder)
        assert network.calibration is not None and (network.calibration.ood_threshold or 0) > 0
        assert verified_file(folder, OOD, network).is_file()


def test_ood_score_is_higher_for_a_shifted_slice(dev512, analyzer):
    from braintumor.imageio import load_scan
    from braintumor.preprocessing.shifts import SHIFTS

    images = sorted((dev512 / "images").glob("*.png"))[:6]
    raised = 0
    for path in images:
        scan = load_scan(path)
        base = analyzer.analyze(scan, spacing_mm=0.49)
        shifted_pixels, _ = SHIFTS["skull_stripped_zscored"](scan.pixels, np.zeros(scan.shape, np.uint8))
        from dataclasses import replace

        shifted = analyzer.analyze(replace(scan, pixels=shifted_pixels), spacing_mm=0.49)
        raised += shifted.ood_score > base.ood_score
    assert raised >= 5, f"the score rose for only {raised} of {len(images)} slices"


def _far_image() -> bytes:
    """A bright, noisy geometric pattern: not a brain MRI slice."""
    rng = np.random.default_rng(0)
    image = (np.indices((256, 256)).sum(0) // 16 % 2 * 180 + rng.integers(0, 60, (256, 256))).astype(np.uint8)
    return png_bytes(image)


def test_warning_for_a_far_input_in_cli_json_app_and_api(tmp_path, analyzer):
    path = tmp_path / "pattern.png"
    path.write_bytes(_far_image())
    result = analyzer.analyze(path, spacing_mm=0.5)
    assert result.ood_score > analyzer.ood_threshold
    done = subprocess.run(
        [sys.executable, "-m", "braintumor.cli", "analyze", str(path), "--json", "--spacing-mm", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    row = json.loads(done.stdout.splitlines()[0])
    assert row["ood_score"] > analyzer.ood_threshold and any("unreliable" in w for w in row["warnings"])
    text = subprocess.run(
        [sys.executable, "-m", "braintumor.cli", "analyze", str(path), "--spacing-mm", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "unreliable" in text.stdout + text.stderr
    from braintumor.app.views import analyze_upload

    view = analyze_upload(analyzer, path.read_bytes(), "pattern.png", spacing_mm=0.5)
    assert any("unreliable" in w for w in view.result.warnings)
    from fastapi.testclient import TestClient

    from braintumor.serve.api import create_app

    with TestClient(create_app(analyzer)) as client:
        answer = client.post("/analyze", files={"file": ("pattern.png", path.read_bytes())}, data={"spacing_mm": "0.5"})
    assert answer.status_code == 200 and any("unreliable" in w for w in answer.json()["warnings"])
