"""The real data folders: every row loads, images and masks agree, spacing matches the README."""

from __future__ import annotations

import pytest

from braintumor.data import load_mask, read_manifest, train_val_test_split
from braintumor.imageio import load_scan


@pytest.mark.parametrize("which", ["dev", "dev512"])
def test_every_row_loads_with_matching_mask(which, request):
    folder = request.getfixturevalue(which)
    records = read_manifest(folder)
    assert len(records) >= 150
    for r in records:
        scan = load_scan(r.image)
        mask = load_mask(r, scan.shape)
        assert mask.shape == scan.shape
        assert (mask.sum() > 0) == (r.label != "notumor"), r.id


def test_dev_spacing_and_no_patient_crosses_split(dev):
    records = read_manifest(dev)
    assert {r.spacing_mm for r in records if r.id.startswith("fs")} <= {0.98, None}
    with pytest.warns(UserWarning):
        split = train_val_test_split(records, val_fold=0, test_fold=1)
    sides = {}
    for r in records:
        if r.patient_id:
            sides.setdefault(r.patient_id, set()).add(split[r.id])
    assert all(len(s) == 1 for s in sides.values())


def test_dev512_spacing_is_native(dev512):
    assert {r.spacing_mm for r in read_manifest(dev512)} == {0.49}
