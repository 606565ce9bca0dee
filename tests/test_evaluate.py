"""braintumor evaluate: only unseen patients, never augmented, the report's top-level numbers."""

from __future__ import annotations

import csv
import json

from braintumor.cli import main

TOP_LEVEL = {"accuracy", "tumor_type_accuracy", "macro_f1", "dice_mean", "area_error_median"}


def test_evaluate_scores_only_validation_patients(tiny_data, tiny_model, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "--out", str(out),
                 "--bootstrap", "50"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert TOP_LEVEL <= set(report) and all(isinstance(report[k], float) for k in TOP_LEVEL)
    assert "never used in training" in report["split"]
    split = {r["id"]: r["split"] for r in csv.DictReader(open(tiny_model / "split.csv"))}
    scored = [r["id"] for r in csv.DictReader(open(out / "per_slice.csv"))]
    assert scored and all(split[i] == "val" for i in scored)
    assert sum(split[i] == "val" for i in split) == len(scored)
    assert sum(map(sum, report["confusion_matrix"])) == len(scored)
    for name in ("report.md", "confusion_matrix.csv", "confusion_matrix.png", "confusion_matrix_tumor_types.csv",
                 "segmentation.png"):
        assert (out / name).stat().st_size > 0
    assert set(report["ci95"]) >= {"accuracy", "dice_mean"}


def test_evaluate_refuses_training_patients(tiny_data, tiny_model, tmp_path, capsys):
    assert main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "--out", str(tmp_path / "e"),
                 "--split", "all"]) == 2
    assert "training patients" in capsys.readouterr().err
