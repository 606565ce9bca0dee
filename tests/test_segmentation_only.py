"""The segmentation-only reference (seed_unet): a tiny training run writes a checksummed ONNX graph, the runner
answers with a ``Segmentation`` (an outline, no tumor type), and ``evaluate`` scores the masks with every
classification figure absent."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from braintumor.bundle import ModelFolderError
from braintumor.cli import main
from braintumor.imageio import Scan
from braintumor.inference import Analyzer, Classification, Segmentation
from braintumor.training.run import TrainConfig, train
from conftest import csv_rows


@pytest.fixture(scope="module")
def seed_unet(tiny_data, tmp_path_factory):
    """A seed_unet model folder after one epoch on the tiny set."""
    out = train(
        TrainConfig(
            data=tiny_data,
            out=tmp_path_factory.mktemp("seed_unet"),
            arch="seed_unet",
            size=32,
            epochs=1,
            batch_size=4,
            folds=4,
            progress=False,
        )
    )
    shutil.rmtree(out / "checkpoints")  # resumable state, not part of the model folder
    return out


def test_one_epoch_writes_a_checksummed_mask_graph(seed_unet):
    import onnxruntime as ort

    from braintumor.inference.export import load_torch_model

    card = json.loads((seed_unet / "card.json").read_text())
    assert card["task"] == "segmentation" and card["postprocessing"]["threshold"] == 0.5
    assert set(card["files"]) == {"model.safetensors", "model.onnx"}
    for name, entry in card["files"].items():
        assert entry["sha256"] == hashlib.sha256((seed_unet / name).read_bytes()).hexdigest()
    net, _ = load_torch_model(seed_unet)
    session = ort.InferenceSession(str(seed_unet / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["mask_prob"]
    x = np.random.default_rng(0).random((3, 1, 32, 32), dtype=np.float32)
    with torch.no_grad():
        logits, _ = net(torch.from_numpy(x))
    (mask_prob,) = session.run(None, {"image": x})
    assert mask_prob.shape == (3, 1, 32, 32) and np.allclose(mask_prob, torch.sigmoid(logits).numpy(), atol=1e-5)


def test_a_segmentation_only_model_outlines_without_a_tumor_type(seed_unet):
    segmenter = Analyzer(seed_unet)
    assert not segmenter.is_unfamiliar(None)
    pixels = np.random.default_rng(1).normal(40, 10, (40, 50)).astype(np.float32)
    pixels[10:20, 20:30] += 150
    known, unknown = segmenter.analyze_scans(
        [Scan(pixels, "a.png", spacing_mm=(0.5, 0.5), spacing_source="file"), Scan(pixels[:30], "b.png")]
    )
    assert isinstance(known, Segmentation) and isinstance(unknown, Segmentation)
    assert not isinstance(known, Classification) and not hasattr(known, "label")
    assert known.mask.shape == (40, 50) and known.mask.dtype == np.uint8 and unknown.mask.shape == (30, 50)
    assert known.tumor_pixels == int(known.mask.sum()) and known.area_cm2 == pytest.approx(known.tumor_pixels / 400)
    assert unknown.area_cm2 is None and any("spacing unknown" in w for w in unknown.warnings)
    assert any("tumor type: not produced" in w for w in known.warnings)
    assert known.row()["label"] is None and known.row()["p_glioma"] is None and known.row()["confidence"] is None


def test_analyze_and_the_page_with_a_segmentation_only_model(seed_unet, tmp_path, capsys):
    """``analyze --model`` gives what the model's task produces (an area, no type); the page and the API, built
    for a type and an outline, refuse the folder in one line."""
    from PIL import Image

    from braintumor.serve import create_app

    pixels = np.random.default_rng(1).normal(40, 10, (40, 50)).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    code = main(["analyze", str(tmp_path / "a.png"), "--model", str(seed_unet), "--spacing-mm", "0.5"])
    line = capsys.readouterr().out
    assert code == 0 and line.startswith(f"{tmp_path / 'a.png'}: area ") and "tumor type: not produced" in line
    assert main(["app", "--model", str(seed_unet)]) == 2
    assert "a segmentation model; the page shows a type and an outline" in capsys.readouterr().err
    with pytest.raises(ModelFolderError, match="the API serves a model that outlines and classifies"):
        create_app(Analyzer(seed_unet))


def test_evaluate_scores_a_segmentation_only_folder(seed_unet, tiny_data, tmp_path, capsys):
    out = tmp_path / "eval"
    command = ["evaluate", "--data", str(tiny_data), "--model", str(seed_unet), "--out", str(out), "--bootstrap", "50"]
    assert main(command) == 0
    assert "classification: not produced by this model" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["classification_produced"] is False and report["segmentation_produced"] is True
    assert isinstance(report["dice_mean"], float) and isinstance(report["iou_mean"], float)
    assert isinstance(report["missed_tumors"], int) and isinstance(report["notumor_outlined"], float)
    absent = ("accuracy", "tumor_type_accuracy", "macro_f1", "ece", "reliability", "confusion_matrix")
    assert all(report[k] is None for k in absent) and report["per_patient"]["accuracy_mean"] is None
    assert report["per_class"] == {} and report["tumor_type_per_class"] == {}
    assert "accuracy" not in report["ci95"] and "dice_mean" in report["ci95"]
    rows = csv_rows(out / "per_slice.csv")
    assert rows and all(r["predicted"] == "" and r["confidence"] == "" for r in rows)
    assert all(r["dice"] for r in rows if r["label"] != "notumor")
    md = (out / "report.md").read_text()
    assert "Classification: not produced by this model" in md and "| Dice mean" in md
    assert "| accuracy" not in md and "Per class" not in md and "calibration error" not in md
    assert (out / "segmentation.png").stat().st_size > 0
    assert not (out / "confusion_matrix.png").exists() and not (out / "confusion_matrix.csv").exists()
    gallery = (out / "gallery" / "gallery.md").read_text()
    assert "classification: not produced by this model" in gallery and "misclassified" not in gallery


def test_the_segmenter_reads_its_post_processing_from_the_card(seed_unet, tmp_path):
    import shutil

    from braintumor.bundle import Postprocessing
    from braintumor.inference.postprocess import postprocess

    folder = tmp_path / "seg"
    shutil.copytree(seed_unet, folder)
    card = json.loads((folder / "card.json").read_text())
    card["postprocessing"] = {"threshold": 0.4, "min_component_fraction": 1.0, "fill_holes": True}
    (folder / "card.json").write_text(json.dumps(card))
    segmenter = Analyzer(folder)
    assert segmenter.postprocessing == Postprocessing(0.4, 1.0, True)
    two = np.zeros((40, 50), dtype=np.float32)
    two[5:15, 5:15], two[30:33, 40:43] = 0.9, 0.9  # a region and a speck: only the largest is kept
    assert postprocess(two, segmenter.postprocessing).sum() == 100
