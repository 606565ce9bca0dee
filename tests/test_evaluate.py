"""braintumor evaluate: only unseen patients, never augmented, the report's top-level numbers."""

from __future__ import annotations

import json

import numpy as np

from braintumor.cli import main
from conftest import csv_rows

TOP_LEVEL = {"accuracy", "tumor_type_accuracy", "macro_f1", "dice_mean", "area_error_median"}


def test_evaluate_scores_only_validation_patients(tiny_data, tiny_model, tmp_path):
    out = tmp_path / "eval"
    assert (
        main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "--out", str(out), "--bootstrap", "50"])
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert TOP_LEVEL <= set(report) and all(isinstance(report[k], float) for k in TOP_LEVEL)
    assert "never used in training" in report["split"]
    split = {r["id"]: r["split"] for r in csv_rows(tiny_model / "split.csv")}
    scored = [r["id"] for r in csv_rows(out / "per_slice.csv")]
    assert scored and all(split[i] == "val" for i in scored)
    assert sum(split[i] == "val" for i in split) == len(scored)
    assert sum(map(sum, report["confusion_matrix"])) == len(scored)
    for name in (
        "report.md",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "confusion_matrix_tumor_types.csv",
        "segmentation.png",
        "reliability.png",
    ):
        assert (out / name).stat().st_size > 0
    assert set(report["ci95"]) >= {"accuracy", "dice_mean"}
    assert 0 <= report["ece"] <= 1 and sum(b["n"] for b in report["reliability"]) == len(scored)
    # the tiny model was never calibrated: it has no out-of-distribution model, so no rate (not 0%)
    assert report["ood_warning_rate"] is None
    assert "| out-of-distribution warnings | n/a |" in (out / "report.md").read_text()


def test_evaluate_refuses_training_patients(tiny_data, tiny_model, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(tiny_data),
                "--model",
                str(tiny_model),
                "--out",
                str(tmp_path / "e"),
                "--split",
                "all",
            ]
        )
        == 2
    )
    assert "training patients" in capsys.readouterr().err


def test_evaluate_without_matplotlib_fails_before_any_prediction(tiny_data, tiny_model, tmp_path, capsys, monkeypatch):
    import sys

    import braintumor.evaluation.evaluate as E
    from braintumor.inference import Analyzer

    def never(*args, **kwargs):
        raise AssertionError("computed before the requirement check")

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    monkeypatch.setattr(E, "select_rows", never)
    monkeypatch.setattr(Analyzer, "analyze_scans", never)
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "matplotlib" in err and len(err.splitlines()) == 1
    assert not out.exists()  # no half run


def test_report_is_written_before_the_plots(tiny_data, tiny_model, tmp_path, capsys, monkeypatch):
    import braintumor.evaluation.report as R

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(R, "_plots", broken)
    out = tmp_path / "eval"
    assert (
        main(["evaluate", "--data", str(tiny_data), "--model", str(tiny_model), "--out", str(out), "--bootstrap", "20"])
        == 2
    )
    assert "drawing the plots failed (RuntimeError: no display)" in capsys.readouterr().err
    assert TOP_LEVEL <= set(json.loads((out / "report.json").read_text()))
    assert (out / "report.md").stat().st_size > 0 and (out / "per_slice.csv").is_file()


def test_evaluate_on_its_own_training_set_says_nothing_is_unseen(tiny_data):
    """A model trained on every patient (the final model) has no unseen rows in its training dataset."""
    import pytest

    from braintumor.bundle import SplitRecipe, Training
    from braintumor.data import read_manifest
    from braintumor.data.patient_keys import key_block
    from braintumor.errors import DatasetError
    from braintumor.evaluation.evaluate import select_rows

    records = read_manifest(tiny_data)
    training = Training("d", "all", SplitRecipe(all_patients=True), patient_keys=key_block(records))
    with pytest.raises(DatasetError, match=r"nothing unseen to score.*cross-validation in its card"):
        select_rows(records, [training], "unseen")


def test_the_postprocessing_search_scores_saved_outputs_as_evaluate_would(tiny_data, tiny_model):
    """Each candidate decided from the networks' saved outputs gives what ``evaluate`` gives with it set."""
    from braintumor.bundle import Postprocessing
    from braintumor.evaluation.evaluate import evaluate
    from braintumor.experiments.postprocessing_search import outcomes_under, saved_rows
    from braintumor.inference import Analyzer

    analyzer = Analyzer(tiny_model)
    saved = saved_rows(tiny_data, analyzer)
    assert saved
    for post in (Postprocessing(threshold=0.3), Postprocessing(threshold=0.6, min_component_fraction=0.3)):
        analyzer.postprocessing = post
        expected, _ = evaluate(tiny_data, analyzer, progress=False)
        got = outcomes_under(saved, post)
        assert [o.record.id for o in got] == [o.record.id for o in expected]
        fields = ("pred", "pred_pixels", "dice", "iou", "hd95_mm", "area_pred_cm2", "ood_warned", "error")
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_equal([getattr(a, f) for f in fields], [getattr(b, f) for f in fields])  # nan == nan
