"""braintumor cv: one model per patient-level fold, each scored on its unseen fold, pooled out of fold."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from braintumor.cli import main
from braintumor.evaluation.crossval import check_fold
from braintumor.training.run import TrainConfig
from conftest import csv_rows


def _cv_argv(data: Path, out: Path) -> list[str]:
    """2 folds × 1 epoch at 32 px: the whole protocol in seconds."""
    return [
        "cv",
        "--data",
        str(data),
        "--out",
        str(out),
        "--folds",
        "2",
        "--epochs",
        "1",
        "--size",
        "32",
        "--batch-size",
        "4",
        "--bootstrap",
        "20",
    ]


@pytest.fixture(scope="module")
def cv_out(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv")
    assert main(_cv_argv(tiny_data, out)) == 0
    return out


def test_cv_writes_per_fold_table_and_pooled_report(cv_out, tiny_data):
    rows = csv_rows(cv_out / "cv.csv")
    assert [r["fold"] for r in rows] == ["0", "1"]
    assert all(0 <= float(r["tumor_type_accuracy"]) <= 1 for r in rows)
    table = (cv_out / "cv.md").read_text()
    assert "| **mean** |" in table and "| **sd** |" in table and "Pooled out-of-fold" in table
    pooled = json.loads((cv_out / "pooled" / "report.json").read_text())
    n_rows = sum(1 for _ in csv_rows(tiny_data / "index.csv"))
    assert pooled["n_images"] == n_rows == sum(int(r["images"]) for r in rows)  # every row scored once
    assert (cv_out / "fold0" / "eval" / "report.json").is_file()


def test_no_patient_is_in_its_own_folds_training_set(cv_out):
    for fold in (0, 1):
        rows = csv_rows(cv_out / f"fold{fold}" / "split.csv")
        train = {r["patient_id"] for r in rows if r["split"] == "train" and r["patient_id"]}
        val = {r["patient_id"] for r in rows if r["split"] == "val" and r["patient_id"]}
        assert val and train and not train & val


def test_check_fold_catches_a_leaked_patient(cv_out, tmp_path):
    import shutil

    leaky = tmp_path / "fold0"
    shutil.copytree(cv_out / "fold0", leaky)
    rows = csv_rows(leaky / "split.csv")
    victim = next(r for r in rows if r["split"] == "val" and r["patient_id"])
    twin = next(r for r in rows if r["split"] == "train" and r["patient_id"])
    twin["patient_id"] = victim["patient_id"]
    with open(leaky / "split.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(AssertionError, match="both sides"):
        check_fold(TrainConfig(data=leaky, out=leaky, val_fold=0))


def test_cv_resumes_without_retraining(cv_out, tiny_data):
    before = (cv_out / "fold0" / "model.safetensors").stat().st_mtime_ns
    assert main(_cv_argv(tiny_data, cv_out)) == 0
    assert (cv_out / "fold0" / "model.safetensors").stat().st_mtime_ns == before
