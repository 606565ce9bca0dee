"""braintumor cv: one model per patient-level fold, each scored on its unseen fold, pooled out of fold."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from braintumor.cli import main
from braintumor.experiments.crossval import check_fold
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
    """One CV run with --final (post-processing search, all-patients model, cross-fitted calibration)."""
    out = tmp_path_factory.mktemp("cv")
    assert main([*_cv_argv(tiny_data, out), "--final"]) == 0
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


def test_final_model_is_trained_on_all_patients_and_carries_the_cv(cv_out, tiny_data):
    card = json.loads((cv_out / "final" / "card.json").read_text())
    assert card["training"]["split_recipe"]["all_patients"] is True
    assert card["training"]["split"] == "all patients, no validation fold"
    assert "--all-patients" in card["training"]["command"]  # rerunnable with 'braintumor train'
    assert {r["split"] for r in csv_rows(cv_out / "final" / "split.csv")} == {"train"}
    cv = card["cross_validation"]
    assert [r["fold"] for r in cv["per_fold"]] == [0, 1]
    assert cv["mean"]["tumor_type_accuracy"] == pytest.approx(sum(r["tumor_type_accuracy"] for r in cv["per_fold"]) / 2)
    chosen = csv_rows(cv_out / "chosen" / "cv.csv")  # the table of what ships: the chosen post-processing
    assert cv["per_fold"][0]["tumor_type_accuracy"] == pytest.approx(float(chosen[0]["tumor_type_accuracy"]))
    tried = [line for line in (cv_out / "postprocessing.md").read_text().splitlines() if line.startswith("| ")][1:]
    assert len(tried) > 1 and sum(line.endswith("| True |") for line in tried) == 1  # one candidate chosen
    calibration = card["calibration"]
    assert calibration["temperature"] > 0 and calibration["ood_threshold"] > 0
    assert "cross-fitted" in calibration["fitted_on"]
    assert (cv_out / "final" / "ood.safetensors").is_file()


def test_final_model_loads_and_evaluate_on_its_training_data_says_nothing_is_unseen(cv_out, tiny_data, capsys):
    from braintumor.inference import Analyzer

    analyzer = Analyzer(cv_out / "final")  # checksums verified, post-processing read from the card
    assert asdict(analyzer.postprocessing) == json.loads((cv_out / "final" / "card.json").read_text())["postprocessing"]
    code = main(["evaluate", "--data", str(tiny_data), "--model", str(cv_out / "final"), "--out", str(cv_out / "e")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nothing unseen to score" in err and "trained on all patients" in err


def test_cv_continues_another_cv_fold_by_fold(cv_out, tiny_data, tmp_path, capsys):
    """--init CV_FOLDER: fold k starts from that CV's fold k (never from a model that saw fold k's patients),
    the final model from its final model."""
    out = tmp_path / "more"
    assert main([*_cv_argv(tiny_data, out), "--init", str(cv_out), "--lr", "1e-3", "--final"]) == 0
    for fold in (0, 1):
        start = json.loads((out / f"fold{fold}" / "card.json").read_text())["training"]["initialised_from"]
        source = json.loads((cv_out / f"fold{fold}" / "card.json").read_text())
        assert start["weights_sha256"] == source["files"]["model.safetensors"]["sha256"]
    final = json.loads((out / "final" / "card.json").read_text())
    source = json.loads((cv_out / "final" / "card.json").read_text())
    assert final["training"]["initialised_from"]["weights_sha256"] == source["files"]["model.safetensors"]["sha256"]
    assert "continued from the same fold" in (out / "cv.md").read_text()
    assert "continued from the same fold" in final["cross_validation"]["protocol"]


def test_cv_continuation_needs_the_final_model_it_continues(cv_out, tiny_data, tmp_path, capsys):
    import shutil

    partial = tmp_path / "partial"
    for fold in (0, 1):
        shutil.copytree(cv_out / f"fold{fold}", partial / f"fold{fold}")
    out = tmp_path / "more"
    shutil.copytree(cv_out, out, ignore=shutil.ignore_patterns("final"))  # folds done: only the final is missing
    assert main([*_cv_argv(tiny_data, out), "--init", str(partial), "--final"]) == 2
    assert "has no final/ model to continue" in capsys.readouterr().err
