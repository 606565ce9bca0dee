"""Mask post-processing on hand-made masks, and its switch on the shipped model."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from braintumor.bundle import Postprocessing
from braintumor.inference import Analyzer
from braintumor.inference.postprocess import fill_holes, keep_components, postprocess


def _blobs() -> np.ndarray:
    mask = np.zeros((20, 20), np.uint8)
    mask[2:10, 2:10] = 1  # 64 px
    mask[14:17, 14:17] = 1  # 9 px
    return mask


def test_small_components_are_dropped_by_fraction():
    mask = _blobs()
    assert keep_components(mask, 0.0).sum() == 73
    kept = keep_components(mask, 0.5)
    assert kept.sum() == 64 and kept[2:10, 2:10].all()
    assert keep_components(mask, 1.0).sum() == 64
    assert keep_components(mask, 9 / 64).sum() == 73  # the boundary is kept (>=)


def test_diagonal_neighbours_are_one_component():
    mask = np.zeros((6, 6), np.uint8)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = 1
    mask[5, 0] = 1  # a separate single pixel
    assert keep_components(mask, 1.0).sum() == 3


def test_holes_are_filled_but_open_shapes_are_not():
    ring = np.zeros((9, 9), np.uint8)
    ring[2:7, 2:7] = 1
    ring[4, 4] = 0
    assert fill_holes(ring).sum() == 25
    c_shape = ring.copy()
    c_shape[4, 4:7] = 0  # the hole opens to the outside
    assert (fill_holes(c_shape) == c_shape).all()


def test_threshold_is_inclusive_and_output_is_uint8():
    prob = np.array([[0.49, 0.5], [0.51, 0.0]], np.float32)
    mask = postprocess(prob, Postprocessing(threshold=0.5))
    assert mask.dtype == np.uint8 and mask.tolist() == [[0, 1], [1, 0]]


def test_apply_runs_all_steps_in_order():
    prob = np.zeros((20, 20), np.float32)
    prob[2:10, 2:10] = 0.9
    prob[5, 5] = 0.1  # a hole below the threshold
    prob[14:16, 14:16] = 0.9  # a speck
    post = Postprocessing(threshold=0.5, min_component_fraction=0.5, fill_holes=True)
    assert postprocess(prob, post).sum() == 64
    assert postprocess(prob, Postprocessing(threshold=0.5)).sum() == 63 + 4


@pytest.mark.parametrize("post", [Postprocessing(), Postprocessing(0.3, 1.0, True)])
def test_empty_map_gives_empty_mask(post):
    mask = postprocess(np.zeros((7, 5), np.float32), post)
    assert mask.shape == (7, 5) and mask.dtype == np.uint8 and not mask.any()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"threshold": float("nan")},
        {"min_component_fraction": -0.1},
        {"min_component_fraction": 1.5},
    ],
)
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="postprocessing"):
        Postprocessing(**kwargs)


def test_analyzer_follows_a_switched_postprocessing():
    analyzer = Analyzer.default()  # its own instance: the switch must not leak into other tests
    assert analyzer.postprocessing == analyzer.card.postprocessing
    yy, xx = np.mgrid[:256, :256]
    image = ((np.hypot(yy - 128, xx - 128) < 100) * 80 + (np.hypot(yy - 100, xx - 150) < 25) * 120).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    pixels = {}
    for threshold in (0.99, 0.05):
        analyzer.postprocessing = Postprocessing(threshold=threshold)
        assert analyzer.threshold == threshold
        pixels[threshold] = analyzer.analyze(buffer.getvalue(), name="synthetic.png").tumor_pixels
    assert pixels[0.05] >= pixels[0.99]
