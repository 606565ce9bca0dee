"""Manifests of three layouts, and patient-level splits that never leak a patient."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from braintumor.data import (
    Record,
    check_no_leakage,
    load_mask,
    normalise_class,
    patient_kfold,
    read_manifest,
    train_val_test_split,
)
from braintumor.data.manifest import figshare_patient
from braintumor.errors import DatasetError
from conftest import csv_rows, write_figshare_mat


@pytest.mark.parametrize(
    "name,expected",
    [
        ("glioma", "glioma"),
        ("glioma_tumor", "glioma"),
        ("Glioma Tumor", "glioma"),
        ("meningioma_tumor", "meningioma"),
        ("Pituitary", "pituitary"),
        ("no_tumor", "notumor"),
        ("notumor", "notumor"),
        ("No", "notumor"),
    ],
)
def test_class_names_are_normalised(name, expected):
    assert normalise_class(name) == expected


def test_unknown_class_is_refused():
    with pytest.raises(ValueError, match="unknown class name 'astrocytoma'"):
        normalise_class("astrocytoma")


def test_figshare_suffixes_merge_patients():
    assert figshare_patient("MR040240B") == "MR040240" and figshare_patient("100360") == "100360"


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_class_folders_with_parallel_masks(tmp_path):
    img = np.zeros((32, 32), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:8, 4:10] = 255
    _save(tmp_path / "Training" / "glioma_tumor" / "G1.jpg", img)
    _save(tmp_path / "Tumor-Mask" / "glioma_tumor" / "tumor mask G1.png", mask)
    _save(tmp_path / "Training" / "no_tumor" / "N1.jpg", img)
    records = read_manifest(tmp_path / "Training")
    by_label = {r.label: r for r in records}
    assert set(by_label) == {"glioma", "notumor"}
    assert by_label["glioma"].mask.name == "tumor mask G1.png" and by_label["notumor"].mask is None
    assert load_mask(by_label["glioma"], (32, 32)).sum() == 24
    assert load_mask(by_label["notumor"], (32, 32)).sum() == 0


def test_class_folders_missing_mask_is_an_error(tmp_path):
    _save(tmp_path / "Training" / "glioma" / "G1.jpg", np.zeros((32, 32), np.uint8))
    (tmp_path / "Masks" / "glioma").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no mask found"):
        read_manifest(tmp_path / "Training")


def test_class_folders_unknown_class(tmp_path):
    _save(tmp_path / "data" / "astrocytoma" / "a.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(DatasetError, match="unknown class name"):
        read_manifest(tmp_path / "data")


def _index(root: Path, rows: list[dict]) -> None:
    with open(root / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image", "mask", "label", "patient_id", "spacing_mm"])
        writer.writeheader()
        writer.writerows(rows)


def test_index_layout_errors(tmp_path):
    _save(tmp_path / "images" / "a.png", np.zeros((32, 32), np.uint8))
    row = {
        "id": "a",
        "image": "images/a.png",
        "mask": "masks/a.png",
        "label": "glioma",
        "patient_id": "P1",
        "spacing_mm": "0.98",
    }
    _index(tmp_path, [row])
    with pytest.raises(DatasetError, match="missing"):
        read_manifest(tmp_path)
    _index(tmp_path, [{**row, "mask": ""}, {**row, "mask": ""}])
    with pytest.raises(DatasetError, match="duplicate id 'a'"):
        read_manifest(tmp_path)


def test_figshare_mat_folder(tmp_path):
    z = np.zeros((512, 512))
    mask = z.copy()
    mask[:10, :10] = 1
    write_figshare_mat(tmp_path / "1.mat", z, mask, label=2, pid="MR040240B")
    write_figshare_mat(tmp_path / "2.mat", z, mask, label=3, pid="MR040240")
    records = read_manifest(tmp_path)
    assert [r.label for r in records] == ["glioma", "pituitary"]
    assert {r.patient_id for r in records} == {"MR040240"} and records[0].spacing_mm == 0.49
    assert load_mask(records[0], (512, 512)).sum() == 100


def _synthetic(n_patients=30, per_patient=4) -> list[Record]:
    labels = ["glioma", "meningioma", "pituitary"]
    records = [
        Record(f"p{p}_{i}", Path("x.png"), None, labels[p % 3], f"P{p}", None)
        for p in range(n_patients)
        for i in range(per_patient)
    ]
    records += [Record(f"nt{i}", Path("x.png"), None, "notumor", None, None) for i in range(12)]
    return records


def test_kfold_is_grouped_stratified_and_deterministic():
    records = _synthetic()
    with pytest.warns(UserWarning, match="no patient id"):
        folds = patient_kfold(records, k=5, seed=3)
    with pytest.warns(UserWarning):
        assert folds == patient_kfold(records, k=5, seed=3)
    for f in range(5):
        check_no_leakage(records, {r.id: "val" if x == f else "train" for r, x in zip(records, folds, strict=True)})
        counts = Counter(r.label for r, x in zip(records, folds, strict=True) if x == f)
        assert all(counts[c] in (8, 12) for c in ("glioma", "meningioma", "pituitary")), counts


def test_leakage_check_fails_loudly():
    records = _synthetic()
    split = {r.id: "train" for r in records}
    split["p0_1"] = "val"
    with pytest.raises(AssertionError, match="patient leakage"):
        check_no_leakage(records, split)


def test_train_val_test_split_sides():
    with pytest.warns(UserWarning):
        split = train_val_test_split(_synthetic(), val_fold=0, test_fold=1)
    assert set(split.values()) == {"train", "val", "test"}


def test_split_command(tmp_path, dev):
    from braintumor.cli import main

    out = tmp_path / "folds.csv"
    assert main(["split", "--data", str(dev), "--out", str(out)]) == 0
    rows = csv_rows(out)
    folds_of: dict[str, set] = {}
    for r in rows:
        if r["patient_id"]:
            folds_of.setdefault(r["patient_id"], set()).add(r["split"])
    assert len(rows) > 2000 and all(len(v) == 1 for v in folds_of.values())
    assert Counter(r["split"] for r in rows).keys() == {"0", "1", "2", "3", "4"}
