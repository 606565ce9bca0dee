"""The fold ensemble: members trained one fold at a time through ``braintumor cv --fold K --ensemble``, averaged at
inference, their disagreement reported, their CV table generated from what they carry."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from braintumor.bundle import ONNX, ModelFolderError, pin_member, read_card, write_card
from braintumor.cli import main
from braintumor.data import read_manifest
from braintumor.experiments.ensemble import (
    FLOAT_SLICES,
    SLICE_FIELDS,
    SLICES,
    check_member_split,
    cv_figures,
    cv_markdown,
)
from braintumor.inference import Analyzer
from conftest import csv_rows, make_manifest, png_bytes

pytestmark = pytest.mark.slow  # trains two tiny members


def _argv(data: Path, runs: Path, ensemble: Path, *folds: int) -> list[str]:
    argv = ["cv", "--data", str(data), "--out", str(runs), "--ensemble", str(ensemble), "--folds", "2"]
    argv += ["--epochs", "1", "--size", "32", "--batch-size", "4", "--bootstrap", "20"]
    return argv + [arg for k in folds for arg in ("--fold", str(k))]


@pytest.fixture(scope="module")
def ensemble(tiny_data, tmp_path_factory) -> Path:
    """Fold 1 first, then fold 0: each run trains only the fold it names."""
    runs, folder = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("parent") / "ensemble"
    assert main(_argv(tiny_data, runs, folder, 1)) == 0
    assert not (runs / "fold0").exists() and [m.name for m in read_card(folder).members] == ["fold1"]
    assert main(_argv(tiny_data, runs, folder, 0)) == 0
    return folder


def test_fold_k_trains_only_fold_k_and_a_rerun_trains_nothing(ensemble, tiny_data, tmp_path):
    card = read_card(ensemble)
    assert [m.name for m in card.members] == ["fold0", "fold1"]
    for name in ("fold0", "fold1"):
        member = read_card(ensemble / name)
        assert member.training is not None and member.training.split_recipe.val_fold == int(name[-1])
        files = {f.name for f in (ensemble / name).iterdir()}
        assert files == {"card.json", "model.onnx", "model.safetensors", "ood.safetensors", "eval"}
    runs = tmp_path / "empty-runs"
    assert main(_argv(tiny_data, runs, ensemble)) == 0  # every fold: both are members already
    assert not runs.exists()  # nothing trained


def test_members_ship_int8_graphs_scored_beside_their_float_rows(ensemble):
    import onnx

    for name in ("fold0", "fold1"):
        card = read_card(ensemble / name)
        assert card.quantization is not None and card.quantization.activations.startswith("uint8")
        ops = {n.op_type for n in onnx.load(str(ensemble / name / ONNX)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        ids = [[r["id"] for r in csv_rows(ensemble / name / "eval" / f)] for f in (SLICES, FLOAT_SLICES)]
        assert ids[0] == ids[1] and ids[0]


def test_a_float_member_is_made_int8_when_its_fold_is_run_again(ensemble, tiny_data, tmp_path):
    import onnx

    from braintumor.experiments.ensemble import add_member
    from braintumor.inference.export import export_onnx, halve_onnx_weights, load_torch_model

    copy = Path(shutil.copytree(ensemble, tmp_path / "ensemble"))
    member = copy / "fold0"
    net, card = load_torch_model(member)
    export_onnx(net, card.input.size, member)
    halve_onnx_weights(member / ONNX)
    (member / "eval" / FLOAT_SLICES).rename(member / "eval" / SLICES)  # as members were before int8
    write_card(member, replace(card, quantization=None))
    add_member(copy, "fold0")
    assert main(_argv(tiny_data, tmp_path / "runs", copy, 0)) == 0
    card = read_card(member)
    assert card.quantization is not None and card.calibration is not None  # int8, its OOD model fitted again
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(member / ONNX)).graph.node}
    assert (member / "eval" / FLOAT_SLICES).is_file() and not (tmp_path / "runs").exists()  # nothing trained
    Analyzer(copy)  # every checksum verifies


def test_committed_rows_name_no_patient(ensemble, tiny_data):
    patients = {r["patient_id"] for r in csv_rows(tiny_data / "index.csv") if r["patient_id"]}
    for name in ("fold0", "fold1"):
        rows = csv_rows(ensemble / name / "eval" / "per_slice.csv")
        assert list(rows[0]) == SLICE_FIELDS
        text = (ensemble / name / "eval" / "per_slice.csv").read_text()
        text += (ensemble / name / "eval" / "report.json").read_text() + (ensemble / name / "card.json").read_text()
        assert not [p for p in patients if p in text]


def test_averaged_outputs_are_the_members_mean_and_members_1_is_member_0(ensemble):
    import onnxruntime as ort

    batch = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    outputs = [ort.InferenceSession(str(ensemble / f / ONNX)).run(None, {"image": batch}) for f in ("fold0", "fold1")]
    mask, probs, _ = Analyzer(ensemble).network(batch)
    assert np.abs(mask - (outputs[0][0] + outputs[1][0]) / 2).max() < 1e-5
    assert np.abs(probs - (outputs[0][1] + outputs[1][1]) / 2).max() < 1e-5
    mask1, probs1, _ = Analyzer(ensemble, members=1).network(batch)
    assert np.abs(mask1 - outputs[0][0]).max() < 1e-5 and np.abs(probs1 - outputs[0][1]).max() < 1e-5
    with pytest.raises(ModelFolderError, match="at least 1"):
        Analyzer(ensemble, members=0)


def test_gradcam_of_an_ensemble_is_its_members_mean_map_for_one_class(ensemble):
    from braintumor.imageio import Scan
    from braintumor.inference.explain import Explainer

    scan = Scan(np.random.default_rng(1).random((48, 40), dtype=np.float32) * 255, "x.png")
    maps = [Explainer(ensemble / f).explain(scan, 2) for f in ("fold0", "fold1")]
    together = Explainer(ensemble).explain(scan, 2)
    assert together.shape == (48, 40) and np.abs(together - (maps[0] + maps[1]) / 2).max() < 1e-5
    assert np.abs(Explainer(ensemble, members=1).explain(scan, 2) - maps[0]).max() < 1e-6


def test_each_member_has_its_own_ood_model_and_the_ensemble_scores_in_their_thresholds(ensemble):
    """A member's feature model is fitted on its own training images, its threshold on its own unseen patients, its
    temperature left at 1; the ensemble's score is the mean of the members' scores over their thresholds."""
    image = png_bytes(np.random.default_rng(3).integers(0, 255, (48, 48)).astype(np.uint8))
    ratios = []
    for name in ("fold0", "fold1"):
        card = read_card(ensemble / name)
        assert card.calibration is not None and card.calibration.temperature == 1.0
        assert card.calibration.ood_threshold is not None and card.calibration.ood_threshold > 0
        assert "ood_false_alarm_rate" in card.calibration.heldout
        member = Analyzer(ensemble / name)
        ratios.append(member.analyze(image, name="x.png").ood_score / card.calibration.ood_threshold)
    analyzer = Analyzer(ensemble)
    assert analyzer.ood_threshold == 1.0
    assert analyzer.analyze(image, name="x.png").ood_score == pytest.approx(np.mean(ratios), rel=1e-5)
    assert Analyzer(ensemble, members=1).analyze(image, name="x.png").ood_score == pytest.approx(ratios[0], rel=1e-5)


def test_uncertainty_is_zero_for_identical_members_and_positive_for_different(ensemble, tmp_path):
    image = np.zeros((64, 64), np.uint8)
    image[10:40, 10:40] = 200
    twins = tmp_path / "twins"
    shutil.copytree(ensemble, twins)
    shutil.rmtree(twins / "fold1")
    shutil.copytree(twins / "fold0", twins / "fold1")
    card = read_card(twins)
    write_card(twins, replace(card, members=(pin_member(twins, "fold0"), pin_member(twins, "fold1"))))
    for folder, low in ((twins, True), (ensemble, False)):
        analyzer = Analyzer(folder)
        analyzer.postprocessing = replace(analyzer.postprocessing, threshold=0.01)  # an outline, whatever it is
        result = analyzer.analyze(png_bytes(image), name="x.png", spacing_mm=0.5)
        assert result.uncertainty is not None
        assert (result.uncertainty == 0.0) if low else (result.uncertainty > 0.0)
        assert "uncertainty" in result.row()
    assert Analyzer(ensemble, members=1).analyze(png_bytes(image), name="x.png").uncertainty is None


def test_members_naming_different_types_raise_a_warning(ensemble):
    analyzer = Analyzer(ensemble)
    before = analyzer.run_members

    def disagreeing(batch):
        runs = before(batch)
        for k, run in enumerate(runs):  # member k is sure of class k
            run["class_prob"] = np.tile(np.eye(4, dtype=np.float32)[k], (len(batch), 1))
        return runs

    analyzer.run_members = disagreeing  # type: ignore[method-assign]
    image = np.full((32, 32), 100, np.uint8)
    warnings = analyzer.analyze(png_bytes(image), name="x.png").warnings
    assert any("members disagree on the type (glioma 1, meningioma 1)" in w for w in warnings)


def test_a_member_trained_on_another_split_is_refused(ensemble, tiny_data, tmp_path):
    other = make_manifest(tmp_path / "other", patients_per_class=5)
    with pytest.raises(ModelFolderError, match="differ from today's split"):
        check_member_split(read_manifest(other), ensemble / "fold0", read_card(ensemble / "fold0"))
    code = main(_argv(other, tmp_path / "runs", ensemble, 0))
    assert code == 2


def rows_of(ensemble: Path) -> list[dict[str, str]]:
    return [r for name in ("fold0", "fold1") for r in csv_rows(ensemble / name / "eval" / "per_slice.csv")]


def test_cv_table_and_card_come_from_the_members_rows(ensemble, tiny_data):
    figures = cv_figures(ensemble)  # the same 1000 seeded resamples as when the member was added
    assert (ensemble / "cv.md").read_text() == cv_markdown(figures)
    card = read_card(ensemble)
    assert card.cross_validation is not None and card.calibration is not None
    assert card.calibration.temperature > 0 and "other members" in card.calibration.heldout["protocol"]
    assert card.calibration.heldout["images"] == len(rows_of(ensemble))
    pooled = figures["pooled"]
    rows = [r for name in ("fold0", "fold1") for r in csv_rows(ensemble / name / "eval" / "per_slice.csv")]
    assert pooled["images"] == len(rows) == sum(1 for _ in csv_rows(tiny_data / "index.csv"))
    correct = [r["label"] == r["predicted"] for r in rows]
    assert pooled["accuracy"] == pytest.approx(np.mean(correct))
    for name in ("fold0", "fold1"):
        report = json.loads((ensemble / name / "eval" / "report.json").read_text())
        (row,) = [r for r in figures["per_fold"] if r["member"] == name]
        assert row["accuracy"] == pytest.approx(report["accuracy"])
        assert row["dice_mean"] == pytest.approx(report["dice_mean"], abs=1e-4)


def test_cli_analyze_and_evaluate_run_the_ensemble(ensemble, tiny_data, tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(np.full((40, 40), 90, np.uint8)))
    assert main(["analyze", str(image), "--model", str(ensemble), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "uncertainty" in row and row["label"] in ("glioma", "meningioma", "pituitary", "notumor")
    code = main(["evaluate", "--data", str(tiny_data), "--model", str(ensemble), "--out", str(tmp_path / "e")])
    assert code == 2  # every patient was seen by one member or the other
    assert "nothing unseen to score" in capsys.readouterr().err
    assert (
        main(["evaluate", "--data", str(tiny_data), "--model", str(ensemble / "fold0"), "--out", str(tmp_path / "f")])
        == 0
    )
    with open(tmp_path / "f" / "per_slice.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(csv_rows(ensemble / "fold0" / "eval" / "per_slice.csv"))


def test_bench_times_the_ensemble_and_one_member(ensemble, tmp_path, capsys):
    argv = ["bench", "--json", "--model", str(ensemble), "--images", "2", "--end-to-end-images", "2"]
    assert main([*argv, "--images-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["members"] == 2 and out["ms_per_image_end_to_end_one_member"] > 0
    assert set(out["meets_targets"]) == {"ensemble_ms", "ensemble_rss", "one_member_ms", "one_member_volume_s"}
    assert out["volume_s_end_to_end_one_member"] > 0 and out["volume_meets_target"] == (
        out["volume_s_end_to_end"] <= 12
    )


def test_the_page_shows_where_an_ensembles_members_disagree(ensemble, monkeypatch, request):
    from streamlit.testing.v1 import AppTest

    from braintumor.app.views import MEMBERS_ENV, MODEL_ENV, analyze_upload

    image = png_bytes(np.full((48, 48), 120, np.uint8))
    assert analyze_upload(Analyzer(ensemble), image, "x.png", None).disagreement is not None
    assert analyze_upload(Analyzer(ensemble, members=1), image, "x.png", None).disagreement is None
    monkeypatch.setenv(MODEL_ENV, str(ensemble))
    monkeypatch.setenv(MEMBERS_ENV, "")
    import streamlit as st

    st.cache_resource.clear()  # earlier page tests in this process cached the shipped model
    request.addfinalizer(st.cache_resource.clear)  # and later ones must not get the ensemble
    page = Path(__file__).resolve().parent.parent / "src" / "braintumor" / "app" / "page.py"
    at = AppTest.from_file(str(page), default_timeout=60).run()
    at.selectbox(key="example").select("pituitary").run()
    assert not at.exception
    assert "Outline uncertainty" in {m.label for m in at.metric}
    captions = [i.proto.imgs[0].caption for i in at.get("image")]
    assert "where the ensemble's members disagree on the outline" in captions


def test_a_half_made_member_is_not_a_member(ensemble, tmp_path):
    from braintumor.experiments.ensemble import is_member

    copy = Path(shutil.copytree(ensemble, tmp_path / "copy"))
    assert is_member(copy, "fold0") and is_member(copy, "fold1")
    (copy / "fold1" / "eval" / "per_slice.csv").unlink()  # a run stopped between the export and the evaluation
    assert not is_member(copy, "fold1") and not is_member(copy, "fold2")
