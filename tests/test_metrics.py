"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from braintumor.evaluation import metrics as M


def test_confusion_matrix_and_scores():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    y_pred = [0, 0, 1, 1, 2, 2, 2, 2, 0, 3]
    cm = M.confusion_matrix(y_true, y_pred, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [1, 0, 3, 0], [0, 0, 0, 1]]
    s = M.per_class_scores(cm)
    assert s["precision"].tolist() == pytest.approx([2 / 3, 1 / 2, 3 / 4, 1.0])
    assert s["recall"].tolist() == pytest.approx([2 / 3, 1 / 2, 3 / 4, 1.0])
    assert s["support"].tolist() == [3, 2, 4, 1]


def test_dice_and_iou_of_known_masks():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, 10 overlap
    assert M.dice(a, b) == pytest.approx(2 * 10 / 40)
    assert M.iou(a, b) == pytest.approx(10 / 30)
    assert M.dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert M.dice(a, np.zeros_like(a)) == 0.0


def test_hd95_respects_anisotropic_spacing():
    a = np.zeros((40, 40), bool)
    b = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b[10:20, 13:23] = True  # shifted 3 columns
    assert M.hausdorff95(a, b, (1.0, 1.0)) == pytest.approx(3.0)
    assert M.hausdorff95(a, b, (1.0, 0.5)) == pytest.approx(1.5)  # columns are 0.5 mm apart
    assert M.hausdorff95(a, b, (2.0, 0.5)) == pytest.approx(1.5)  # rows do not move
    c = np.zeros((40, 40), bool)
    c[14:24, 10:20] = True  # shifted 4 rows
    assert M.hausdorff95(a, c, (2.0, 0.5)) == pytest.approx(8.0)
    assert math.isnan(M.hausdorff95(a, np.zeros_like(a)))


def test_area_in_cm2():
    assert M.area_cm2(1000, (0.49, 0.49)) == pytest.approx(1000 * 0.49 * 0.49 / 100)
    assert M.area_cm2(100, (1.0, 2.0)) == pytest.approx(2.0)
