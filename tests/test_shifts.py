"""Acquisition shifts: each checked on a hand-made image; the training transform; the shift table command."""

from __future__ import annotations

import numpy as np
import pytest

from braintumor.cli import main
from braintumor.preprocessing.shifts import (
    SHIFTS,
    bias_field,
    brain_mask,
    flip_vertical,
    gamma,
    noise,
    rotate90,
    skull_strip,
    to_16bit,
    zoom,
    zscore,
    zscore_brain,
)
from conftest import csv_rows


@pytest.fixture
def head() -> tuple[np.ndarray, np.ndarray]:
    """A head phantom: a bright skull ring, a dark gap (bone/CSF), a gray brain disk with a bright tumor."""
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 64, xx - 64)
    image = np.full((128, 128), 5.0, np.float32)
    image[(r > 52) & (r < 58)] = 220.0  # skull and scalp
    image[r < 44] = 100.0  # brain
    tumor = np.hypot(yy - 50, xx - 70) < 8
    image[tumor] = 200.0
    return image + np.random.default_rng(0).normal(0, 2, image.shape).astype(np.float32), tumor.astype(np.uint8)


def test_brain_mask_drops_the_skull_and_keeps_brain_and_tumor(head):
    image, tumor = head
    r = np.hypot(*(np.mgrid[:128, :128] - 64))
    brain = brain_mask(image, keep=tumor)
    assert brain[r < 40].mean() > 0.98 and not brain[(r > 53) & (r < 57)].any()
    assert brain[tumor > 0].all()


def test_skull_strip_sets_outside_to_the_minimum(head):
    image, tumor = head
    stripped, mask = skull_strip(image, tumor)
    r = np.hypot(*(np.mgrid[:128, :128] - 64))
    assert (stripped[(r > 53) & (r < 57)] == image.min()).all()
    assert np.array_equal(stripped[r < 40], image[r < 40]) and mask is tumor


def test_zscore_brain_has_zero_background_and_unit_brain(head):
    image, tumor = head
    z, _ = zscore_brain(image, tumor)
    brain = brain_mask(image, keep=tumor)
    assert (z[~brain] == 0).all()
    assert abs(z[brain].mean()) < 1e-3 and abs(z[brain].std() - 1) < 1e-3
    assert z[brain].min() < 0  # dark tissue now lies below the background, as in challenge data


def test_linear_shifts_and_their_ranges(head):
    image, tumor = head
    z, _ = zscore(image, tumor)
    assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    wide, _ = to_16bit(image, tumor)
    assert wide.min() == 1000 and wide.max() == 41000
    dark, _ = gamma(2.0)(image, tumor)
    assert dark.min() == pytest.approx(image.min()) and dark.max() == pytest.approx(image.max())
    assert np.median(dark) < np.median(image)


def test_geometric_shifts_move_image_and_mask_together(head):
    image, tumor = head
    for shift in (zoom(1.4), zoom(0.7), rotate90(1), flip_vertical):
        moved, mask = shift(image, tumor)
        assert moved.shape == mask.shape
        assert mask.sum() > 0 and np.all(moved[mask > 0] > 150)  # the tumor pixels moved with the mask
    assert zoom(1.4)(image, tumor)[0].shape == (91, 91) and zoom(0.7)(image, tumor)[0].shape[0] > 128


def test_bias_and_noise_are_seeded(head):
    image, tumor = head

    def rng() -> np.random.Generator:
        return np.random.default_rng(3)

    assert np.array_equal(noise(0.08)(image, tumor, rng())[0], noise(0.08)(image, tumor, rng())[0])
    biased, _ = bias_field(0.4)(image, tumor, rng())
    ratio = biased[image > 50] / image[image > 50]
    assert ratio.min() >= 0.6 - 1e-6 and ratio.max() <= 1.4 + 1e-6 and ratio.max() - ratio.min() > 0.2


def test_training_transform_keeps_range_and_mask():
    import torch

    from braintumor.training.dataset import RandSourceShiftd

    transform = RandSourceShiftd(prob=1.0).set_random_state(seed=0)
    yy, xx = np.mgrid[:64, :64]
    image = torch.from_numpy((np.hypot(yy - 32, xx - 32) < 25).astype(np.float32)[None] * 0.5)
    mask = torch.zeros(1, 64, 64)
    mask[0, 28:36, 28:36] = 1
    changed = 0
    for _ in range(8):
        out = transform({"image": image, "mask": mask, "label": torch.tensor(0)})
        assert out["image"].shape == image.shape and 0 <= out["image"].min() and out["image"].max() <= 1
        assert torch.equal(out["mask"], mask)
        changed += not torch.equal(out["image"], image)
    assert changed


def test_shift_table_command(tiny_data, tiny_model, tmp_path):
    out = tmp_path / "shifts"
    assert (
        main(
            [
                "shifts",
                "--data",
                str(tiny_data),
                "--model",
                str(tiny_model),
                "--out",
                str(out),
                "--shift",
                "skull_stripped",
                "--shift",
                "rotate_90",
            ]
        )
        == 0
    )
    rows = csv_rows(out / "shifts.csv")
    assert [r["shift"] for r in rows] == ["none", "skull_stripped", "rotate_90"]
    assert all(0 <= float(r["notumor_silent"]) <= 1 and int(r["n"]) > 0 for r in rows)
    assert "| none |" in (out / "shifts.md").read_text()
    assert (
        main(["shifts", "--data", str(tiny_data), "--model", str(tiny_model), "--out", str(out), "--shift", "nonsense"])
        == 2
    )
    assert set(SHIFTS) >= {"skull_stripped", "skull_stripped_zscored", "16bit", "zoom_in_1.4", "rotate_90"}
